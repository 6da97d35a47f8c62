"""Observation and action specs: the single description of what a robot sees and does.

The tokenizer, the sequence builder, the simulator, the ROS nodes and the trainer all derive their layouts
from a :class:`RobotSpec`; nothing slices observations by magic offsets.

Token order inside a timestep follows the Gato paper (Sec. 2.1): text, then images, then tensors
(discrete / continuous), each group in lexicographic key order; then the separator; then the actions
(lexicographic key order, row-major inside each tensor).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gato_robot.core import vocab


class Kind(str, enum.Enum):
    TEXT = "text"
    IMAGE = "image"
    DISCRETE = "discrete"
    CONTINUOUS = "continuous"


class Encoding(str, enum.Enum):
    """How a continuous tensor reaches [-1, 1] before binning."""

    MU_LAW = "mu_law"  # observations: mu-law companding (mu=100, M=256), values beyond +-M saturate
    LINEAR = "linear"  # actions: affine map of [low, high] onto [-1, 1], values outside saturate


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One named entry of an observation or action.

    - text: a string; ``max_tokens`` bounds its SentencePiece tokens (longer text is truncated).
    - image: ``shape=(H, W, 3)`` uint8; H and W multiples of 16.
    - discrete: integers in ``[0, num_values)``, ``num_values <= 1024``.
    - continuous: floats; ``encoding`` says how they are scaled; ``low``/``high`` (one per element, or one
      for all) are required for LINEAR and document the physical range for MU_LAW.
    ``names`` optionally labels the elements (joint names, action dimensions) for adapters and plots.
    """

    name: str
    kind: Kind
    shape: tuple[int, ...] = ()
    encoding: Encoding = Encoding.MU_LAW
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    num_values: int | None = None
    max_tokens: int | None = None
    names: tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: normalise fields once, here
        set_(self, "kind", Kind(self.kind))
        set_(self, "encoding", Encoding(self.encoding))
        set_(self, "shape", tuple(int(s) for s in self.shape))
        where = f"spec {self.name!r}"
        if not self.name or self.name != self.name.strip():
            raise ValueError(f"{where}: a spec needs a non-empty name without surrounding spaces")
        if any(s <= 0 for s in self.shape):
            raise ValueError(f"{where}: shape {self.shape} has a non-positive dimension")
        if self.kind is Kind.TEXT:
            if self.max_tokens is None or self.max_tokens <= 0:
                raise ValueError(f"{where}: text needs max_tokens > 0")
        elif self.kind is Kind.IMAGE:
            if len(self.shape) != 3 or self.shape[2] != 3:
                raise ValueError(f"{where}: images are (H, W, 3), got shape {self.shape}")
            h, w, _ = self.shape
            if h % vocab.PATCH_SIZE or w % vocab.PATCH_SIZE:
                raise ValueError(
                    f"{where}: image size {h}x{w} must be a multiple of {vocab.PATCH_SIZE} "
                    f"(e.g. {max(16, round(h / 16) * 16)}x{max(16, round(w / 16) * 16)}); "
                    "observations of other sizes are resized to the spec"
                )
        elif self.kind is Kind.DISCRETE:
            if self.num_values is None or not 1 <= self.num_values <= vocab.NUM_DISCRETE_VALUES:
                raise ValueError(
                    f"{where}: discrete specs need num_values in [1, {vocab.NUM_DISCRETE_VALUES}], "
                    f"got {self.num_values}"
                )
        elif self.kind is Kind.CONTINUOUS:
            n = self.size
            for attr in ("low", "high"):
                value = getattr(self, attr)
                if value is None:
                    continue
                if isinstance(value, (int, float)):
                    value = (float(value),) * n
                value = tuple(float(v) for v in value)
                if len(value) != n:
                    raise ValueError(f"{where}: {attr} has {len(value)} values, expected {n} (one per element)")
                if not all(math.isfinite(v) for v in value):
                    raise ValueError(f"{where}: {attr} must be finite")
                set_(self, attr, value)
            if self.encoding is Encoding.LINEAR:
                if self.low is None or self.high is None:
                    raise ValueError(f"{where}: linear encoding needs low and high")
                if any(h <= lo for lo, h in zip(self.low, self.high)):
                    raise ValueError(f"{where}: every high must exceed its low")
        if self.names is not None:
            set_(self, "names", tuple(self.names))
            if self.kind in (Kind.TEXT, Kind.IMAGE) or len(self.names) != self.size:
                raise ValueError(f"{where}: names must label each of the {self.size} elements")

    @property
    def size(self) -> int:
        """Number of elements (tokens, for discrete/continuous)."""
        return math.prod(self.shape)

    @property
    def num_tokens(self) -> int:
        """Tokens this entry takes in a timestep (text: its maximum)."""
        if self.kind is Kind.TEXT:
            return int(self.max_tokens)  # type: ignore[arg-type]
        if self.kind is Kind.IMAGE:
            h, w, _ = self.shape
            return (h // vocab.PATCH_SIZE) * (w // vocab.PATCH_SIZE)
        return self.size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind.value
        d["encoding"] = self.encoding.value
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown TensorSpec fields {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


_GROUP_ORDER = {Kind.TEXT: 0, Kind.IMAGE: 1, Kind.DISCRETE: 2, Kind.CONTINUOUS: 2}


def _ordered(specs: Iterable[TensorSpec]) -> tuple[TensorSpec, ...]:
    return tuple(sorted(specs, key=lambda s: (_GROUP_ORDER[s.kind], s.name)))


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """What one embodiment observes and does, in token order."""

    name: str
    observations: tuple[TensorSpec, ...]
    actions: tuple[TensorSpec, ...]
    control_hz: float = 20.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "observations", _ordered(self.observations))
        object.__setattr__(self, "actions", tuple(sorted(self.actions, key=lambda s: s.name)))
        names = [s.name for s in self.observations] + [s.name for s in self.actions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"robot spec {self.name!r}: duplicate keys {dupes}")
        if not self.actions:
            raise ValueError(f"robot spec {self.name!r}: needs at least one action entry")
        for a in self.actions:
            if a.kind not in (Kind.DISCRETE, Kind.CONTINUOUS):
                raise ValueError(f"robot spec {self.name!r}: action {a.name!r} must be discrete or continuous")
        if self.max_timestep_tokens > vocab.MAX_TOKENS_PER_TIMESTEP:
            raise ValueError(
                f"robot spec {self.name!r}: a timestep takes up to {self.max_timestep_tokens} tokens, more "
                f"than the {vocab.MAX_TOKENS_PER_TIMESTEP} local positions; use smaller or fewer images"
            )
        if not self.control_hz > 0:
            raise ValueError(f"robot spec {self.name!r}: control_hz must be positive")

    # -- sizes -------------------------------------------------------------------------------------------
    def without(self, names: Sequence[str]) -> RobotSpec:
        """This spec without the named observation entries (each must exist: a typo must not keep one)."""
        if not names:
            return self
        have = {s.name for s in self.observations}
        unknown = sorted(set(names) - have)
        if unknown:
            raise ValueError(f"spec {self.name!r} has no observations {unknown}; it has {sorted(have)}")
        return dataclasses.replace(self, observations=tuple(s for s in self.observations if s.name not in set(names)))

    @property
    def has_text(self) -> bool:
        return any(s.kind is Kind.TEXT for s in self.observations)

    @property
    def max_observation_tokens(self) -> int:
        return sum(s.num_tokens for s in self.observations)

    @property
    def action_tokens(self) -> int:
        return sum(s.size for s in self.actions)

    @property
    def max_timestep_tokens(self) -> int:
        """Observation + separator + actions (text counted at its maximum)."""
        return self.max_observation_tokens + 1 + self.action_tokens

    def observation(self, name: str) -> TensorSpec:
        for s in self.observations:
            if s.name == name:
                return s
        raise KeyError(f"robot spec {self.name!r} has no observation {name!r}; it has {self.observation_keys}")

    @property
    def observation_keys(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.observations)

    def action_bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(low, high) per action element, flattened in token order (continuous only)."""
        lows: list[float] = []
        highs: list[float] = []
        for a in self.actions:
            if a.kind is Kind.DISCRETE:
                lows += [0.0] * a.size
                highs += [float(a.num_values - 1)] * a.size  # type: ignore[operator]
            else:
                if a.low is None or a.high is None:
                    raise ValueError(f"action {a.name!r} has no bounds")
                lows += list(a.low)
                highs += list(a.high)
        return tuple(lows), tuple(highs)

    def layout(self) -> list[tuple[str, str, int]]:
        """(key, kind, tokens) rows in token order, with the separator; for docs and demos."""
        rows = [(s.name, s.kind.value, s.num_tokens) for s in self.observations]
        rows.append(("|", "separator", 1))
        rows += [(s.name, f"action ({s.kind.value})", s.size) for s in self.actions]
        return rows

    # -- serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "control_hz": self.control_hz,
            "observations": [s.to_dict() for s in self.observations],
            "actions": [s.to_dict() for s in self.actions],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RobotSpec:
        return cls(
            name=d["name"],
            control_hz=float(d.get("control_hz", 20.0)),
            observations=tuple(TensorSpec.from_dict(s) for s in d["observations"]),
            actions=tuple(TensorSpec.from_dict(s) for s in d["actions"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RobotSpec:
        return cls.from_dict(json.loads(text))


# -- the RGB-stacking robot ---------------------------------------------------------------------------------
# Camera names as in DeepMind's rgb_stacking; vision policies (and Gato) use the two front cameras.
RGB_STACKING_CAMERAS = ("basket_front_left", "basket_front_right", "basket_back_left")
CAMERA_PREFIX = "camera/"
PANDA_ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
ACTION_KEY = "action"
# The proprioception keys, defined once (gato_robot.core.embodiment builds observations with them).
JOINT_ANGLES_KEY = "proprio/joint_angles"
JOINT_VELOCITIES_KEY = "proprio/joint_velocities"
TOOL_POSE_KEY = "proprio/tool_pose"
GRIPPER_KEY = "proprio/gripper"
PREVIOUS_ACTION_KEY = "proprio/previous_action"
# The original 5-D action: tool velocity x/y/z (m/s), wrist yaw rate (rad/s), gripper (+-255, > 0 closes).
RGB_STACKING_ACTION_NAMES = ("tool_vx", "tool_vy", "tool_vz", "tool_yaw_rate", "gripper")
RGB_STACKING_ACTION_LOW = (-0.07, -0.07, -0.07, -1.0, -255.0)
RGB_STACKING_ACTION_HIGH = (0.07, 0.07, 0.07, 1.0, 255.0)


def rgb_stacking_spec(cameras: int | Sequence[str] = 2, image_size: int = 128, *,
                      arm_joints: Sequence[str] = PANDA_ARM_JOINTS,
                      action_low: Sequence[float] = RGB_STACKING_ACTION_LOW,
                      action_high: Sequence[float] = RGB_STACKING_ACTION_HIGH,
                      robot: str = "panda") -> RobotSpec:
    """The spec shared by the simulator, the ROS nodes and the trainer for the RGB-stacking task.

    ``cameras``: 2 (front left/right, as Gato), 3 (plus back left), or explicit camera names.
    Proprioception follows the original's meaning (joint angles and velocities, tool pose, gripper
    state, previous action); object poses are privileged and not part of the policy's observation.
    ``arm_joints``, the action bounds and ``robot`` describe the arm (``gato_robot.core.embodiment`` passes its
    robot file's); the Panda's spec keeps the name ``rgb_stacking_<n>cam`` that trained models record, another
    robot's is ``rgb_stacking_<robot>_<n>cam``.
    """
    if isinstance(cameras, int):
        if cameras not in (1, 2, 3):
            raise ValueError(f"cameras must be 1, 2 or 3 (or a list of {RGB_STACKING_CAMERAS}), got {cameras}")
        names = RGB_STACKING_CAMERAS[:cameras]
    else:
        names = tuple(cameras)
        unknown = sorted(set(names) - set(RGB_STACKING_CAMERAS))
        if unknown or not names:
            raise ValueError(f"unknown cameras {unknown}; choose from {RGB_STACKING_CAMERAS}")
    images = [
        TensorSpec(f"{CAMERA_PREFIX}{n}", Kind.IMAGE, (image_size, image_size, 3), description=f"{n} RGB camera")
        for n in names
    ]
    arm = tuple(arm_joints)
    if not arm:
        raise ValueError("arm_joints must name at least one joint")
    n = len(arm)
    proprio = [
        TensorSpec(JOINT_ANGLES_KEY, Kind.CONTINUOUS, (n,), names=arm, description="arm joint angles (rad)"),
        TensorSpec(JOINT_VELOCITIES_KEY, Kind.CONTINUOUS, (n,), names=arm,
                   description="arm joint velocities (rad/s)"),
        TensorSpec(TOOL_POSE_KEY, Kind.CONTINUOUS, (7,), names=("x", "y", "z", "qx", "qy", "qz", "qw"),
                   description="tool centre point position (m, robot base frame) and orientation quaternion"),
        TensorSpec(GRIPPER_KEY, Kind.CONTINUOUS, (3,), names=("opening", "opening_velocity", "grasp"),
                   description="finger opening (m), its rate (m/s), grasp detected (0/1)"),
        TensorSpec(PREVIOUS_ACTION_KEY, Kind.CONTINUOUS, (5,), names=RGB_STACKING_ACTION_NAMES,
                   description="the action applied at the previous step (physical units)"),
    ]
    action = TensorSpec(
        ACTION_KEY, Kind.CONTINUOUS, (5,), encoding=Encoding.LINEAR,
        low=tuple(action_low), high=tuple(action_high), names=RGB_STACKING_ACTION_NAMES,
        description="tool velocity (m/s), yaw rate (rad/s), gripper (> 0 closes)",
    )
    name = f"rgb_stacking_{len(names)}cam" if robot == "panda" else f"rgb_stacking_{robot}_{len(names)}cam"
    return RobotSpec(name=name, observations=tuple(images + proprio), actions=(action,))
