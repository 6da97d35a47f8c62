"""Latency of one control step of ``TorchPolicy`` on the RGB-stacking spec (two 128x128 cameras), random weights.

A control step = tokenize the observation, append [previous last action token, 128 patches, 29 proprio values,
'|'] (159 tokens; 158 on the first step) to the KV cache in one call, then 4 single-token decodes (5 action
dimensions). Steps run back to back past the 1024-token window (~163 tokens per timestep), so the numbers are
those of a full, sliding cache.

    python benchmarks/model_latency.py --presets tiny 79M --steps 50
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gato_robot.core.specs import Kind, RobotSpec, rgb_stacking_spec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.config import PRESETS, preset
from gato_robot.model.gato import Gato
from gato_robot.model.policy import TorchPolicy

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def observation(spec: RobotSpec, rng: np.random.Generator) -> dict:
    return {
        s.name: rng.integers(0, 256, s.shape, dtype=np.uint8) if s.kind is Kind.IMAGE else rng.normal(size=s.shape)
        for s in spec.observations
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, steps: int, warmup: int, device: torch.device, dtype: torch.dtype) -> dict:
    spec = rgb_stacking_spec(cameras=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = Gato(preset(name)).to(dtype).eval()
    policy = TorchPolicy(model, spec, device=device)
    tok = Tokenizer(spec)
    rng = np.random.default_rng(0)
    observations = [observation(spec, rng) for _ in range(16)]
    state = policy.initial_state()
    step_ms, tokenize_ms = [], []
    for i in range(warmup + steps):
        obs = observations[i % len(observations)]
        sync(device)
        t0 = time.perf_counter()
        _, state = policy.step(obs, state)
        sync(device)
        t1 = time.perf_counter()
        tok.tokenize_observation(obs)
        t2 = time.perf_counter()
        if i >= warmup:
            step_ms.append((t1 - t0) * 1e3)
            tokenize_ms.append((t2 - t1) * 1e3)
    return {
        "preset": name,
        "params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "tokens_seen": int(state.cache.pos),
        "step_ms_p50": float(np.percentile(step_ms, 50)),
        "step_ms_p99": float(np.percentile(step_ms, 99)),
        "step_ms_mean": float(np.mean(step_ms)),
        "tokenize_ms_p50": float(np.percentile(tokenize_ms, 50)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "79M"], choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=Path("outputs/model_latency.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [bench(name, args.steps, args.warmup, device, DTYPES[args.dtype]) for name in args.presets]
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": args.dtype,
        "python": platform.python_version(),
    }
    print(f"rgb_stacking 2 cameras, {env['device']}, torch {env['torch']}, {env['threads']} threads, {args.dtype}")
    print(f"{'preset':>7} {'params':>12} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'tokenize ms':>12}")
    for r in rows:
        print(f"{r['preset']:>7} {r['params']:>12,} {r['step_ms_p50']:>8.1f} {r['step_ms_p99']:>8.1f} "
              f"{r['step_ms_mean']:>8.1f} {r['tokenize_ms_p50']:>12.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
