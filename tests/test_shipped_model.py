"""The trained policy the repository ships (models/rgb_stacking_mini): intact, loadable without torch, trained.

The behaviour test is the point: random weights do not carry the tool towards red; the shipped policy, sampled as
it is evaluated, does so on every one of four seeded start layouts. Its success rate is measured by the benchmark
(docs/stacking.md), not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gato_robot.core.manifest import verify_manifest
from gato_robot.runtime.shipped import SHIPPED_MODEL, SHIPPED_TEMPERATURE, shipped_model_dir

pytest.importorskip("onnxruntime")


def test_the_checkout_ships_the_default_model_intact():
    model = shipped_model_dir()
    assert model is not None and model.name == SHIPPED_MODEL
    manifest = verify_manifest(model)  # sha256 of model.onnx: catches a truncated file or an LFS pointer
    assert manifest["format_version"] == 2  # its fields are bound into model.onnx (runtime.trust.check_graph)
    from gato_robot.runtime.onnx_policy import load_policy

    assert load_policy(model, providers="cpu", warmup=False).markov  # every field and the graph check out
    assert manifest["model"]["markov"] is True  # the shipped policy is memoryless; the policies restart per step
    assert (model / "model.onnx").stat().st_size < 40 * 2**20  # keep the repository lean
    # its source of truth ships beside the graph, hashed: fine-tuning starts from it (tests/test_export_weights.py)
    assert {"model.safetensors", "config.json"} <= set(manifest["files"])
    assert sum(p.stat().st_size for p in model.iterdir()) < 64 * 2**20  # graph + fp32 weights: about 42 MB
    card = (model / "README.md").read_text()
    assert "python training/train.py" in card and "sim.benchmark" in card  # the card says how to reproduce it


def test_a_missing_model_is_none(tmp_path):
    assert shipped_model_dir("no_such_model") is None


def test_the_shipped_policy_carries_the_tool_towards_red():
    pytest.importorskip("pybullet")
    from gato_robot.sim.benchmark import _env_for
    from gato_robot.sim.policies import action_array, make_policy

    name = f"onnx:{shipped_model_dir()}"
    for seed in range(4):
        policy = make_policy(name, seed=seed, threads=1, temperature=SHIPPED_TEMPERATURE)
        env = _env_for(policy, name, "rgb_test_triplet5", True)
        try:
            obs, info = env.reset(seed=seed)
            state = policy.initial_state()
            start = np.linalg.norm(obs["proprio/tool_pose"][:3] - info["object_poses"][0][:3])
            for _ in range(60):  # 3 s
                action, state = policy.step(obs, state)
                action = action_array(action)
                assert np.all(np.abs(action) <= env.action_space.high + 1e-6)
                obs, _, _, _, info = env.step(action)
            end = np.linalg.norm(obs["proprio/tool_pose"][:3] - info["object_poses"][0][:3])
        finally:
            env.close()
        assert end < 0.6 * start, f"seed {seed}: tool-red distance {start:.3f} -> {end:.3f} m in 3 s"


def test_the_demo_benchmarks_the_shipped_policy(tmp_path):
    pytest.importorskip("pybullet")
    from gato_robot.cli.demo import main

    assert main(["--out", str(tmp_path), "--skip-stack", "--policy-episodes", "1", "--expert-episodes", "0"]) == 0
    results = json.loads((tmp_path / "policy" / "results.json").read_text())
    assert results["temperature"] == SHIPPED_TEMPERATURE
    assert len(results["episodes"]) == 5 and (tmp_path / "policy" / "episodes.mp4").stat().st_size > 0


def test_decoding_the_markov_model_greedily_warns(caplog):
    import logging

    from gato_robot.runtime.onnx_policy import OnnxPolicy

    with caplog.at_level(logging.WARNING, logger="gato_robot.runtime.onnx_policy"):
        OnnxPolicy(shipped_model_dir(), providers="cpu", temperature=SHIPPED_TEMPERATURE)
        assert not any("Markov policy decoded greedily" in r.getMessage() for r in caplog.records)
        OnnxPolicy(shipped_model_dir(), providers="cpu", temperature=0.0)
    assert any("Markov policy decoded greedily" in r.getMessage() for r in caplog.records)
