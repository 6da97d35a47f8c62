"""The policy contract (gato_robot.runtime.contract), run over every policy kind: one protocol, one sampling check,
states returned and consumed, the same first actions through both backends, and the model's recommended sampling."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gato_robot.runtime import contract
from gato_robot.runtime.contract import CONSUMED_ERROR, SAMPLING_FILE, Sampling

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from gato_robot.core.manifest import ModelIntegrityError, verify_manifest, write_manifest  # noqa: E402
from gato_robot.core.specs import rgb_stacking_spec  # noqa: E402
from gato_robot.core.tokenizer import Tokenizer  # noqa: E402
from gato_robot.model.checkpoint import save_checkpoint  # noqa: E402
from gato_robot.model.config import preset  # noqa: E402
from gato_robot.model.export import export_onnx, generated_observations  # noqa: E402
from gato_robot.model.gato import Gato  # noqa: E402
from gato_robot.model.policy import TorchPolicy  # noqa: E402
from gato_robot.runtime import loader  # noqa: E402
from gato_robot.runtime.ensemble import EnsemblePolicy  # noqa: E402
from gato_robot.runtime.onnx_policy import OnnxPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = rgb_stacking_spec(2)
BAD = r"must be a finite number >= 0 \(0: greedy; above 0: sampled\)"  # contract.TEMPERATURE_ERROR


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random model: its checkpoint and its export recommending temperature 1."""
    torch.manual_seed(0)
    model = Gato(preset("tiny", context=200)).eval()
    root = tmp_path_factory.mktemp("contract")
    save_checkpoint(root / "ckpt", model, SPEC, Tokenizer(SPEC).settings)
    export_onnx(root / "ckpt", root / "policy", parity_steps=2, temperature=1.0)
    return model, root


def make(kind: str, root: Path, model: Gato, temperature: float = 0.0, seed: int = 0):
    d = root / "policy"
    return {
        "torch": lambda: TorchPolicy(model, SPEC, temperature=temperature, seed=seed),
        "onnx": lambda: OnnxPolicy(d, providers="cpu", temperature=temperature, seed=seed, warmup=False),
        "ensemble": lambda: EnsemblePolicy([d, d], providers="cpu", temperature=temperature, seed=seed, warmup=False),
        "uri-torch": lambda: loader.load(f"torch:{root / 'ckpt'}", temperature=temperature, seed=seed, threads=1),
        "uri-onnx": lambda: loader.load(f"onnx:{d}", temperature=temperature, seed=seed, threads=1),
    }[kind]()


MODEL_KINDS = ("torch", "onnx", "ensemble", "uri-torch", "uri-onnx")


def first_actions(policy, observations):
    state, actions = policy.initial_state(), []
    for obs in observations:
        action, state = policy.step(obs, state)
        actions.append(np.asarray(action))
    return np.stack(actions)


def test_one_protocol_declared_once():
    from gato_robot.domains import control
    from gato_robot.sim import policies

    assert policies.Policy is contract.Policy and control.Policy is contract.Policy
    declared = [str(p.relative_to(ROOT)) for folder in ("gato_robot", "sim", "training")
                for p in sorted((ROOT / folder).rglob("*.py"))
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.ClassDef) and node.name == "Policy"]
    assert declared == ["gato_robot/runtime/contract.py"], declared


def test_the_backends_and_wrappers_give_the_same_first_actions(exported):
    model, root = exported
    obs = generated_observations(SPEC, 3, seed=1)
    greedy = {k: first_actions(make(k, root, model), obs) for k in MODEL_KINDS}
    for k, a in greedy.items():
        np.testing.assert_allclose(a, greedy["torch"], atol=1e-6, err_msg=k)
    markov = loader.load(f"markov:onnx:{root / 'policy'}", temperature=0.0, threads=1)
    np.testing.assert_allclose(first_actions(markov, obs[:1])[0], greedy["torch"][0], atol=1e-6)
    # sampled at the same seed: the ONNX policy, its loader and an ensemble of two copies draw the same actions;
    # each backend repeats itself (torch draws with torch's generator, ONNX with numpy's: they differ)
    sampled = {k: first_actions(make(k, root, model, 1.0, seed=7), obs) for k in MODEL_KINDS}
    np.testing.assert_allclose(sampled["uri-onnx"], sampled["onnx"], atol=1e-6)
    np.testing.assert_allclose(sampled["ensemble"], sampled["onnx"], atol=1e-6)
    np.testing.assert_allclose(sampled["uri-torch"], sampled["torch"], atol=1e-6)
    assert not np.allclose(sampled["onnx"], greedy["onnx"])  # sampling at T=1 from a random model is not greedy
    again = first_actions(make("onnx", root, model, 1.0, seed=7), obs)
    np.testing.assert_array_equal(again, sampled["onnx"])


@pytest.mark.parametrize("kind", ["torch", "onnx", "ensemble"])
def test_step_returns_a_new_state_and_consumes_the_given_one(exported, kind):
    model, root = exported
    policy = make(kind, root, model, temperature=1.0, seed=3)
    obs = generated_observations(SPEC, 2, seed=2)
    s0 = policy.initial_state()
    branch = s0.clone() if hasattr(s0, "clone") else None
    a1, s1 = policy.step(obs[0], s0)
    assert s1 is not s0 and s1.timestep == 1 and s0.timestep == 0
    with pytest.raises(ValueError, match="consumed"):
        policy.step(obs[0], s0)  # its buffers now hold the step's writes: refused, not silently wrong
    assert str(CONSUMED_ERROR).startswith("this policy state was consumed")
    _, s2 = policy.step(obs[1], s1)  # the returned state steps on
    assert s2.timestep == 2
    if branch is not None:  # a clone taken before the step replays it exactly (same draws)
        b1, _ = policy.step(obs[0], branch)
        np.testing.assert_array_equal(b1, a1)


def test_the_scripted_policies_keep_the_protocol():
    pytest.importorskip("pybullet")
    from gato_robot.sim.env import RgbStackingEnv
    from gato_robot.sim.policies import make_policy

    env = RgbStackingEnv(privileged=True, render_images=False)
    try:
        obs, _ = env.reset(seed=0)
        for name in ("expert", "feedback-expert", "random", "markov:expert"):
            policy = make_policy(name)
            assert isinstance(policy, contract.Policy)
            state = policy.initial_state()
            before = dataclasses.replace(state) if dataclasses.is_dataclass(state) else state
            action, new = policy.step(obs, state)
            assert np.asarray(action["action"] if isinstance(action, dict) else action).shape == (5,)
            assert state == before  # a scripted policy leaves the state it was given as it was
            assert type(new) is type(state) and (state is None or new != state)  # and returns the next one
    finally:
        env.close()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "hot", True])
def test_a_bad_temperature_is_refused_everywhere_with_the_one_message(exported, bad):
    model, root = exported
    from gato_robot.ros.stack import node_plan
    from gato_robot.sim.policies import make_policy

    attempts = [lambda: Sampling(bad), lambda: contract.check_temperature(bad),
                lambda: TorchPolicy(model, SPEC, temperature=bad),
                lambda: OnnxPolicy(root / "policy", providers="cpu", temperature=bad, warmup=False),
                lambda: EnsemblePolicy([root / "policy"] * 2, temperature=bad),
                lambda: make_policy(f"onnx:{root / 'policy'}", temperature=bad),
                lambda: loader.load(f"torch:{root / 'ckpt'}", temperature=bad)]
    if isinstance(bad, float):
        attempts.append(lambda: node_plan(temperature=str(bad)))
    for attempt in attempts:
        with pytest.raises(ValueError, match=BAD):
            attempt()


def test_the_export_recommends_its_sampling_and_entry_points_take_it(exported, tmp_path):
    _, root = exported
    d = tmp_path / "policy"
    shutil.copytree(root / "policy", d)
    assert SAMPLING_FILE in verify_manifest(d)["files"]  # listed and hashed like the weights
    assert contract.recommended_sampling(d) == Sampling(1.0)
    assert OnnxPolicy(d, providers="cpu", temperature=None, warmup=False).temperature == 1.0
    assert OnnxPolicy(d, providers="cpu", warmup=False).temperature == 0.0  # the library default stays greedy
    assert loader.load(f"onnx:{d}", threads=1).temperature == 1.0  # the entry points' loader: the recommendation
    assert loader.load(f"onnx:{d}", temperature=0.0, threads=1).temperature == 0.0  # the user overrides it
    assert loader.resolve_temperature(f"ensemble:{d},{d}", None) == 1.0
    assert loader.resolve_temperature(f"markov:onnx:{d}", None) == 0.0  # markov: greedy only, no recommendation
    assert loader.resolve_temperature("expert", None) == 0.0

    (d / SAMPLING_FILE).write_text('{"temperature": 0.0}\n')  # edited after export: the sha256 refuses it
    with pytest.raises(ModelIntegrityError, match=SAMPLING_FILE):
        OnnxPolicy(d, providers="cpu", temperature=None, warmup=False)
    manifest = json.loads((d / "manifest.json").read_text())
    fields = {k: v for k, v in manifest.items() if k not in ("files", "format", "format_version")}
    (d / SAMPLING_FILE).write_text('{"temperature": -2}\n')  # re-hashed but malformed: still refused, named
    write_manifest(d, list(manifest["files"]), **fields)
    with pytest.raises(ModelIntegrityError, match=BAD):
        loader.load(f"onnx:{d}", threads=1)
    (d / SAMPLING_FILE).unlink()  # a manifest without the file: no recommendation, greedy
    write_manifest(d, ["model.onnx"], **fields)
    assert contract.recommended_sampling(d) is None and loader.resolve_temperature(f"onnx:{d}", None) == 0.0


def test_the_shipped_model_under_ros2_launch_samples_as_it_was_evaluated():
    import yaml

    from gato_robot.ros.stack import MODEL_TEMPERATURE, node_plan
    from gato_robot.runtime.shipped import SHIPPED_TEMPERATURE, shipped_model_dir

    model = shipped_model_dir()
    assert contract.recommended_sampling(model) == Sampling(SHIPPED_TEMPERATURE)  # docs/stacking.md's figure
    params = yaml.safe_load((ROOT / "config" / "stack.yaml").read_text())
    assert params["/**"]["ros__parameters"]["temperature"] == MODEL_TEMPERATURE  # shared: launch overrides win
    plan = {n.name: o for n, _, o in node_plan(sim=True, model=str(model))}
    assert "temperature" not in plan["gato_policy"]  # so the node takes the manifest's: 1, not greedy
    assert loader.resolve_temperature(f"onnx:{model}", None) == SHIPPED_TEMPERATURE  # benchmark, demo, ros eval
