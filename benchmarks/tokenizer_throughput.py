"""Tokenizer throughput on one core: timesteps/s for the RGB-stacking spec (2 and 3 cameras).

    python benchmarks/tokenizer_throughput.py [--steps 2000] [--json out.json]

Measures ``build_timestep`` (observation + separator + action tokens, patches, positions), the work a
data loader or the ROS tokenizer node does per control step. Pinned to one thread.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from gato_robot.core.sequence import build_timestep  # noqa: E402
from gato_robot.core.specs import Kind, rgb_stacking_spec  # noqa: E402
from gato_robot.core.tokenizer import Tokenizer  # noqa: E402


def measure(cameras: int, steps: int) -> dict:
    spec = rgb_stacking_spec(cameras)
    tok = Tokenizer(spec)
    rng = np.random.default_rng(0)
    obs = [
        {s.name: rng.integers(0, 256, s.shape, dtype=np.uint8) if s.kind is Kind.IMAGE else rng.normal(size=s.shape)
         for s in spec.observations}
        for _ in range(16)
    ]
    act = rng.uniform(-0.07, 0.07, size=(16, 5))
    for i in range(50):  # warm-up
        build_timestep(tok, obs[i % 16], act[i % 16])
    t0 = time.perf_counter()
    for i in range(steps):
        block = build_timestep(tok, obs[i % 16], act[i % 16])
    dt = time.perf_counter() - t0
    return {"cameras": cameras, "tokens_per_timestep": len(block), "timesteps_per_s": steps / dt,
            "us_per_timestep": dt / steps * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args()
    rows = [measure(c, args.steps) for c in (2, 3)]
    print(f"tokenizer throughput, one core ({platform.processor() or platform.machine()}), {args.steps} timesteps")
    print(f"{'cameras':>8} {'tokens/timestep':>16} {'timesteps/s':>12} {'us/timestep':>12}")
    for r in rows:
        print(f"{r['cameras']:>8} {r['tokens_per_timestep']:>16} {r['timesteps_per_s']:>12.0f} {r['us_per_timestep']:>12.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "tokenizer_throughput", "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
