"""Training checkpoints: atomic, verified, several kept; no pickle anywhere.

A training checkpoint is a directory ``<out_dir>/checkpoints/step_<9 digits>/``::

    model.safetensors, config.json   the model checkpoint (``gato_robot.model.checkpoint`` format: loadable by
                                     ``load_checkpoint`` and the ONNX exporter as it is)
    optimizer.safetensors            AdamW moments and step counts, named ``<parameter name>::<key>``
    optimizer.json                   AdamW hyper-parameters per group (parameters by name)
    trainer_state.json               step, samples and tokens seen (the data-loader position), the schedule's
                                     step, the resolved TrainConfig
    rng_rank<r>.json                 python, numpy and torch (CPU, CUDA) RNG states of rank r
    MANIFEST.json                    written last: sha256 of every file above

Atomicity: everything is written into ``.tmp-step_<n>``, each file fsynced, the manifest last, then the folder
is renamed to its final name (one atomic rename) and the parent fsynced. A crash mid-write leaves a ``.tmp-``
folder that is never loaded (and is removed by the next save), so the newest complete checkpoint stays valid.
A checkpoint is valid only when its manifest parses and every listed file has its recorded sha256 (a truncated
or bit-flipped file is refused). Files that are not in the manifest (a stray ``optimizer.pt``...) are never
opened: loading reads safetensors and JSON only, so a pickle planted in a checkpoint folder cannot run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from gato_robot.core.specs import RobotSpec
from gato_robot.model.checkpoint import CheckpointError, read_checkpoint_config, save_checkpoint
from gato_robot.model.config import GatoConfig
from gato_robot.training.distributed import DistInfo

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
STATE_FILE = "trainer_state.json"
OPTIM_TENSORS, OPTIM_JSON = "optimizer.safetensors", "optimizer.json"
MODEL_WEIGHTS = "model.safetensors"
_NAME = re.compile(r"^step_(\d{9})$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step_{step:09d}"


# ----------------------------------------------------------------------------------------------------------
# Finding and verifying
# ----------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a complete, intact checkpoint; else why not."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        return "no manifest (an interrupted write)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    for name, digest in files.items():
        f = path / name
        if "/" in name or name.startswith(".") or not f.is_file():
            return f"missing file {name}"
        if _sha256(f) != digest:
            return f"{name} does not match its sha256 (damaged)"
    return None


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every final-named checkpoint folder under ``root``, oldest first (validity unchecked)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_valid(root: str | os.PathLike) -> Path | None:
    """The newest checkpoint that verifies; damaged or partial ones are reported and passed over."""
    for _, path in reversed(list_checkpoints(root)):
        why = verify(path)
        if why is None:
            return path
        log.warning("checkpoint %s is not usable: %s; trying an older one", path, why)
    return None


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------
class _StateView:
    """What ``save_checkpoint`` reads from a model (its config and state_dict), for a gathered full state."""

    def __init__(self, config: GatoConfig, state: Mapping[str, torch.Tensor]) -> None:
        self.config, self._state = config, state

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        return self._state


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n")


def rng_state() -> dict[str, Any]:
    """This process's RNG states as JSON (no pickle): python, numpy's global generator, torch CPU and CUDA."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": np.random.get_state(legacy=False),
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], np.uint32), "pos": int(np_state["state"]["pos"])}
    np.random.set_state(np_state)
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        )


def _flatten_optimizer(osd: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for name, st in osd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{name}::{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(name, {})[k] = v
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, t in tensors.items():
        name, _, k = key.rpartition("::")
        state.setdefault(name, {})[k] = t
    for name, kv in meta["scalars"].items():
        state.setdefault(name, {}).update(kv)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save(root: str | os.PathLike, step: int, *, model: nn.Module, optimizer: torch.optim.Optimizer, spec: RobotSpec,
         tokenizer_settings: Mapping[str, Any], trainer_state: Mapping[str, Any], dist: DistInfo, keep: int,
         write_delay_s: float = 0.0) -> Path | None:
    """Write checkpoint ``step`` atomically (every rank calls this; rank 0 writes the shared files).

    ``model`` is the unwrapped module (plain, or sharded in place by FSDP); its full state is gathered on rank 0.
    Returns the final path on rank 0, None elsewhere.
    """
    root = Path(root)
    final, tmp = root / checkpoint_name(step), root / f"{_TMP_PREFIX}{checkpoint_name(step)}"
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)  # a collective under FSDP
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{_TMP_PREFIX}*"):  # leftovers of interrupted writes
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    _write_json(tmp / f"rng_rank{dist.rank}.json", rng_state())  # shared filesystem across nodes assumed
    dist.barrier()
    if dist.is_main:
        written = [f"rng_rank{r}.json" for r in range(dist.world_size)]

        def pause() -> None:
            if write_delay_s:
                time.sleep(write_delay_s)

        config = model.config  # type: ignore[attr-defined]
        save_checkpoint(tmp, _StateView(config, model_sd), spec, tokenizer_settings,  # type: ignore[arg-type]
                        metadata={"step": step, "trainer": "gato_robot.training"})
        written += [MODEL_WEIGHTS, "config.json"]
        pause()
        tensors, meta = _flatten_optimizer(optim_sd)
        save_file(tensors, str(tmp / OPTIM_TENSORS))
        _write_json(tmp / OPTIM_JSON, meta)
        written += [OPTIM_TENSORS, OPTIM_JSON]
        pause()
        _write_json(tmp / STATE_FILE, dict(trainer_state, step=step))
        written.append(STATE_FILE)
        for name in written:
            _fsync(tmp / name)
        pause()
        _write_json(tmp / MANIFEST, {"step": step, "files": {n: _sha256(tmp / n) for n in sorted(written)}})
        _fsync(tmp / MANIFEST)
        _fsync(tmp)
        if final.exists():  # the same step saved again (e.g. the final save after a resume at that step)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
        _prune(root, keep)
    dist.barrier()
    return final if dist.is_main else None


def _prune(root: Path, keep: int) -> None:
    valid = [p for _, p in list_checkpoints(root)]
    for old in valid[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------
def load(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer | None,
         dist: DistInfo, restore_rng: bool = True) -> dict[str, Any]:
    """Load weights, optimizer state and this rank's RNG state from a verified checkpoint; returns the trainer
    state (step, samples, ...). Only safetensors and JSON are read."""
    path = Path(path)
    why = verify(path)
    if why is not None:
        raise CheckpointError(f"{path}: not a usable checkpoint: {why}")
    listed = set(json.loads((path / MANIFEST).read_text())["files"]) | {MANIFEST}
    stray = sorted(p.name for p in path.iterdir() if p.name not in listed)
    if stray:
        log.warning("%s: ignoring files that are not part of the checkpoint: %s (never opened)", path, stray)
    saved_cfg = GatoConfig.from_dict(read_checkpoint_config(path)["model"])
    current = model.config  # type: ignore[attr-defined]
    if saved_cfg.replace(dropout=current.dropout, name=current.name) != current:
        raise CheckpointError(f"{path}: model {saved_cfg} does not match this run's model {current}")
    model_sd = load_file(str(path / MODEL_WEIGHTS))
    optim_sd: dict[str, Any] = {}
    if optimizer is not None:
        optim_sd = _unflatten_optimizer(load_file(str(path / OPTIM_TENSORS)),
                                        json.loads((path / OPTIM_JSON).read_text()))
    set_state_dict(model, optimizer if optimizer is not None else [], model_state_dict=model_sd,
                   optim_state_dict=optim_sd, options=StateDictOptions(full_state_dict=True, strict=True))
    state = json.loads((path / STATE_FILE).read_text())
    rng_file = path / f"rng_rank{dist.rank}.json"
    if restore_rng:
        if rng_file.is_file() and state.get("world_size") == dist.world_size:
            set_rng_state(json.loads(rng_file.read_text()))
        else:
            log.warning("%s: saved with %s processes, resumed with %d: RNG streams (dropout) restart from the "
                        "seed, so this run will not repeat the original bit for bit", path, state.get("world_size"),
                        dist.world_size)
    return state


def load_weights(path: str | os.PathLike, model: nn.Module) -> None:
    """Weights only (fine-tuning start): any model checkpoint directory with a matching architecture."""
    path = Path(path)
    cfg = read_checkpoint_config(path)
    saved = GatoConfig.from_dict(cfg["model"])
    current = model.config  # type: ignore[attr-defined]
    # free to differ: regularisation, the name, the training-only head, and the attention window and history
    # (context, markov), which have no parameters (positions are local to a timestep)
    if saved.replace(dropout=current.dropout, name=current.name, aux_outputs=current.aux_outputs,
                     context=current.context, markov=current.markov) != current:
        raise CheckpointError(f"{path}: checkpoint model {saved} differs from the configured model {current}; "
                              f"set model.preset to match it")
    weights = load_file(str(path / MODEL_WEIGHTS))
    model_sd = {k: v for k, v in weights.items() if not k.startswith("aux_head.")}
    if current.aux_outputs:  # the training-only head: the checkpoint's when it has one of this size, else fresh
        same = saved.aux_outputs == current.aux_outputs
        model_sd.update({k: weights[k] if same else v.detach().cpu().clone()
                         for k, v in model.state_dict().items() if k.startswith("aux_head.")})
    set_state_dict(model, [], model_state_dict=model_sd, optim_state_dict={},
                   options=StateDictOptions(full_state_dict=True, strict=True))
