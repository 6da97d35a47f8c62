"""Episodes a model policy drives AND labels (its own sampled actions recorded as the targets): a fine-tuning
control. Trained on these, a model's target is its own action distribution, so a fine-tune that changes its
closed-loop success there moves it by the optimisation alone (learning rate, noise), not by what the data teaches.

    python benchmarks/self_labelled_episodes.py --policy onnx:models/rgb_stacking_mini --temperature 1 \\
        --triplets test --episodes-per-triplet 20 --seed 4100000 --workers 2 --out runs/stack_data/r31_self

Same file format, metadata and privileged extras as ``python -m gato_robot.sim.collect`` (whose environments this
reuses), with ``policy`` naming the model; each episode's draws are seeded by its seed, as in the benchmark.
docs/stacking.md (runs 36-39) is where it was used.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from gato_robot.data.episodes import write_episode
from gato_robot.sim import collect, objects
from gato_robot.sim.rollout import run_episode


def one(job: tuple[str, int, str, str, float, int]) -> bool:
    triplet, seed, out, policy, temperature, image_size = job
    env = collect._env(triplet, 2, image_size)
    learner = collect._learner(policy, temperature)  # one per worker process, one CPU thread
    learner.seed = seed  # this episode's draws
    r = run_episode(env, learner, seed, record=True)
    label = f"{policy} (temperature {temperature:g}; self-labelled)"
    write_episode(Path(out) / triplet / f"{triplet}_seed{seed:06d}", collect.recorded_episode(env, r, triplet, label, label))
    return r.success


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="onnx:DIR or torch:CHECKPOINT")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (as evaluated)")
    ap.add_argument("--triplets", default="test", help="test, all, or comma-separated triplet names")
    ap.add_argument("--episodes-per-triplet", type=int, default=20)
    ap.add_argument("--seed", type=int, required=True, help="first seed; episode i of each triplet uses seed + i")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    triplets = objects.expand_triplets(args.triplets)
    jobs = [(t, args.seed + i, args.out, args.policy, args.temperature, args.image_size)
            for t in triplets for i in range(args.episodes_per_triplet)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(tqdm(pool.map(one, jobs), total=len(jobs), desc="episodes", unit="ep"))
    print(f"{sum(results)}/{len(results)} stacked; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
