"""The ROS topic contract's array layouts (gato_robot.ros.wire): pure numpy, no rclpy needed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gato_robot.core import vocab
from gato_robot.core.specs import PANDA_ARM_JOINTS, rgb_stacking_spec
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.ros import wire
from tests.conftest import random_observation

SPEC = rgb_stacking_spec(2)


def test_observation_rows_round_trip_exactly():
    tok = Tokenizer(SPEC)
    block = tok.tokenize_observation(random_observation(SPEC, np.random.default_rng(0)))
    rows = wire.encode_observation_rows(block)
    assert rows.shape == (SPEC.max_observation_tokens + 1, 775) and rows.dtype == np.float32
    back = wire.decode_observation_rows(rows)
    for f in dataclasses.fields(block):
        if f.name in ("loss_mask", "timestep"):
            continue  # not carried: inference needs neither
        np.testing.assert_array_equal(getattr(back, f.name), getattr(block, f.name), err_msg=f.name)
    # ids below 2^24 survive float32 exactly
    assert np.all(rows[:, wire.COL_TOKEN].astype(np.int64) == block.tokens)


def test_observation_rows_reject_garbage():
    tok = Tokenizer(SPEC)
    rows = wire.encode_observation_rows(tok.tokenize_observation(random_observation(SPEC, np.random.default_rng(1))))
    cases = {
        "wrong width": rows[:, :774],
        "float64": rows.astype(np.float64),
        "no separator": rows[:-1],
        "fractional id": _with(rows, (-2, wire.COL_TOKEN), 32000.5),
        "id beyond vocabulary": _with(rows, (-2, wire.COL_TOKEN), vocab.VOCAB_SIZE),
        "unknown kind": _with(rows, (0, wire.COL_KIND), 9),
        "nan patch": _with(rows, (0, wire.PATCH_COL), np.nan),
        "bad interval": _with(rows, (0, wire.COL_ROW_HI), 0),
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


def test_gripper_state_reports_a_grasp_when_closing_fingers_stop_open():
    assert wire.gripper_state(np.array([0.01, 0.01]), np.zeros(2), closing=True)[2] == 1.0
    assert wire.gripper_state(np.array([0.0005, 0.0005]), np.zeros(2), closing=True)[2] == 0.0  # closed on nothing
    assert wire.gripper_state(np.array([0.01, 0.01]), np.array([-0.05, -0.05]), closing=True)[2] == 0.0  # moving
    assert wire.gripper_state(np.array([0.04, 0.04]), np.zeros(2), closing=False)[2] == 0.0


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
