"""Checkpoints: a directory with ``model.safetensors`` (weights) and ``config.json`` (everything else).

``config.json``::

    {"format": "gato_robot.checkpoint", "format_version": 1,
     "model": <GatoConfig fields>, "spec": <RobotSpec.to_dict()>, "tokenizer": <Tokenizer.settings>,
     "metadata": <free-form JSON>}

Nothing is ever unpickled: safetensors holds only named arrays and the rest is JSON. Loading refuses missing,
unexpected or mis-shaped weights with the names in the error, never loads partially.

An exported policy folder (``gato-export-onnx``) holds these two files beside ``model.onnx``, listed with their
sha256 in its manifest, so it is a checkpoint too: :func:`weights_dir` checks them against the manifest before a
fine-tuning run (``--init-from``) loads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gato_robot.core import manifest as policy_manifest
from gato_robot.core.specs import RobotSpec
from gato_robot.model.config import GatoConfig
from gato_robot.model.gato import Gato

FORMAT = "gato_robot.checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, of another format, or does not match its config. Names the path."""


def save_checkpoint(directory: str | os.PathLike, model: Gato, spec: RobotSpec,
                    tokenizer_settings: Mapping[str, Any] | None = None,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the checkpoint directory (created if needed; files written to temporary names, then renamed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "spec": spec.to_dict(),
        "tokenizer": dict(tokenizer_settings or {}),
        "metadata": dict(metadata or {}),
    }
    tmp_weights, tmp_config = out / (WEIGHTS_FILE + ".tmp"), out / (CONFIG_FILE + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    tmp_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_weights, out / WEIGHTS_FILE)
    os.replace(tmp_config, out / CONFIG_FILE)
    return out


def read_checkpoint_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory, after checking its format."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint directory (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} config")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {config.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    for key in ("model", "spec"):
        if key not in config:
            raise CheckpointError(f"{path}: lacks the {key!r} section")
    return config


def load_checkpoint(directory: str | os.PathLike, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None) -> tuple[Gato, RobotSpec]:
    """(model in eval mode on ``device``, its RobotSpec). ``dtype`` casts floating weights (e.g. bfloat16)."""
    config = read_checkpoint_config(directory)
    try:
        cfg = GatoConfig.from_dict(config["model"])
        spec = RobotSpec.from_dict(config["spec"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{directory}/{CONFIG_FILE}: {e}") from e
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}")
    state = load_file(str(weights), device=str(device))
    with torch.device("meta"):
        model = Gato(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{weights} does not match its config: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, wrong shapes {wrong[:8]}"
        )
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval(), spec


def is_export_dir(directory: str | os.PathLike) -> bool:
    """True for an exported policy folder: a ``manifest.json`` of the ONNX policy format (``gato-export-onnx``)."""
    path = Path(directory) / policy_manifest.MANIFEST
    try:  # a training checkpoint's MANIFEST.json is another format (the same name on a case-blind file system)
        return path.is_file() and json.loads(path.read_text()).get("format") == policy_manifest.FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def weights_dir(directory: str | os.PathLike) -> Path:
    """The checkpoint directory to load weights from (fine-tuning): ``directory`` itself. A checkpoint folder is
    returned as it is; an exported policy folder must list the PyTorch weights and their config in its manifest
    (exports since issue 29 part 5 do), every listed file's sha256 is verified, and the config must describe the
    graph's model and spec. Raises CheckpointError naming what is wrong: a folder without weights is told to
    re-export from its checkpoint (the graph alone is not a training state)."""
    directory = Path(directory)
    if not is_export_dir(directory):
        return directory
    try:
        manifest = policy_manifest.verify_manifest(directory)
    except policy_manifest.ModelIntegrityError as e:
        raise CheckpointError(f"{e} (refusing to fine-tune from {directory})") from e
    if not policy_manifest.lists_weights(manifest):
        source = manifest.get("source_checkpoint")
        raise CheckpointError(
            f"{directory}: an exported policy without its PyTorch weights (its manifest lists no "
            f"{' + '.join(policy_manifest.WEIGHTS_FILES)}; exported before they were part of an export), so there "
            "is nothing to fine-tune from: re-export it from the checkpoint it was made from with `gato-export-onnx "
            f"CHECKPOINT {directory}`" + (f" (its manifest names {source})" if source else "")
            + ", or pass that checkpoint folder to --init-from")
    config = read_checkpoint_config(directory)
    ignore = {"aux_outputs"}  # the training-only head is not part of the graph
    for field in ("model", "spec"):
        mine = {k: v for k, v in config[field].items() if field != "model" or k not in ignore}
        theirs = manifest.get(field)
        theirs = {k: v for k, v in theirs.items() if field != "model" or k not in ignore} if isinstance(theirs, dict) else theirs
        diff = policy_manifest.first_difference(mine, theirs, field)
        if diff is not None:
            raise CheckpointError(f"{directory}: the weights' {CONFIG_FILE} differs from the manifest at {diff!r}: "
                                  "they are not the graph's weights; re-export the model")
    return directory
