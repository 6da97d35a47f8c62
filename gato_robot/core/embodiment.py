"""An embodiment is one thing: a robot's description file, its spec, and the one builder of its observations.

A robot is described once, in ``config/robots/<name>.yaml`` (docs/robots.md): URDF, base and tool links, arm
and finger joint names, cameras, the action's bounds and which part of the arm command each action element
drives. :func:`gato_robot.robots.load_embodiment` reads it by name or path into an :class:`Embodiment`, which gives

- ``spec(cameras, image_size)``: the RGB-stacking :class:`~gato_robot.core.specs.RobotSpec` for this arm
  (``specs.rgb_stacking_spec`` with this robot's joints and bounds);
- ``observation_builder(cameras)``: an :class:`ObservationBuilder`, the only code that turns raw readings
  (images, joint states, tool pose, finger joints) into an observation dict. It keeps the state the observation
  needs from one step to the next: the previous action and the grasp flag (``core.gripper.GraspDetector``).
  The simulator, the ROS tokenizer node, the log converter and the synthetic logs all use it, so a policy sees
  the same observation from each of them;
- the split of an action into the arm command (Cartesian tool velocity) and the gripper command
  (:meth:`Embodiment.arm_command`, :meth:`Embodiment.velocity_from_twist`); ``gato_robot.wire`` turns those
  into messages.

Core layer: numpy and the standard library only; reading the robot files (YAML) is ``gato_robot.robots``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core import specs
from gato_robot.core.gripper import GraspDetector

ROBOTS_FOLDER = Path("config") / "robots"
DEFAULT_ROBOT = "panda"
# The parts of a Cartesian arm command an action element can drive (base frame; the gripper is bang-bang).
LINEAR = ("linear_x", "linear_y", "linear_z")
ANGULAR = ("angular_x", "angular_y", "angular_z")
GRIPPER = "gripper"
COMMAND_PARTS = (*LINEAR, *ANGULAR, GRIPPER)
_FIELDS = ("name", "description", "urdf", "base_link", "base_position", "tool_link", "tool_offset", "arm_joints",
           "finger_joints", "gripper_opening", "cameras", "control_hz", "action", "differences_from_deepmind")


@dataclasses.dataclass(frozen=True)
class ActionElement:
    """One element of the action: its name, bounds and the arm command part it drives."""

    name: str
    low: float
    high: float
    command: str

    def __post_init__(self) -> None:
        if self.command not in COMMAND_PARTS:
            raise ValueError(f"action element {self.name!r}: command must be one of {COMMAND_PARTS}, "
                             f"got {self.command!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"action element {self.name!r}: needs finite low < high, got {self.low}, {self.high}")


@dataclasses.dataclass(frozen=True)
class ArmCommand:
    """What one action asks of the arm: tool velocity (m/s, rad/s, base frame) and the gripper command."""

    linear: tuple[float, float, float]
    angular: tuple[float, float, float]
    gripper: float


@dataclasses.dataclass(frozen=True)
class RawObservation:
    """One step's readings, before they are an observation.

    ``images`` by camera name; arm joints in the embodiment's ``arm_joints`` order; ``tool_pose`` x, y, z and the
    quaternion x, y, z, w in the base frame; finger joints in ``finger_joints`` order (``Embodiment.opening`` maps
    them to the opening in m: their sum for prismatic fingers).
    ``grasp``: a gripper's own object report (the simulator's contact test); None: inferred from the fingers.
    """

    images: Mapping[str, np.ndarray]
    joint_positions: Sequence[float] | np.ndarray
    joint_velocities: Sequence[float] | np.ndarray
    tool_pose: Sequence[float] | np.ndarray
    finger_positions: Sequence[float] | np.ndarray
    finger_velocities: Sequence[float] | np.ndarray
    grasp: bool | None = None


@dataclasses.dataclass(frozen=True)
class Embodiment:
    """One robot, as its description file states it (see the module docstring)."""

    name: str
    urdf: str
    base_link: str
    tool_link: str
    arm_joints: tuple[str, ...]
    finger_joints: tuple[str, ...]
    cameras: tuple[str, ...]
    action: tuple[ActionElement, ...]
    control_hz: float = 20.0
    # where ``base_link`` stands in the cell (m; not rotated): the tool pose and the tool velocities are in the cell
    # frame, the base frame moved by this much, so every arm shares the cell's workspace box
    base_position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # the tool centre point in ``tool_link``'s frame (m): for a URDF whose last link is not the pinch point
    tool_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # opening (m) = offset + scale * sum(finger joint positions); rate = scale * sum(velocities). Prismatic
    # fingers: (0, 1); a revolute linkage (xArm, Robotiq): its opening when open and metres per radian, < 0
    gripper_opening: tuple[float, float] = (0.0, 1.0)
    description: str = ""
    differences_from_deepmind: tuple[str, ...] = ()
    source: str = ""  # the file it was read from

    def __post_init__(self) -> None:
        where = f"robot {self.name!r}" + (f" ({self.source})" if self.source else "")
        for field in ("name", "urdf", "base_link", "tool_link"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise ValueError(f"{where}: '{field}' must be a non-empty string")
        for field in ("arm_joints", "finger_joints", "cameras"):
            names = getattr(self, field)
            if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"{where}: '{field}' must be a non-empty list of distinct names, got {list(names)}")
        overlap = set(self.arm_joints) & set(self.finger_joints)
        if overlap:
            raise ValueError(f"{where}: joints {sorted(overlap)} are listed as both arm and finger joints")
        unknown = sorted(set(self.cameras) - set(specs.RGB_STACKING_CAMERAS))
        if unknown:
            raise ValueError(f"{where}: unknown cameras {unknown}; the RGB-stacking cell has "
                             f"{list(specs.RGB_STACKING_CAMERAS)}")
        # The RGB-stacking action (and so the previous-action observation) is the task's, whatever the arm.
        names = tuple(a.name for a in self.action)
        if names != specs.RGB_STACKING_ACTION_NAMES:
            raise ValueError(f"{where}: 'action' must list {list(specs.RGB_STACKING_ACTION_NAMES)} in this order, "
                             f"got {list(names)}")
        parts = [a.command for a in self.action]
        if len(set(parts)) != len(parts) or parts.count(GRIPPER) != 1:
            raise ValueError(f"{where}: each action element must drive its own command part, one of them "
                             f"'{GRIPPER}'; got {parts}")
        if not self.control_hz > 0:
            raise ValueError(f"{where}: control_hz must be positive")
        for field in ("base_position", "tool_offset"):
            value = getattr(self, field)
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(f"{where}: {field} must be 3 finite numbers (m), got {list(value)}")
        offset, scale = self.gripper_opening
        if not (math.isfinite(offset) and math.isfinite(scale) and scale != 0):
            raise ValueError(f"{where}: gripper_opening needs a finite offset and a non-zero scale, "
                             f"got {list(self.gripper_opening)}")

    # -- spec ----------------------------------------------------------------------------------------------
    @property
    def action_low(self) -> tuple[float, ...]:
        return tuple(a.low for a in self.action)

    @property
    def action_high(self) -> tuple[float, ...]:
        return tuple(a.high for a in self.action)

    def spec(self, cameras: int | Sequence[str] = 2, image_size: int = 128) -> specs.RobotSpec:
        """The RGB-stacking spec of this arm (``cameras``: 1-3 of this robot's cameras, or their names)."""
        names = self.cameras[:cameras] if isinstance(cameras, int) else tuple(cameras)
        if isinstance(cameras, int) and not 1 <= cameras <= len(self.cameras):
            raise ValueError(f"robot {self.name!r} has {len(self.cameras)} cameras {list(self.cameras)}, "
                             f"asked for {cameras}")
        unknown = sorted(set(names) - set(self.cameras))
        if unknown:
            raise ValueError(f"robot {self.name!r} has no cameras {unknown}; it has {list(self.cameras)}")
        spec = specs.rgb_stacking_spec(names, image_size, arm_joints=self.arm_joints, action_low=self.action_low,
                                       action_high=self.action_high, robot=self.name)
        return spec if spec.control_hz == self.control_hz else dataclasses.replace(spec, control_hz=self.control_hz)

    def observation_builder(self, cameras: Sequence[str] | None = None,
                            dtype: type = np.float32) -> ObservationBuilder:
        """A fresh builder for these cameras (default: all of the robot's), with its own step-to-step state."""
        return ObservationBuilder(self, self.cameras if cameras is None else cameras, dtype)

    # -- gripper -------------------------------------------------------------------------------------------
    def opening(self, finger_positions: Sequence[float] | np.ndarray,
                finger_velocities: Sequence[float] | np.ndarray) -> tuple[float, float]:
        """(opening m, its rate m/s) from the finger joints (``gripper_opening``)."""
        offset, scale = self.gripper_opening
        q, dq = float(np.sum(np.asarray(finger_positions, np.float64))), float(np.sum(np.asarray(finger_velocities,
                                                                                                   np.float64)))
        if (offset, scale) == (0.0, 1.0):  # prismatic fingers: the sum itself, bit for bit
            return q, dq
        return offset + scale * q, scale * dq

    def finger_joint_states(self, opening: float, rate: float) -> tuple[list[float], list[float]]:
        """Finger joint positions and velocities that read as this opening and rate (each finger its share):
        what a simulated robot publishes on /joint_states."""
        offset, scale = self.gripper_opening
        n = len(self.finger_joints)
        return [(opening - offset) / scale / n] * n, [rate / scale / n] * n

    # -- actions -------------------------------------------------------------------------------------------
    @functools.cached_property
    def gripper_index(self) -> int:
        return next(i for i, a in enumerate(self.action) if a.command == GRIPPER)

    @functools.cached_property
    def velocity_indices(self) -> tuple[int, ...]:
        """The action elements that command the arm's velocity, in action order."""
        return tuple(i for i, a in enumerate(self.action) if a.command != GRIPPER)

    def arm_command(self, action: Sequence[float] | np.ndarray) -> ArmCommand:
        """The arm command one action asks for; command parts no element drives are 0."""
        a = np.asarray(action, np.float64)
        if a.shape != (len(self.action),):
            raise ValueError(f"robot {self.name!r}: an action has {len(self.action)} values "
                             f"{[e.name for e in self.action]}, got shape {a.shape}")
        part = {e.command: float(a[i]) for i, e in enumerate(self.action)}
        return ArmCommand(tuple(part.get(k, 0.0) for k in LINEAR), tuple(part.get(k, 0.0) for k in ANGULAR),
                          part[GRIPPER])  # type: ignore[arg-type]

    def velocity_from_twist(self, linear: Sequence[float], angular: Sequence[float]) -> np.ndarray:
        """The action's velocity elements (``velocity_indices`` order) from a Cartesian arm command."""
        value = dict(zip(LINEAR, (float(v) for v in linear))) | dict(zip(ANGULAR, (float(v) for v in angular)))
        return np.array([value[self.action[i].command] for i in self.velocity_indices], np.float64)


class ObservationBuilder:
    """Raw readings -> the spec's observation dict, keeping the previous action and the grasp flag.

    ``reset()`` at the start of an episode (no previous command, nothing grasped, as the environment's reset);
    ``command(action)`` (or ``command_velocity`` / ``command_gripper`` when the two arrive apart) after an action
    is applied; ``build(raw)`` once per control step: it steps the grasp detector. The gripper counts as closing
    when the previous gripper command is > 0 (bang-bang). Values come out in ``dtype``; the opening the grasp
    detector sees is the opening as observed in that dtype.
    """

    def __init__(self, embodiment: Embodiment, cameras: Sequence[str], dtype: type = np.float32) -> None:
        unknown = sorted(set(cameras) - set(embodiment.cameras))
        if unknown:
            raise ValueError(f"robot {embodiment.name!r} has no cameras {unknown}; it has {list(embodiment.cameras)}")
        self.embodiment = embodiment
        self.cameras = tuple(cameras)
        self.dtype = np.dtype(dtype)
        self.grasp = GraspDetector()
        self.previous_action = np.zeros(len(embodiment.action), self.dtype)

    def reset(self) -> None:
        self.previous_action = np.zeros(len(self.embodiment.action), self.dtype)
        self.grasp.reset()

    def command(self, action: Sequence[float] | np.ndarray) -> None:
        a = np.asarray(action, self.dtype)
        if a.shape != self.previous_action.shape:
            raise ValueError(f"an action has shape {self.previous_action.shape}, got {a.shape}")
        self.previous_action = a.copy()

    def command_velocity(self, velocity: Sequence[float] | np.ndarray) -> None:
        """The arm part of the previous action (``Embodiment.velocity_indices`` order)."""
        self.previous_action[list(self.embodiment.velocity_indices)] = np.asarray(velocity, np.float64)

    def command_gripper(self, value: float) -> None:
        self.previous_action[self.embodiment.gripper_index] = value

    def build(self, raw: RawObservation) -> dict[str, np.ndarray]:
        e, dt = self.embodiment, self.dtype.type
        obs: dict[str, np.ndarray] = {}
        for name in self.cameras:
            if name not in raw.images:
                raise ValueError(f"no image from camera {name!r}; got {sorted(raw.images)}")
            obs[f"{specs.CAMERA_PREFIX}{name}"] = raw.images[name]
        arm = len(e.arm_joints)
        for key, values, n in ((specs.JOINT_ANGLES_KEY, raw.joint_positions, arm),
                               (specs.JOINT_VELOCITIES_KEY, raw.joint_velocities, arm),
                               (specs.TOOL_POSE_KEY, raw.tool_pose, 7)):
            v = np.asarray(values).astype(dt)
            if v.shape != (n,):
                raise ValueError(f"{key} of robot {e.name!r} needs {n} values, got shape {v.shape}")
            obs[key] = v
        fingers = [np.asarray(raw.finger_positions, np.float64), np.asarray(raw.finger_velocities, np.float64)]
        if any(f.shape != (len(e.finger_joints),) for f in fingers):
            raise ValueError(f"robot {e.name!r} has {len(e.finger_joints)} finger joints {list(e.finger_joints)}, "
                             f"got positions {fingers[0].shape} and velocities {fingers[1].shape}")
        opening, speed = (float(dt(v)) for v in e.opening(*fingers))  # as observed, in the output dtype
        if raw.grasp is None:  # once per observation: the detector steps with the control loop
            closing = bool(self.previous_action[e.gripper_index] > 0)
            grasp = self.grasp.update(opening, speed, closing=closing)
        else:
            grasp = bool(raw.grasp)
        obs[specs.GRIPPER_KEY] = np.array([opening, speed, float(grasp)], dt)
        obs[specs.PREVIOUS_ACTION_KEY] = self.previous_action.copy()
        return obs


# -- from a description ----------------------------------------------------------------------------
def embodiment_from_dict(data: Mapping[str, Any], source: str = "") -> Embodiment:
    where = source or "robot description"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of {list(_FIELDS)}")
    unknown = sorted(set(data) - set(_FIELDS))
    missing = sorted({"name", "urdf", "base_link", "tool_link", "arm_joints", "finger_joints", "cameras",
                      "action"} - set(data))
    if unknown or missing:
        raise ValueError(f"{where}: " + "; ".join(
            ([f"unknown fields {unknown}"] if unknown else []) + ([f"missing fields {missing}"] if missing else []))
            + f" (fields: {list(_FIELDS)})")
    try:
        action = tuple(ActionElement(str(a["name"]), float(a["low"]), float(a["high"]), str(a["command"]))
                       for a in data["action"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: each action element needs name, low, high and command ({e})") from e
    return Embodiment(
        name=str(data["name"]), urdf=str(data["urdf"]), base_link=str(data["base_link"]),
        tool_link=str(data["tool_link"]), arm_joints=tuple(data["arm_joints"]),
        finger_joints=tuple(data["finger_joints"]), cameras=tuple(data["cameras"]), action=action,
        control_hz=float(data.get("control_hz", 20.0)), description=str(data.get("description", "")),
        base_position=_numbers(data.get("base_position", (0.0, 0.0, 0.0)), 3, "base_position", where),
        tool_offset=_numbers(data.get("tool_offset", (0.0, 0.0, 0.0)), 3, "tool_offset", where),
        gripper_opening=_gripper_opening(data.get("gripper_opening"), where),
        differences_from_deepmind=tuple(str(d) if not isinstance(d, Mapping) else
                                        "; ".join(f"{k}: {v}" for k, v in d.items())
                                        for d in data.get("differences_from_deepmind", ())),
        source=source)


def _numbers(value: Any, n: int, field: str, where: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: '{field}' must be {n} numbers, got {value!r}") from e
    if len(out) != n:
        raise ValueError(f"{where}: '{field}' must be {n} numbers, got {value!r}")
    return out


def _gripper_opening(value: Any, where: str) -> tuple[float, float]:
    if value is None:
        return (0.0, 1.0)
    if not isinstance(value, Mapping) or set(value) - {"offset", "scale"}:
        raise ValueError(f"{where}: 'gripper_opening' is a mapping with 'offset' (m) and 'scale' (m per joint "
                         f"unit), got {value!r}")
    try:
        return (float(value.get("offset", 0.0)), float(value.get("scale", 1.0)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: 'gripper_opening' offset and scale must be numbers, got {value!r}") from e
