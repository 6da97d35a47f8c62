"""Teleoperation: keyboard and gamepad to a Cartesian velocity action, and arbitration with a policy (DAgger).

Pure code (numpy + stdlib): ``gato_robot/ros/teleop.py`` moves messages in and out; everything it decides is here.

- :class:`ActionLayout`: which part of the arm command each action element drives and its bounds (from the robot
  file, ``core.embodiment``); an operator's twist and gripper state become an action clipped to those bounds.
- :class:`KeyboardTeleop`: keys to velocities. Terminals send key repeats, never key-up events, so a key holds
  its velocity until ``hold_s`` after its last repeat; a first press holds for ``first_hold_s``, which covers the
  terminal's delay before it starts repeating (``xset q``: 660 ms by default on X11; most terminals 250-600 ms).
- :class:`JoyTeleop`: sensor_msgs/Joy semantics (axes in [-1, 1], buttons 0/1) with an axis map, a deadzone, a
  deadman button (released: zero velocity), a gripper toggle button, and a timeout (a gamepad that stops sending
  must not keep the arm moving).
- :class:`Arbiter`: a policy's action passes through unless the operator is intervening (a key within its hold
  time, the deadman held), when the operator's action replaces it and the step is flagged as an intervention.

Times are seconds on one monotonic clock the caller chooses (the node passes ``time.monotonic()``: key repeats and
gamepad messages are wall-clock events, whatever clock the robot runs on).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from gato_robot.core.embodiment import ANGULAR, COMMAND_PARTS, GRIPPER, LINEAR, Embodiment

# The command parts an operator drives: tool velocity x, y, z (m/s) and yaw rate (rad/s), RGB stacking's action.
VELOCITY_PARTS = (*LINEAR, ANGULAR[2])
YAW = ANGULAR[2]


@dataclasses.dataclass(frozen=True)
class ActionLayout:
    """The action's elements as command parts (``core.embodiment.COMMAND_PARTS``), with their bounds."""

    parts: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.parts) == len(self.low) == len(self.high)):
            raise ValueError(f"action layout: {len(self.parts)} parts, {len(self.low)} lows, {len(self.high)} highs")
        unknown = [p for p in self.parts if p not in COMMAND_PARTS]
        if unknown or self.parts.count(GRIPPER) != 1 or len(set(self.parts)) != len(self.parts):
            raise ValueError(
                f"action layout: parts must be distinct command parts {COMMAND_PARTS} with one "
                f"'{GRIPPER}', got {list(self.parts)}"
            )
        if not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi for lo, hi in zip(self.low, self.high)):
            raise ValueError(f"action layout: bounds must be finite with low < high, got {self.low}, {self.high}")

    @classmethod
    def from_embodiment(cls, embodiment: Embodiment) -> ActionLayout:
        return cls(tuple(a.command for a in embodiment.action), embodiment.action_low, embodiment.action_high)

    @property
    def size(self) -> int:
        return len(self.parts)

    @property
    def gripper_index(self) -> int:
        return self.parts.index(GRIPPER)

    def bound(self, part: str) -> float:
        """The largest magnitude ``part`` may take (0 for a part no element drives)."""
        if part not in self.parts:
            return 0.0
        i = self.parts.index(part)
        return min(abs(self.low[i]), abs(self.high[i]))

    def action(self, twist: Mapping[str, float], gripper_closed: bool) -> np.ndarray:
        """(A,) float32: each element its part of ``twist`` (0 when absent), the gripper at its closed (high, > 0
        closes) or open (low) bound; clipped to the bounds. Parts the action does not drive are dropped."""
        out = np.zeros(self.size, np.float64)
        for i, part in enumerate(self.parts):
            if part == GRIPPER:
                out[i] = self.high[i] if gripper_closed else self.low[i]
            else:
                value = float(twist.get(part, 0.0))
                out[i] = value if math.isfinite(value) else 0.0
        return np.clip(out, self.low, self.high).astype(np.float32)

    def gripper_closed(self, action: Sequence[float] | np.ndarray) -> bool:
        """Whether ``action`` closes the gripper (RGB-stacking convention: > 0 closes)."""
        return bool(np.asarray(action, np.float64)[self.gripper_index] > 0)


class Operator(Protocol):
    """What the arbiter needs of a keyboard or gamepad operator."""

    gripper_closed: bool

    def intervening(self, now: float) -> bool: ...

    def action(self, now: float) -> np.ndarray: ...


# -- keyboard -----------------------------------------------------------------------------------------------
# key -> (command part, direction); upper case is the same key. Arrow keys drive x and y as w/s/a/d do.
KEY_MAP: dict[str, tuple[str, float]] = {
    "w": (LINEAR[0], 1.0),
    "s": (LINEAR[0], -1.0),
    "up": (LINEAR[0], 1.0),
    "down": (LINEAR[0], -1.0),
    "a": (LINEAR[1], 1.0),
    "d": (LINEAR[1], -1.0),
    "left": (LINEAR[1], 1.0),
    "right": (LINEAR[1], -1.0),
    "r": (LINEAR[2], 1.0),
    "f": (LINEAR[2], -1.0),
    "q": (YAW, 1.0),
    "e": (YAW, -1.0),
}
GRIPPER_KEYS = ("space",)
STOP_KEYS = ("x", "escape")
FASTER_KEYS, SLOWER_KEYS = ("+", "="), ("-",)
QUIT_KEYS = ("ctrl-c",)  # raw mode only: in cbreak mode the terminal turns Ctrl-C into SIGINT itself
KEY_HELP = "w/s +x/-x  a/d +y/-y  r/f +z/-z  q/e yaw +/-  space gripper  x/Esc stop  +/- speed  (arrows: x/y)"
_ARROWS = {"A": "up", "B": "down", "C": "right", "D": "left"}
_NAMED = {" ": "space", "\x1b": "escape", "\x03": "ctrl-c"}


def parse_keys(data: bytes) -> list[str]:
    """Terminal input bytes as key names: printable characters lower-cased, ``space``, ``escape``, ``ctrl-c``,
    arrow keys (``ESC [ A``..``D`` or ``ESC O A``..``D``) as ``up``/``down``/``right``/``left``. Other escape
    sequences (function keys, ``ESC [ 1 ; 5 C``) are skipped whole, so their bytes never read as keys; a lone ESC
    (nothing after it in the same read) is ``escape``."""
    text = data.decode("latin-1")
    keys: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\x1b" and i + 1 < len(text) and text[i + 1] in "[O":
            j = i + 2
            while j < len(text) and not ("@" <= text[j] <= "~"):  # parameter bytes up to the final byte
                j += 1
            if j < len(text) and text[j] in _ARROWS and j == i + 2:
                keys.append(_ARROWS[text[j]])
            i = j + 1
            continue
        if c in _NAMED:
            keys.append(_NAMED[c])
        elif c.isprintable():
            keys.append(c.lower())
        i += 1
    return keys


@dataclasses.dataclass(frozen=True)
class KeyboardConfig:
    linear_speed: float = 0.05  # m/s per key (clipped to the action bounds)
    yaw_speed: float = 0.5  # rad/s per key
    hold_s: float = 0.25  # a key repeat holds its velocity this long
    first_hold_s: float = 0.5  # a first press holds this long (the terminal's delay before it repeats)
    speed_step: float = 1.25  # factor of one +/- press

    def __post_init__(self) -> None:
        for name in ("linear_speed", "yaw_speed", "hold_s", "first_hold_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"keyboard {name} must be a positive number, got {value}")
        if self.first_hold_s < self.hold_s:
            raise ValueError(f"keyboard first_hold_s ({self.first_hold_s}) must be >= hold_s ({self.hold_s})")
        if not (math.isfinite(self.speed_step) and self.speed_step > 1):
            raise ValueError(f"keyboard speed_step must be > 1, got {self.speed_step}")


class KeyboardTeleop:
    """Key presses to an action. Each axis holds the direction of its last key until that key's deadline; the
    gripper toggles on ``space``; ``x`` / Escape clear every axis at once. Any key press counts as the operator
    intervening for ``hold_s`` (a motion key for as long as it holds)."""

    def __init__(self, layout: ActionLayout, config: KeyboardConfig | None = None) -> None:
        self.layout = layout
        self.config = config or KeyboardConfig()
        self.scale = 1.0
        self.gripper_closed = False
        self.presses = 0
        self._held: dict[str, tuple[float, float]] = {}  # part -> (direction, deadline)
        self._last_key: float | None = None

    def reset(self) -> None:
        """Nothing held, gripper open (a new episode starts with the arm at rest and the gripper open)."""
        self._held.clear()
        self._last_key = None
        self.gripper_closed = False

    def stop(self) -> None:
        self._held.clear()

    def press(self, key: str, now: float) -> bool:
        """Apply one key; returns whether the key means anything."""
        key = key.lower()
        known = True
        if key in KEY_MAP:
            part, direction = KEY_MAP[key]
            held = self._held.get(part)
            if held is not None and held[0] == direction and now < held[1]:  # a repeat of the held key
                deadline = max(held[1], now + self.config.hold_s)
            else:  # a first press, or a reversal: the terminal has not started repeating it yet
                deadline = now + self.config.first_hold_s
            self._held[part] = (direction, deadline)
        elif key in GRIPPER_KEYS:
            self.gripper_closed = not self.gripper_closed
        elif key in STOP_KEYS:
            self._held.clear()
        elif key in FASTER_KEYS:
            self.scale = min(self.scale * self.config.speed_step, self._max_scale())
        elif key in SLOWER_KEYS:
            self.scale /= self.config.speed_step
        else:
            known = False
        if known:
            self.presses += 1
            self._last_key = now
        return known

    def _max_scale(self) -> float:
        """The scale at which every driven velocity reaches its bound (more would only be clipped)."""
        c = self.config
        return max(self.layout.bound(p) / (c.yaw_speed if p == YAW else c.linear_speed) for p in VELOCITY_PARTS)

    def velocity(self, now: float) -> dict[str, float]:
        out = {}
        for part, (direction, deadline) in list(self._held.items()):
            if now >= deadline:
                del self._held[part]
                continue
            speed = self.config.yaw_speed if part == YAW else self.config.linear_speed
            out[part] = direction * speed * self.scale
        return out

    def moving(self, now: float) -> bool:
        return bool(self.velocity(now))

    def intervening(self, now: float) -> bool:
        return self.moving(now) or (self._last_key is not None and now - self._last_key < self.config.hold_s)

    def action(self, now: float) -> np.ndarray:
        return self.layout.action(self.velocity(now), self.gripper_closed)


# -- gamepad ------------------------------------------------------------------------------------------------
# joy_linux's joy_node (Linux joystick API, axes negated so that left and up are +1), Xbox 360 / One (xpad):
#   axes 0 left stick left/right, 1 left stick up/down, 2 LT, 3 right stick left/right, 4 right stick up/down,
#   5 RT, 6-7 d-pad; buttons 0 A, 1 B, 2 X, 3 Y, 4 LB, 5 RB, 6 back, 7 start, 8 guide, 9-10 stick presses.
# A DualShock 4 (hid-sony) has the sticks on the same axes and L1 = 4, cross = 0. teleop_twist_joy's xbox config
# also takes linear x from axis 1; its deadman is X (2), ours the left shoulder (LB / L1), which a thumb on the
# left stick can hold. ROS's `joy` game_controller_node (SDL) orders them differently: set the parameters.
JOY_AXES = (1, 0, 4, 3)  # x: left stick up, y: left stick left, z: right stick up, yaw: right stick left (CCW)
JOY_SIGNS = (1.0, 1.0, 1.0, 1.0)
JOY_DEADMAN = 4  # LB / L1
JOY_GRIPPER = 0  # A / cross: toggles the gripper (deadman held)


def apply_deadzone(value: float, deadzone: float) -> float:
    """0 within ``deadzone`` of centre, then rescaled so the output still spans [-1, 1] continuously; values
    outside [-1, 1] are clipped and non-finite ones read as 0 (a driver glitch must not command full speed)."""
    if not math.isfinite(value):
        return 0.0
    v = min(max(value, -1.0), 1.0)
    if abs(v) <= deadzone:
        return 0.0
    return math.copysign((abs(v) - deadzone) / (1.0 - deadzone), v)


@dataclasses.dataclass(frozen=True)
class JoyConfig:
    axes: tuple[int, ...] = JOY_AXES  # axis index per VELOCITY_PARTS entry (x, y, z, yaw); -1: not driven
    signs: tuple[float, ...] = JOY_SIGNS
    deadzone: float = 0.1
    deadman_button: int = JOY_DEADMAN
    gripper_button: int = JOY_GRIPPER  # -1: none
    linear_speed: float = 0.05  # m/s at full stick
    yaw_speed: float = 0.5  # rad/s at full stick
    timeout_s: float = 0.5  # no Joy message for longer: zero velocity

    def __post_init__(self) -> None:
        n = len(VELOCITY_PARTS)
        if len(self.axes) != n or len(self.signs) != n:
            raise ValueError(
                f"joy axes and signs need {n} entries ({', '.join(VELOCITY_PARTS)}), "
                f"got {list(self.axes)} and {list(self.signs)}"
            )
        if any(a < -1 for a in self.axes) or not all(math.isfinite(s) for s in self.signs):
            raise ValueError(
                f"joy axes must be indices >= 0 (or -1: unused) and signs finite, got {list(self.axes)}, "
                f"{list(self.signs)}"
            )
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"joy deadzone must be in [0, 1), got {self.deadzone}")
        if self.deadman_button < 0:
            raise ValueError(f"joy deadman_button must be a button index >= 0, got {self.deadman_button}")
        for name in ("linear_speed", "yaw_speed", "timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"joy {name} must be a positive number, got {value}")


class JoyTeleop:
    """Gamepad state (the newest Joy message) to an action. Velocity is zero unless the deadman button is held in
    a message no older than ``timeout_s``; the gripper button toggles the gripper on its press (deadman held)."""

    def __init__(self, layout: ActionLayout, config: JoyConfig | None = None) -> None:
        self.layout = layout
        self.config = config or JoyConfig()
        self.gripper_closed = False
        self.messages = 0
        self._axes: tuple[float, ...] = ()
        self._deadman = False
        self._gripper_button = False
        self._last: float | None = None

    def reset(self) -> None:
        self.gripper_closed = False
        self._deadman = False
        self._axes = ()

    @staticmethod
    def _button(buttons: Sequence[int], index: int) -> bool:
        return 0 <= index < len(buttons) and buttons[index] == 1

    def update(self, axes: Sequence[float], buttons: Sequence[int], now: float) -> None:
        """One Joy message received at ``now``."""
        c = self.config
        self.messages += 1
        self._last = now
        self._axes = tuple(float(a) for a in axes)
        self._deadman = self._button(buttons, c.deadman_button)
        pressed = self._button(buttons, c.gripper_button)
        if pressed and not self._gripper_button and self._deadman:
            self.gripper_closed = not self.gripper_closed
        self._gripper_button = pressed

    def fresh(self, now: float) -> bool:
        return self._last is not None and 0.0 <= now - self._last <= self.config.timeout_s

    def intervening(self, now: float) -> bool:
        """The deadman is held (in a message that is not stale)."""
        return self._deadman and self.fresh(now)

    def velocity(self, now: float) -> dict[str, float]:
        c = self.config
        if not self.intervening(now):
            return {}
        out = {}
        for part, axis, sign in zip(VELOCITY_PARTS, c.axes, c.signs):
            if 0 <= axis < len(self._axes):
                speed = c.yaw_speed if part == YAW else c.linear_speed
                out[part] = sign * speed * apply_deadzone(self._axes[axis], c.deadzone)
        return out

    def action(self, now: float) -> np.ndarray:
        return self.layout.action(self.velocity(now), self.gripper_closed)


# -- arbitration --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Arbitration:
    action: np.ndarray  # (A,) float32
    intervention: bool  # the operator's action replaced the policy's


class Arbiter:
    """DAgger-style shared control: the policy's action passes through unless the operator intervenes.

    While the operator is not intervening, their gripper state follows the policy's, so an intervention (or a
    gripper toggle) starts from the gripper as the policy left it: taking over a carry does not drop the block."""

    def __init__(self, layout: ActionLayout, operator: Operator) -> None:
        self.layout = layout
        self.operator = operator
        self.steps = 0
        self.interventions = 0

    def step(self, policy_action: Sequence[float] | np.ndarray, now: float) -> Arbitration:
        policy = np.asarray(policy_action, np.float32)
        if policy.shape != (self.layout.size,):
            raise ValueError(f"policy action must have {self.layout.size} values, got shape {policy.shape}")
        self.steps += 1
        if self.operator.intervening(now):
            self.interventions += 1
            return Arbitration(self.operator.action(now), True)
        if np.isfinite(policy[self.layout.gripper_index]):
            self.operator.gripper_closed = self.layout.gripper_closed(policy)
        return Arbitration(policy, False)
