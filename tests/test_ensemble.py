"""EnsemblePolicy: several exported policies sampled as one (product of experts per action token).

Built on the shipped model (no torch needed) and a copy of it with perturbed weights (a different policy with the
same spec), so the combination rule is checked against the members' own log-probabilities.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gato_robot.core.stepping import action_token, observation_chunk
from gato_robot.runtime.shipped import shipped_model_dir
from tests.conftest import random_observation

pytest.importorskip("onnxruntime")

from gato_robot.runtime.ensemble import EnsemblePolicy
from gato_robot.runtime.onnx_policy import OnnxPolicy

STEPS = 8


@pytest.fixture(scope="module")
def shipped():
    model = shipped_model_dir()
    assert model is not None
    return model


@pytest.fixture(scope="module")
def perturbed(shipped, tmp_path_factory):
    """The shipped model with Gaussian noise on every float matrix: another policy of the same spec."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from gato_robot.core.manifest import write_manifest

    out = tmp_path_factory.mktemp("perturbed")
    graph = onnx.load(str(shipped / "model.onnx"))
    rng = np.random.default_rng(0)
    changed = 0
    for init in graph.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim == 2:
            w = w + rng.normal(0, 0.2 * (w.std() + 1e-6), w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
            changed += 1
    assert changed > 0
    onnx.save(graph, str(out / "model.onnx"))
    fields = {k: v for k, v in json.loads((shipped / "manifest.json").read_text()).items()
              if k not in ("files", "format", "format_version")}
    write_manifest(out, ["model.onnx"], **fields)
    return out


def _rollout(policy, spec, seed=0):
    rng = np.random.default_rng(seed)
    state, actions, tokens = policy.initial_state(), [], []
    for _ in range(STEPS):
        action, state = policy.step(random_observation(spec, rng), state)
        actions.append(action)
        tokens.append(state.action_tokens.copy())
    return np.stack(actions), np.stack(tokens), state


def test_an_ensemble_of_one_model_acts_as_that_model(shipped):
    single = OnnxPolicy(shipped, providers="cpu", temperature=1.0, seed=7)
    twice = EnsemblePolicy([shipped, shipped], providers="cpu", temperature=1.0, seed=7)
    a, ta, _ = _rollout(single, single.spec)
    b, tb, _ = _rollout(twice, twice.spec)
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(a, b)


def test_weights_select_and_mix_members(shipped, perturbed):
    base = OnnxPolicy(shipped, providers="cpu", temperature=1.0, seed=3)
    other = OnnxPolicy(perturbed, providers="cpu", temperature=1.0, seed=3)
    _, t_base, _ = _rollout(base, base.spec)
    _, t_other, _ = _rollout(other, other.spec)
    assert (t_base != t_other).any()  # the perturbed copy is a different policy
    only_first = EnsemblePolicy([shipped, perturbed], weights=[1, 0], providers="cpu", temperature=1.0, seed=3)
    only_second = EnsemblePolicy([shipped, perturbed], weights=[0, 2], providers="cpu", temperature=1.0, seed=3)
    np.testing.assert_array_equal(_rollout(only_first, base.spec)[1], t_base)
    np.testing.assert_array_equal(_rollout(only_second, base.spec)[1], t_other)


def test_the_combined_distribution_is_the_mean_of_member_log_probabilities(shipped, perturbed):
    ens = EnsemblePolicy([shipped, perturbed], weights=[3, 1], providers="cpu", temperature=1.0, seed=5)
    members = [OnnxPolicy(d, providers="cpu", temperature=1.0) for d in (shipped, perturbed)]
    rng = np.random.default_rng(1)
    state = ens.initial_state()
    for _ in range(4):
        obs = random_observation(ens.spec, rng)
        _, state = ens.step(obs, state)
        expected = 0
        for w, m in zip((0.75, 0.25), members):  # each member scores the ensemble's chosen tokens
            s = m.initial_state()
            chunk, n_obs = observation_chunk(m.tokenizer.tokenize_observation(obs), None)
            logits, rows = m._append(chunk, s), []
            for j, (lo, hi) in enumerate(m.ranges):
                x = logits[lo - m.logits_lo: hi - m.logits_lo].astype(np.float64)
                rows.append(x - x.max() - np.log(np.exp(x - x.max()).sum()))
                if j + 1 < len(m.ranges):
                    logits = m._append(action_token(int(state.action_tokens[j]), n_obs + j), s)
            expected = expected + w * np.stack(rows)
        expected = expected - np.log(np.exp(expected).sum(axis=1, keepdims=True))  # renormalised
        np.testing.assert_allclose(state.logits, expected, atol=1e-5)
        np.testing.assert_allclose(np.log(np.exp(state.logits).sum(axis=1)), 0, atol=1e-9)  # normalised


def test_sampling_is_seeded(shipped, perturbed):
    def run(seed):
        ens = EnsemblePolicy([shipped, perturbed], providers="cpu", temperature=1.0, seed=seed)
        return _rollout(ens, ens.spec)[1]

    np.testing.assert_array_equal(run(11), run(11))
    assert (run(11) != run(12)).any()


def test_bad_ensembles_are_refused(shipped, perturbed, tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        EnsemblePolicy([shipped], providers="cpu")
    with pytest.raises(ValueError, match="weights"):
        EnsemblePolicy([shipped, perturbed], weights=[1, -1], providers="cpu")
    with pytest.raises(ValueError, match="weights"):
        EnsemblePolicy([shipped, perturbed], weights=[0, 0], providers="cpu")
    other = tmp_path / "other"
    shutil.copytree(perturbed, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"]["markov"] = not manifest["model"]["markov"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="differ"):
        EnsemblePolicy([shipped, other], providers="cpu")


def test_the_benchmark_names_an_ensemble(shipped):
    from gato_robot.sim.policies import make_policy

    policy = make_policy(f"ensemble:{shipped},{shipped}", seed=0, threads=1, temperature=1.0)
    assert isinstance(policy, EnsemblePolicy) and len(policy.members) == 2
