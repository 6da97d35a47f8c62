"""Data generation throughput of each domain generator (issue 8): episodes (or images) per second, one process.

    python benchmarks/domains_generate.py [--out runs/bench_domains] [--json benchmarks/domains_generate.json]

Each generator writes into a fresh temporary folder (files included in the time: rendering, expert, HDF5/PNG
writing). Prints a table and writes the rows as JSON. A generator whose package is missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any


def _cases(quick: bool) -> list[tuple[str, str, int, Any]]:
    from gato_robot.domains import babyai, metaworld, rgb_stacking, vision

    n = 1 if quick else 0
    return [
        ("babyai", "GoToRedBall", 10 if n else 100,
         lambda out, k: babyai.generate(out, ("GoToRedBall",), k, seed=0)),
        ("babyai", "GoToLocal", 5 if n else 50, lambda out, k: babyai.generate(out, ("GoToLocal",), k, seed=0)),
        ("metaworld", "reach-v3", 3 if n else 20, lambda out, k: metaworld.generate(out, ("reach-v3",), k, seed=0)),
        ("metaworld", "pick-place-v3", 2 if n else 10,
         lambda out, k: metaworld.generate(out, ("pick-place-v3",), k, seed=0)),
        ("scenes (caption+VQA)", "64x64", 50 if n else 1000, lambda out, k: vision.generate(out, k, seed=0)),
        ("rgb_stacking", "rgb_test_triplet1", 1 if n else 2,
         lambda out, k: rgb_stacking.generate(out, ("rgb_test_triplet1",), k, seed=0)),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows = []
    for domain, task, count, fn in _cases(quick):
        out = Path(tempfile.mkdtemp(prefix="gato_gen_"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                fn(out, count)
                dt = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            rows.append({"generator": domain, "task": task, "items": count, "seconds": round(dt, 3),
                         "items_per_s": round(count / dt, 2), "mb_written": round(size / 1e6, 2)})
        except Exception as e:  # a missing optional package (pybullet, metaworld) is a skip, not a crash
            rows.append({"generator": domain, "task": task, "skipped": f"{type(e).__name__}: {e}"})
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default="runs/domains_generate.json", help="where to write the rows")
    p.add_argument("--quick", action="store_true", help="a few items per generator (smoke test)")
    args = p.parse_args(argv)
    rows = run(args.quick)
    print("\n| generator | task | items | s | items/s | MB |\n|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['generator']} | {r['task']} | skipped: {r['skipped']} | | | |")
        else:
            print(f"| {r['generator']} | {r['task']} | {r['items']} | {r['seconds']} | {r['items_per_s']} | "
                  f"{r['mb_written']} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": platform.node(), "python": platform.python_version(),
                                           "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
