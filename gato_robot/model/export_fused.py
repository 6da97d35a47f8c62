"""The fast export: 16-bit weights and ONNX Runtime's fused attention with an in-place, fixed-size cache.

    gato-export-onnx CHECKPOINT OUT --attention fused --dtype fp16     (export.py's CLI; this module does the work)

``export.py`` stays the reference path (fp32, plain attention, ring-buffer cache written by ``index_copy``).
This module adds two independent choices, recorded in the manifest so that ``OnnxPolicy`` needs no guessing:

- ``dtype`` fp32 / fp16 / bf16: weights, activations and the cache in that type. Inputs (tokens, patches) and the
  action logits stay as in the reference graph (int64 / float32), so the runtime's per-step copies do not change.
- ``attention`` plain / fused. ``fused`` replaces each layer's attention and cache write by one
  ``com.microsoft.GroupQueryAttention`` node (kv_num_heads = num_heads: plain multi-head attention) on packed QKV,
  with ``sliding_window_cache=1``: the op keeps the last ``context`` keys/values of the layer contiguously in a
  (1, H, context, hd) buffer, appends the chunk in place when past and present are bound to the same buffer,
  evicts internally, and masks each query to ``local_window_size = context`` keys, itself included: the window
  of ``kv_cache``. The CUDA kernel requires capacity == local_window_size. Contract read from the installed
  onnxruntime's registered schema (``get_all_operator_schema``, the text of docs/ContribOperators.md) for 1.31.1
  and 1.32.0; the window's count (itself included, not ``local_window_size`` keys before it) was measured on the
  CPU provider of 1.32.0: with ``context - 1`` the logits drift by 1e-3 as soon as the window slides, with
  ``context`` they match PyTorch to 3e-7. The GPU suite checks the CUDA kernel the same way.

Graph inputs of a fused export: the reference inputs (``pos`` included), plus ``total_sequence_length`` (int32
scalar, ``pos + n``), which the op reads on the host (``InputMemoryType(OrtMemTypeCPUInput, 6)`` in its CUDA
registration): the runtime binds it in CPU memory so that no Memcpy node is needed. ``seqlens_k`` = pos + n - 1 is
computed in the graph from ``pos`` on the device.

Checked at export (``check_fused_graph``): the fused-op count equals the number of layers; whether this onnxruntime's
CUDA provider has a kernel for the op in this dtype (GroupQueryAttention's CUDA kernels are float16 and bfloat16
only: an fp32 fused graph would run its attention on the CPU provider); and, where a CUDA provider loads, the
optimized graph's node placement: every fused op on CUDA and no Memcpy node, or the manifest and the log say which
nodes fall back.

Parity: fp32 graphs must match PyTorch exactly in action tokens (as the reference export); 16-bit graphs are
compared with the fp32 PyTorch model over whole episodes (``parity_16bit``) and must stay within
``PARITY_16BIT`` (thresholds and why there).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gato_robot.core.manifest import write_manifest
from gato_robot.core.specs import RobotSpec
from gato_robot.core.stepping import max_append_for
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.embedding import GatoInputs
from gato_robot.model.export import (
    DEFAULT_OPSET,
    ONNX_FILE,
    TOKEN_INPUTS,
    action_logits_range,
    cache_names,
    check_finite_initializers,
    generated_observations,
    parity,
    recommendation_files,
    save_program,
    weights_files,
)
from gato_robot.model.gato import Gato
from gato_robot.model.kv_cache import capacity_for

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # manifest / ONNX tensor type names
ATTENTION = ("plain", "fused")
FUSED_OP, MS_DOMAIN = "GroupQueryAttention", "com.microsoft"
HOST_INPUT = "total_sequence_length"
# Types of the CUDA provider's GroupQueryAttention kernels: onnxruntime/contrib_ops/cuda/bert/group_query_attention.cc
# registers (T, T_CACHE) = (MLFloat16, MLFloat16), (BFloat16, BFloat16) and quantized caches; no float32.
CUDA_KERNEL_TYPES = {FUSED_OP: ("float16", "bfloat16")}

# 16-bit parity against the fp32 PyTorch model, teacher-forced (both sides append the reference's action tokens, so
# every decision is made on the same history). Why these bounds: fp16 rounds each value to 2^-11 relative (bf16:
# 2^-8); through L residual layers the logit error grows to a few times that, so the action logits (scale ~1-10)
# move by ~1e-3 (fp16) / ~1e-2 (bf16) of their scale. An action token can then differ only where the reference's
# two best bins are closer than that error (near ties, common with random weights); a lower agreement, or a larger
# error, means overflow or a broken op, not rounding.
PARITY_16BIT = {
    "fp16": {"min_token_agreement": 0.98, "max_rel_logit_error": 2e-2},
    "bf16": {"min_token_agreement": 0.95, "max_rel_logit_error": 8e-2},
}


# -- the fused attention op, as a torch custom op exported to com.microsoft.GroupQueryAttention -------------------
@torch.library.custom_op("gato_export::group_query_attention", mutates_args=())
def group_query_attention(qkv: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, seqlens_k: torch.Tensor,
                          total_sequence_length: torch.Tensor, num_heads: int,
                          window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eager reference of the exported op (sliding_window_cache=1, capacity C == window, batch 1).

    qkv (1, n, 3D) packed [q | k | v], each (H, hd) head-major; past_k/v (1, H, C, hd): rows [0, L) hold the
    last L = min(T - n, C) keys in order, T = seqlens_k + 1. Returns y (1, n, D) and the present buffers, rows
    [0, min(T, C)) = the last keys. Query at absolute position a sees keys a - window + 1 .. a.
    """
    _, n, d3 = qkv.shape
    d, (_, h, cap, hd) = d3 // 3, past_k.shape
    t = int(seqlens_k.reshape(-1)[0]) + 1
    q, k, v = (qkv[..., i * d:(i + 1) * d].view(1, n, h, hd).transpose(1, 2) for i in range(3))  # (1, H, n, hd)
    resident = min(t - n, cap)
    keys = torch.cat([past_k[:, :, :resident], k], dim=2)  # (1, H, resident + n, hd), positions t-n-resident .. t-1
    values = torch.cat([past_v[:, :, :resident], v], dim=2)
    key_pos = torch.arange(t - n - resident, t)
    query_pos = torch.arange(t - n, t).unsqueeze(1)
    mask = (key_pos <= query_pos) & (key_pos > query_pos - window)  # (n, resident + n)
    y = nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (1, H, n, hd)
    keep = min(t, cap)
    present_k, present_v = torch.zeros_like(past_k), torch.zeros_like(past_v)
    present_k[:, :, :keep], present_v[:, :, :keep] = keys[:, :, -keep:], values[:, :, -keep:]
    return y.transpose(1, 2).reshape(1, n, d), present_k, present_v


@group_query_attention.register_fake
def _(qkv, past_k, past_v, seqlens_k, total_sequence_length, num_heads, window):
    b, n, d3 = qkv.shape
    return qkv.new_empty(b, n, d3 // 3), torch.empty_like(past_k), torch.empty_like(past_v)


def _gqa_onnx_op() -> Any:
    """An onnxscript op for com.microsoft.GroupQueryAttention (onnx itself has no schema for contrib ops)."""
    from onnx.defs import OpSchema
    from onnxscript.values import Op, Opset

    fp, opt = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
    floats = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    schema = OpSchema(
        FUSED_OP, MS_DOMAIN, 1,
        inputs=[fp("query", "T"), fp("key", "T", param_option=opt), fp("value", "T", param_option=opt),
                fp("past_key", "T", param_option=opt), fp("past_value", "T", param_option=opt),
                fp("seqlens_k", "M"), fp("total_sequence_length", "M")],
        outputs=[fp("output", "T"), fp("present_key", "T", param_option=opt),
                 fp("present_value", "T", param_option=opt)],
        type_constraints=[("T", floats, "float types"), ("M", ["tensor(int32)"], "lengths")],
        attributes=[OpSchema.Attribute(a, OpSchema.AttrType.INT, a)
                    for a in ("num_heads", "kv_num_heads", "local_window_size", "sliding_window_cache")],
    )
    return Op(Opset(MS_DOMAIN, 1), FUSED_OP, schema)


def _translation_table() -> dict[Any, Any]:
    gqa = _gqa_onnx_op()

    def group_query_attention_onnx(qkv, past_k, past_v, seqlens_k, total_sequence_length, num_heads: int,
                                   window: int):
        return gqa(qkv, None, None, past_k, past_v, seqlens_k, total_sequence_length, num_heads=num_heads,
                   kv_num_heads=num_heads, local_window_size=window, sliding_window_cache=1)

    return {torch.ops.gato_export.group_query_attention.default: group_query_attention_onnx}


# -- the exported step modules ------------------------------------------------------------------------------------
class Float32Patch(nn.Module):
    """The patch ResNet block run in float32 inside a 16-bit graph: (N, P) in any float type -> (N, D) same type."""

    def __init__(self, patch: nn.Module) -> None:
        super().__init__()
        self.inner = patch

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.inner(patches.float()).to(patches.dtype)


class PlainStep(nn.Module):
    """``export.CachedStep`` in any dtype: the reference ring-buffer graph, logits returned as float32."""

    def __init__(self, model: Gato, logits_range: tuple[int, int]) -> None:
        super().__init__()
        self.model, (self.lo, self.hi) = model, logits_range

    def forward(self, tokens: torch.Tensor, patches: torch.Tensor, patch_row: torch.Tensor, patch_col: torch.Tensor,
                local_pos: torch.Tensor, is_image: torch.Tensor, pos: torch.Tensor,
                past: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = GatoInputs(tokens, patches, patch_row, patch_col, local_pos, is_image)
        present = [t.clone() for t in past]
        logits = self.model.append(x, list(zip(present[0::2], present[1::2])), pos, logits_ids=(self.lo, self.hi))
        return (logits.float(), *present)


class FusedStep(nn.Module):
    """One cached append with each layer's attention as the fused op: (inputs, pos, total, past) -> (logits, present).

    The model's own modules (embedding, norms, projections, MLPs, head) are reused as they are; only the attention
    core and the cache write change. ``window = context`` keys per query, itself included (``kv_cache``).
    """

    def __init__(self, model: Gato, logits_range: tuple[int, int]) -> None:
        super().__init__()
        self.model, (self.lo, self.hi) = model, logits_range
        self.n_head, self.window = model.config.n_head, model.config.context

    def forward(self, tokens: torch.Tensor, patches: torch.Tensor, patch_row: torch.Tensor, patch_col: torch.Tensor,
                local_pos: torch.Tensor, is_image: torch.Tensor, pos: torch.Tensor, total_sequence_length: torch.Tensor,
                past: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        # (1,) tokens in the cache after this append, minus 1. n is counted on the device (ConstantOfShape takes its
        # shape in host memory, ReduceSum runs on the device): pos + tokens.shape[1] would add a host-side Shape
        # value to a device tensor and make the CUDA provider insert a Memcpy node
        n = torch.ones_like(tokens).sum(dim=1)  # (1,)
        seqlens_k = (pos + n - 1).to(torch.int32)
        h = self.model.embed(GatoInputs(tokens, patches, patch_row, patch_col, local_pos, is_image))  # (1, n, D)
        present: list[torch.Tensor] = []
        for i, block in enumerate(self.model.blocks):
            qkv = block.attn.qkv(block.ln1(h))  # (1, n, 3D): [q | k | v], the op's packed-QKV layout
            y, k, v = torch.ops.gato_export.group_query_attention(
                qkv, past[2 * i], past[2 * i + 1], seqlens_k, total_sequence_length, self.n_head, self.window)
            h = h + block.attn.proj(y)
            h = h + block.mlp(block.ln2(h))
            present += [k, v]
        return (self.model.head(h[:, -1], (self.lo, self.hi)).float(), *present)


def cache_capacity(attention: str, context: int, max_append: int) -> int:
    """Slots per layer: the reference ring buffer needs window + max_append - 1; the fused op keeps the window."""
    return context if attention == "fused" else capacity_for(context, max_append)


def graph_input_names(attention: str, n_layer: int) -> list[str]:
    host = [HOST_INPUT] if attention == "fused" else []
    return [*TOKEN_INPUTS, "pos", *host, *cache_names("past", n_layer)]


def graph_output_names(n_layer: int) -> list[str]:
    return ["logits", *cache_names("present", n_layer)]


def export_graph_fast(model: Gato, spec: RobotSpec, path: Path, logits_range: tuple[int, int], *,
                      attention: str = "fused", dtype: str = "fp16", opset: int = DEFAULT_OPSET) -> list[str]:
    """Write the graph to ``path``; returns the files written (the .onnx and any external data)."""
    if attention not in ATTENTION or dtype not in DTYPES:
        raise ValueError(f"attention must be one of {ATTENTION} and dtype one of {list(DTYPES)}, "
                         f"got {attention!r}, {dtype!r}")
    c = model.config
    if attention == "fused" and c.head_dim % 8:
        raise ValueError(f"fused attention needs a head dim that is a multiple of 8 (GroupQueryAttention), "
                         f"this model has {c.head_dim}; export with --attention plain")
    torch_dtype = DTYPES[dtype]
    model = copy.deepcopy(model).to("cpu", torch_dtype).eval()  # the caller's fp32 model stays the reference
    if dtype == "bf16":  # ONNX Conv takes no bfloat16 at opset 18: the patch block (0.1% of the FLOPs) stays fp32
        model.embed.patch = Float32Patch(model.embed.patch.float())
    max_append = max_append_for(spec)
    capacity = cache_capacity(attention, c.context, max_append)
    n_ex = spec.max_observation_tokens + 2
    past = [torch.zeros(1, c.n_head, capacity, c.head_dim, dtype=torch_dtype) for _ in range(2 * c.n_layer)]
    token_inputs = (torch.zeros(1, n_ex, dtype=torch.long), torch.zeros(1, n_ex, 768),
                    torch.zeros(1, n_ex, dtype=torch.long), torch.zeros(1, n_ex, dtype=torch.long),
                    torch.arange(n_ex).view(1, n_ex) % c.local_positions, torch.zeros(1, n_ex, dtype=torch.bool))
    n = torch.export.Dim("n", min=1, max=max_append)
    dynamic: tuple[Any, ...] = tuple({1: n} for _ in TOKEN_INPUTS)
    if attention == "fused":
        step: nn.Module = FusedStep(model, logits_range).eval()
        example = (*token_inputs, torch.tensor(0), torch.tensor(n_ex, dtype=torch.int32), past)
        dynamic += (None, None, [None] * len(past))
        table = _translation_table()
    else:
        step = PlainStep(model, logits_range).eval()
        example = (*token_inputs, torch.tensor(0), past)
        dynamic += (None, [None] * len(past))
        table = None
    with torch.no_grad():
        program = torch.onnx.export(
            step, example, dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
            input_names=graph_input_names(attention, c.n_layer), output_names=graph_output_names(c.n_layer),
            custom_translation_table=table, verbose=False,
        )
    return save_program(program, model, path)


# -- checks -------------------------------------------------------------------------------------------------------
def node_placement(path: Path, providers: list[Any]) -> dict[str, Any]:
    """Create a session on ``providers`` and report where its optimized graph's nodes run: nodes per provider,
    Memcpy nodes, and the op types that did not land on the first provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    session = ort.InferenceSession(str(path), options, providers=providers)
    first = session.get_providers()[0]
    per_provider: dict[str, int] = {}
    off_first: dict[str, int] = {}
    fused_on_first = memcpy = 0
    for subgraph in session.get_provider_graph_assignment_info():
        for node in subgraph.get_nodes():
            per_provider[subgraph.ep_name] = per_provider.get(subgraph.ep_name, 0) + 1
            memcpy += node.op_type.startswith("Memcpy")
            if subgraph.ep_name == first:
                fused_on_first += node.op_type == FUSED_OP
            else:
                off_first[node.op_type] = off_first.get(node.op_type, 0) + 1
    return {"provider": first, "nodes_per_provider": per_provider, "memcpy_nodes": memcpy,
            "fused_ops_on_provider": fused_on_first, "op_types_elsewhere": off_first}


def check_fused_graph(path: Path, n_layer: int, dtype: str) -> dict[str, Any]:
    """The fused-op count must equal the layers (ValueError otherwise); report the CUDA kernel coverage and, where
    CUDA loads, the node placement (a graph that would fall back, or copy, is logged and marked ``falls_back``)."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path), load_external_data=False).graph
    count = sum(n.op_type == FUSED_OP and n.domain == MS_DOMAIN for n in graph.node)
    if count != n_layer:
        raise ValueError(f"{path}: {count} {FUSED_OP} nodes for {n_layer} layers; the attention did not export fused")
    type_name = DTYPE_NAMES[dtype]
    has_kernel = type_name in CUDA_KERNEL_TYPES[FUSED_OP]
    report: dict[str, Any] = {"fused_op": f"{MS_DOMAIN}.{FUSED_OP}", "fused_ops": count, "layers": n_layer,
                              "cuda_kernel_for_dtype": has_kernel}
    if not has_kernel:
        report["cuda_note"] = (f"onnxruntime's CUDA {FUSED_OP} kernels take {CUDA_KERNEL_TYPES[FUSED_OP]} only: "
                               f"on CUDA a {type_name} fused graph runs its attention on the CPU provider, with "
                               "Memcpy nodes around it; export --dtype fp16 or bf16 for the GPU")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        report["cuda_placement"] = {"checked": False, "reason": "this onnxruntime build has no CUDA provider"}
    else:
        try:
            placement = node_placement(path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
        except Exception as e:  # no GPU or a broken CUDA install: say so, the CPU checks still stand
            report["cuda_placement"] = {"checked": False, "reason": f"{type(e).__name__}: {e}"}
        else:
            falls_back = (placement["provider"] != "CUDAExecutionProvider" or placement["memcpy_nodes"] > 0
                          or placement["fused_ops_on_provider"] != n_layer)
            report["cuda_placement"] = {"checked": True, "falls_back": falls_back, **placement}
    if not has_kernel or report["cuda_placement"].get("falls_back"):
        log.warning("%s: the fused graph would not run entirely on CUDA: %s", path,
                    report.get("cuda_note") or report["cuda_placement"])
    return report


def parity_16bit(torch_policy: Any, onnx_policy: Any, observations: list[dict[str, Any]]) -> dict[str, Any]:
    """16-bit ONNX policy against the fp32 PyTorch policy over one episode, two ways.

    teacher-forced: at every action dimension both sides have the same history (the ONNX side appends the tokens
    PyTorch chose), so agreement and logit error measure the arithmetic alone; free-running: ``export.parity``,
    each side appends its own choices (a flip changes the rest of the episode), reported for what control sees.
    """
    ts, os_ = torch_policy.initial_state(), onnx_policy.initial_state()
    agree = total = 0
    worst = 0.0
    for obs in observations:
        _, ts = torch_policy.step(obs, ts)
        block = onnx_policy.tokenizer.tokenize_observation(obs)
        logits, n_obs, os_ = onnx_policy.observe(block, os_)
        for j, (lo, hi) in enumerate(onnx_policy.ranges):
            ref = np.asarray(ts.logits[j])
            worst = max(worst, float(np.max(np.abs(logits - ref)) / max(float(np.max(np.abs(ref))), 1e-12)))
            choice = lo + int(np.argmax(logits[lo - onnx_policy.logits_lo: hi - onnx_policy.logits_lo]))
            agree += int(choice == int(ts.action_tokens[j]))
            total += 1
            if j + 1 < len(onnx_policy.ranges):
                logits = onnx_policy.append_action(int(ts.action_tokens[j]), j, n_obs, os_)
        onnx_policy.finish_step(np.asarray(ts.action_tokens, np.int64), n_obs, os_)
    free = parity(torch_policy, onnx_policy, observations)
    return {"steps": len(observations), "token_agreement": agree / max(total, 1), "max_rel_logit_error": worst,
            "free_running_token_agreement": free["token_agreement"],
            "free_running_max_rel_logit_error": free["max_rel_logit_error"]}


def check_parity_any(model: Gato, spec: RobotSpec, tokenizer: Tokenizer, onnx_dir: Path, *, dtype: str,
                     episodes: int, steps: int, providers: str = "auto",
                     reference_device: str = "cpu") -> tuple[dict[str, float], dict[str, Any]]:
    """Parity of the export in ``onnx_dir`` with the fp32 ``model`` over ``episodes`` generated episodes.

    Returns (numbers, notes): the manifest's ``parity`` (numbers only) and ``parity_notes`` (provider, what it was
    compared with, or why nothing was measured). fp32: every action token equal and logits within 1e-4 of their
    scale, on the CPU provider (ValueError else). 16-bit: ``parity_16bit`` on CUDA where it loads, else CPU;
    ValueError beyond ``PARITY_16BIT``; a provider that cannot run the graph at all (e.g. no bfloat16 kernels on
    CPU) is recorded as not measured, with the reason.
    """
    from gato_robot.model.policy import TorchPolicy
    from gato_robot.runtime.onnx_policy import OnnxPolicy

    bounds = {"min_token_agreement": 1.0, "max_rel_logit_error": 1e-4} if dtype == "fp32" else PARITY_16BIT[dtype]
    notes: dict[str, Any] = {"measured": False, "dtype": DTYPE_NAMES[dtype],
                             "compared_with": "fp32 PyTorch (TorchPolicy), " + (
                                 "free-running" if dtype == "fp32" else "teacher-forced; free-running reported")}
    try:
        onnx_policy = OnnxPolicy(onnx_dir, providers="cpu" if dtype == "fp32" else providers, tokenizer=tokenizer)
    except Exception as e:  # e.g. NOT_IMPLEMENTED: no kernel for this type on this provider
        if dtype == "fp32":  # the CPU provider runs every fp32 graph: a failure here is a broken export
            raise
        notes["reason"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        log.warning("%s parity not measured: %s", dtype, notes["reason"])
        return {}, notes
    notes["provider"] = onnx_policy.provider
    results = []
    for episode in range(episodes):
        torch_policy = TorchPolicy(model, spec, tokenizer=tokenizer, record_logits=True, device=reference_device)
        observations = generated_observations(spec, steps, seed=episode)
        compare = parity if dtype == "fp32" else parity_16bit
        try:
            results.append(compare(torch_policy, onnx_policy, observations))
        except Exception as e:  # a kernel that fails only at run time
            if dtype == "fp32":
                raise
            notes["reason"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            log.warning("%s parity not measured: %s", dtype, notes["reason"])
            return {}, notes
    numbers: dict[str, float] = {"episodes": episodes, "steps_per_episode": steps}
    for key in results[0]:
        if key != "steps":
            values = [r[key] for r in results]
            numbers[key] = min(values) if "agreement" in key else max(values)
    numbers["min_token_agreement_required"] = bounds["min_token_agreement"]
    numbers["max_rel_logit_error_allowed"] = bounds["max_rel_logit_error"]
    notes["measured"] = True
    log.info("parity (%s on %s): %s", dtype, onnx_policy.provider, numbers)
    if numbers["token_agreement"] < bounds["min_token_agreement"] or \
            numbers["max_rel_logit_error"] > bounds["max_rel_logit_error"]:
                raise ValueError(f"the {dtype} export does not match PyTorch within its thresholds: {numbers}")
    return numbers, notes


def _bind(path: Path, fields: dict[str, Any]) -> None:
    """Bind the manifest fields into the graph's metadata where this checkout has ``runtime.trust`` (format 2)."""
    try:
        from gato_robot.runtime.trust import bind_fields
    except ImportError:
        return
    bind_fields(path, fields)


# -- the export ---------------------------------------------------------------------------------------------------
def export_onnx_fast(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, *, attention: str = "fused",
                     dtype: str = "fp16", opset: int = DEFAULT_OPSET, parity_episodes: int = 2,
                     parity_steps: int = 400, parity_providers: str = "auto", reference_device: str = "cpu",
                     model: Gato | None = None, spec: RobotSpec | None = None,
                     temperature: float | None = None) -> Path:
    """Export, check and write the manifest (``export.export_onnx``'s layout plus ``attention``, ``dtype``, the
    fused-graph check and the parity record). ``model``/``spec`` given: nothing is read from ``checkpoint_dir``
    (benchmarks); ``reference_device``: where the fp32 PyTorch reference of the parity check runs (the model is moved there)."""
    import onnx
    import onnxruntime

    from gato_robot.model.checkpoint import load_checkpoint, read_checkpoint_config

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    from_memory = model is not None and spec is not None
    if not from_memory:
        model, spec = load_checkpoint(checkpoint_dir, device="cpu")
        settings = read_checkpoint_config(checkpoint_dir).get("tokenizer") or {}
    else:  # a model in memory (benchmarks): the spec's default tokenizer, nothing read from checkpoint_dir
        settings = Tokenizer(spec).settings
    tokenizer = Tokenizer.from_settings(spec, settings)
    logits_range = action_logits_range(tokenizer.action_token_ranges())
    c = model.config
    max_append = max_append_for(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        files = weights_files(staging, model, spec, settings, None if from_memory else checkpoint_dir)
        files += export_graph_fast(model, spec, staging / ONNX_FILE, logits_range, attention=attention, dtype=dtype,
                                   opset=opset)
        files += recommendation_files(staging, temperature)  # sampling.json: the recommended sampling
        fields: dict[str, Any] = {
            "opset": opset, "onnx_version": onnx.__version__, "onnxruntime_version": onnxruntime.__version__,
            "torch_version": torch.__version__, "model": c.to_dict(), "spec": spec.to_dict(), "tokenizer": settings,
            "logits_range": list(logits_range), "inputs": graph_input_names(attention, c.n_layer),
            "outputs": graph_output_names(c.n_layer), "attention": attention, "dtype": DTYPE_NAMES[dtype],
            "host_inputs": [HOST_INPUT] if attention == "fused" else [],
            "cache": {"layers": c.n_layer, "heads": c.n_head, "head_dim": c.head_dim, "max_append": max_append,
                      "capacity": cache_capacity(attention, c.context, max_append), "window": c.context,
                      "dtype": DTYPE_NAMES[dtype], "layout": "sliding_window" if attention == "fused" else "ring",
                      "shared_buffer": attention == "fused"},
            "source_checkpoint": str(checkpoint_dir.resolve()),
            "initializers_checked_finite": check_finite_initializers(staging / ONNX_FILE),
        }
        if attention == "fused":
            fields["fused_attention"] = check_fused_graph(staging / ONNX_FILE, c.n_layer, dtype)
        _bind(staging / ONNX_FILE, fields)
        write_manifest(staging, files, **fields)
        if parity_steps > 0 and parity_episodes > 0:
            numbers, fields["parity_notes"] = check_parity_any(
                model, spec, tokenizer, staging, dtype=dtype, episodes=parity_episodes, steps=parity_steps,
                providers=parity_providers, reference_device=reference_device)
            _bind(staging / ONNX_FILE, fields)  # the notes are bound too; ``parity`` (numbers) is not
            write_manifest(staging, files, **fields, **({"parity": numbers} if numbers else {}))
        for name in [*files, "manifest.json"]:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
