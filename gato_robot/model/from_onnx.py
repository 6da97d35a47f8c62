"""Recover a PyTorch checkpoint from an exported ONNX policy directory, so a shipped model can be fine-tuned.

    gato-import-onnx ONNX_DIR OUT_DIR [--parity-steps 25]
    python training/train.py --init-from ONNX_DIR ...      # the trainer imports it itself (into OUT/init_from_onnx)

A shipped policy (``models/rgb_stacking_mini``) is an ONNX graph and its manifest, not a checkpoint: the robot
computer needs no torch. To train it further the weights have to come back out of the graph. Most are initializers
under their PyTorch names (``model.blocks.0.ln1.weight``); the exporter folds the others into anonymous constants:
each ``nn.Linear`` weight becomes the transposed right operand of a ``MatMul`` (or the ``B`` of a ``Gemm``), and each
``GroupNorm``'s affine parameters the ``(C, 1, 1)`` operands of the ``Mul`` and ``Add`` after its
``InstanceNormalization``. Equal tensors (a fresh model's zero biases) are stored once, under one of their names. So
every constant a node consumes is also read by the module the node was traced in, which torch's exporter writes
into the node's metadata (``pkg.torch.onnx.name_scopes``), and by that module's type; and a Linear whose
product the graph adds no bias to had an all-zero one, which the exporter's optimizer removed.

Nothing here trusts that mapping: every parameter of the model must be found exactly once with its shape, and the
rebuilt PyTorch policy must then reproduce the ONNX policy's action tokens (all of them) and logits (within 1e-4 of
the logit scale) over generated observations, as the exporter checks in the other direction. The training-only
auxiliary head is not in the graph: the checkpoint has ``aux_outputs = 0``, and a fine-tuning run that asks for the
head starts it fresh.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gato_robot.core.manifest import verify_manifest
from gato_robot.core.specs import RobotSpec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.checkpoint import save_checkpoint
from gato_robot.model.config import GatoConfig
from gato_robot.model.gato import Gato

log = logging.getLogger(__name__)

ONNX_POLICY_FORMAT = "gato_robot.onnx_policy"
_PREFIX = "model."  # the exporter wraps the model as CachedStep.model


def is_onnx_policy_dir(path: str | Path) -> bool:
    """True for a directory written by ``gato-export-onnx`` (a manifest of the ONNX policy format)."""
    import json

    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == ONNX_POLICY_FORMAT
    except (ValueError, OSError):
        return False


def _scopes(node: Any) -> list[str]:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                return list(ast.literal_eval(p.value))
            except (ValueError, SyntaxError):
                return []
    return []


def _module_of(node: Any) -> str | None:
    """The innermost module path (``blocks.0.attn.qkv``) the exporter recorded for a node, if any."""
    scopes = [s for s in _scopes(node) if s.startswith(_PREFIX)]
    return scopes[-1][len(_PREFIX):] if scopes else None


def weights_from_graph(graph: Any, expected: dict[str, tuple[int, ...]],
                       modules: dict[str, type] | None = None) -> dict[str, np.ndarray]:
    """{parameter name: array} for every name in ``expected`` (name -> shape), from an exported graph.

    ``modules`` (module path -> class, from ``named_modules()``) says how each module's parameters appear in the
    graph; every parameter must be found, each candidate the same array. Raises ValueError naming what is
    missing, found twice with different values or of the wrong shape."""
    from onnx import numpy_helper
    from torch import nn

    modules = modules or {}
    inits = {t.name: t for t in graph.initializer}
    found: dict[str, list[np.ndarray]] = {}

    def add(name: str, array: np.ndarray) -> None:
        if name in expected:
            found.setdefault(name, []).append(np.ascontiguousarray(array))

    def arr(x: str) -> np.ndarray:
        return numpy_helper.to_array(inits[x])

    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    zero_bias: set[str] = set()
    for name in inits:  # parameters kept under their own names (identical tensors may share one name)
        if name.startswith(_PREFIX):
            add(name[len(_PREFIX):], arr(name))
    # each node that consumes a constant, by the module it was traced in: this finds the parameters the exporter
    # folded into anonymous constants (transposed Linear weights, GroupNorm's affine) and those whose tensor it
    # stored once under another parameter's name (equal values, e.g. zero biases of a fresh model)
    for node in graph.node:
        module = _module_of(node)
        kind = modules.get(module) if module is not None else None
        if kind is None:
            continue
        ins = list(node.input)
        const = [i for i, x in enumerate(ins) if x in inits]
        if not const:
            continue
        op = node.op_type
        if issubclass(kind, nn.Linear):
            if op == "MatMul" and const == [1]:
                add(module + ".weight", arr(ins[1]).T)
                if not any(c.op_type == "Add" and _module_of(c) == module and any(x in inits for x in c.input)
                           for c in consumers.get(node.output[0], [])):
                    zero_bias.add(module + ".bias")  # the exporter dropped an all-zero bias
            elif op == "Gemm":
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                if 1 in const:
                    add(module + ".weight", arr(ins[1]) if trans_b else arr(ins[1]).T)
                if 2 in const:
                    add(module + ".bias", arr(ins[2]))
                elif len(ins) < 3 or not ins[2]:
                    zero_bias.add(module + ".bias")  # the exporter dropped an all-zero bias
            elif op == "Add" and len(const) == 1 and arr(ins[const[0]]).ndim == 1:
                add(module + ".bias", arr(ins[const[0]]))
        elif (issubclass(kind, nn.LayerNorm) and op == "LayerNormalization") or (issubclass(kind, nn.Conv2d) and op == "Conv"):
            for i, field in ((1, "weight"), (2, "bias")):
                if i in const:
                    add(f"{module}.{field}", arr(ins[i]))
        elif issubclass(kind, nn.Embedding) and op == "Gather" and 0 in const:
            add(module + ".weight", arr(ins[0]))
        elif issubclass(kind, nn.GroupNorm) and op in ("Mul", "Add"):  # the affine after InstanceNormalization
            for i in const:
                a = arr(ins[i])
                if a.ndim == 3 and a.shape[1:] == (1, 1):
                    add(module + (".weight" if op == "Mul" else ".bias"), a.reshape(-1))
    for name in zero_bias:  # a Linear's bias that the graph never adds: all zeros (the optimizer folds 0 away)
        if name in expected and name not in found:
            found[name] = [np.zeros(expected[name], np.float32)]
    problems = []
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        candidates = found.get(name, [])
        if not candidates:
            problems.append(f"{name}: not found")
            continue
        first = candidates[0]
        if any(c.shape != first.shape or not np.array_equal(c, first) for c in candidates[1:]):
            problems.append(f"{name}: {len(candidates)} different candidates")
            continue
        if tuple(first.shape) != tuple(shape):
            problems.append(f"{name}: shape {tuple(first.shape)}, the model has {tuple(shape)}")
            continue
        out[name] = first
    if problems:
        raise ValueError("cannot recover the weights from the ONNX graph: " + "; ".join(problems[:12])
                         + (f" (and {len(problems) - 12} more)" if len(problems) > 12 else ""))
    return out


def import_onnx(onnx_dir: str | Path, out_dir: str | Path, *, parity_steps: int = 25,
                parity_tolerance: float = 1e-4) -> Path:
    """Write a checkpoint directory (``model.safetensors`` + ``config.json``) rebuilt from an ONNX policy
    directory and checked against it. Returns ``out_dir``. Raises ValueError when a check fails."""
    import onnx

    from gato_robot.model.export import ONNX_FILE, check_parity

    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    if not is_onnx_policy_dir(onnx_dir):
        raise ValueError(f"{onnx_dir}: not an ONNX policy directory (no manifest.json of format "
                         f"{ONNX_POLICY_FORMAT!r}; gato-export-onnx writes one)")
    manifest = verify_manifest(onnx_dir)  # checks every file's sha256
    cfg = GatoConfig.from_dict(manifest["model"]).replace(aux_outputs=0)
    spec = RobotSpec.from_dict(manifest["spec"])
    settings = manifest.get("tokenizer") or {}
    with torch.device("meta"):
        skeleton = Gato(cfg)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    modules = {name: type(m) for name, m in skeleton.named_modules()}
    graph = onnx.load(str(onnx_dir / ONNX_FILE), load_external_data=True).graph
    weights = weights_from_graph(graph, expected, modules)
    model = Gato(cfg)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)
    model.eval()
    tokenizer = Tokenizer.from_settings(spec, settings)
    metadata: dict[str, Any] = {"imported_from_onnx": str(onnx_dir.resolve()),
                                "onnx_sha256": manifest["files"][ONNX_FILE]["sha256"],
                                "source_checkpoint": manifest.get("source_checkpoint"),
                                "note": "weights recovered from the ONNX graph; the auxiliary head is not in it"}
    if parity_steps > 0:
        metadata["parity"] = check_parity(model, spec, tokenizer, onnx_dir, steps=parity_steps,
                                          tolerance=parity_tolerance,
                                          mismatch=f"the weights recovered from {onnx_dir} do not reproduce its policy")
    return save_checkpoint(out_dir, model, spec, settings, metadata=metadata)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gato-import-onnx", description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx_dir", help="an ONNX policy directory (model.onnx + manifest.json), e.g. "
                                     "models/rgb_stacking_mini")
    ap.add_argument("out", help="the checkpoint directory to write (model.safetensors + config.json)")
    ap.add_argument("--parity-steps", type=int, default=25,
                    help="control steps over which the rebuilt PyTorch policy must match the ONNX one (0: skip)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = import_onnx(args.onnx_dir, args.out, parity_steps=args.parity_steps)
    except (ValueError, OSError) as e:
        print(f"gato-import-onnx: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
