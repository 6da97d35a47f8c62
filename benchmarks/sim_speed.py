"""Speed of the PyBullet RGB-stacking env in one process: env steps per second with three 128x128 cameras,
with two cameras, and without images (rgb_stacking.md: the original MuJoCo environment runs about 9 steps/s
on this 2-core machine with three cameras).

    python benchmarks/sim_speed.py --steps 400 --out runs/sim_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from gato_robot.sim.env import RgbStackingEnv
from gato_robot.sim.policies import RandomPolicy

CONFIGS = (
    ("3 cameras 128x128, low-poly arm", dict(cameras=3, image_size=128, render_images=True, low_poly_arm=True)),
    ("2 cameras 128x128, low-poly arm", dict(cameras=2, image_size=128, render_images=True, low_poly_arm=True)),
    ("3 cameras 128x128, stock arm meshes", dict(cameras=3, image_size=128, render_images=True, low_poly_arm=False)),
    ("no images", dict(cameras=3, image_size=128, render_images=False, low_poly_arm=True)),
)


def measure(kwargs: dict, steps: int, seed: int = 0) -> dict:
    env = RgbStackingEnv(triplet="rgb_test_triplet1", **kwargs)
    policy = RandomPolicy(seed)
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    reset_s = time.perf_counter() - t0
    state = policy.initial_state()
    t0 = time.perf_counter()
    for _ in range(steps):
        action, state = policy.step(obs, state)
        obs, _, _, truncated, _ = env.step(action)
        if truncated:
            obs, _ = env.reset()
    elapsed = time.perf_counter() - t0
    env.close()
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed, "reset_s": reset_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--out", type=Path, default=Path("runs/sim_speed.json"))
    args = ap.parse_args(argv)
    rows = []
    for name, kwargs in CONFIGS:
        r = measure(kwargs, args.steps)
        rows.append({"config": name, **kwargs, **r})
        print(f"{name:40s} {r['steps_per_s']:8.1f} steps/s  (reset {r['reset_s'] * 1000:.0f} ms)", flush=True)
    print("\n| configuration | env steps/s |\n|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['steps_per_s']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpu_count": __import__("os").cpu_count(),
                                    "numpy": np.__version__, "results": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
