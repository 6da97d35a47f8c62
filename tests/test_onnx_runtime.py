"""ONNX export and the ONNX Runtime policy: parity with PyTorch, integrity checks, providers, bad input."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from gato_robot.core.manifest import ModelIntegrityError, verify_manifest  # noqa: E402
from gato_robot.core.specs import rgb_stacking_spec  # noqa: E402
from gato_robot.core.tokenizer import Tokenizer  # noqa: E402
from gato_robot.model.checkpoint import save_checkpoint  # noqa: E402
from gato_robot.model.config import preset  # noqa: E402
from gato_robot.model.export import export_onnx, generated_observations, parity  # noqa: E402
from gato_robot.model.gato import Gato  # noqa: E402
from gato_robot.model.policy import TorchPolicy  # noqa: E402
from gato_robot.runtime.onnx_policy import OnnxPolicy  # noqa: E402

SPEC = rgb_stacking_spec(2)  # the real RGB-stacking layout: two 128x128 cameras, 163 tokens per step
CONTEXT = 512  # the window slides every 3 steps, so 200 steps cross it ~65 times


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = Gato(preset("tiny", context=CONTEXT)).eval()
    root = tmp_path_factory.mktemp("onnx")
    save_checkpoint(root / "ckpt", model, SPEC, Tokenizer(SPEC).settings)
    export_onnx(root / "ckpt", root / "policy", parity_steps=5)
    return model, root


def fresh_copy(exported, tmp_path):
    _, root = exported
    shutil.copytree(root / "policy", tmp_path / "policy")
    return tmp_path / "policy"


def test_parity_200_steps_greedy(exported):
    model, root = exported
    torch_policy = TorchPolicy(model, SPEC, record_logits=True)
    onnx_policy = OnnxPolicy(root / "policy", providers="cpu")
    result = parity(torch_policy, onnx_policy, generated_observations(SPEC, 200, seed=3))
    assert result["steps"] == 200
    assert result["token_agreement"] == 1.0
    assert result["max_rel_logit_error"] < 1e-4


def test_manifest_records_what_was_checked(exported):
    _, root = exported
    manifest = verify_manifest(root / "policy")
    assert set(manifest["files"]) == {"model.onnx", "model.safetensors", "config.json"}  # graph + its weights
    assert manifest["opset"] == 18 and manifest["onnx_version"] and manifest["onnxruntime_version"]
    assert manifest["parity"]["token_agreement"] == 1.0
    cache = manifest["cache"]
    assert cache["window"] == CONTEXT and cache["max_append"] == 164 and cache["capacity"] == CONTEXT + 163
    assert manifest["logits_range"] == [32000, 33024]


def test_runtime_matches_torch_with_a_prompt_and_after_clone(exported):
    model, root = exported
    demo = generated_observations(SPEC, 4, seed=9)
    prompt = [(o, np.array([0.01, 0.0, -0.02, 0.1, 200.0])) for o in demo]
    tp = TorchPolicy(model, SPEC, prompt=prompt, record_logits=True)
    op = OnnxPolicy(root / "policy", providers="cpu", prompt=prompt)
    obs = generated_observations(SPEC, 6, seed=5)
    ts, os_ = tp.initial_state(), op.initial_state()
    for o in obs[:3]:
        _, ts = tp.step(o, ts)
        _, os_ = op.step(o, os_)
    branch = os_.clone()
    for o in obs[3:]:
        _, ts = tp.step(o, ts)
        a_o, os_ = op.step(o, os_)
        np.testing.assert_array_equal(ts.action_tokens, os_.action_tokens)
    for o in obs[3:]:  # the clone replays the same future
        a_b, branch = op.step(o, branch)
    np.testing.assert_array_equal(branch.action_tokens, os_.action_tokens)
    np.testing.assert_allclose(a_b, a_o)


def test_sampling_with_temperature_is_reproducible_and_in_range(exported):
    _, root = exported
    policy = OnnxPolicy(root / "policy", providers="cpu", temperature=1.0, seed=4)
    obs = generated_observations(SPEC, 3)
    runs = []
    for _ in range(2):
        s = policy.initial_state()
        for o in obs:
            a, s = policy.step(o, s)
        runs.append(a)
        assert np.all((s.action_tokens >= 32000) & (s.action_tokens < 33024))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_bit_flips_in_the_model_are_refused_100_of_100(exported, tmp_path):
    path = fresh_copy(exported, tmp_path)
    model_file = path / "model.onnx"
    clean = model_file.read_bytes()
    rng = np.random.default_rng(0)
    refused = 0
    for pos in rng.integers(0, len(clean), 100):
        damaged = bytearray(clean)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        model_file.write_bytes(bytes(damaged))
        with pytest.raises(ModelIntegrityError, match="sha256"):
            OnnxPolicy(path, providers="cpu", warmup=False)
        refused += 1
    assert refused == 100


def test_truncated_missing_and_unlisted_files_are_refused(exported, tmp_path):
    path = fresh_copy(exported, tmp_path)
    data = (path / "model.onnx").read_bytes()
    (path / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelIntegrityError, match="truncated or changed"):
        OnnxPolicy(path, providers="cpu")
    (path / "model.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        OnnxPolicy(path, providers="cpu")
    (path / "manifest.json").unlink()
    with pytest.raises(ModelIntegrityError, match=r"no manifest\.json"):
        OnnxPolicy(path, providers="cpu")


def test_a_manifest_pointing_outside_is_refused(exported, tmp_path):
    path = fresh_copy(exported, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../escape"] = {"sha256": "0", "bytes": 0}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="leaves the model directory"):
        OnnxPolicy(path, providers="cpu")


def test_cuda_fallback_is_logged_and_required_cuda_fails_clearly(exported, caplog):
    _, root = exported
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA; the fallback path is exercised on CPU-only machines")
    with caplog.at_level(logging.WARNING, logger="gato_robot.runtime.onnx_policy"):
        policy = OnnxPolicy(root / "policy", providers="auto", warmup=False)
    assert policy.provider == "CPUExecutionProvider"
    assert any("falls back to the CPU provider" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="CUDA execution was required"):
        OnnxPolicy(root / "policy", providers="cuda", warmup=False)


def test_bad_observations_are_refused_before_running(exported):
    _, root = exported
    policy = OnnxPolicy(root / "policy", providers="cpu")
    state = policy.initial_state()
    obs = generated_observations(SPEC, 1)[0]
    bad = dict(obs, **{"proprio/joint_angles": np.full(7, np.nan)})
    with pytest.raises(ValueError, match="proprio/joint_angles: non-finite"):
        policy.step(bad, state)
    missing = {k: v for k, v in obs.items() if k != "camera/basket_front_left"}
    with pytest.raises(ValueError, match="camera/basket_front_left"):
        policy.step(missing, state)
    assert state.pos == 0 and state.timestep == 0  # nothing ran
    with pytest.raises(ValueError, match="providers must be"):
        OnnxPolicy(root / "policy", providers="tpu")


def test_a_markov_export_forgets_history_like_torch(tmp_path):
    """A Markov model (GatoConfig.markov) is recorded in the manifest; the ONNX policy then restarts every step
    from the initial cache without copying it: same tokens as the torch policy, and as a fresh state."""
    torch.manual_seed(1)
    model = Gato(preset("tiny", context=SPEC.max_timestep_tokens + 1, markov=True)).eval()
    save_checkpoint(tmp_path / "ckpt", model, SPEC, Tokenizer(SPEC).settings)
    export_onnx(tmp_path / "ckpt", tmp_path / "policy", parity_steps=5)
    assert verify_manifest(tmp_path / "policy")["model"]["markov"] is True
    op = OnnxPolicy(tmp_path / "policy", providers="cpu")
    result = parity(TorchPolicy(model, SPEC, record_logits=True), op, generated_observations(SPEC, 12, seed=2))
    assert result["token_agreement"] == 1.0 and result["max_rel_logit_error"] < 1e-4
    obs = generated_observations(SPEC, 5, seed=8)
    state = op.initial_state()
    for o in obs:
        _, state = op.step(o, state)
    _, fresh = op.step(obs[4], op.initial_state())
    np.testing.assert_allclose(state.logits, fresh.logits, rtol=1e-5, atol=1e-5)
    assert state.pos == fresh.pos and state.timestep == 5
