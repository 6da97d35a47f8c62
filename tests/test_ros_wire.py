"""The ROS topic contract's array layouts (gato_robot.wire): pure numpy, no rclpy needed (the one test of the
message helpers in gato_robot.ros.common skips without it)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gato_robot import wire
from gato_robot.core import tokenizer, vocab
from gato_robot.core.specs import PANDA_ARM_JOINTS, rgb_stacking_spec
from gato_robot.core.tokenizer import Tokenizer
from tests.conftest import random_observation

SPEC = rgb_stacking_spec(2)


def test_observation_rows_round_trip_exactly():
    tok = Tokenizer(SPEC)
    block = tok.tokenize_observation(random_observation(SPEC, np.random.default_rng(0)))
    rows = wire.encode_observation_rows(block)
    assert rows.shape == (SPEC.max_observation_tokens + 1, wire.ROW_BYTES) and rows.dtype == np.uint8
    assert wire.ROW_BYTES == 796 and wire.HEAD_BYTES == 28
    back = wire.decode_observation_rows(rows)
    for f in dataclasses.fields(block):
        if f.name in ("loss_mask", "timestep"):
            continue  # not carried: inference needs neither
        ours, theirs = getattr(back, f.name), getattr(block, f.name)
        assert ours.shape == theirs.shape, f.name
        np.testing.assert_array_equal(ours, theirs, err_msg=f.name)
    # the policy's patch input is bit-identical to the tokenizer's (same dtype, same bytes)
    assert back.patches.dtype == block.patches.dtype == np.float32
    assert back.patches.tobytes() == block.patches.tobytes()
    # the documented layout: int32 fields, then the patch's pixels
    rec = rows.reshape(-1).view(wire.OBSERVATION_ROW)
    np.testing.assert_array_equal(rec["token"], block.tokens)
    img = block.kinds == vocab.TokenKind.IMAGE
    np.testing.assert_array_equal(tokenizer.patch_values(rec["pixels"][img]),
                                  block.patches.reshape(block.num_patches, -1))
    assert not rec["pixels"][~img].any() and not rec["row_hi"][~img].any()


@pytest.mark.parametrize("image_size", [64, 128])
def test_observation_encoder_makes_the_tokenizers_bytes(image_size):
    """The tokenizer node's fast path (camera pixels prepared on arrival, rows from a template) must publish
    exactly what encode_observation_rows(tokenize_observation(...)) would, for any camera size and values."""
    spec = rgb_stacking_spec(2, image_size).without(["proprio/previous_action"])
    tok = Tokenizer(spec)
    enc = wire.ObservationEncoder(tok)
    rng = np.random.default_rng(1)
    for trial in range(12):
        obs = random_observation(spec, rng)
        for name in enc.images:  # cameras of other sizes, resized by both paths
            h, w = (int(x) for x in rng.integers(17, 3 * image_size, 2))
            obs[name] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for name in enc.values:
            obs[name] = obs[name] * 10.0 ** int(rng.integers(-3, 3))  # small to saturating magnitudes
        reference = wire.encode_observation_rows(tok.tokenize_observation(obs))
        prepared = {k: enc.camera_pixels(k, v) if k in enc.images else v for k, v in obs.items()}
        assert enc.encode(prepared).tobytes() == reference.tobytes(), trial
        assert enc.encode(obs).tobytes() == reference.tobytes(), trial  # images given as images
    # what the tokenizer refuses, the encoder refuses
    bad = dict(prepared, **{"proprio/joint_angles": np.full(7, np.nan)})
    with pytest.raises(ValueError, match="non-finite"):
        enc.encode(bad)
    with pytest.raises(ValueError, match="lacks key"):
        enc.encode({k: v for k, v in prepared.items() if k != "proprio/tool_pose"})
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        enc.camera_pixels(next(iter(enc.images)), np.zeros((8, 8, 3), np.uint8))
    assert not enc.template.flags.writeable  # one template, never mutated by encode


def test_patch_values_are_the_patchify_formula_and_invert_exactly():
    pixels = np.arange(256, dtype=np.uint8)
    formula = pixels.astype(np.float32) * (2.0 / 255.0) - 1.0
    formula /= vocab.PATCH_SCALE
    assert tokenizer.patch_values(pixels).tobytes() == formula.tobytes()
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    patches, _, _ = tokenizer.patchify(image)
    grid = image.reshape(2, 16, 3, 16, 3).swapaxes(1, 2).reshape(-1, 16, 16, 3)
    old = grid.astype(np.float32) * (2.0 / 255.0) - 1.0  # patchify before patch_values existed
    old /= vocab.PATCH_SCALE
    assert patches.tobytes() == old.tobytes()
    np.testing.assert_array_equal(wire.patch_pixels(tokenizer.patch_values(pixels)), pixels)
    for bad in (np.float32(0.1), np.float32(np.nan), np.float32(0.3), np.float32(-0.26)):
        with pytest.raises(ValueError):
            wire.patch_pixels(np.array([bad]))
    with pytest.raises(ValueError):
        tokenizer.patch_values(np.array([1.0]))  # pixels must be uint8


def test_former_float_rows_convert_exactly():
    tok = Tokenizer(SPEC)
    block = tok.tokenize_observation(random_observation(SPEC, np.random.default_rng(2)))
    n = len(block)
    floats = np.zeros((n, wire.FLOAT_ROW_WIDTH), np.float32)  # the former 32FC1 layout
    floats[:, 0], floats[:, 1], floats[:, 2] = block.tokens, block.kinds, block.local_pos
    img = np.flatnonzero(block.kinds == vocab.TokenKind.IMAGE)
    floats[img, 3:5], floats[img, 5:7] = block.patch_rows, block.patch_cols
    floats[img, 7:] = block.patches.reshape(block.num_patches, -1)
    np.testing.assert_array_equal(wire.observation_from_float_rows(floats), wire.encode_observation_rows(block))
    for bad in (floats[:, :774], floats.astype(np.float64), _with(floats, (0, 0), 0.5),
                _with(floats, (img[0], 7), 0.1)):
        with pytest.raises(ValueError):
            wire.observation_from_float_rows(bad)


def test_observation_messages_new_and_former_layout():
    pytest.importorskip("rclpy")
    from gato_robot.ros import common

    block = Tokenizer(SPEC).tokenize_observation(random_observation(SPEC, np.random.default_rng(3)))
    rows = wire.encode_observation_rows(block)
    stamp = common.sec_to_stamp(1.5)
    msg = common.array_image(rows, wire.OBSERVATION_ENCODING, stamp, SPEC.name)
    assert (msg.encoding, msg.width, msg.step, len(msg.data)) == ("8UC1", 796, 796, rows.nbytes)
    np.testing.assert_array_equal(common.observation_rows(msg), rows)
    # an observation of the former float32 layout (an older log replayed) reads as the same rows
    floats = np.zeros((len(block), wire.FLOAT_ROW_WIDTH), np.float32)
    floats[:, 0], floats[:, 1], floats[:, 2] = block.tokens, block.kinds, block.local_pos
    img = np.flatnonzero(block.kinds == vocab.TokenKind.IMAGE)
    floats[img, 3:5], floats[img, 5:7] = block.patch_rows, block.patch_cols
    floats[img, 7:] = block.patches.reshape(block.num_patches, -1)
    old = common.array_image(floats, wire.FLOAT_OBSERVATION_ENCODING, stamp, SPEC.name)
    np.testing.assert_array_equal(common.observation_rows(old), rows)
    for field, value in (("encoding", "mono8"), ("width", 795), ("step", 795), ("is_bigendian", 1)):
        bad = common.array_image(rows, wire.OBSERVATION_ENCODING, stamp)
        setattr(bad, field, value)
        with pytest.raises(ValueError):
            common.observation_rows(bad)


def test_observation_rows_reject_garbage():
    tok = Tokenizer(SPEC)
    rows = wire.encode_observation_rows(tok.tokenize_observation(random_observation(SPEC, np.random.default_rng(1))))
    cases = {
        "wrong width": rows[:, :-1],
        "int32": rows.astype(np.int32),
        "float rows": rows.astype(np.float32),
        "no separator": rows[:-1],
        "id beyond vocabulary": _with_field(rows, -2, "token", vocab.VOCAB_SIZE),
        "negative id": _with_field(rows, 0, "token", -1),
        "unknown kind": _with_field(rows, 0, "kind", 9),
        "bad interval": _with_field(rows, 0, "row_hi", 0),
        "interval beyond the bins": _with_field(rows, 0, "col_hi", vocab.PATCH_POSITION_BINS + 1),
        "local position too large": _with_field(rows, 0, "local_pos", vocab.MAX_TOKENS_PER_TIMESTEP),
        "empty": rows[:0],
    }
    for what, bad in cases.items():
        with pytest.raises(ValueError):
            wire.decode_observation_rows(bad)
            pytest.fail(what)


def _with(rows: np.ndarray, index: tuple[int, int], value: float) -> np.ndarray:
    out = rows.copy()
    out[index] = value
    return out


def _with_field(rows: np.ndarray, row: int, field: str, value: int) -> np.ndarray:
    out = rows.copy()
    out.reshape(-1).view(wire.OBSERVATION_ROW)[field][row] = value
    return out


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_images_decode_to_rgb(encoding):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb[:] = rgb[:, :, :1]
        raw = rgb[:, :, 0]
    else:
        order = {"rgb8": [0, 1, 2], "bgr8": [2, 1, 0], "rgba8": [0, 1, 2], "bgra8": [2, 1, 0]}[encoding]
        raw = rgb[:, :, order]
        if encoding.endswith("a8"):
            raw = np.concatenate([raw, np.full((20, 30, 1), 255, np.uint8)], axis=2)
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    step = 30 * channels + 6  # row padding must be skipped
    padded = np.zeros((20, step), np.uint8)
    padded[:, : 30 * channels] = raw.reshape(20, -1)
    out = wire.decode_image(encoding, 20, 30, step, padded.tobytes())
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(("encoding", "h", "w", "step", "nbytes", "match"), [
    ("yuv422", 4, 4, 8, 32, "not supported"),
    ("16UC1", 4, 4, 8, 32, "not supported"),
    ("rgb8", 4, 4, 12, 47, "bytes"),
    ("rgb8", 4, 4, 11, 44, "step"),
    ("rgb8", 0, 4, 12, 0, "outside"),
    ("rgb8", 1000, 1000, 3000, 10**6, "bytes"),
    ("rgb8", 5000, 5000, 15000, 10, "outside"),
])
def test_malformed_images_are_refused(encoding, h, w, step, nbytes, match):
    with pytest.raises(ValueError, match=match):
        wire.decode_image(encoding, h, w, step, bytes(nbytes))


def test_joint_states_are_matched_by_name():
    names = ["panda_finger_joint1", *reversed(PANDA_ARM_JOINTS), "base_yaw"]
    pos = [0.02, *[float(i) for i in reversed(range(7))], 9.0]
    np.testing.assert_array_equal(wire.joint_vector(names, pos, PANDA_ARM_JOINTS), np.arange(7.0))
    with pytest.raises(ValueError, match="lacks joints"):
        wire.joint_vector(["elbow", "wrist"], [0.0, 1.0], PANDA_ARM_JOINTS)
    with pytest.raises(ValueError, match="names but"):
        wire.joint_vector(list(PANDA_ARM_JOINTS), [0.0] * 6, PANDA_ARM_JOINTS)
    with pytest.raises(ValueError, match="non-finite"):
        wire.joint_vector(list(PANDA_ARM_JOINTS), [np.nan] * 7, PANDA_ARM_JOINTS)
    with pytest.raises(ValueError, match="duplicate"):
        wire.joint_vector([*PANDA_ARM_JOINTS, "panda_joint1"], [0.0] * 8, PANDA_ARM_JOINTS)


def test_grasp_detector_sets_on_stopped_closing_fingers_holds_and_clears():
    from gato_robot.core.gripper import GraspDetector

    assert wire.finger_opening(np.array([0.01, 0.015]), np.array([-0.01, -0.02])) == pytest.approx((0.025, -0.03))
    g = GraspDetector()
    assert not g.update(0.08, 0.0, closing=False)  # open
    assert not g.update(0.06, -0.05, closing=True)  # closing, still moving
    assert g.update(0.04, -0.001, closing=True)  # stopped on an object
    assert g.update(0.04, 0.02, closing=True)  # held while the fingers move a little (lifting)
    assert not g.update(0.001, -0.02, closing=True)  # closed fully: the object slipped out
    assert g.update(0.04, 0.0, closing=True)  # detected again once stopped on an object
    assert not g.update(0.04, 0.0, closing=False)  # opening releases
    assert not g.update(0.0005, 0.0, closing=True)  # closed on nothing
    np.testing.assert_array_equal(g.state(0.03, 0.0, closing=True), [0.03, 0.0, 1.0])


def test_command_layouts():
    a = np.array([0.01, -0.02, 0.03, 0.5, 255.0])
    assert wire.action_to_forward_command(a) == [0.01, -0.02, 0.03, 0.0, 0.0, 0.5]
    np.testing.assert_array_equal(wire.forward_command_to_velocity(wire.action_to_forward_command(a)), a[:4])
    ids = np.array([32000, 32100, 33023, 32512, 32001], np.int32)
    np.testing.assert_array_equal(wire.action_tokens_array("32SC1", 1, 5, 20, ids.tobytes(), 5), ids)
    with pytest.raises(ValueError):
        wire.action_tokens_array("32FC1", 1, 5, 20, ids.tobytes(), 5)
    with pytest.raises(ValueError):
        wire.action_tokens_array("32SC1", 1, 5, 20, ids[:4].tobytes(), 5)
