"""Sequence order, loss mask, positions, windows and batches on hand-built episodes; spec validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gato_robot.core import vocab
from gato_robot.core.sequence import TokenBlock, build_episode, build_timestep, collate, last_window, windows
from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec, rgb_stacking_spec
from gato_robot.core.tokenizer import Tokenizer, encode_linear, encode_mu_law

K = vocab.TokenKind


def hand_spec() -> RobotSpec:
    # declared out of order on purpose: the spec sorts text, images, then tensors by key
    return RobotSpec(
        "hand",
        observations=(
            TensorSpec("z_scalar", Kind.CONTINUOUS, (1,)),
            TensorSpec("cam", Kind.IMAGE, (16, 32, 3)),
            TensorSpec("a_discrete", Kind.DISCRETE, (2,), num_values=5),
            TensorSpec("instruction", Kind.TEXT, max_tokens=4),
        ),
        actions=(TensorSpec("move", Kind.CONTINUOUS, (2,), Encoding.LINEAR, low=(-1, -1), high=(1, 1)),),
    )


def test_spec_orders_text_images_then_tensors_by_key():
    assert hand_spec().observation_keys == ("instruction", "cam", "a_discrete", "z_scalar")


def test_two_step_episode_order_mask_and_positions():
    spec = hand_spec()
    tok = Tokenizer(spec)
    text_ids = tok.text.encode("go")
    n_text = len(text_ids)
    obs = [
        {"instruction": "go", "cam": np.full((16, 32, 3), 255, np.uint8), "a_discrete": np.array([1, 4]),
         "z_scalar": np.array([2.0])},
        {"instruction": "go", "cam": np.zeros((16, 32, 3), np.uint8), "a_discrete": np.array([0, 3]),
         "z_scalar": np.array([-3.0])},
    ]
    acts = [np.array([0.5, -0.5]), np.array([-1.0, 1.0])]
    ep = build_episode(tok, obs, acts)

    step_len = n_text + 2 + 2 + 1 + 1 + 2  # text, 2 patches, 2 discrete, 1 continuous, '|', 2 actions
    assert len(ep) == 2 * step_len
    one_step = [K.TEXT] * n_text + [K.IMAGE] * 2 + [K.DISCRETE] * 2 + [K.CONTINUOUS] + [K.SEPARATOR] + [K.ACTION] * 2
    np.testing.assert_array_equal(ep.kinds, one_step * 2)
    # token ids, step 1
    expected = np.concatenate([
        text_ids, [vocab.IMAGE_PLACEHOLDER] * 2, vocab.DISCRETE_OFFSET + np.array([1, 4]),
        vocab.BIN_OFFSET + encode_mu_law(np.array([2.0])), [vocab.SEPARATOR],
        vocab.BIN_OFFSET + encode_linear(np.array([0.5, -0.5]), np.array([-1.0, -1]), np.array([1.0, 1])),
    ])
    np.testing.assert_array_equal(ep.tokens[:step_len], expected)
    # loss mask: text and actions only
    np.testing.assert_array_equal(ep.loss_mask, [k in (K.TEXT, K.ACTION) for k in one_step] * 2)
    # local positions restart at each timestep; separator and actions continue the count
    np.testing.assert_array_equal(ep.local_pos, list(range(step_len)) * 2)
    np.testing.assert_array_equal(ep.timestep, [0] * step_len + [1] * step_len)
    # patches: white then black, in timestep order
    assert ep.num_patches == 4
    np.testing.assert_allclose(ep.patches[:2], 0.25)
    np.testing.assert_allclose(ep.patches[2:], -0.25)

    # the control-data variant: text is context, not a target
    ctl = build_timestep(tok, obs[0], acts[0], text_targets=False)
    assert not ctl.loss_mask[ctl.kinds == K.TEXT].any() and ctl.loss_mask[ctl.kinds == K.ACTION].all()


def test_windows_cut_at_timestep_boundaries_and_batches_pad():
    spec = rgb_stacking_spec(2)
    tok = Tokenizer(spec)
    rng = np.random.default_rng(1)
    from tests.conftest import random_action, random_observation

    n = 20
    ep = build_episode(tok, [random_observation(spec, rng) for _ in range(n)], [random_action(spec, rng) for _ in range(n)])
    assert len(ep) == n * 163
    ws = windows(ep, 1024)
    assert [len(w) for w in ws] == [6 * 163, 6 * 163, 6 * 163, 2 * 163]  # 1024 // 163 = 6 whole timesteps
    assert all(w.local_pos[0] == 0 for w in ws)
    assert sum(w.num_patches for w in ws) == ep.num_patches
    np.testing.assert_array_equal(np.concatenate([w.tokens for w in ws]), ep.tokens)
    tail = last_window(ep, 1024)
    assert len(tail) == 6 * 163 and tail.timestep[0] == n - 6

    eval_batch = collate(ws, 1024)
    assert eval_batch.tokens.shape == (4, 1024) and eval_batch.patches.shape == (4, 1024, 768)
    assert eval_batch.valid.sum(axis=1).tolist() == [978, 978, 978, 326]
    assert not eval_batch.loss_mask[~eval_batch.valid].any()
    assert eval_batch.is_image.sum() == ep.num_patches
    # evaluation uses the rounded interval mean: 128 px images, rows [16i, 16i+16) -> index 16i + 8
    assert set(np.unique(eval_batch.patch_row[eval_batch.is_image]).tolist()) == {16 * i + 8 for i in range(8)}
    train_batch = collate(ws, 1024, rng=np.random.default_rng(0))
    assert len(np.unique(train_batch.patch_row[train_batch.is_image])) > 8  # sampled inside the interval
    np.testing.assert_array_equal(train_batch.patch_row[train_batch.is_image] // 16, eval_batch.patch_row[eval_batch.is_image] // 16)
    # patches land at their positions: the first image token of sequence 0 is patch 0 of the episode
    np.testing.assert_array_equal(eval_batch.patches[0, 0], ep.patches[0].reshape(-1))


def test_a_timestep_longer_than_the_context_is_cut_inside():
    block = TokenBlock.concatenate([TokenBlock.of_tokens(np.arange(10), K.CONTINUOUS)])
    block.local_pos = np.arange(10)
    assert [len(w) for w in windows(block, 4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="more than context_len"):
        collate([block], context_len=4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TensorSpec("img", Kind.IMAGE, (100, 128, 3)), "must be a multiple of 16"),
        (lambda: TensorSpec("img", Kind.IMAGE, (128, 128)), r"images are \(H, W, 3\)"),
        (lambda: TensorSpec("d", Kind.DISCRETE, (2,), num_values=2000), r"num_values in \[1, 1024\]"),
        (lambda: TensorSpec("d", Kind.DISCRETE, (2,)), "num_values"),
        (lambda: TensorSpec("t", Kind.TEXT), "max_tokens"),
        (lambda: TensorSpec("c", Kind.CONTINUOUS, (2,), Encoding.LINEAR, low=(0, 0), high=(1, 0)), "high must exceed"),
        (lambda: TensorSpec("c", Kind.CONTINUOUS, (2,), Encoding.LINEAR, low=(0,), high=(1, 1)), "low has 1 values"),
        (lambda: TensorSpec("c", Kind.CONTINUOUS, (0,)), "non-positive"),
        (lambda: TensorSpec("", Kind.CONTINUOUS, (1,)), "non-empty name"),
        (lambda: TensorSpec("c", "vector", (1,)), "vector"),
        (lambda: RobotSpec("r", (TensorSpec("x", Kind.CONTINUOUS, (1,)),), ()), "at least one action"),
        (lambda: RobotSpec("r", (TensorSpec("x", Kind.CONTINUOUS, (1,)),),
                           (TensorSpec("x", Kind.DISCRETE, (1,), num_values=2),)), "duplicate keys"),
        (lambda: RobotSpec("r", tuple(TensorSpec(f"c{i}", Kind.IMAGE, (128, 128, 3)) for i in range(8)),
                           (TensorSpec("a", Kind.DISCRETE, (1,), num_values=2),)), "more than the 512 local positions"),
        (lambda: rgb_stacking_spec(4), "cameras must be 1, 2 or 3"),
        (lambda: rgb_stacking_spec(["front"]), "unknown cameras"),
    ],
)
def test_spec_validation_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_spec_json_round_trip():
    spec = rgb_stacking_spec(3)
    again = RobotSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["actions"][0]["encoding"] == "linear"
