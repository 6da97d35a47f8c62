"""The tokenizer's bounds (shared/reference/safety.md), text, images and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gato_robot.core import vocab
from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec, rgb_stacking_spec
from gato_robot.core.tokenizer import (
    TextTokenizer,
    Tokenizer,
    bin_decode,
    decode_mu_law,
    default_text_model_path,
    encode_linear,
    encode_mu_law,
    fit_image,
    patchify,
    resize_image,
)

M = vocab.MU_LAW_M
# |x - x_hat| <= (|x| + 1/mu) * (exp(ln(1 + mu M) / 1024) - 1), about 0.0099618 (safety.md)
GROWTH = math.exp(math.log1p(vocab.MU * M) / vocab.NUM_BINS) - 1.0


# -- continuous values: the bounds of safety.md ------------------------------------------------------------
def test_growth_constant_matches_reference():
    assert pytest.approx(0.0099618, abs=5e-7) == GROWTH


@settings(max_examples=25, deadline=None)
@given(arrays(np.float64, 20_000, elements=st.floats(-M, M, allow_nan=False)))
def test_round_trip_error_bound_20000_samples(x):
    x_hat = decode_mu_law(encode_mu_law(x))
    bound = (np.abs(x) + 1.0 / vocab.MU) * GROWTH
    assert np.all(np.abs(x - x_hat) <= bound * (1 + 1e-9) + 1e-12)


def test_error_bound_is_tight_at_zero_and_small_inside_unit_interval():
    assert abs(decode_mu_law(encode_mu_law(0.0))) == pytest.approx(GROWTH / vocab.MU, rel=1e-9)  # about 1e-4
    x = np.linspace(-1, 1, 10_001)
    assert np.max(np.abs(decode_mu_law(encode_mu_law(x)) - x)) < 0.01


def test_edges_never_leave_the_bins():
    assert encode_mu_law(M) == vocab.NUM_BINS - 1 == 1023
    assert encode_mu_law(-M) == 0
    # beyond +-M: saturate, never wrap
    assert encode_mu_law(1e12) == 1023 and encode_mu_law(-1e12) == 0
    assert encode_mu_law(np.nextafter(M, np.inf)) == 1023


def test_encode_of_decode_is_identity_for_every_bin():
    k = np.arange(vocab.NUM_BINS)
    np.testing.assert_array_equal(encode_mu_law(decode_mu_law(k)), k)


def test_decoding_returns_bin_centres():
    np.testing.assert_allclose(bin_decode(np.array([0, 511, 512, 1023])), [-1 + 1 / 1024, -1 / 1024, 1 / 1024, 1 - 1 / 1024])


@given(st.floats(-1e6, 1e6, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False))
def test_monotone(a, b):
    lo, hi = min(a, b), max(a, b)
    assert encode_mu_law(lo) <= encode_mu_law(hi)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_raise(bad):
    with pytest.raises(ValueError, match="non-finite"):
        encode_mu_law(np.array([0.0, bad]))
    with pytest.raises(ValueError, match="non-finite"):
        encode_linear(np.array([bad]), np.array([-1.0]), np.array([1.0]))


def test_inputs_in_unit_interval_use_about_466_bins():
    used = np.unique(encode_mu_law(np.linspace(-1, 1, 200_001)))
    assert 460 <= used.size <= 470


@settings(max_examples=200)
@given(st.floats(-0.07, 0.07), st.floats(-1, 1), st.floats(-255, 255))
def test_linear_actions_round_trip_within_half_a_bin(v, yaw, grip):
    spec = rgb_stacking_spec(2)
    tok = Tokenizer(spec)
    a = np.array([v, -v, v, yaw, grip])
    back = tok.detokenize_action(tok.tokenize_action(a))
    half_bin = (np.array(spec.actions[0].high) - np.array(spec.actions[0].low)) / vocab.NUM_BINS / 2
    assert np.all(np.abs(back - a) <= half_bin * (1 + 1e-6))


def test_action_tokens_live_in_the_bin_range_and_saturate():
    tok = Tokenizer(rgb_stacking_spec(2))
    ids = tok.tokenize_action(np.array([10.0, -10.0, 0.0, 0.0, 1000.0]))  # 10x out of range
    assert np.all((ids >= vocab.BIN_OFFSET) & (ids < vocab.BIN_OFFSET + vocab.NUM_BINS))
    back = tok.detokenize_action(ids)
    assert back[0] == pytest.approx(0.07, abs=1e-3) and back[1] == pytest.approx(-0.07, abs=1e-3)
    assert back[4] == pytest.approx(255, abs=0.5)


def test_detokenize_rejects_tokens_outside_the_action_range():
    tok = Tokenizer(rgb_stacking_spec(2))
    with pytest.raises(ValueError, match="outside its allowed range"):
        tok.detokenize_action([vocab.SEPARATOR, 32000, 32000, 32000, 32000])
    with pytest.raises(ValueError, match="expected 5 action tokens"):
        tok.detokenize_action([32000])


# -- text ----------------------------------------------------------------------------------------------------
def test_text_round_trip_with_the_default_model():
    text = TextTokenizer()
    assert text.vocab_size == vocab.TEXT_VOCAB_SIZE
    ids = text.encode("stack the red object on the blue one")
    assert ids.dtype == np.int64 and np.all((ids >= 0) & (ids < vocab.TEXT_VOCAB_SIZE))
    assert text.decode(ids) == "stack the red object on the blue one"


def test_text_model_from_a_user_path():
    path = default_text_model_path()
    assert path.name == "tokenizer.model.v1" and path.is_file()
    assert TextTokenizer(str(path)).decode(TextTokenizer(path).encode("hello robot")) == "hello robot"


def test_missing_text_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextTokenizer(tmp_path / "nope.model")


# -- images --------------------------------------------------------------------------------------------------
def test_patch_order_and_values_on_a_hand_built_image():
    # 32 x 48 image: 2 x 3 patches, patch k filled with value 10 * k, except pixel (r, c) of patch 0 = r * 16 + c
    img = np.zeros((32, 48, 3), np.uint8)
    for k in range(6):
        r, c = divmod(k, 3)
        img[16 * r : 16 * r + 16, 16 * c : 16 * c + 16] = 10 * k
    img[:16, :16, 0] = (np.arange(16)[:, None] * 16 + np.arange(16)[None, :]).astype(np.uint8)
    patches, rows, cols = patchify(img)
    assert patches.shape == (6, 16, 16, 3) and patches.dtype == np.float32
    for k in range(1, 6):  # raster order: row-major over patches
        np.testing.assert_allclose(patches[k], (10 * k / 255 * 2 - 1) / 4, rtol=1e-6)
    np.testing.assert_allclose(patches[0, :, :, 0], (img[:16, :16, 0] / 255 * 2 - 1) / 4, rtol=1e-6, atol=1e-7)
    assert patches.min() >= -0.25 and patches.max() <= 0.25
    # row intervals: 2 rows of 16 px in 32 px -> [0, 64), [64, 128); columns of 48 px -> thirds of 128
    np.testing.assert_array_equal(rows, [[0, 64]] * 3 + [[64, 128]] * 3)
    np.testing.assert_array_equal(cols, [[0, 43], [42, 86], [85, 128]] * 2)


def test_patch_positions_never_index_128():
    from gato_robot.core.sequence import patch_position_index

    rng = np.random.default_rng(0)
    for h, w in [(16, 16), (128, 128), (48, 80), (16, 1024)]:
        _, rows, cols = patchify(np.zeros((h, w, 3), np.uint8))
        for r in (None, rng):
            for iv in (rows, cols):
                idx = np.concatenate([patch_position_index(iv, r) for _ in range(50)])
                assert idx.min() >= 0 and idx.max() <= 127
                assert np.all((idx >= np.tile(iv[:, 0], 50)) & (idx < np.tile(iv[:, 1], 50)))


def test_sizes_not_divisible_by_16_are_resized_not_truncated():
    img = np.full((50, 70, 3), 200, np.uint8)
    patches, _, _ = patchify(img)
    assert patches.shape[0] == (48 // 16) * (64 // 16)  # nearest multiples of 16: 48 x 64
    assert fit_image(img).shape == (48, 64, 3)
    np.testing.assert_allclose(patches, (200 / 255 * 2 - 1) / 4, rtol=1e-6)


def test_resize_preserves_constant_images_and_hits_the_size():
    img = np.full((480, 640, 3), 77, np.uint8)
    out = resize_image(img, 128, 128)
    assert out.shape == (128, 128, 3) and np.all(out == 77)


# -- the spec-driven tokenizer and its bad input -------------------------------------------------------------
def test_rgb_stacking_token_counts():
    assert rgb_stacking_spec(2).max_timestep_tokens == 128 + 29 + 1 + 5 == 163
    assert rgb_stacking_spec(3).max_timestep_tokens == 192 + 29 + 1 + 5 == 227


def test_observations_of_another_size_are_resized_to_the_spec(small_spec):
    from tests.conftest import random_observation

    tok = Tokenizer(small_spec)
    obs = random_observation(small_spec, np.random.default_rng(0))
    obs["camera/a"] = np.zeros((64, 96, 3), np.uint8)
    block = tok.tokenize_observation(obs)
    assert block.num_patches == 2 * 4


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("camera/a", np.zeros((32, 32, 3), np.float32), "camera/a: images must be uint8"),
        ("camera/a", np.zeros((32, 32), np.uint8), r"camera/a: images must be \(H, W, 3\)"),
        ("camera/a", np.zeros((8, 32, 3), np.uint8), "camera/a: image 8x32 is smaller"),
        ("proprio/joints", np.zeros(6), r"proprio/joints: expected shape \(7,\)"),
        ("proprio/joints", np.array([0, 0, 0, np.nan, 0, 0, 0]), "proprio/joints: non-finite"),
        ("proprio/gripper", np.array([np.inf, 0]), "proprio/gripper: non-finite"),
        ("proprio/gripper", np.array(["a", "b"]), "proprio/gripper: continuous values must be numeric"),
    ],
)
def test_bad_observations_name_the_key(small_spec, key, value, message):
    from tests.conftest import random_observation

    obs = random_observation(small_spec, np.random.default_rng(0))
    obs[key] = value
    with pytest.raises(ValueError, match=message):
        Tokenizer(small_spec).tokenize_observation(obs)


def test_missing_observation_key_is_named(small_spec):
    from tests.conftest import random_observation

    obs = random_observation(small_spec, np.random.default_rng(0))
    del obs["proprio/joints"]
    with pytest.raises(ValueError, match="proprio/joints"):
        Tokenizer(small_spec).tokenize_observation(obs)


def _text_discrete_spec() -> RobotSpec:
    return RobotSpec(
        "babyai_like",
        observations=(
            TensorSpec("mission", Kind.TEXT, max_tokens=8),
            TensorSpec("grid", Kind.DISCRETE, (2, 2), num_values=11),
        ),
        actions=(TensorSpec("action", Kind.DISCRETE, (1,), num_values=7),),
    )


def test_discrete_and_text_bad_input():
    tok = Tokenizer(_text_discrete_spec())
    good = {"mission": "go to the red ball", "grid": np.array([[0, 1], [2, 10]])}
    block = tok.tokenize_observation(good)
    np.testing.assert_array_equal(block.tokens[-5:-1], vocab.DISCRETE_OFFSET + np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"grid: discrete values must be in \[0, 11\)"):
        tok.tokenize_observation({**good, "grid": np.array([[0, 1], [2, 11]])})
    with pytest.raises(ValueError, match=r"grid: discrete values must be in \[0, 11\)"):
        tok.tokenize_observation({**good, "grid": np.array([[0, -1], [2, 3]])})
    with pytest.raises(ValueError, match="grid: discrete values must be integers"):
        tok.tokenize_observation({**good, "grid": np.array([[0.5, 1], [2, 3]])})
    with pytest.raises(ValueError, match="mission: empty text"):
        tok.tokenize_observation({**good, "mission": "  "})
    with pytest.raises(ValueError, match="mission: expected a string"):
        tok.tokenize_observation({**good, "mission": 3})
    long = tok.tokenize_observation({**good, "mission": "go to the red ball and then the blue key and the box"})
    assert int((long.kinds == vocab.TokenKind.TEXT).sum()) == 8  # truncated to max_tokens
    assert tok.detokenize_action(tok.tokenize_action(np.array([6]))).tolist() == [6.0]
    with pytest.raises(ValueError, match=r"action: discrete values must be in \[0, 7\)"):
        tok.tokenize_action(np.array([7]))


def test_wrong_action_shape_is_named():
    tok = Tokenizer(rgb_stacking_spec(2))
    with pytest.raises(ValueError, match=r"action: expected action shape \(5,\)"):
        tok.tokenize_action(np.zeros(4))
    with pytest.raises(ValueError, match="action: non-finite"):
        tok.tokenize_action(np.array([0, 0, np.nan, 0, 0]))


def test_linear_encoding_needs_bounds():
    with pytest.raises(ValueError, match="linear encoding needs low and high"):
        TensorSpec("a", Kind.CONTINUOUS, (2,), Encoding.LINEAR)
