"""Teleoperation core (gato_robot.core.teleop), no ROS: key map, hold times, bounds, joy deadzone and deadman,
DAgger arbitration."""

from __future__ import annotations

import numpy as np
import pytest

from gato_robot.core import specs
from gato_robot.core.teleop import (
    KEY_MAP,
    ActionLayout,
    Arbiter,
    JoyConfig,
    JoyTeleop,
    KeyboardConfig,
    KeyboardTeleop,
    apply_deadzone,
    parse_keys,
)
from gato_robot.robots import load_embodiment

LAYOUT = ActionLayout.from_embodiment(load_embodiment("panda"))
HIGH = np.array(specs.RGB_STACKING_ACTION_HIGH, np.float32)
LOW = np.array(specs.RGB_STACKING_ACTION_LOW, np.float32)
OPEN, CLOSED = LOW[4], HIGH[4]


def test_layout_is_the_robot_files_action():
    assert LAYOUT.parts == ("linear_x", "linear_y", "linear_z", "angular_z", "gripper")
    assert LAYOUT.low == specs.RGB_STACKING_ACTION_LOW and LAYOUT.high == specs.RGB_STACKING_ACTION_HIGH
    a = LAYOUT.action({"linear_x": 1.0, "linear_y": -1.0, "angular_z": 0.3, "angular_x": 5.0}, gripper_closed=True)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, np.float32([0.07, -0.07, 0.0, 0.3, 255.0]))  # clipped; angular_x not driven
    np.testing.assert_array_equal(LAYOUT.action({"linear_z": float("nan")}, False), np.float32([0, 0, 0, 0, OPEN]))
    with pytest.raises(ValueError, match="one 'gripper'"):
        ActionLayout(("linear_x", "linear_y"), (-1.0, -1.0), (1.0, 1.0))


def test_parse_keys():
    assert parse_keys(b"wA d") == ["w", "a", "space", "d"]
    assert parse_keys(b"\x1b[A\x1b[B\x1bOC\x1b[D") == ["up", "down", "right", "left"]
    assert parse_keys(b"\x1b") == ["escape"]
    assert parse_keys(b"\x1b[1;5Cw\x1b[15~x") == ["w", "x"]  # ctrl-arrow and F5 skipped whole
    assert parse_keys(b"\x03") == ["ctrl-c"]


@pytest.mark.parametrize(
    ("key", "index", "sign"),
    [("w", 0, 1), ("s", 0, -1), ("a", 1, 1), ("d", 1, -1), ("r", 2, 1), ("f", 2, -1), ("q", 3, 1), ("e", 3, -1)],
)
def test_key_map(key, index, sign):
    kb = KeyboardTeleop(LAYOUT, KeyboardConfig(linear_speed=0.04, yaw_speed=0.6))
    assert kb.press(key, 0.0)
    expected = np.zeros(5, np.float32)
    expected[index] = sign * (0.6 if index == 3 else 0.04)
    expected[4] = OPEN
    np.testing.assert_allclose(kb.action(0.1), expected)
    assert kb.intervening(0.1)
    assert KEY_MAP[key.upper().lower()] == KEY_MAP[key]


def test_a_key_holds_until_hold_time_after_its_last_repeat():
    kb = KeyboardTeleop(LAYOUT, KeyboardConfig(hold_s=0.25, first_hold_s=0.5))
    kb.press("w", 10.0)  # first press: held through the terminal's repeat delay
    assert kb.velocity(10.45) == {"linear_x": 0.05}
    assert kb.velocity(10.5) == {} and not kb.intervening(10.5)
    kb.press("w", 11.0)
    for t in np.arange(11.4, 12.0, 0.04):  # key repeats at 25 Hz after 0.4 s
        kb.press("w", float(t))
        assert kb.velocity(float(t) + 0.01) == {"linear_x": 0.05}
    last = 11.4 + 0.04 * 14
    assert kb.velocity(last + 0.24) == {"linear_x": 0.05}
    assert kb.velocity(last + 0.26) == {}
    np.testing.assert_array_equal(kb.action(last + 0.26), np.float32([0, 0, 0, 0, OPEN]))


def test_keys_combine_reverse_and_stop():
    kb = KeyboardTeleop(LAYOUT)
    kb.press("w", 0.0)
    kb.press("a", 0.01)
    kb.press("q", 0.02)
    assert kb.velocity(0.1) == {"linear_x": 0.05, "linear_y": 0.05, "angular_z": 0.5}
    kb.press("s", 0.1)  # a reversal is a new press
    assert kb.velocity(0.2)["linear_x"] == -0.05
    kb.press("x", 0.2)
    assert kb.velocity(0.21) == {}
    kb.press("r", 0.3)
    kb.press("escape", 0.31)
    assert kb.velocity(0.32) == {}
    assert kb.intervening(0.32)  # the stop key itself is the operator acting (zero) for hold_s
    assert not kb.intervening(0.31 + 0.25)
    assert not kb.press("z", 1.0)


def test_gripper_toggles_and_speed_keys_clip_to_the_bounds():
    kb = KeyboardTeleop(LAYOUT)
    kb.press("space", 0.0)
    assert kb.action(0.0)[4] == CLOSED
    kb.press("space", 0.1)
    assert kb.action(0.1)[4] == OPEN
    for i in range(20):
        kb.press("+", 0.2 + i * 0.001)
    kb.press("w", 0.3)
    kb.press("e", 0.3)
    a = kb.action(0.31)
    assert a[0] == np.float32(0.07) and a[3] == np.float32(-1.0)  # at the bounds, never past them
    assert kb.scale == pytest.approx(2.0)  # yaw reaches its bound at 2x; linear at 1.4x
    kb.press("-", 0.4)
    assert kb.scale < 2.0
    kb.reset()
    assert kb.velocity(0.41) == {} and not kb.gripper_closed and not kb.intervening(0.41)


def test_keyboard_config_is_validated():
    with pytest.raises(ValueError, match="first_hold_s"):
        KeyboardConfig(hold_s=0.3, first_hold_s=0.2)
    with pytest.raises(ValueError, match="linear_speed"):
        KeyboardConfig(linear_speed=float("nan"))


def test_deadzone():
    assert apply_deadzone(0.05, 0.1) == 0.0
    assert apply_deadzone(-0.1, 0.1) == 0.0
    assert apply_deadzone(0.55, 0.1) == pytest.approx(0.5)
    assert apply_deadzone(-1.0, 0.1) == -1.0
    assert apply_deadzone(3.0, 0.1) == 1.0
    assert apply_deadzone(float("nan"), 0.1) == 0.0
    assert apply_deadzone(float("-inf"), 0.1) == 0.0


def joy_axes(x=0.0, y=0.0, z=0.0, yaw=0.0):
    axes = [0.0] * 8
    axes[1], axes[0], axes[4], axes[3] = x, y, z, yaw
    axes[2] = axes[5] = 1.0  # released triggers read +1 on joy_linux
    return axes


def buttons(*pressed):
    return [1 if i in pressed else 0 for i in range(11)]


def test_joy_deadman_axis_map_and_deadzone():
    joy = JoyTeleop(LAYOUT, JoyConfig(deadzone=0.1, linear_speed=0.06, yaw_speed=0.8))
    joy.update(joy_axes(x=1.0, y=-0.55, z=0.05, yaw=1.0), buttons(), 0.0)  # no deadman: nothing moves
    np.testing.assert_array_equal(joy.action(0.0), np.float32([0, 0, 0, 0, OPEN]))
    assert not joy.intervening(0.0)
    joy.update(joy_axes(x=1.0, y=-0.55, z=0.05, yaw=1.0), buttons(4), 0.1)
    np.testing.assert_allclose(joy.action(0.1), np.float32([0.06, -0.03, 0.0, 0.8, OPEN]), rtol=1e-6)
    assert joy.intervening(0.1)
    joy.update(joy_axes(x=1.0), buttons(0), 0.2)  # gripper without the deadman: ignored
    assert not joy.gripper_closed
    joy.update(joy_axes(x=1.0), buttons(4, 0), 0.25)  # held since before the deadman: no new press
    assert not joy.gripper_closed
    joy.update(joy_axes(x=1.0), buttons(4), 0.28)
    joy.update(joy_axes(x=1.0), buttons(4, 0), 0.3)  # pressed with the deadman: toggles once
    joy.update(joy_axes(x=1.0), buttons(4, 0), 0.35)
    assert joy.gripper_closed and joy.action(0.35)[4] == CLOSED
    joy.update(joy_axes(x=1.0), buttons(4), 0.4)
    joy.update(joy_axes(x=1.0), buttons(4, 0), 0.45)
    assert not joy.gripper_closed


def test_joy_stale_messages_mean_zero():
    joy = JoyTeleop(LAYOUT, JoyConfig(timeout_s=0.5))
    assert not joy.intervening(0.0)  # nothing received yet
    joy.update(joy_axes(x=-1.0), buttons(4), 5.0)
    assert joy.action(5.5)[0] == np.float32(-0.05)
    np.testing.assert_array_equal(joy.action(5.51), np.float32([0, 0, 0, 0, OPEN]))
    assert not joy.intervening(5.51)
    joy.update([0.0], buttons(4), 6.0)  # a gamepad with fewer axes than the map: unmapped axes are zero
    np.testing.assert_array_equal(joy.action(6.0), np.float32([0, 0, 0, 0, OPEN]))


def test_joy_config_is_validated():
    with pytest.raises(ValueError, match="4 entries"):
        JoyConfig(axes=(1, 0))
    with pytest.raises(ValueError, match="deadzone"):
        JoyConfig(deadzone=1.0)
    with pytest.raises(ValueError, match="deadman"):
        JoyConfig(deadman_button=-1)


def test_arbiter_passes_the_policy_through_unless_the_operator_intervenes():
    joy = JoyTeleop(LAYOUT)
    arb = Arbiter(LAYOUT, joy)
    policy = np.float32([0.01, 0.02, -0.03, 0.1, 255.0])  # carrying: gripper closed
    out = arb.step(policy, 0.0)
    assert not out.intervention
    np.testing.assert_array_equal(out.action, policy)
    joy.update(joy_axes(z=1.0), buttons(), 0.1)  # stick without deadman: still the policy
    assert not arb.step(policy, 0.1).intervention
    joy.update(joy_axes(z=1.0), buttons(4), 0.2)  # deadman: the operator takes over, keeping the grasp
    out = arb.step(policy, 0.2)
    assert out.intervention
    np.testing.assert_array_equal(out.action, np.float32([0, 0, 0.05, 0, CLOSED]))
    assert not arb.step(policy, 0.8).intervention  # the gamepad went quiet: back to the policy
    assert (arb.steps, arb.interventions) == (4, 1)
    with pytest.raises(ValueError, match="5 values"):
        arb.step(np.zeros(4), 1.0)


def test_arbiter_with_the_keyboard_toggles_from_the_policys_gripper():
    kb = KeyboardTeleop(LAYOUT)
    arb = Arbiter(LAYOUT, kb)
    closing = np.float32([0, 0, 0, 0, 200.0])
    assert not arb.step(closing, 0.0).intervention
    kb.press("space", 0.01)  # open what the policy holds closed
    out = arb.step(closing, 0.02)
    assert out.intervention and out.action[4] == OPEN
    assert not arb.step(closing, 0.01 + 0.25).intervention  # hold time over: the policy again
    kb.press("w", 1.0)
    out = arb.step(closing, 1.1)
    assert out.intervention
    np.testing.assert_array_equal(out.action, np.float32([0.05, 0, 0, 0, CLOSED]))
