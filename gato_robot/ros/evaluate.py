"""Success rate of an exported policy through the whole ROS 2 stack, in simulation (issue 10's stack check).

    python -m gato_robot.ros.evaluate --model DIR --triplets test --episodes 4 --out runs/ros_eval \\
        [--compare runs/bench/results.json]

For each triplet, ``gato-stack --sim --model DIR`` starts the sim node, tokenizer, policy and controller as
separate processes on a private ROS domain (lockstep sim time, the parameter file's safety limits), runs
``--episodes`` consecutive episodes (seeds ``--seed`` + k, as the direct benchmark numbers its episodes), and a
probe in this process reads each episode's end from /gato/episode_status. The launcher takes the cameras and
image size from the model's spec (manifest.json), so the sim renders exactly what the model was trained on.

Writes ``results.json`` (every episode) and ``results.md`` (success per triplet with Wilson 95% intervals;
with ``--compare``, beside the direct benchmark's rate for the same policy, whether the two intervals overlap, and
the direct benchmark's successes on the same seeds: start layouts differ in difficulty, so that is the fair
comparison for a few episodes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from std_msgs.msg import String
from std_srvs.srv import Trigger

from gato_robot.core.results import load_results, outcomes
from gato_robot.ros import common, testing


def run_triplet(model_dir: str | os.PathLike, triplet: str, episodes: int, seed: int, log_path: Path,
                episode_steps: int = 400, timeout_s: float = 120.0, temperature: float = 0.0) -> list[dict[str, Any]]:
    """``episodes`` consecutive simulated episodes of one triplet through the stack; one row per episode."""
    domain = testing.domain_for(f"gato-eval-{triplet}-{os.getpid()}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        params = testing.write_params(Path(tmp) / "stack.yaml", {
            "gato_policy": {"providers": "auto", "intra_op_threads": 1, "temperature": temperature,
                            "seed_from_episode": True},
            "gato_sim": {"max_episodes": episodes, "start_paused": True, "triplet": triplet, "seed": seed,
                         "auto_reset": True, "episode_steps": episode_steps},
        })
        probe = testing.Probe(domain, name="gato_eval_probe")
        probe.record(common.EPISODE_STATUS_TOPIC, String,
                     common.QoSProfile(depth=1000, reliability=common.ReliabilityPolicy.RELIABLE))
        with open(log_path, "w") as log:
            launcher = subprocess.Popen(
                [sys.executable, "-m", "gato_robot.ros.launcher", "--sim", "--model", str(model_dir),
                 "--params-file", str(params)],
                stdout=log, stderr=subprocess.STDOUT, env=testing.ros_env(domain), start_new_session=True)
        ended: dict[int, dict[str, Any]] = {}

        def collect() -> bool:
            for _, m in probe.received(common.EPISODE_STATUS_TOPIC):
                status = json.loads(m.data)
                if status["done"]:
                    ended[status["episode"]] = status
            return len(ended) >= episodes

        try:
            probe.wait_matched([common.EPISODE_STATUS_TOPIC], timeout=90)
            probe.wait_guarded(60)  # the controller's guard reaches the arm (else its first actions are zeros)
            probe.call(common.SIM_RESET_SERVICE, Trigger, timeout=60)
            start = time.monotonic()
            probe.wait_for(collect, timeout=timeout_s * episodes, what=f"{episodes} episodes of {triplet}")
            wall = time.monotonic() - start
        finally:
            testing.stop_launcher(launcher)
            probe.close()
    return [{"triplet": triplet, "seed": s["seed"], "success": bool(s["success"]), "steps": int(s["step"]),
             "invalid_commands": int(s.get("invalid_commands", 0)), "wall_s": round(wall / episodes, 2)}
            for _, s in sorted(ended.items())]


def per_triplet(episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Success counts per triplet of a file without a summary (``benchmarks/ros_path_ablation.py --out``)."""
    triplets = dict.fromkeys(e["triplet"] for e in episodes)
    return [{"triplet": t, "successes": sum(e["success"] for e in episodes if e["triplet"] == t),
             "episodes": sum(e["triplet"] == t for e in episodes)} for t in triplets]


def same_seed_successes(episodes: list[dict[str, Any]], triplet: str, seeds: list[int]) -> tuple[int, int] | None:
    """(successes, episodes) of the direct benchmark (episodes as ``load_results`` reads them) on exactly these
    seeds of a triplet, or None unless it ran all of them. Start layouts differ in difficulty, so a few seeds compare fairly only with the same seeds direct."""
    by_key = outcomes(episodes)
    if not seeds or any((triplet, s) not in by_key for s in seeds):
        return None
    return sum(by_key[(triplet, s)] for s in seeds), len(seeds)


def main(argv: list[str] | None = None) -> int:
    from gato_robot.core.stats import wilson_interval
    from gato_robot.sim.benchmark import MPO_SPECIALISTS
    from gato_robot.sim.objects import expand_triplets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported ONNX policy directory (model.onnx + manifest.json)")
    p.add_argument("--triplets", default="test", help="test, all, or comma-separated triplet names")
    p.add_argument("--episodes", type=int, default=4, help="episodes per triplet")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (the benchmark runner's default too)")
    p.add_argument("--episode-steps", type=int, default=400, help="steps per episode (the benchmark's 400 = 20 s)")
    p.add_argument("--compare", help="the direct benchmark's results.json for the same policy, or the episodes of "
                                     "benchmarks/ros_path_ablation.py --variants rate_limit --out (the direct loop "
                                     "with the controller's filter: with the same draws, the same episodes)")
    p.add_argument("--temperature", type=float, default=None,
                   help="the policy node's sampling temperature (0: greedy; use the direct benchmark's); default: "
                        "the model's recommendation (its sampling.json; greedy without one)")
    p.add_argument("--out", default="runs/ros_eval")
    a = p.parse_args(argv)
    if a.episodes < 1:
        p.error("--episodes must be >= 1")
    try:  # the number every episode runs at (and the record says): given, or the model's recommendation
        from gato_robot.runtime.loader import resolve_temperature

        a.temperature = resolve_temperature(f"onnx:{a.model}", a.temperature)
    except ValueError as e:
        p.error(str(e))
    direct: dict[str, dict[str, Any]] = {}
    direct_episodes: list[dict[str, Any]] = []
    if a.compare:  # read before the episodes run: a bad file must not cost them
        try:
            compared = load_results(a.compare)
            direct_episodes = compared["episodes"]
            for r in compared.get("summary") or per_triplet(direct_episodes):
                direct[r["triplet"]] = r
        except (ValueError, KeyError, TypeError) as e:  # ResultsError is a ValueError; a summary without fields
            p.error(f"--compare {a.compare}: not a benchmark results.json ({type(e).__name__}: {e})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for triplet in expand_triplets(a.triplets):
        got = run_triplet(a.model, triplet, a.episodes, a.seed, out / f"stack_{triplet}.log", a.episode_steps,
                          temperature=a.temperature)
        rows += got
        print(f"{triplet}: {sum(r['success'] for r in got)}/{len(got)} through the ROS stack", flush=True)
    lines = ["| triplet | ROS stack | 95% CI | direct benchmark | 95% CI | overlap | direct, same seeds | MPO (state) |",
             "|---|---|---|---|---|---|---|---|"]
    summary = []
    for triplet in dict.fromkeys(r["triplet"] for r in rows):
        ok = [r["success"] for r in rows if r["triplet"] == triplet]
        lo, hi = wilson_interval(sum(ok), len(ok))
        d = direct.get(triplet)
        if d:
            dlo, dhi = wilson_interval(int(d["successes"]), int(d["episodes"]))
            cells = f"{d['successes']}/{d['episodes']} | {100 * dlo:.0f}-{100 * dhi:.0f}% | " \
                    f"{'yes' if lo <= dhi and dlo <= hi else 'no'}"
        else:
            cells = "- | - | -"
        same = same_seed_successes(direct_episodes, triplet, [r["seed"] for r in rows if r["triplet"] == triplet])
        mpo = MPO_SPECIALISTS.get(triplet)
        lines.append(f"| {triplet} | {sum(ok)}/{len(ok)} | {100 * lo:.0f}-{100 * hi:.0f}% | {cells} | "
                     f"{'-' if same is None else f'{same[0]}/{same[1]}'} | {'-' if mpo is None else f'{mpo:.1f}%'} |")
        summary.append({"triplet": triplet, "successes": sum(ok), "episodes": len(ok), "ci95": [lo, hi],
                        "direct_same_seeds": None if same is None else list(same)})
    n_ok, n = sum(r["success"] for r in rows), len(rows)
    lo, hi = wilson_interval(n_ok, n)
    same = [s["direct_same_seeds"] for s in summary if s["direct_same_seeds"] is not None]
    same_cell = f"{sum(k for k, _ in same)}/{sum(m for _, m in same)}" if same else ""
    lines.append(f"| all | {n_ok}/{n} | {100 * lo:.0f}-{100 * hi:.0f}% | | | | {same_cell} | |")
    (out / "results.json").write_text(json.dumps({"model": str(a.model), "episodes_per_triplet": a.episodes,
                                                  "temperature": a.temperature, "seed": a.seed, "summary": summary, "episodes": rows}, indent=1))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
