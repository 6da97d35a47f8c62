"""TorchPolicy (explicit state, restricted action decoding, prompts) and checkpoints (safetensors + JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gato_robot.core import vocab
from gato_robot.core.sequence import TokenBlock, build_episode, build_timestep, collate
from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, save_checkpoint
from gato_robot.model.config import preset
from gato_robot.model.embedding import inputs_from_batch
from gato_robot.model.gato import Gato
from gato_robot.model.policy import TorchPolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTION_LOW, ACTION_HIGH = (-1.0, -1.0, -2.0), (1.0, 1.0, 2.0)


def two_camera_spec() -> RobotSpec:
    """Two 32x32 cameras (8 patches), 7 + 2 proprio values, '|', a 3-D action and a discrete one: 18 + 4 tokens."""
    return RobotSpec(
        name="test_2cam",
        observations=(
            TensorSpec("camera/a", Kind.IMAGE, (32, 32, 3)),
            TensorSpec("camera/b", Kind.IMAGE, (32, 32, 3)),
            TensorSpec("proprio/joints", Kind.CONTINUOUS, (7,)),
            TensorSpec("proprio/gripper", Kind.CONTINUOUS, (2,)),
        ),
        actions=(
            TensorSpec("action", Kind.CONTINUOUS, (3,), Encoding.LINEAR, low=ACTION_LOW, high=ACTION_HIGH),
            TensorSpec("mode", Kind.DISCRETE, (1,), num_values=3),
        ),
    )


def observation(spec: RobotSpec, rng: np.random.Generator) -> dict:
    obs = {}
    for s in spec.observations:
        if s.kind is Kind.IMAGE:
            obs[s.name] = rng.integers(0, 256, s.shape, dtype=np.uint8)
        else:
            obs[s.name] = rng.normal(size=s.shape)
    return obs


def model(context: int = 1024, seed: int = 0) -> Gato:
    torch.manual_seed(seed)
    return Gato(preset("tiny", context=context)).eval()


def test_step_returns_physical_action_in_bounds_with_tokens_in_range():
    spec = two_camera_spec()
    policy = TorchPolicy(model(), spec, record_logits=True)
    rng = np.random.default_rng(0)
    state = policy.initial_state()
    base, top = policy.logits_ids
    assert (base, top) == (vocab.BIN_OFFSET, vocab.BIN_OFFSET + vocab.NUM_BINS)
    for t in range(3):
        action, state = policy.step(observation(spec, rng), state)
        assert action.dtype == np.float32 and action.shape == (4,)
        assert np.all(action[:3] >= np.array(ACTION_LOW)) and np.all(action[:3] <= np.array(ACTION_HIGH))
        assert action[3] in (0.0, 1.0, 2.0)
        assert state.logits.shape == (4, top - base)
        for tok, (lo, hi), logits in zip(state.action_tokens, policy.ranges, state.logits):
            assert tok == lo + int(np.argmax(logits[lo - base : hi - base]))  # greedy, in range
        assert state.timestep == t + 1
    assert policy.ranges[3] == (vocab.DISCRETE_OFFSET, vocab.DISCRETE_OFFSET + 3)


def reference_decoding(m: Gato, tok: Tokenizer, observations: list, ranges: list, window: int):
    """Greedy restricted decoding with the full (windowed) forward, re-run from scratch for every token.

    Returns the chosen ids (T, A) and the action-bin logits at every decision (T, A, 1024).
    """

    def actions(ids: list[int], n_obs: int) -> TokenBlock:
        act = TokenBlock.of_tokens(np.array(ids, dtype=np.int64), vocab.TokenKind.ACTION, loss=True)
        act.local_pos = n_obs + np.arange(len(ids))  # action dim j at n_obs + j (the separator at n_obs - 1)
        return act

    done: list[TokenBlock] = []
    chosen, all_logits = [], []
    for t, obs in enumerate(observations):
        step = build_timestep(tok, obs, t=t)
        ids: list[int] = []
        for lo, hi in ranges:
            seq = TokenBlock.concatenate([*done, step, actions(ids, len(step))])
            with torch.no_grad():
                logits = m(inputs_from_batch(collate([seq])), window=window).logits[0, -1]
            all_logits.append(logits[vocab.BIN_OFFSET : vocab.SEPARATOR].numpy())
            ids.append(int(logits[lo:hi].argmax()) + lo)
        done += [step, actions(ids, len(step))]
        chosen.append(ids)
    return np.array(chosen), np.array(all_logits).reshape(len(observations), len(ranges), -1)


def test_policy_matches_full_forward_greedy_decoding_across_window_slide():
    spec = two_camera_spec()  # 22 tokens per timestep
    window = 40
    m = model(context=window)
    policy = TorchPolicy(m, spec, record_logits=True)
    rng = np.random.default_rng(1)
    observations = [observation(spec, rng) for _ in range(5)]  # 110 tokens: the window slides
    state = policy.initial_state()
    got_ids, got_logits = [], []
    for obs in observations:
        _, state = policy.step(obs, state)
        got_ids.append(state.action_tokens)
        got_logits.append(state.logits)
    want_ids, want_logits = reference_decoding(m, policy.tokenizer, observations, policy.ranges, window)
    np.testing.assert_allclose(np.array(got_logits), want_logits, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.array(got_ids), want_ids)


def test_state_is_explicit_clone_replays_identically():
    spec = two_camera_spec()
    policy = TorchPolicy(model(), spec, temperature=1.0, seed=3)
    rng = np.random.default_rng(2)
    obs = [observation(spec, rng) for _ in range(3)]
    state = policy.initial_state()
    _, state = policy.step(obs[0], state)
    saved = state.clone()
    a1, s1 = policy.step(obs[1], state)
    b1, t1 = policy.step(obs[1], saved)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(s1.action_tokens, t1.action_tokens)
    # a step appends the observation and '|' (18 tokens) and 3 of the 4 action tokens; the 4th goes in next step
    assert int(policy.step(obs[0], policy.initial_state())[1].cache.pos) == 18 + 3


@pytest.mark.parametrize("context", [1024, 40])  # 40: the 3-timestep prompt (66 tokens) overflows the window
def test_prompt_is_prefilled_and_conditions_the_first_step(context):
    spec = two_camera_spec()
    rng = np.random.default_rng(3)
    demo = [(observation(spec, rng), {"action": rng.uniform(-1, 1, 3), "mode": np.array([1])}) for _ in range(3)]
    m = model(context=context)
    plain = TorchPolicy(m, spec)
    prompted = TorchPolicy(m, spec, prompt=demo, record_logits=True)
    assert int(plain.initial_state().cache.pos) == 0
    assert int(prompted.initial_state().cache.pos) == 3 * 22
    block = build_episode(prompted.tokenizer, [o for o, _ in demo], [a for _, a in demo])
    assert int(TorchPolicy(m, spec, prompt=block).initial_state().cache.pos) == len(block)
    # the prompted policy's first decision equals the full forward over [demo, observation]
    obs = observation(spec, rng)
    _, state = prompted.step(obs, prompted.initial_state())
    seq = TokenBlock.concatenate([block, build_timestep(prompted.tokenizer, obs)])
    with torch.no_grad():
        logits = m(inputs_from_batch(collate([seq])), window=context).logits[0, -1]
    np.testing.assert_allclose(state.logits[0], logits[vocab.BIN_OFFSET : vocab.SEPARATOR].numpy(), atol=1e-4, rtol=0)
    # and differs from the unprompted one
    _, plain_state = TorchPolicy(m, spec, record_logits=True).step(obs, plain.initial_state())
    assert np.abs(plain_state.logits[0] - state.logits[0]).max() > 1e-4


def test_step_tokens_takes_an_observation_tokenized_elsewhere():
    spec = two_camera_spec()
    policy = TorchPolicy(model(), spec)
    obs = observation(spec, np.random.default_rng(5))
    a1, s1 = policy.step(obs, policy.initial_state())
    a2, s2 = policy.step_tokens(policy.tokenizer.tokenize_observation(obs), policy.initial_state())
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(s1.action_tokens, s2.action_tokens)
    without_separator = policy.tokenizer.tokenize_observation(obs).slice(0, 5)
    with pytest.raises(ValueError, match="separator"):
        policy.step_tokens(without_separator, policy.initial_state())


def test_policy_rejects_a_spec_too_long_for_the_context():
    with pytest.raises(ValueError, match="too many for the model's context"):
        TorchPolicy(model(context=16), two_camera_spec())


# -- checkpoints ----------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    spec = two_camera_spec()
    m = model(seed=5)
    tok = Tokenizer(spec)
    save_checkpoint(tmp_path / "ckpt", m, spec, tok.settings, metadata={"step": 7})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded, loaded_spec = load_checkpoint(tmp_path / "ckpt")
    assert loaded_spec == spec and loaded.config == m.config and not loaded.training
    for a, b in zip(m.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    rng = np.random.default_rng(4)
    obs = [observation(spec, rng) for _ in range(3)]
    p1, p2 = TorchPolicy(m, spec), TorchPolicy.from_checkpoint(tmp_path / "ckpt")
    s1, s2 = p1.initial_state(), p2.initial_state()
    for o in obs:
        a1, s1 = p1.step(o, s1)
        a2, s2 = p2.step(o, s2)
        np.testing.assert_array_equal(a1, a2)
    cfg = read_checkpoint_config(tmp_path / "ckpt")
    assert cfg["metadata"] == {"step": 7} and cfg["tokenizer"]["separator"] == vocab.SEPARATOR


def test_checkpoint_refuses_missing_unexpected_or_misshaped_weights(tmp_path):
    spec = two_camera_spec()
    d = save_checkpoint(tmp_path / "c", model(), spec)
    weights = load_file(str(d / "model.safetensors"))
    name = "embed.local_pos.weight"

    def rewrite(tensors):
        save_file(tensors, str(d / "model.safetensors"))

    rewrite({k: v for k, v in weights.items() if k != name})
    with pytest.raises(CheckpointError, match=rf"missing \['{name}'\]"):
        load_checkpoint(d)
    rewrite({**weights, "extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"unexpected \['extra.weight'\]"):
        load_checkpoint(d)
    rewrite({**weights, name: torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_checkpoint(d)


def test_checkpoint_refuses_foreign_configs(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path)
    d = save_checkpoint(tmp_path / "c", model(), two_camera_spec())
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(d)
    config["model"]["n_embd"] = 3
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown GatoConfig fields"):
        load_checkpoint(d)


def test_a_markov_policy_acts_on_the_current_timestep_only():
    """GatoConfig.markov: every step starts from the initial cache, so a step's logits are those of the same
    observation given to a fresh state, whatever came before; with history (the default) they are not."""
    spec = two_camera_spec()
    rng = np.random.default_rng(7)
    obs = [observation(spec, rng) for _ in range(4)]
    torch.manual_seed(0)
    base = Gato(preset("tiny", context=64))
    markov = Gato(base.config.replace(markov=True)).eval()
    markov.load_state_dict(base.state_dict())
    for m, forgets in ((markov, True), (base.eval(), False)):
        policy = TorchPolicy(m, spec, record_logits=True)
        state = policy.initial_state()
        for o in obs[:3]:
            _, state = policy.step(o, state)
        _, after_history = policy.step(obs[3], state)
        _, alone = policy.step(obs[3], policy.initial_state())
        assert after_history.timestep == 4
        same = np.allclose(after_history.logits, alone.logits, atol=1e-5)
        assert same is forgets
