"""The array layouts of the ROS topic contract, as pure numpy functions (no rclpy: tested without ROS).

Every decoder raises ``ValueError`` with a message that says what was wrong, for the node's log line; the
nodes turn ROS messages into the plain arguments these functions take (``gato_robot.ros.messages``).

Observation rows (``/gato/observation``, sensor_msgs/Image, encoding 8UC1, one row of 796 bytes per token)::

    bytes   0..3   4..7  8..11      12..15  16..19  20..23  24..27  28 .. 795
            token  kind  local_pos  row_lo  row_hi  col_lo  col_hi  768 patch pixels (16x16x3 uint8, row-major)

The first seven fields are little-endian int32 (:data:`OBSERVATION_ROW` is the layout, as a numpy dtype).
``kind`` is ``gato_robot.core.vocab.TokenKind``; the row/column intervals and pixels are zero on rows that are not
image patches. Patches travel as the 8-bit pixels they were made from; the receiver rebuilds the patch values
with ``gato_robot.core.tokenizer.patch_values``, the tokenizer's own formula, so the policy's input is
bit-identical to the tokenizer's (3.9x smaller than float32 values: 126 KB for the 2-camera spec, 158 rows, not 490 KB).
The former float32 layout (32FC1, N x 775: the same seven columns as floats, then 768 patch values) is still
read, by :func:`observation_from_float_rows`, so observations recorded with it replay to a current policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gato_robot.core import vocab
from gato_robot.core.embodiment import Embodiment
from gato_robot.core.sequence import TokenBlock
from gato_robot.core.specs import Kind
from gato_robot.core.tokenizer import Tokenizer, patch_pixels_of, patch_values
from gato_robot.robots import load_embodiment

# -- observation rows ---------------------------------------------------------------------------------------
HEAD_FIELDS = ("token", "kind", "local_pos", "row_lo", "row_hi", "col_lo", "col_hi")
OBSERVATION_ROW = np.dtype([*((name, "<i4") for name in HEAD_FIELDS), ("pixels", "u1", (vocab.PATCH_PIXELS,))])
ROW_BYTES = OBSERVATION_ROW.itemsize  # 796: the message's width (and step) in bytes
HEAD_BYTES = OBSERVATION_ROW.fields["pixels"][1]  # 28: the seven int32 fields before the pixels
HEAD_DTYPE = np.dtype("<i4")
OBSERVATION_ENCODING = "8UC1"
FLOAT_OBSERVATION_ENCODING = "32FC1"  # the former layout, read only
FLOAT_ROW_WIDTH = len(HEAD_FIELDS) + vocab.PATCH_PIXELS  # 775 float32 columns
ACTION_TOKENS_ENCODING = "32SC1"
ACTION_ENCODING = "32FC1"
MAX_ROWS = vocab.MAX_TOKENS_PER_TIMESTEP  # one timestep's tokens at most


def patch_pixels(values: np.ndarray) -> np.ndarray:
    """The uint8 pixels that patch values were made from (the inverse of ``patch_values``), or ValueError when the
    values are not exactly the patch values of 8-bit pixels (the wire never changes what the policy sees)."""
    values = np.asarray(values, np.float32)
    k = values * np.float32(255.0 / 2.0 * vocab.PATCH_SCALE)  # (v * 4 + 1) * 127.5, rounded to the nearest pixel
    k += np.float32(127.5)
    np.rint(k, out=k)
    np.clip(k, 0, 255, out=k)
    with np.errstate(invalid="ignore"):  # NaN: any pixel, refused below
        pixels = k.astype(np.uint8)
    if not np.array_equal(patch_values(pixels), values):
        raise ValueError("patch values must be exactly those of 8-bit pixels, (pixel / 255 * 2 - 1) / "
                         f"{vocab.PATCH_SCALE:g}: finite and within +-{1.0 / vocab.PATCH_SCALE}")
    return pixels


def encode_observation_rows(block: TokenBlock) -> np.ndarray:
    """A tokenized observation (one timestep, ending with the separator) as (N, 796) uint8 rows."""
    n = len(block)
    if n == 0 or n > MAX_ROWS:
        raise ValueError(f"an observation block has 1..{MAX_ROWS} tokens, got {n}")
    img = np.flatnonzero(block.kinds == vocab.TokenKind.IMAGE)
    if img.shape[0] != block.num_patches:
        raise ValueError(f"block has {img.shape[0]} image tokens but {block.num_patches} patches")
    head = np.zeros((n, len(HEAD_FIELDS)), HEAD_DTYPE)
    head[:, 0], head[:, 1], head[:, 2] = block.tokens, block.kinds, block.local_pos
    head[img, 3:5], head[img, 5:7] = block.patch_rows, block.patch_cols
    rows = np.zeros((n, ROW_BYTES), np.uint8)
    rows[:, :HEAD_BYTES] = head.view(np.uint8)
    rows[img, HEAD_BYTES:] = patch_pixels(block.patches.reshape(block.num_patches, vocab.PATCH_PIXELS))
    return rows


class ObservationEncoder:
    """``encode_observation_rows(tokenizer.tokenize_observation(obs))`` for one spec, without the float round trip.

    Every field of the rows but the pixels and the proprioception's token ids depends on the spec alone, so the
    rows are a template made once by the tokenizer itself. Per observation, each camera's patch pixels (made by
    :meth:`camera_pixels`, e.g. as the image arrives, while the node waits for the rest of the set) are copied in
    and the other entries are tokenized (``Tokenizer.value_tokens``). Same bytes as the reference path (tested);
    specs with text observations (variable length) are refused with ValueError.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        spec = tokenizer.spec
        dummy: dict[str, np.ndarray] = {}
        for s in spec.observations:
            if s.kind is Kind.TEXT:
                raise ValueError(f"{s.name}: text observations have no fixed layout; use encode_observation_rows")
            dtype = np.uint8 if s.kind is Kind.IMAGE else np.int64 if s.kind is Kind.DISCRETE else np.float64
            dummy[s.name] = np.zeros(s.shape, dtype)
        self.template = encode_observation_rows(tokenizer.tokenize_observation(dummy))
        self.template.setflags(write=False)
        self.images: dict[str, tuple[slice, int, int]] = {}  # name -> (rows, height, width)
        self.values: dict[str, slice] = {}  # name -> rows
        start = 0
        for s in spec.observations:
            n = s.num_tokens
            if s.kind is Kind.IMAGE:
                self.images[s.name] = (slice(start, start + n), s.shape[0], s.shape[1])
            else:
                self.values[s.name] = slice(start, start + n)
            start += n
        if start + 1 != self.template.shape[0]:  # + the separator
            raise AssertionError(f"layout of {spec.name}: {start} + 1 rows, the tokenizer made {self.template.shape[0]}")

    def camera_pixels(self, name: str, image: np.ndarray) -> np.ndarray:
        """An (H, W, 3) uint8 image as the (N, 768) patch pixels of spec entry ``name`` (resized when needed)."""
        _, h, w = self.images[name]
        return patch_pixels_of(image, h, w, name)

    def encode(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """The (N, 796) rows of an observation whose images are given as :meth:`camera_pixels` (or as images)."""
        missing = [name for name in (*self.images, *self.values) if name not in observation]
        if missing:
            raise ValueError(f"observation lacks keys {missing} required by spec {self.tokenizer.spec.name!r}")
        rows = self.template.copy()
        for name, (sl, h, w) in self.images.items():
            pixels = np.asarray(observation[name])
            if pixels.shape != (sl.stop - sl.start, vocab.PATCH_PIXELS) or pixels.dtype != np.uint8:
                pixels = patch_pixels_of(pixels, h, w, name)
            rows[sl, HEAD_BYTES:] = pixels
        for name, sl in self.values.items():
            ids = self.tokenizer.value_tokens(name, observation[name]).astype(HEAD_DTYPE)
            rows[sl, :4] = ids.view(np.uint8).reshape(-1, 4)
        return rows


def _observation_array(rows: np.ndarray, dtype: type, width: int, what: str) -> np.ndarray:
    """``rows`` as a (N, width) array of ``dtype`` with 1..MAX_ROWS rows, or ValueError saying what was wrong."""
    rows = np.asarray(rows)
    if rows.dtype != dtype or rows.ndim != 2 or rows.shape[1] != width:
        raise ValueError(f"{what} must be {np.dtype(dtype)} (N, {width}), got {rows.dtype} {rows.shape}")
    if not 1 <= rows.shape[0] <= MAX_ROWS:
        raise ValueError(f"an observation has 1..{MAX_ROWS} token rows, got {rows.shape[0]}")
    return rows


def decode_observation_rows(rows: np.ndarray) -> TokenBlock:
    """The inverse of :func:`encode_observation_rows`, validating everything a policy relies on."""
    rows = _observation_array(rows, np.uint8, ROW_BYTES, "observation rows")
    n = rows.shape[0]
    head = np.ascontiguousarray(rows[:, :HEAD_BYTES]).view(HEAD_DTYPE).astype(np.int64)  # (N, 7)
    if np.any(head < 0):
        raise ValueError("observation rows: token, kind, position and interval fields must be >= 0")
    tokens, kinds, local_pos = head[:, 0], head[:, 1], head[:, 2]
    if np.any(tokens >= vocab.VOCAB_SIZE):
        raise ValueError(f"observation rows: token ids must be < {vocab.VOCAB_SIZE}")
    valid_kinds = {int(k) for k in vocab.TokenKind}
    if not set(np.unique(kinds).tolist()) <= valid_kinds:
        raise ValueError(f"observation rows: unknown token kinds {sorted(set(kinds.tolist()) - valid_kinds)}")
    if np.any(local_pos >= vocab.MAX_TOKENS_PER_TIMESTEP):
        raise ValueError(f"observation rows: local positions must be < {vocab.MAX_TOKENS_PER_TIMESTEP}")
    if tokens[-1] != vocab.SEPARATOR or kinds[-1] != vocab.TokenKind.SEPARATOR:
        raise ValueError("observation rows: the last row must be the separator '|'")
    img = np.flatnonzero(kinds == vocab.TokenKind.IMAGE)
    intervals = head[img, 3:7]
    lo, hi = intervals[:, 0::2], intervals[:, 1::2]
    if np.any(hi <= lo) or np.any(hi > vocab.PATCH_POSITION_BINS):
        raise ValueError(f"observation rows: patch intervals must satisfy 0 <= lo < hi <= {vocab.PATCH_POSITION_BINS}")
    p = vocab.PATCH_SIZE
    return TokenBlock(
        tokens=tokens, kinds=kinds.astype(np.uint8), local_pos=local_pos, loss_mask=np.zeros(n, bool),
        timestep=np.zeros(n, np.int64), patches=patch_values(rows[img, HEAD_BYTES:]).reshape(-1, p, p, 3),
        patch_rows=intervals[:, 0:2].copy(), patch_cols=intervals[:, 2:4].copy(),
    )


def observation_from_float_rows(rows: np.ndarray) -> np.ndarray:
    """Rows of the former float32 layout (N, 775: the seven fields as floats, then 768 patch values) as the
    current uint8 rows, exactly (patch values that are not those of 8-bit pixels raise ValueError)."""
    rows = _observation_array(rows, np.float32, FLOAT_ROW_WIDTH, "float observation rows")
    n = rows.shape[0]
    head = rows[:, :len(HEAD_FIELDS)]
    if not np.all(np.isfinite(head)) or np.any(head != np.round(head)) or np.any(np.abs(head) >= 1 << 24):
        raise ValueError("observation rows: token, kind, position and interval columns must be whole numbers")
    out = np.zeros((n, ROW_BYTES), np.uint8)
    out[:, :HEAD_BYTES] = head.astype(HEAD_DTYPE).view(np.uint8)
    img = np.flatnonzero(head[:, 1] == vocab.TokenKind.IMAGE)
    out[img, HEAD_BYTES:] = patch_pixels(rows[img, len(HEAD_FIELDS):])
    return out


# -- images -------------------------------------------------------------------------------------------------
# encoding -> (channels, channel order to RGB); mono is replicated to three channels.
IMAGE_ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)), "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
MAX_IMAGE_SIDE = 4096  # larger images are refused (a 10^6-element garbage message never reaches a resize)


def decode_image(encoding: str, height: int, width: int, step: int, data: bytes | memoryview | np.ndarray) -> np.ndarray:
    """A sensor_msgs/Image's fields to an (H, W, 3) uint8 RGB array (a view where no conversion is needed)."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"image encoding {encoding!r} is not supported; use one of {sorted(IMAGE_ENCODINGS)}")
    channels, order = IMAGE_ENCODINGS[encoding]
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise ValueError(f"image size {width}x{height} is outside 1..{MAX_IMAGE_SIDE} pixels per side")
    if step < width * channels:
        raise ValueError(f"image step {step} is smaller than width * channels = {width * channels}")
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buf.shape[0] != step * height:
        raise ValueError(f"image data has {buf.shape[0]} bytes, expected step * height = {step * height}")
    img = buf.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if order == (0, 1, 2) and channels == 3:
        return img
    return np.ascontiguousarray(img[:, :, list(order)])


def encode_image_rgb8(image: np.ndarray) -> tuple[int, int, int, bytes]:
    """(height, width, step, data) of an (H, W, 3) uint8 image as rgb8."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    return img.shape[0], img.shape[1], img.shape[1] * 3, img.tobytes()


# -- joint states -------------------------------------------------------------------------------------------
def joint_vector(names: Sequence[str], values: Sequence[float] | np.ndarray, wanted: Sequence[str],
                 what: str = "position") -> np.ndarray:
    """Pick ``wanted`` joints by name from a JointState's parallel arrays (any order; extra joints ignored)."""
    names = list(names)
    values = np.asarray(values, np.float64)
    if values.shape != (len(names),):
        raise ValueError(f"joint_states: {len(names)} names but {values.shape[0] if values.ndim else 0} {what} values")
    if len(set(names)) != len(names):
        raise ValueError("joint_states: duplicate joint names")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise ValueError(f"joint_states lacks joints {missing} (it has {names[:10]}{'...' if len(names) > 10 else ''})")
    out = values[[index[n] for n in wanted]]
    if not np.all(np.isfinite(out)):
        raise ValueError(f"joint_states: non-finite {what} values for {list(wanted)}")
    return out


# The RGB-stacking gripper state (opening, opening velocity, grasp) from two finger joints: the opening is the
# sum of the finger positions, its velocity the sum of theirs; the grasp flag is core.gripper.GraspDetector's.
def finger_opening(finger_positions: np.ndarray, finger_velocities: np.ndarray) -> tuple[float, float]:
    return float(np.sum(finger_positions)), float(np.sum(finger_velocities))


# -- commands -----------------------------------------------------------------------------------------------
# The RGB-stacking action (vx, vy, vz, yaw rate, gripper) and its two arm command layouts.
FORWARD_COMMAND_LABELS = ("vx", "vy", "vz", "wx", "wy", "wz")  # Float64MultiArray layout: a Cartesian twist


def action_to_twist(action: np.ndarray, embodiment: Embodiment | None = None
                    ) -> tuple[tuple[float, float, float], tuple[float, float, float], float]:
    """((vx, vy, vz), (wx, wy, wz), gripper) of a 5-D RGB-stacking action, split as the robot file says
    (``core.embodiment``; default: the Panda's)."""
    command = (embodiment or load_embodiment()).arm_command(action)
    return command.linear, command.angular, command.gripper


def action_to_forward_command(action: np.ndarray, embodiment: Embodiment | None = None) -> list[float]:
    """The Float64MultiArray data for a forward command controller over a Cartesian velocity interface (the action
    split as the robot file says; default: the Panda's)."""
    (vx, vy, vz), (wx, wy, wz), _ = action_to_twist(action, embodiment)
    return [vx, vy, vz, wx, wy, wz]


def forward_command_to_velocity(data: Sequence[float], embodiment: Embodiment | None = None) -> np.ndarray:
    """The action's velocity elements (the Panda's: vx, vy, vz, yaw rate) from a forward command's data (6 values,
    :data:`FORWARD_COMMAND_LABELS`)."""
    d = np.asarray(data, np.float64)
    if d.shape != (len(FORWARD_COMMAND_LABELS),):
        raise ValueError(f"forward command must have {len(FORWARD_COMMAND_LABELS)} values "
                         f"{FORWARD_COMMAND_LABELS}, got {d.shape[0] if d.ndim else 0}")
    return (embodiment or load_embodiment()).velocity_from_twist(d[:3], d[3:])


def action_tokens_array(encoding: str, height: int, width: int, step: int, data: bytes | memoryview,
                        expected: int) -> np.ndarray:
    """The int64 ids of an action-tokens message (32SC1, 1 x A)."""
    if encoding != ACTION_TOKENS_ENCODING or height != 1 or width != expected or step != 4 * expected:
        raise ValueError(f"action tokens must be {ACTION_TOKENS_ENCODING} 1x{expected} (step {4 * expected}), got "
                         f"{encoding!r} {height}x{width} step {step}")
    buf = np.frombuffer(data, np.int32) if len(data) == 4 * expected else None
    if buf is None:
        raise ValueError(f"action tokens carry {len(data)} bytes, expected {4 * expected}")
    return buf.astype(np.int64)


def action_array(encoding: str, height: int, width: int, step: int, data: bytes | memoryview,
                 expected: int) -> np.ndarray:
    """The float64 values of a continuous-action message (32FC1, 1 x A, physical units); may be non-finite."""
    if encoding != ACTION_ENCODING or height != 1 or width != expected or step != 4 * expected:
        raise ValueError(f"actions must be {ACTION_ENCODING} 1x{expected} (step {4 * expected}), got "
                         f"{encoding!r} {height}x{width} step {step}")
    if len(data) != 4 * expected:
        raise ValueError(f"action carries {len(data)} bytes, expected {4 * expected}")
    return np.frombuffer(data, np.float32).astype(np.float64)
