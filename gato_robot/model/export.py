"""Export a checkpoint to an ONNX policy directory: ``model.onnx`` (+ external data when large) and a manifest.

    gato-export-onnx CHECKPOINT_DIR OUT_DIR [--opset 18] [--parity-steps 25]
    gato-export-onnx CHECKPOINT_DIR OUT_DIR --attention fused --dtype fp16    # the GPU path: model/export_fused.py

The graph is one cached append (``Gato.forward_cached``) with the KV cache as explicit tensors:

| input      | shape                 | dtype   | meaning                                                  |
|------------|-----------------------|---------|----------------------------------------------------------|
| tokens     | (1, n)                | int64   | vocabulary ids of the n tokens appended                  |
| patches    | (1, n, 768)           | float32 | image patches ((row, col, channel) order), 0 elsewhere   |
| patch_row  | (1, n)                | int64   | patch row position bin                                   |
| patch_col  | (1, n)                | int64   | patch column position bin                                |
| local_pos  | (1, n)                | int64   | position inside the timestep                             |
| is_image   | (1, n)                | bool    | image-patch positions                                    |
| past_k_i   | (1, H, S, hd)         | float32 | layer i's keys in the ring-buffer cache (i = 0..L-1,     |
| past_v_i   | (1, H, S, hd)         | float32 | ``gato_robot.model.kv_cache``), S = context + max_append - 1 |
| pos        | ()                    | int64   | tokens appended so far                                   |

outputs: ``logits`` (1, hi - lo) of the last position over the action token range [lo, hi) only (the rest of
the vocabulary is never sampled), ``present_k_i``/``present_v_i`` (the updated cache). The cache is one tensor
per layer, not one stacked (L, ...) tensor: a write into a slice of a stacked tensor exports as a scatter over
all of it, which cost 90% of a tiny model's decode. Batch is fixed at 1; n is
dynamic in [1, max_append], max_append = the spec's largest timestep + 1 (a control step appends
``[last action token] + observation + '|'``, then single action tokens; prompts go in whole timesteps).

Verified at export: every initializer and constant finite; ONNX Runtime (CPU) against ``TorchPolicy`` over
generated observations (greedy action tokens identical, logits within 1e-4 of the logit scale); then the
manifest records the sha256 of every file, the opset and the onnx / onnxruntime / torch versions checked.

Beside the graph the folder keeps its source of truth: the PyTorch weights as the checkpoint was saved
(``model.safetensors`` + ``config.json``, ``gato_robot.model.checkpoint``'s format, so ``load_checkpoint`` reads the
folder), listed and hashed by the manifest like the graph. Fine-tuning starts from them
(``training/train.py --init-from OUT``); the ONNX runtime never reads them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gato_robot.core.manifest import write_manifest
from gato_robot.core.specs import Kind, RobotSpec
from gato_robot.core.stepping import max_append_for
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.embedding import GatoInputs
from gato_robot.model.gato import Gato
from gato_robot.model.kv_cache import capacity_for

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
DEFAULT_OPSET = 18
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's hard limit is 2 GiB; stay clear of it
TOKEN_INPUTS = ("tokens", "patches", "patch_row", "patch_col", "local_pos", "is_image")


def cache_names(prefix: str, n_layer: int) -> list[str]:
    """``past_k_0, past_v_0, past_k_1, ...`` (prefix "past") or ``present_...``: layer-major (k, v) pairs."""
    return [f"{prefix}_{kv}_{i}" for i in range(n_layer) for kv in ("k", "v")]


def input_names(n_layer: int) -> list[str]:
    return [*TOKEN_INPUTS, "pos", *cache_names("past", n_layer)]


def output_names(n_layer: int) -> list[str]:
    return ["logits", *cache_names("present", n_layer)]


class CachedStep(nn.Module):
    """``Gato.forward_cached`` as a pure function of tensors: (inputs, past, pos) -> (action logits, present)."""

    def __init__(self, model: Gato, logits_range: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.lo, self.hi = logits_range

    def forward(self, tokens: torch.Tensor, patches: torch.Tensor, patch_row: torch.Tensor, patch_col: torch.Tensor,
                local_pos: torch.Tensor, is_image: torch.Tensor, pos: torch.Tensor,
                past: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = GatoInputs(tokens, patches, patch_row, patch_col, local_pos, is_image)
        present = [t.clone() for t in past]  # append writes in place: keep the inputs intact
        layers = list(zip(present[0::2], present[1::2]))
        logits = self.model.append(x, layers, pos, logits_ids=(self.lo, self.hi))
        return (logits, *present)


def action_logits_range(ranges: list[tuple[int, int]]) -> tuple[int, int]:
    return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)


def _example_inputs(model: Gato, n: int, max_append: int) -> tuple[torch.Tensor, ...]:
    c = model.config
    cache = model.empty_cache(batch=1, max_append=max_append, device="cpu", dtype=torch.float32)
    past = [t for i in range(c.n_layer) for t in (cache.k[i].clone(), cache.v[i].clone())]
    return (
        torch.zeros(1, n, dtype=torch.long), torch.zeros(1, n, 768), torch.zeros(1, n, dtype=torch.long),
        torch.zeros(1, n, dtype=torch.long), torch.arange(n).view(1, n) % c.local_positions,
        torch.zeros(1, n, dtype=torch.bool), torch.tensor(0, dtype=torch.long), past,
    )


def export_graph(model: Gato, spec: RobotSpec, path: Path, logits_range: tuple[int, int],
                 opset: int = DEFAULT_OPSET) -> list[str]:
    """Write the ONNX graph to ``path``; returns the files written (the .onnx and any external data)."""
    model = model.to("cpu", torch.float32).eval()
    step = CachedStep(model, logits_range).eval()
    max_append = max_append_for(spec)
    n = torch.export.Dim("n", min=1, max=max_append)
    n_layer = model.config.n_layer
    dynamic = (*({1: n} for _ in TOKEN_INPUTS), None, [None] * (2 * n_layer))  # past: one list argument
    example = _example_inputs(model, spec.max_observation_tokens + 2, max_append)
    with torch.no_grad():
        program = torch.onnx.export(
            step, example, dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
            input_names=input_names(n_layer), output_names=output_names(n_layer), verbose=False,
        )
    return save_program(program, model, path)


def save_program(program: Any, model: nn.Module, path: Path) -> list[str]:
    """Save an exported program (weights in external data files beyond EXTERNAL_DATA_BYTES, protobuf's 2 GB limit);
    return the file names written, for the manifest."""
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    program.save(str(path), external_data=external)
    files = [path.name]
    if external:
        files += sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path)
    return files


def check_finite_initializers(path: Path) -> int:
    """Raise ValueError if any initializer or Constant in the graph is NaN/Inf; return how many were checked."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=True).graph
    tensors = [(t.name, t) for t in graph.initializer]
    tensors += [(f"{n.name or n.output[0]}", a.t) for n in graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    for name, t in tensors:
        arr = numpy_helper.to_array(t)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{path}: initializer {name!r} holds non-finite values; refusing to export")
    return len(tensors)


def generated_observations(spec: RobotSpec, steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Deterministic synthetic observations with slowly varying content (a stand-in for a recorded episode)."""
    rng = np.random.default_rng(seed)
    base = {s.name: rng.integers(0, 256, s.shape, dtype=np.uint8) if s.kind is Kind.IMAGE
            else rng.normal(0, 0.5, s.shape) for s in spec.observations if s.kind is not Kind.TEXT}
    out = []
    for t in range(steps):
        obs: dict[str, Any] = {}
        for s in spec.observations:
            if s.kind is Kind.IMAGE:
                obs[s.name] = np.roll(base[s.name], t, axis=1)
            elif s.kind is Kind.TEXT:
                obs[s.name] = "stack the red object on the blue object"
            elif s.kind is Kind.DISCRETE:
                obs[s.name] = (rng.integers(0, s.num_values, s.shape)).astype(np.int64)
            else:
                obs[s.name] = base[s.name] + 0.05 * np.sin(0.1 * t + np.arange(s.size).reshape(s.shape))
        out.append(obs)
    return out


def parity(torch_policy: Any, onnx_policy: Any, observations: list[dict[str, Any]]) -> dict[str, float]:
    """Run both policies greedily on the same observations; compare action tokens and action logits."""
    ts, os_ = torch_policy.initial_state(), onnx_policy.initial_state()
    agree = total = 0
    worst = 0.0
    for obs in observations:
        _, ts = torch_policy.step(obs, ts)
        _, os_ = onnx_policy.step(obs, os_)
        agree += int(np.sum(ts.action_tokens == os_.action_tokens))
        total += ts.action_tokens.size
        ref, got = np.asarray(ts.logits), np.asarray(os_.logits)
        worst = max(worst, float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12)))
    return {"steps": len(observations), "token_agreement": agree / max(total, 1), "max_rel_logit_error": worst}


def check_parity(model: Gato, spec: RobotSpec, tokenizer: Tokenizer, onnx_dir: Path, *, steps: int,
                 tolerance: float, mismatch: str) -> dict[str, float]:
    """``parity`` of ``model`` (PyTorch) against the ONNX policy in ``onnx_dir`` (CPU) over ``steps`` generated
    observations; raises ValueError(``mismatch``: result) unless every action token agrees and the logits are
    within ``tolerance`` of the logit scale."""
    from gato_robot.model.policy import TorchPolicy
    from gato_robot.runtime.onnx_policy import OnnxPolicy

    torch_policy = TorchPolicy(model, spec, tokenizer=tokenizer, record_logits=True)
    onnx_policy = OnnxPolicy(onnx_dir, providers="cpu", tokenizer=tokenizer)
    result = parity(torch_policy, onnx_policy, generated_observations(spec, steps))
    log.info("parity over %d steps: token agreement %.4f, max relative logit error %.2e",
             result["steps"], result["token_agreement"], result["max_rel_logit_error"])
    if result["token_agreement"] < 1.0 or result["max_rel_logit_error"] > tolerance:
        raise ValueError(f"{mismatch}: {result}")
    return result


def export_onnx(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                parity_steps: int = 25, parity_tolerance: float = 1e-4, temperature: float | None = None) -> Path:
    """Export, verify and write the manifest. Returns ``out_dir``. Raises ValueError when a check fails.
    ``temperature``: the sampling the model was evaluated at, recommended to every entry point
    (``sampling.json``, listed and hashed by the manifest: ``gato_robot.runtime.contract``); None: none."""
    import onnx
    import onnxruntime

    from gato_robot.model.checkpoint import load_checkpoint, read_checkpoint_config

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    model, spec = load_checkpoint(checkpoint_dir, device="cpu")
    settings = read_checkpoint_config(checkpoint_dir).get("tokenizer") or {}
    tokenizer = Tokenizer.from_settings(spec, settings)
    logits_range = action_logits_range(tokenizer.action_token_ranges())
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        files = weights_files(staging, model, spec, settings, checkpoint_dir)  # before export_graph casts to fp32
        files += export_graph(model, spec, staging / ONNX_FILE, logits_range, opset)
        files += recommendation_files(staging, temperature)
        n_checked = check_finite_initializers(staging / ONNX_FILE)
        c = model.config
        fields = {
            "opset": opset, "onnx_version": onnx.__version__, "onnxruntime_version": onnxruntime.__version__,
            "torch_version": torch.__version__, "model": c.to_dict(), "spec": spec.to_dict(), "tokenizer": settings,
            "logits_range": list(logits_range), "inputs": input_names(c.n_layer), "outputs": output_names(c.n_layer),
            "cache": {"layers": c.n_layer, "heads": c.n_head, "capacity": capacity_for(c.context, max_append_for(spec)),
                      "head_dim": c.head_dim, "max_append": max_append_for(spec), "window": c.context,
                      "dtype": "float32"},
            "source_checkpoint": str(checkpoint_dir.resolve()), "initializers_checked_finite": n_checked,
        }
        from gato_robot.runtime.trust import bind_fields

        bind_fields(staging / ONNX_FILE, fields)  # the fields, inside the file the manifest hashes (format 2)
        write_manifest(staging, files, **fields)
        if parity_steps > 0:
            result = check_parity(model, spec, tokenizer, staging, steps=parity_steps, tolerance=parity_tolerance,
                                  mismatch="ONNX export does not match PyTorch")
            write_manifest(staging, files, **fields, parity=result)
        for name in [*files, "manifest.json"]:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def weights_files(directory: Path, model: Gato, spec: RobotSpec, settings: dict[str, Any],
                  checkpoint_dir: Path | None = None) -> list[str]:
    """Write the PyTorch weights and their config (a checkpoint: ``model.safetensors`` + ``config.json``, with the
    source checkpoint's metadata) into an export folder: the files to hash. Call it before the graph export, which
    casts the model to fp32: the weights are stored as the checkpoint holds them."""
    from gato_robot.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_config, save_checkpoint

    metadata = {}
    if checkpoint_dir is not None and (checkpoint_dir / CONFIG_FILE).is_file():
        metadata = read_checkpoint_config(checkpoint_dir).get("metadata") or {}
    save_checkpoint(directory, model, spec, settings, metadata=metadata)
    shutil.copymode(directory / CONFIG_FILE, directory / WEIGHTS_FILE)  # safetensors writes 0600: readable like the rest
    return [WEIGHTS_FILE, CONFIG_FILE]


def recommendation_files(directory: Path, temperature: float | None) -> list[str]:
    """Write the recommended sampling (``sampling.json``) when ``temperature`` is given: the files to hash."""
    if temperature is None:
        return []
    from gato_robot.runtime.contract import write_recommendation

    return [write_recommendation(directory, temperature, "the temperature this model was evaluated at")]


def export_random_policy(root: str | os.PathLike, *, context: int | None = None, seed: int = 0,
                         parity_steps: int = 2, robot: str = "panda") -> Path:
    """A random-weight ``tiny`` Gato for the 2-camera RGB-stacking spec of ``robot`` (a robot file's name or path):
    ``root/checkpoint`` and its ONNX export ``root/policy`` (returned; reused when already there). For demos, tests
    and benchmarks of the plumbing: it moves an arm, it cannot stack."""
    from gato_robot.model.checkpoint import save_checkpoint
    from gato_robot.model.config import preset
    from gato_robot.robots import load_embodiment

    root = Path(root)
    out = root / "policy"
    if (out / "manifest.json").is_file():
        return out
    torch.manual_seed(seed)
    spec = load_embodiment(robot).spec(2)  # the Panda's is rgb_stacking_spec(2)
    cfg = preset("tiny") if context is None else preset("tiny", context=context)
    save_checkpoint(root / "checkpoint", Gato(cfg).eval(), spec, Tokenizer(spec).settings,
                    metadata={"note": "random weights: a plumbing demo, not a trained policy"})
    return export_onnx(root / "checkpoint", out, parity_steps=parity_steps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gato-export-onnx", description="Export a gato_robot checkpoint to ONNX.")
    ap.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    ap.add_argument("out", help="output directory for model.onnx, the PyTorch weights (model.safetensors + config.json) "
                                "and manifest.json")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--parity-steps", type=int, default=None,
                    help="control steps compared with PyTorch (0: skip; default 25, and 400 = one whole RGB-stacking "
                         "episode per compared episode for --attention fused or a 16-bit --dtype)")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"),
                    help="weights, activations and cache (16-bit: model/export_fused.py, parity over whole episodes)")
    ap.add_argument("--attention", default="plain", choices=("plain", "fused"),
                    help="fused: ONNX Runtime's GroupQueryAttention appending in place (model/export_fused.py)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="the sampling temperature the model was evaluated at (0: greedy), written to OUT/sampling.json "
                         "(hashed by the manifest); the benchmark, demo and ROS stack use it unless told otherwise. "
                         "Default: no recommendation (they decode greedily)")
    ap.add_argument("--sign-key", type=Path, default=None, metavar="PRIVATE_KEY_PEM",
                    help="sign the exported folder with this elliptic-curve private key (writes OUT/model.sig; "
                         "gato_robot.runtime.trust)")
    args = ap.parse_args(argv)
    if args.sign_key is not None and not args.sign_key.is_file():  # before minutes of export
        ap.error(f"--sign-key {args.sign_key}: no such private key file")
    if args.temperature is not None:
        from gato_robot.runtime.contract import check_temperature

        try:
            check_temperature(args.temperature, "--temperature")
        except ValueError as e:
            ap.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if (args.dtype, args.attention) == ("fp32", "plain"):  # the reference path
            out = export_onnx(args.checkpoint, args.out, opset=args.opset, temperature=args.temperature,
                              parity_steps=25 if args.parity_steps is None else args.parity_steps)
        else:
            from gato_robot.model.export_fused import export_onnx_fast

            out = export_onnx_fast(args.checkpoint, args.out, attention=args.attention, dtype=args.dtype,
                                   opset=args.opset, temperature=args.temperature, parity_steps=400 if args.parity_steps is None else args.parity_steps)
        from gato_robot.runtime.trust import SIGNATURE_FILE, sign_model

        if args.sign_key is not None:
            print(f"signed with {args.sign_key}: {sign_model(out, args.sign_key)}")
        elif (out / SIGNATURE_FILE).exists():  # an earlier export's signature no longer matches the new files
            (out / SIGNATURE_FILE).unlink()
            print(f"removed the earlier export's {out / SIGNATURE_FILE}: it does not cover these files")
    except (ValueError, FileNotFoundError) as e:
        print(f"gato-export-onnx: {e}", file=sys.stderr)
        return 2
    print(f"exported {out / ONNX_FILE} with {out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
