"""One prepared GPU suite for a short GPU window: policy step latency (ORT CUDA, PyTorch CUDA) and training MFU.

    python benchmarks/gpu_suite.py --out $OUT                       # one H100: the whole suite, < 10 minutes
    python benchmarks/gpu_suite.py --dry-run --out /tmp/suite        # the same code paths on CPU, tiny preset
    python benchmarks/gpu_suite.py --device cpu --presets tiny mini 79M --variants fused-fp32 plain-fp32 \\
        --steps 40 --warmup 5 --threads 1 --no-train --out outputs/cpu_suite   # docs/performance.md's CPU column

Random-weight policies on the RGB-stacking spec (two 128x128 cameras, 163 tokens per control step). Per preset:

- PyTorch (``TorchPolicy``) eager, and with every cached append replayed from a CUDA graph (``GraphedTorchPolicy``
  below: one graph per chunk length, greedy argmax on the device); bf16 weights on CUDA, fp32 on CPU.
  ``torch.compile`` is not run: its minutes of compilation per shape do not fit the window (a row says so);
- ONNX Runtime through the real runtime (``OnnxPolicy``, IO binding, cache on the device) for each export
  variant (``fused-fp16``, ``plain-fp16``, ``fused-bf16``, ...: model/export_fused.py), with CUDA graphs off and
  on. Each export is checked as shipped exports are (fused-op count, CUDA node placement and Memcpy nodes, 16-bit
  parity with the fp32 model over an episode, teacher-forced, on the same provider); the row carries those and,
  for CUDA-graph rows, whether the greedy action tokens equal those of the run without graphs;
- training (``benchmarks/train_throughput.py``, the trainer's own step, the real Gato embedding and data pipeline
  on synthetic episodes): tokens/s and MFU against 989 TFLOP/s bf16 dense, for 364M and 1.18B.

Per control step p50 / p99 over ``--steps`` (>= 200 on the GPU) after ``--warmup`` steps, window sliding. Every row
is either measured or says why not (no CUDA provider, out of memory, time budget spent, ...); the JSON and the
Markdown are rewritten after every row, so a run cut short still leaves what it measured. No timing is asserted
anywhere: the targets (docs/performance.md) are compared in the Markdown only.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import policy_latency  # benchmarks/ (this script's folder): time_policy
import torch
import train_throughput  # benchmarks/: the trainer throughput measurement

from gato_robot.core.specs import rgb_stacking_spec
from gato_robot.core.stepping import observation_chunk, pending_token
from gato_robot.model.config import count_parameters, preset
from gato_robot.model.embedding import GatoInputs
from gato_robot.model.export import generated_observations
from gato_robot.model.gato import Gato
from gato_robot.model.policy import PolicyState, TorchPolicy
from gato_robot.model.sampling import sample_in_range

log = logging.getLogger("gpu_suite")

GPU_PRESETS = ["79M", "364M", "1.18B"]
GPU_VARIANTS = ["fused-fp16", "plain-fp16", "fused-bf16"]
TRAIN_PRESETS = ["364M", "1.18B"]
# per control step targets (issue 31): ORT CUDA on one H100; the bandwidth floor of 1.18B is ~4.4 ms
TARGETS_MS = {"79M": 1.0, "1.18B": 6.0}
TARGET_MFU = {"1.18B": 0.45}
REFERENCE_MS = {  # shared/reference/onnx_runtime.md, one H100, bf16: eager / CUDA graph / ORT plain / floor
    "79M": (22.8, 7.0, 9.3, 0.3), "364M": (20.9, 10.2, 13.1, 1.4), "1.18B": (41.2, 18.0, 30.2, 4.4)}


# -- PyTorch with CUDA graphs -------------------------------------------------------------------------------------
class GraphedTorchPolicy:
    """``TorchPolicy``'s greedy control step with every cached append replayed from a CUDA graph.

    One graph per chunk length (the observation chunk, single action tokens), captured on first use over fixed
    input buffers and one fixed cache (``pos`` advanced inside the graph), so a step launches a handful of graphs
    and copies only the new tokens in and the 5 action ids out. One episode at a time: ``initial_state`` clears
    the cache in place (the captured addresses must not change).
    """

    def __init__(self, model: Gato, spec: Any, device: str = "cuda") -> None:
        self.base = TorchPolicy(model, spec, device=device)
        self.model, self.device = self.base.model, torch.device(device)
        self.cache = self.model.empty_cache(batch=1, max_append=self.base.max_append, device=self.device)
        self.graphs: dict[int, tuple[Callable[[], torch.Tensor], GatoInputs]] = {}

    def initial_state(self) -> PolicyState:
        self.cache.k.zero_()
        self.cache.v.zero_()
        self.cache.pos.zero_()
        return PolicyState(cache=self.cache)

    def _append(self, x: GatoInputs) -> torch.Tensor:
        n = x.tokens.shape[1]
        if n not in self.graphs:
            self.graphs[n] = self._capture(x)
        replay, static = self.graphs[n]
        for dst, src in zip(static, x):
            dst.copy_(src, non_blocking=True)
        return replay()

    def _capture(self, x: GatoInputs) -> tuple[Callable[[], torch.Tensor], GatoInputs]:
        n, c = x.tokens.shape[1], self.cache
        static = GatoInputs(*(t.clone() for t in x))
        layers = [(c.k[i], c.v[i]) for i in range(self.model.config.n_layer)]
        saved = c.clone()  # warm-up runs write into the cache: put it back afterwards

        def run() -> torch.Tensor:
            logits = self.model.append(static, layers, c.pos, self.base.logits_ids)
            c.pos.add_(n)
            return logits

        replay = self._record(run)
        with torch.inference_mode():
            c.k.copy_(saved.k)
            c.v.copy_(saved.v)
            c.pos.copy_(saved.pos)
        return replay, static

    def _record(self, run: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        """Warm ``run`` up on a side stream, capture it as a CUDA graph; returns its replay (-> the static logits)."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):
                run()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            logits = run()

        def replay() -> torch.Tensor:
            graph.replay()
            return logits

        return replay

    def step(self, observation: Any, state: PolicyState) -> tuple[np.ndarray, PolicyState]:
        b = self.base
        chunk, n_obs = observation_chunk(b.tokenizer.tokenize_observation(observation), state.pending)
        base = b.logits_ids[0]
        chosen: list[torch.Tensor] = []
        with torch.inference_mode():
            logits = self._append(b._inputs(chunk))
            for j, (lo, hi) in enumerate(b.ranges):
                chosen.append(sample_in_range(logits, lo - base, hi - base, 0.0, None) + base)
                if j + 1 < len(b.ranges):
                    logits = self._append(b._action_inputs(chosen[-1], n_obs + j))
        ids = torch.cat(chosen).cpu().numpy().astype(np.int64)
        return b.tokenizer.detokenize_action(ids), PolicyState(
            cache=self.cache, timestep=state.timestep + 1, pending=pending_token(ids, n_obs), action_tokens=ids)


# -- rows ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Suite:
    out: Path
    device: str  # "cuda" or "cpu"
    budget_s: float
    started: float = dataclasses.field(default_factory=time.perf_counter)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        row.setdefault("status", "measured")
        self.rows.append(row)
        print(format_row(row), flush=True)
        self.write()
        return row

    def skip(self, row: dict[str, Any], reason: str) -> dict[str, Any]:
        return self.add({**row, "status": "skipped", "reason": reason})

    def over_budget(self) -> str | None:
        if self.spent() > self.budget_s:
            return f"time budget spent ({self.spent():.0f} s of {self.budget_s:.0f} s)"
        return None

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        doc = {"benchmark": "gpu_suite", "environment": self.environment, "elapsed_s": round(self.spent(), 1),
               "rows": self.rows}
        (self.out / "gpu_suite.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        (self.out / "gpu_suite.md").write_text(markdown(doc))


def error_reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:240] if text else ''}"


def timing(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def format_row(r: dict[str, Any]) -> str:
    section, name, backend, variant = (str(r.get(k) or "") for k in ("section", "preset", "backend", "variant"))
    head = f"{section:>6} {name:>6} {backend:>22} {variant:>11}"
    if r["status"] != "measured":
        return f"{head}  skipped: {r.get('reason', '')[:110]}"
    if r.get("section") == "train":
        mfu = r.get("mfu")
        return f"{head}  {r['compute_tokens_per_s']:>12,.0f} tokens/s" + (f"  MFU {100 * mfu:.1f}%" if mfu else "")
    return f"{head}  p50 {r['p50_ms']:9.2f} ms  p99 {r['p99_ms']:9.2f} ms"


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    lines = [f"# GPU suite: {env.get('device_name', '?')}", "",
             f"torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')} (providers {env.get('providers')}), "
             f"{env.get('steps')} timed steps after {env.get('warmup')}, {doc['elapsed_s']} s in all. "
             "Random weights, RGB-stacking spec (163 tokens per control step). "
             "A row that was not measured says why.", "",
             "## Policy: per control step", "",
             "| preset | backend | export | CUDA graphs | p50 ms | p99 ms | target | parity / check | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        if r.get("section") != "policy":
            continue
        target = TARGETS_MS.get(r["preset"]) if r.get("backend", "").startswith("ort-cuda") else None
        check = r.get("check", "")
        if r["status"] == "measured":
            cells = [f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                     f"<= {target} ms: {'met' if r['p50_ms'] <= target else 'not met'}" if target else "",
                     check, "measured"]
        else:
            cells = ["", "", f"<= {target} ms" if target else "", check, f"not measured: {r.get('reason', '')}"]
        lines.append(f"| {r['preset']} | {r['backend']} | {r.get('variant', '')} | "
                     f"{'on' if r.get('cuda_graph') else 'off'} | " + " | ".join(cells) + " |")
    lines += ["", "## Training throughput", "",
              "| preset | precision | compile | micro-batch | tokens/s (compute) | MFU | end to end tokens/s | "
              "target | status |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        if r.get("section") != "train":
            continue
        target = TARGET_MFU.get(r["preset"])
        if r["status"] == "measured":
            mfu = r.get("mfu")
            lines.append(
                f"| {r['preset']} | {r.get('precision')} | {r.get('compile')} | {r.get('micro_batch')} | "
                f"{r['compute_tokens_per_s']:,.0f} | {'' if mfu is None else f'{100 * mfu:.1f}%'} | "
                f"{r['end_to_end_tokens_per_s']:,.0f} | "
                f"{'' if not target else f'>= {100 * target:.0f}%: ' + ('met' if mfu and mfu >= target else 'not met')}"
                " | measured |")
        else:
            lines.append(f"| {r['preset']} | | {r.get('compile', '')} | | | | | "
                         f"{'' if not target else f'>= {100 * target:.0f}%'} | not measured: {r.get('reason', '')} |")
    return "\n".join(lines) + "\n"


# -- the parts ----------------------------------------------------------------------------------------------------
def ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: CUDA / cuDNN from torch's nvidia-* wheels
        try:
            ort.preload_dlls()
        except Exception as e:  # not fatal: the CUDA provider then reports what is missing
            log.warning("onnxruntime.preload_dlls failed: %s", e)
    return ort.get_available_providers()


def torch_rows(suite: Suite, name: str, model: Gato, spec: Any, observations: list, warmup: int) -> list | None:
    """PyTorch eager and CUDA-graph rows; returns the eager run's action tokens (the reference for the others)."""
    dtype = torch.bfloat16 if suite.device == "cuda" else torch.float32
    base = {"section": "policy", "preset": name, "params": count_parameters(model.config),
            "variant": f"torch-{str(dtype).split('.')[-1]}", "steps": len(observations) - warmup, "warmup": warmup}
    reference: list | None = None
    for backend, graphs in ((f"torch-{suite.device} eager", False), (f"torch-{suite.device} CUDA graphs", True)):
        row = {**base, "backend": backend, "cuda_graph": graphs}
        if (reason := suite.over_budget()):
            suite.skip(row, reason)
            continue
        if graphs and suite.device != "cuda":
            suite.skip(row, "CUDA graphs need a CUDA device")
            continue
        try:
            m = copy.deepcopy(model).to(suite.device, dtype).eval()
            policy = GraphedTorchPolicy(m, spec, suite.device) if graphs else TorchPolicy(m, spec, device=suite.device)
            tokens: list = []
            ms = policy_latency.time_policy(policy, observations, warmup, tokens)
            row.update(timing(ms))
            if reference is None:
                reference = tokens
            else:
                row["check"] = f"action tokens = eager: {agreement(tokens, reference):.3f}"
            suite.add(row)
        except Exception as e:  # out of memory, capture failure: say so, go on
            suite.skip(row, error_reason(e))
        finally:
            m = policy = None
            free_memory()
    compile_row = {**base, "backend": f"torch-{suite.device} torch.compile", "cuda_graph": False}
    suite.skip(compile_row, "not run: compiling each chunk length takes minutes, beyond this window; the CUDA-graph "
                            "row removes the launch overhead compile would")
    return reference


def agreement(a: list, b: list) -> float:
    n = min(len(a), len(b))
    return float(np.mean([np.array_equal(x, y) for x, y in zip(a[:n], b[:n])])) if n else float("nan")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def ort_rows(suite: Suite, name: str, model: Gato, spec: Any, observations: list, warmup: int, variant: str,
             tmp: Path, threads: int, parity_steps: int) -> None:
    from gato_robot.core.manifest import verify_manifest
    from gato_robot.model.export_fused import export_onnx_fast

    attention, dtype = variant.split("-")
    provider_kind = "cuda" if suite.device == "cuda" else "cpu"
    base = {"section": "policy", "preset": name, "params": count_parameters(model.config), "variant": variant,
            "steps": len(observations) - warmup, "warmup": warmup}
    rows = [{**base, "backend": f"ort-{provider_kind} io-binding", "cuda_graph": False},
            {**base, "backend": f"ort-{provider_kind} io-binding", "cuda_graph": True}]
    if (reason := suite.over_budget()):
        for row in rows:
            suite.skip(row, reason)
        return
    providers = ort_providers()
    if provider_kind == "cuda" and "CUDAExecutionProvider" not in providers:
        for row in rows:
            suite.skip(row, f"no CUDA provider in this onnxruntime ({providers or 'not installed'}); install the "
                            "onnxruntime-gpu wheel (benchmarks/gpu_suite.sh)")
        return
    out = tmp / f"{name}-{variant}"
    try:
        t0 = time.perf_counter()
        export_onnx_fast(tmp / "no-checkpoint", out, attention=attention, dtype=dtype, model=model, spec=spec,
                         parity_episodes=1 if parity_steps else 0, parity_steps=parity_steps,
                         parity_providers=provider_kind, reference_device=suite.device)
        export_s = time.perf_counter() - t0
        manifest = verify_manifest(out)
    except Exception as e:
        for row in rows:
            suite.skip(row, f"export failed: {error_reason(e)}")
        log.debug("export failed: %s", traceback.format_exc())
        return
    finally:
        model.to("cpu")
        free_memory()
    check = export_check(manifest, provider_kind)
    reference: list | None = None
    for row in rows:
        row.update(export_s=round(export_s, 1), check=check, parity=manifest.get("parity"),
                   parity_notes=manifest.get("parity_notes"), fused_attention=manifest.get("fused_attention"))
        if (reason := suite.over_budget()):
            suite.skip(row, reason)
            continue
        if row["cuda_graph"] and provider_kind != "cuda":
            suite.skip(row, "CUDA graphs need the CUDA provider")
            continue
        policy = None
        try:
            from gato_robot.runtime.onnx_policy import OnnxPolicy

            policy = OnnxPolicy(out, providers=provider_kind, cuda_graph=row["cuda_graph"], intra_op_threads=threads)
            tokens: list = []
            ms = policy_latency.time_policy(policy, observations, warmup, tokens)
            row.update(timing(ms), provider=policy.provider)
            if reference is None:
                reference = tokens
            else:
                same = agreement(tokens, reference)
                row["tokens_equal_to_no_graph"] = same
                row["check"] = f"{check}; action tokens = no-graph run: {same:.3f}"
            suite.add(row)
        except Exception as e:
            suite.skip(row, error_reason(e))
        finally:
            policy = None
            free_memory()
    if not os.environ.get("GPU_SUITE_KEEP_EXPORTS"):
        for f in out.iterdir():
            f.unlink()
        out.rmdir()


def export_check(manifest: dict[str, Any], provider_kind: str) -> str:
    """One cell: what the export's own checks found (fused ops, placement, 16-bit parity)."""
    parts = []
    fused = manifest.get("fused_attention")
    if fused:
        parts.append(f"{fused['fused_ops']}/{fused['layers']} fused ops")
        placement = fused.get("cuda_placement", {})
        if placement.get("checked"):
            parts.append(f"Memcpy nodes {placement['memcpy_nodes']}, fused on CUDA {placement['fused_ops_on_provider']}"
                         + (" (falls back)" if placement.get("falls_back") else ""))
        elif provider_kind == "cuda":
            parts.append(f"placement not checked: {placement.get('reason')}")
    parity, notes = manifest.get("parity"), manifest.get("parity_notes") or {}
    if parity:
        parts.append(f"parity on {notes.get('provider', '?').replace('ExecutionProvider', '')}: tokens "
                     f"{parity['token_agreement']:.3f}, rel. logit err {parity['max_rel_logit_error']:.1e}")
    elif notes:
        parts.append(f"parity not measured: {notes.get('reason', '')[:80]}")
    return "; ".join(parts)


def plan(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """The measurements in priority order, so that a window cut short keeps the ones the targets need: every
    preset's PyTorch rows and first export, then the main training run (the largest preset), then the other
    exports, the other training runs, and torch.compile training last."""
    first = [t for p in args.presets for t in (("torch", p, None), ("ort", p, args.variants[0]))]
    train = [("train", p, "eager") for p in sorted(args.train_presets, key=args.train_presets.index, reverse=True)]
    rest = [("ort", p, v) for v in args.variants[1:] for p in args.presets]
    return first + train[:1] + rest + train[1:] + [("train", p, "compile") for p in args.train_compile]


def train_rows(suite: Suite, name: str, dry_run: bool, tmp: Path, compiled: bool) -> None:
    """One training row through ``train_throughput.main`` (its JSON read back)."""
    row = {"section": "train", "preset": name, "backend": f"trainer-{suite.device}",
           "variant": "bf16" if suite.device == "cuda" else "fp32", "compile": compiled}
    if (reason := suite.over_budget()):
        suite.skip(row, reason)
        return
    result_file = tmp / f"train-{name}-{compiled}.json"
    argv = ["--preset", name, "--device", suite.device, "--json", str(result_file)]
    if dry_run:
        argv += ["--context", "128", "--image-size", "32", "--micro-batch", "2", "--steps", "2", "--warmup", "1",
                 "--workers", "1", "--threads", "1"]
    else:  # micro-batches of 1024-token sequences that fit one H100 with AdamW state (gato.md's anchor runs)
        micro = {"364M": 16, "1.18B": 8}.get(name, 8)
        argv += ["--micro-batch", str(micro), "--steps", "10", "--warmup", "3", "--workers", "4"]
    if compiled:
        argv.append("--compile")
    try:
        train_throughput.main(argv)
        result = json.loads(result_file.read_text())
        row.update({k: result[k] for k in ("params", "context", "micro_batch", "precision", "compute_tokens_per_s",
                                           "end_to_end_tokens_per_s", "data_wait_frac", "mfu", "peak_flops",
                                           "max_memory_gib", "step_s")})
        if result["mfu"] is None:
            row["mfu_note"] = "no peak FLOP/s for this device (MFU is against 989 TFLOP/s bf16 on CUDA)"
        suite.add(row)
    except Exception as e:
        suite.skip(row, error_reason(e))
    finally:
        free_memory()


def environment(device: str, steps: int, warmup: int) -> dict[str, Any]:
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    cuda = device == "cuda" and torch.cuda.is_available()
    return {"device": device, "device_name": torch.cuda.get_device_name() if cuda else (platform.processor()
                                                                                       or platform.machine()),
            "torch": torch.__version__, "cuda": torch.version.cuda, "onnxruntime": ort_version,
            "providers": ort_providers(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "steps": steps, "warmup": warmup}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "outputs/gpu_suite")),
                    help="folder for gpu_suite.json and gpu_suite.md (default: $OUT, else outputs/gpu_suite)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny preset, a few steps, tiny training: every code path, no meaningful numbers")
    ap.add_argument("--presets", nargs="+", default=None, help=f"policy presets (default {GPU_PRESETS})")
    ap.add_argument("--variants", nargs="+", default=None,
                    help=f"ONNX exports, ATTENTION-DTYPE (default {GPU_VARIANTS}; on CPU fused-fp32 plain-fp32)")
    ap.add_argument("--steps", type=int, default=200, help="timed control steps per row")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--parity-steps", type=int, default=40,
                    help="control steps of the export's parity episode (40: the window slides ~6 times)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch and onnxruntime (0: default)")
    ap.add_argument("--train-presets", nargs="+", default=None, help=f"default {TRAIN_PRESETS}")
    ap.add_argument("--train-compile", nargs="*", default=None,
                    help="presets to train again with torch.compile, time permitting (default: 1.18B on CUDA)")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="stop starting new measurements after this many seconds (rows then say so)")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device = "cpu"
        args.presets = args.presets or ["tiny"]
        args.variants = args.variants or ["fused-fp32", "plain-fp32", "fused-fp16"]
        args.steps, args.warmup, args.parity_steps = min(args.steps, 4), min(args.warmup, 1), 2
        args.train_presets = args.train_presets or ["tiny"]
        args.train_compile = [] if args.train_compile is None else args.train_compile
        args.threads = args.threads or 1
    cpu = args.device == "cpu"
    args.presets = args.presets or (["tiny", "mini", "79M"] if cpu else GPU_PRESETS)
    args.variants = args.variants or (["fused-fp32", "plain-fp32"] if cpu else GPU_VARIANTS)
    for v in args.variants:
        attention, _, dtype = v.partition("-")
        if attention not in ("fused", "plain") or dtype not in ("fp32", "fp16", "bf16"):
            ap.error(f"--variants: {v!r} is not ATTENTION-DTYPE, ATTENTION fused|plain, DTYPE fp32|fp16|bf16")
    args.train_presets = [] if args.no_train else (args.train_presets or TRAIN_PRESETS)
    if args.train_compile is None:
        args.train_compile = [] if (cpu or args.no_train) else ["1.18B"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device; every CUDA row will say so (use --dry-run or --device cpu on a CPU)")
    suite = Suite(out=args.out, device=device, budget_s=args.budget_s)
    suite.environment = environment(device, args.steps, args.warmup)
    print(f"gpu suite on {suite.environment['device_name']}: torch {torch.__version__}, onnxruntime "
          f"{suite.environment['onnxruntime']} {suite.environment['providers']}", flush=True)
    suite.write()
    spec = rgb_stacking_spec(2)
    observations = generated_observations(spec, args.steps + args.warmup)
    models: dict[str, Gato | None] = {}

    def model_for(name: str) -> Gato | None:
        if name not in models:
            torch.manual_seed(0)
            try:
                with torch.device(device):  # random init on the device: seconds for 1.18B instead of a minute
                    models[name] = Gato(preset(name)).eval().to("cpu")
            except Exception as e:
                suite.skip({"section": "policy", "preset": name, "backend": "model"}, error_reason(e))
                models[name] = None
        return models[name]

    no_cuda = device == "cuda" and not torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="gpu_suite-") as tmp_name:
        tmp = Path(tmp_name)
        for task in plan(args):
            kind, name = task[0], task[1]
            if no_cuda:
                section = "train" if kind == "train" else "policy"
                backend = {"torch": "torch-cuda", "ort": "ort-cuda io-binding", "train": "trainer-cuda"}[kind]
                row = {"section": section, "preset": name, "backend": backend, "variant": task[2] or ""}
                if kind == "train":
                    row["compile"] = task[2] == "compile"
                suite.skip(row, "no CUDA device (torch.cuda.is_available() is false)")
            elif kind == "train":
                train_rows(suite, name, args.dry_run, tmp, compiled=task[2] == "compile")
            elif (model := model_for(name)) is not None:
                if kind == "torch":
                    torch_rows(suite, name, model, spec, observations, args.warmup)
                else:
                    ort_rows(suite, name, model, spec, observations, args.warmup, task[2], tmp, args.threads,
                             args.parity_steps)
    suite.write()
    measured = sum(r["status"] == "measured" for r in suite.rows)
    print(f"{measured} of {len(suite.rows)} rows measured in {suite.spent():.0f} s; wrote {args.out / 'gpu_suite.json'}"
          f" and {args.out / 'gpu_suite.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
