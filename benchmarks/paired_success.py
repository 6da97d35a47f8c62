"""Two runs on the same episodes: successes of each, the discordant pairs, and the exact McNemar p-value.

    python benchmarks/paired_success.py runs/fb6-bench20/results.json runs/fb5-bench20-fingers/results.json

Takes benchmark ``results.json`` files (or their folders), ``gato_robot.ros.evaluate`` results or ``benchmarks/ros_path_ablation.py
--out`` files (one variant). Episodes pair by (triplet, seed): with the same seed an episode starts from the same
layout and, sampled, draws from the same seed, so two runs of one policy agree on every episode and two policies
differ only where they act differently. Only pairs present in both files count.
"""

from __future__ import annotations

import argparse
import sys


def outcomes(path: str) -> dict[tuple[str, int], bool]:
    from gato_robot.core import results

    try:
        return results.outcomes(results.load_results(path)["episodes"])
    except results.ResultsError as e:
        raise SystemExit(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="results of run A")
    p.add_argument("b", help="results of run B")
    a = p.parse_args(argv)
    from gato_robot.core.stats import exact_mcnemar, wilson_interval

    ra, rb = outcomes(a.a), outcomes(a.b)
    keys = sorted(ra.keys() & rb.keys())
    if not keys:
        p.error("no episode (triplet, seed) is in both files")
    for triplet in sorted({t for t, _ in keys}):
        ks = [k for k in keys if k[0] == triplet]
        print(f"{triplet}: A {sum(ra[k] for k in ks)}/{len(ks)}, B {sum(rb[k] for k in ks)}/{len(ks)}")
    wa, wb = sum(ra[k] for k in keys), sum(rb[k] for k in keys)
    only_a = sum(ra[k] and not rb[k] for k in keys)
    only_b = sum(rb[k] and not ra[k] for k in keys)
    (la, ha), (lb, hb) = wilson_interval(wa, len(keys)), wilson_interval(wb, len(keys))
    print(f"A {a.a}: {wa}/{len(keys)} ({100 * la:.1f}-{100 * ha:.1f}%)")
    print(f"B {a.b}: {wb}/{len(keys)} ({100 * lb:.1f}-{100 * hb:.1f}%)")
    print(f"same outcome {len(keys) - only_a - only_b}/{len(keys)}; only A {only_a}, only B {only_b}; "
          f"exact McNemar p = {exact_mcnemar(only_a, only_b):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
