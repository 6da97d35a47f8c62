"""Training throughput: tokens/s, model FLOPs utilisation, and whether the data pipeline keeps up.

    python benchmarks/train_throughput.py --preset tiny --device cpu --context 256 --image-size 32
    python benchmarks/train_throughput.py --preset 364M --micro-batch 16 --compile      # one H100, bf16 autocast

Three measurements, all through the trainer's own step (``Trainer.train_step``: masked loss, backward, non-finite
check, clipping, AdamW):

- compute: the same pre-loaded batches stepped over and over (the model and optimizer alone);
- loader: batches per second the DataLoader (``--workers`` processes) produces on its own;
- end to end: steps pulling batches from the DataLoader, with the fraction of time spent waiting for data.

MFU = 6 x parameters x tokens/s / peak (Gato reference, ``--peak-flops``, 989e12 for H100 bf16 dense); tokens are
the valid (non-padding) tokens of each sequence. Episodes: ``--data DIR``, or synthetic ones written to a temporary
folder (two cameras of ``--image-size`` pixels; 128 gives the paper's ~141-token timesteps).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from gato_robot.training import demos
from gato_robot.training.config import TrainConfig, apply_overrides, preset
from gato_robot.training.distributed import DistInfo, pick_device
from gato_robot.training.trainer import Trainer

H100_BF16_PEAK = 989e12


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", help="model preset: tiny, small, 79M, 364M, 1.18B")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    p.add_argument("--data", help="episode folder (default: synthetic episodes)")
    p.add_argument("--image-size", type=int, default=128, help="synthetic episodes' camera size")
    p.add_argument("--peak-flops", type=float, default=None, help="device peak FLOP/s (default 989e12 on CUDA)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def build(args: argparse.Namespace, episodes: str, out: str) -> Trainer:
    cfg: TrainConfig = apply_overrides(preset("tiny-cpu"), [
        f"model.preset={args.preset}", f"model.context={args.context}", f"data.train={episodes}",
        "data.eval_fraction=0", f"data.workers={args.workers}", f"run.out_dir={out}",
        f"run.batch_size={args.micro_batch}", f"run.device={args.device}", f"run.precision={args.precision}",
        f"run.compile={args.compile}", f"run.steps={10**9}", "run.progress=false", "run.tensorboard=false",
        "optim.warmup_steps=10", *([f"run.threads={args.threads}"] if args.threads else []),
    ])
    device = pick_device(args.device, 0)
    return Trainer(cfg, DistInfo(device=device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(t: Trainer, batches, n: int) -> tuple[float, int, float]:
    """(seconds, tokens, seconds waiting for data) over n steps; ``batches`` yields one micro-batch list per step."""
    tokens, wait = 0, 0.0
    sync(t.device)
    start = time.perf_counter()
    for _ in range(n):
        w = time.perf_counter()
        micro = next(batches)
        wait += time.perf_counter() - w
        tokens += t.train_step(micro).tokens
    sync(t.device)
    return time.perf_counter() - start, tokens, wait


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory() as tmp:
        episodes = args.data
        if episodes is None:
            episodes = f"{tmp}/episodes"
            demos.synthetic_episodes(episodes, episodes=16, length=60, image_size=args.image_size, tasks=2)
        t = build(args, episodes, f"{tmp}/run")
        dev = t.device
        loader = t._loader()
        steps = args.warmup + args.steps
        cached = [next(loader) for _ in range(t.accum)]

        def repeat():
            while True:
                yield cached

        def from_loader():
            while True:
                yield [next(loader) for _ in range(t.accum)]

        timed_steps(t, repeat(), args.warmup)
        secs, toks, _ = timed_steps(t, repeat(), args.steps)
        compute = toks / secs
        # the loader alone (workers already warm), then steps fed by it
        l_start, l_tok = time.perf_counter(), 0
        for _ in range(steps):
            l_tok += int(next(loader)["valid"].sum())
        loader_rate = l_tok / (time.perf_counter() - l_start)
        e_secs, e_toks, e_wait = timed_steps(t, from_loader(), args.steps)
        peak = args.peak_flops or (H100_BF16_PEAK if dev.type == "cuda" else None)
        result = {
            "preset": args.preset, "params": t.n_params, "context": args.context, "micro_batch": args.micro_batch,
            "tokens_per_step": toks / args.steps, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "precision": "bf16" if t.bf16 else "fp32", "compile": args.compile,
            "workers": args.workers, "torch": torch.__version__, "python": sys.version.split()[0],
            "compute_tokens_per_s": compute, "step_s": secs / args.steps,
            "loader_tokens_per_s": loader_rate, "end_to_end_tokens_per_s": e_toks / e_secs,
            "data_wait_frac": e_wait / e_secs,
            "mfu": 6 * t.n_params * compute / peak if peak else None, "peak_flops": peak,
            "max_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
        }
    print(f"{args.preset}: {t.n_params / 1e6:.1f}M params, {result['precision']} on {result['device_name']} "
          f"({result['threads']} threads), context {args.context}, micro-batch {args.micro_batch}")
    print(f"  compute      {compute:12,.0f} tokens/s  ({result['step_s'] * 1e3:.1f} ms/step)"
          + (f"  MFU {100 * result['mfu']:.1f}% of {peak:.3g} FLOP/s" if peak else ""))
    print(f"  loader       {loader_rate:12,.0f} tokens/s  ({args.workers} workers)")
    print(f"  end to end   {result['end_to_end_tokens_per_s']:12,.0f} tokens/s  "
          f"(waiting for data {100 * result['data_wait_frac']:.0f}% of the time)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
