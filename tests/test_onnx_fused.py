"""The fused-attention and 16-bit exports (model/export_fused.py) through the same runtime and parity tests.

The policy-level tests of test_onnx_runtime.py (200 greedy steps with the window sliding ~65 times, a prompt and
a cloned state, seeded sampling) are imported and run again here against a fused fp32 export: the fixture
``exported`` below replaces theirs. Tiny models only; no timing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from gato_robot.core.manifest import verify_manifest  # noqa: E402
from gato_robot.core.specs import rgb_stacking_spec  # noqa: E402
from gato_robot.core.tokenizer import Tokenizer  # noqa: E402
from gato_robot.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from gato_robot.model.config import preset  # noqa: E402
from gato_robot.model.embedding import GatoInputs  # noqa: E402
from gato_robot.model.export_fused import FUSED_OP, FusedStep, export_onnx_fast  # noqa: E402
from gato_robot.model.gato import Gato  # noqa: E402
from gato_robot.runtime.onnx_policy import OnnxPolicy  # noqa: E402
from tests.test_onnx_runtime import (  # noqa: E402, F401  (collected here again, with the fused fixture)
    test_parity_200_steps_greedy,
    test_runtime_matches_torch_with_a_prompt_and_after_clone,
    test_sampling_with_temperature_is_reproducible_and_in_range,
)

SPEC = rgb_stacking_spec(2)
CONTEXT = 512  # as test_onnx_runtime: the window slides every 3 steps


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fused fp32 export at ``root / "policy"`` (the layout test_onnx_runtime's tests expect)."""
    torch.manual_seed(0)
    model = Gato(preset("tiny", context=CONTEXT)).eval()
    root = tmp_path_factory.mktemp("fused")
    save_checkpoint(root / "ckpt", model, SPEC, Tokenizer(SPEC).settings)
    export_onnx_fast(root / "ckpt", root / "policy", attention="fused", dtype="fp32", parity_episodes=1,
                     parity_steps=5)
    return model, root


def test_fused_manifest_records_the_op_cache_and_parity(exported):
    _, root = exported
    manifest = verify_manifest(root / "policy")
    assert manifest["attention"] == "fused" and manifest["dtype"] == "float32"
    assert manifest["fused_attention"]["fused_ops"] == manifest["model"]["n_layer"] == 2
    assert manifest["fused_attention"]["cuda_kernel_for_dtype"] is False  # the CUDA kernels are 16-bit only
    cache = manifest["cache"]
    assert cache["layout"] == "sliding_window" and cache["shared_buffer"] is True
    assert cache["capacity"] == cache["window"] == CONTEXT
    assert manifest["host_inputs"] == ["total_sequence_length"]
    assert manifest["parity"]["token_agreement"] == 1.0 and manifest["parity"]["max_rel_logit_error"] < 1e-4
    assert manifest["parity_notes"]["measured"] is True


def test_the_graph_has_one_fused_op_per_layer_and_the_cache_is_updated_in_place(exported):
    import onnx

    _, root = exported
    graph = onnx.load(str(root / "policy" / "model.onnx")).graph
    fused = [n for n in graph.node if n.op_type == FUSED_OP]
    assert len(fused) == 2 and all(n.domain == "com.microsoft" for n in fused)
    policy = OnnxPolicy(root / "policy", providers="cpu")
    state = policy.initial_state()
    assert state.buffers[0] is state.buffers[1]  # present is bound onto past: one buffer per layer
    before = [v.data_ptr() for v in state.buffers[0]]
    from gato_robot.model.export import generated_observations

    for obs in generated_observations(SPEC, 4):
        _, state = policy.step(obs, state)
    assert [v.data_ptr() for v in state.buffers[0]] == before
    assert state.pos > CONTEXT  # the window slid


def test_fused_step_in_torch_matches_the_reference_append():
    """The fused graph's semantics without ONNX: FusedStep with the op's eager reference equals Gato.append over
    chunks that slide the window (catches an off-by-one in the window or the eviction)."""
    torch.manual_seed(1)
    context = 40
    model = Gato(preset("tiny", context=context)).eval()
    c = model.config
    ring = model.empty_cache(batch=1, max_append=12)
    past = [torch.zeros(1, c.n_head, context, c.head_dim) for _ in range(2 * c.n_layer)]
    step = FusedStep(model, (32000, 33024)).eval()
    pos = 0
    rng = np.random.default_rng(0)
    for n in [12, 1, 1, 7, 12, 1, 12, 3, 12, 12, 1]:
        tokens = torch.as_tensor(rng.integers(32000, 33024, (1, n)))
        x = GatoInputs(tokens, torch.zeros(1, n, 768), torch.zeros(1, n, dtype=torch.long),
                       torch.zeros(1, n, dtype=torch.long), torch.arange(n).view(1, n) % 8,
                       torch.zeros(1, n, dtype=torch.bool))
        with torch.no_grad():
            ref, ring = model.forward_cached(x, ring, logits_ids=(32000, 33024))
            got, *past = step(*x, torch.tensor(pos), torch.tensor(pos + n, dtype=torch.int32), past)
        pos += n
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert pos > context


def test_16bit_parity_is_recorded_with_its_thresholds(tmp_path):
    torch.manual_seed(0)
    model = Gato(preset("tiny", context=256)).eval()
    save_checkpoint(tmp_path / "ckpt", model, SPEC, Tokenizer(SPEC).settings)
    out = export_onnx_fast(tmp_path / "ckpt", tmp_path / "fp16", attention="fused", dtype="fp16",
                           parity_episodes=1, parity_steps=4, parity_providers="cpu")
    manifest = json.loads((out / "manifest.json").read_text())
    parity = manifest["parity"]
    assert manifest["cache"]["dtype"] == "float16" and manifest["parity_notes"]["measured"] is True
    assert parity["token_agreement"] >= parity["min_token_agreement_required"] == 0.98
    assert parity["max_rel_logit_error"] <= parity["max_rel_logit_error_allowed"] == 2e-2
    assert parity["max_rel_logit_error"] > 0  # 16-bit arithmetic differs from fp32: the check is not vacuous
    assert "free_running_token_agreement" in parity


def test_bf16_on_the_cpu_provider_is_recorded_as_not_measured(tmp_path):
    torch.manual_seed(0)
    model = Gato(preset("tiny", context=256)).eval()
    save_checkpoint(tmp_path / "ckpt", model, SPEC, Tokenizer(SPEC).settings)
    out = export_onnx_fast(tmp_path / "ckpt", tmp_path / "bf16", attention="plain", dtype="bf16",
                           parity_episodes=1, parity_steps=2, parity_providers="cpu")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cache"]["dtype"] == "bfloat16" and "parity" not in manifest
    assert manifest["parity_notes"]["measured"] is False and manifest["parity_notes"]["reason"]


def test_a_head_dim_the_fused_op_cannot_take_is_refused(tmp_path):
    model = Gato(preset("tiny", d_model=48, n_head=4, context=256)).eval()  # head dim 12
    save_checkpoint(tmp_path / "ckpt", model, SPEC, Tokenizer(SPEC).settings)
    with pytest.raises(ValueError, match="multiple of 8"):
        export_onnx_fast(tmp_path / "ckpt", tmp_path / "out", attention="fused", dtype="fp32", parity_steps=0)


def test_the_cli_exports_fused_fp16(tmp_path):
    from gato_robot.model.export import main

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", Gato(preset("tiny", context=256)).eval(), SPEC, Tokenizer(SPEC).settings)
    assert main([str(tmp_path / "ckpt"), str(tmp_path / "out"), "--attention", "fused", "--dtype", "fp16",
                 "--parity-steps", "2"]) == 0
    manifest = verify_manifest(tmp_path / "out")
    assert (manifest["attention"], manifest["dtype"], manifest["cache"]["dtype"]) == ("fused", "float16", "float16")


def test_bfloat16_cache_buffers_are_zeroed_and_only_empty_ones_cloned():
    from gato_robot.runtime.onnx_policy import _copy_ortvalue, _zeros

    v = _zeros((1, 2, 3, 4), "bfloat16", "cpu", 0)
    assert v.data_type() == "tensor(bfloat16)" and v.shape() == [1, 2, 3, 4]
    assert _copy_ortvalue(v, empty=True).data_type() == "tensor(bfloat16)"
    with pytest.raises(NotImplementedError, match="fp16"):
        _copy_ortvalue(v)


def test_a_16bit_export_with_external_data_loads_and_passes_parity(tmp_path, monkeypatch):
    """The 1.18B path (weights above 1.8 GB go to model.onnx.data) on a tiny model: the threshold set to 0."""
    import gato_robot.model.export as export  # save_program, shared by both exports, reads the threshold

    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 0)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", Gato(preset("tiny", context=256)).eval(), SPEC, Tokenizer(SPEC).settings)
    out = export_onnx_fast(tmp_path / "ckpt", tmp_path / "out", attention="fused", dtype="fp16", parity_episodes=1,
                           parity_steps=3, parity_providers="cpu")
    manifest = verify_manifest(out)
    assert sorted(manifest["files"]) == ["config.json", "model.onnx", "model.onnx.data", "model.safetensors"]
    weights = load_checkpoint(out)[0].state_dict().values()  # the weights beside the graph: as saved, not fp16
    assert all(w.dtype == torch.float32 for w in weights if w.is_floating_point())
    assert manifest["parity"]["token_agreement"] >= 0.98
