"""Processes and devices: torchrun's environment, DistributedDataParallel, FSDP for models that do not fit.

Launch (docs/training.md has the multi-node form)::

    python training/train.py ...                                   # one process
    torchrun --nproc_per_node 8 training/train.py ...              # one node, 8 GPUs (NCCL) or CPU processes (gloo)
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 \\
             --rdzv_backend c10d --rdzv_endpoint HOST:29500 training/train.py ...

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT; without them this is a single process.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as tdist
from torch import nn


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            tdist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("run.device=cuda but no CUDA device is visible; use --set run.device=cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(requested_device: str = "auto", timeout_min: int = 30) -> DistInfo:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), or run as one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if world > 1 and not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        tdist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min),
                                 device_id=device if device.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, device)


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def resolve_parallel(requested: str, dist: DistInfo) -> str:
    """'none' for one process; 'ddp' or 'fsdp' as configured ('auto': DDP) otherwise."""
    if not dist.distributed:
        return "none"
    return "ddp" if requested in ("auto", "none") else requested


def wrap(model: nn.Module, mode: str, dist: DistInfo, *, bf16: bool) -> nn.Module:
    """The module the training step calls. DDP keeps a full replica per rank and all-reduces gradients; FSDP
    (``fully_shard``, per transformer block, then the root) shards parameters, gradients and optimizer state, so
    the 1.18B preset's ~19 GB of weights and AdamW moments are split across ranks. The unwrapped ``model`` stays
    the one whose state is checkpointed (FSDP shards it in place)."""
    if mode == "none":
        return model
    if mode == "ddp":
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kw = {"mp_policy": mp} if mp is not None else {}
        for block in model.blocks:  # type: ignore[attr-defined]
            fully_shard(block, **kw)
        fully_shard(model, **kw)
        return model
    raise ValueError(f"unknown parallel mode {mode!r}")
