"""Per-control-step latency of the policy: PyTorch eager, ONNX Runtime CPU, ONNX Runtime CUDA.

    python benchmarks/policy_latency.py --presets tiny 79M --backends torch ort-cpu [--steps 200] [--json out.json]

One control step on the RGB-stacking spec (two 128x128 cameras, proprioception, separator, 5 action
dimensions): tokenize the observation, append ``[last action token] + 157 observation tokens + '|'`` to the
KV cache, then 4 single-token decodes, greedy. p50 / p99 over ``--steps`` steps after ``--warmup`` steps
(the cache window slides every 6 steps at context 1024, so slides are included). Random weights.
Backends that are not available here (no CUDA) are reported as skipped, not silently dropped.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gato_robot.core.specs import rgb_stacking_spec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.checkpoint import save_checkpoint
from gato_robot.model.config import count_parameters, preset
from gato_robot.model.export import export_onnx, generated_observations
from gato_robot.model.gato import Gato
from gato_robot.model.policy import TorchPolicy

BACKENDS = ("torch", "torch-cuda", "ort-cpu", "ort-cuda")


def time_policy(policy, observations, warmup: int, tokens: list | None = None) -> np.ndarray:
    """Milliseconds per step after ``warmup`` steps; each step's action token ids go to ``tokens`` when given."""
    state = policy.initial_state()
    times = []
    for i, obs in enumerate(observations):
        t0 = time.perf_counter()
        _, state = policy.step(obs, state)  # returns a host numpy action: includes any device sync
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        if tokens is not None:
            tokens.append(np.asarray(state.action_tokens).copy())
    return np.asarray(times) * 1e3


def run(preset_name: str, backends: list[str], steps: int, warmup: int, threads: int) -> list[dict]:
    spec = rgb_stacking_spec(2)
    cfg = preset(preset_name)
    torch.manual_seed(0)
    model = Gato(cfg).eval()
    observations = generated_observations(spec, steps + warmup)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = None
        for backend in backends:
            row = {"preset": preset_name, "params": count_parameters(cfg), "backend": backend,
                   "steps": steps, "warmup": warmup}
            try:
                if backend.startswith("torch"):
                    device = "cuda" if backend == "torch-cuda" else "cpu"
                    if device == "cuda" and not torch.cuda.is_available():
                        raise RuntimeError("no CUDA device")
                    policy = TorchPolicy(model, spec, device=device)
                else:
                    from gato_robot.runtime.onnx_policy import OnnxPolicy

                    if onnx_dir is None:
                        save_checkpoint(Path(tmp) / "ckpt", model, spec, Tokenizer(spec).settings)
                        onnx_dir = export_onnx(Path(tmp) / "ckpt", Path(tmp) / "onnx", parity_steps=3)
                    providers = "cuda" if backend == "ort-cuda" else "cpu"
                    policy = OnnxPolicy(onnx_dir, providers=providers, intra_op_threads=threads,
                                        cuda_graph=backend == "ort-cuda")
                ms = time_policy(policy, observations, warmup)
                row.update(p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)),
                           mean_ms=float(ms.mean()), max_ms=float(ms.max()))
                if backend == "torch":
                    model.to("cpu")
            except Exception as e:  # unavailable backend: report it, keep measuring the others
                row["skipped"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def format_row(r: dict) -> str:
    if "skipped" in r:
        return f"{r['preset']:>7} {r['params'] / 1e6:>8.1f}M {r['backend']:>10}   skipped ({r['skipped'][:60]})"
    return (f"{r['preset']:>7} {r['params'] / 1e6:>8.1f}M {r['backend']:>10} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f}"
            f" {r['max_ms']:>9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "79M"])
    ap.add_argument("--backends", nargs="+", default=["torch", "ort-cpu"], choices=BACKENDS)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch / onnxruntime intra-op threads (0: default)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    print(f"policy latency per control step (RGB stacking, 2 cameras, 163 tokens/step), {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'preset':>7} {'params':>9} {'backend':>10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    rows = [r for p in args.presets for r in run(p, args.backends, args.steps, args.warmup, args.threads)]
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "policy_latency", "device": device, "results": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
