"""benchmarks/gpu_suite.py --dry-run: the GPU suite's code paths on CPU with the tiny preset (structure only).

Every row must be measured or say why not; no timing is asserted (timings belong to the benchmark).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_json_and_markdown_with_every_row_measured_or_explained(tmp_path):
    out = tmp_path / "suite"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--variants", "fused-fp16",
         "plain-fp32", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "gpu_suite.json").read_text())
    assert doc["environment"]["device"] == "cpu" and doc["environment"]["steps"] >= 1
    rows = doc["rows"]
    for r in rows:
        assert r["status"] in ("measured", "skipped"), r
        if r["status"] == "skipped":
            assert r["reason"], r
        elif r["section"] == "policy":
            assert math.isfinite(r["p50_ms"]) and math.isfinite(r["p99_ms"]) and r["p99_ms"] >= r["p50_ms"]
        else:
            assert r["compute_tokens_per_s"] > 0 and r["end_to_end_tokens_per_s"] > 0
    by = {(r["section"], r["backend"], r.get("variant"), r.get("cuda_graph")): r for r in rows}
    assert by[("policy", "torch-cpu eager", "torch-float32", False)]["status"] == "measured"
    assert "CUDA" in by[("policy", "torch-cpu CUDA graphs", "torch-float32", True)]["reason"]
    for variant in ("fused-fp16", "plain-fp32"):
        measured = by[("policy", "ort-cpu io-binding", variant, False)]
        assert measured["status"] == "measured" and measured["provider"] == "CPUExecutionProvider"
        assert measured["parity"]["token_agreement"] >= measured["parity"]["min_token_agreement_required"]
        assert "CUDA" in by[("policy", "ort-cpu io-binding", variant, True)]["reason"]
    fused = by[("policy", "ort-cpu io-binding", "fused-fp16", False)]
    assert fused["fused_attention"]["fused_ops"] == fused["fused_attention"]["layers"] == 2
    assert fused["fused_attention"]["cuda_kernel_for_dtype"] is True
    train = [r for r in rows if r["section"] == "train"]
    assert len(train) == 1 and train[0]["status"] == "measured" and train[0]["preset"] == "tiny"
    md = (out / "gpu_suite.md").read_text()
    assert "## Policy: per control step" in md and "## Training throughput" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| tiny |")]
    assert len(table_rows) == len(rows)
    assert all(line.rstrip().endswith(("| measured |", "|")) for line in table_rows)
    assert sum("not measured:" in line for line in table_rows) == sum(r["status"] == "skipped" for r in rows)


def test_without_cuda_the_full_suite_lists_every_row_as_not_measured(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the suite would measure")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu_suite.json").read_text())["rows"]
    presets = {(r["section"], r["preset"]) for r in rows}
    assert {("policy", p) for p in ("79M", "364M", "1.18B")} | {("train", "364M"), ("train", "1.18B")} <= presets
    assert all(r["status"] == "skipped" and "no CUDA device" in r["reason"] for r in rows)
    assert (tmp_path / "gpu_suite.md").read_text().count("not measured: no CUDA device") == len(rows)


def test_the_cuda_graph_policy_steps_like_torch_policy_when_replay_is_a_plain_call():
    """GraphedTorchPolicy's step logic (static inputs, ``pos`` advanced inside the captured call, the cache put
    back after warm-up) on CPU: the capture replaced by the call itself; greedy tokens equal TorchPolicy's over
    steps that slide the window."""
    import importlib

    import numpy as np
    import torch

    from gato_robot.core.specs import rgb_stacking_spec
    from gato_robot.model.config import preset
    from gato_robot.model.export import generated_observations
    from gato_robot.model.gato import Gato
    from gato_robot.model.policy import TorchPolicy

    sys.path.insert(0, str(ROOT / "benchmarks"))  # gpu_suite imports its sibling benchmarks by name
    try:
        suite = importlib.import_module("gpu_suite")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    class PlainReplay(suite.GraphedTorchPolicy):
        def _record(self, run):
            return run

    spec = rgb_stacking_spec(2)
    torch.manual_seed(0)
    model = Gato(preset("tiny", context=400)).eval()
    graphed, reference = PlainReplay(model, spec, device="cpu"), TorchPolicy(model, spec)
    gs, rs = graphed.initial_state(), reference.initial_state()
    for obs in generated_observations(spec, 8, seed=2):
        _, gs = graphed.step(obs, gs)
        _, rs = reference.step(obs, rs)
        np.testing.assert_array_equal(gs.action_tokens, rs.action_tokens)
    assert int(graphed.cache.pos) == int(rs.cache.pos) > 400
    assert sorted(graphed.graphs) == [1, 158, 159]
