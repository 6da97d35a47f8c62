"""Workspace geometry and limits of the RGB-stacking cell (numbers from rgb_stacking.md).

World frame = robot base frame: x forward, z up, basket floor at z = 0.

The original clips its tool centre point to a 0.25 x 0.25 x 0.20 m box centred (0.6, 0, 0.17) m and the
wrist yaw to +-pi/2. Our tool centre point is the Panda's pinch point between the fingertips, which must reach
an object lying on the floor, so the box keeps the original size but is centred 5.5 cm lower, at
(0.6, 0, 0.115) m; the start-pose heights are shifted by the same amount. x, y and all sizes are the original's.
"""

from __future__ import annotations

import numpy as np

CONTROL_HZ = 20.0  # 50 ms control step
CONTROL_DT = 1.0 / CONTROL_HZ
EPISODE_STEPS = 400  # 20 s
Z_SHIFT = -0.055
BOX_CENTER = np.array([0.6, 0.0, 0.17 + Z_SHIFT])
BOX_HALF = np.array([0.125, 0.125, 0.10])
BOX_LO = BOX_CENTER - BOX_HALF
BOX_HI = BOX_CENTER + BOX_HALF
YAW_LIMIT = np.pi / 2
MAX_SPEED = 0.07  # m/s per axis
MAX_YAW_RATE = 1.0  # rad/s
GRIPPER_COMMAND = 255.0  # +-255, > 0 closes

# Start distribution (rgb_stacking.md), heights shifted with the box.
START_LO = np.array([0.5, -0.14, 0.22 + Z_SHIFT])
START_HI = np.array([0.7, 0.14, 0.43 + Z_SHIFT])
START_YAW = np.pi / 4

# Basket: the wheel's lasercut basket meshes (rgb_basket_assets) have a flat 0.25 x 0.25 m floor and four
# panels sloped 25.5 deg that rise 0.13 m over a 0.272 m run; its centre is 0.6 m in front of the robot.
BASKET_CENTER = np.array([0.6, 0.0, 0.0])
BASKET_FLOOR_HALF = 0.125
BASKET_SLOPE_DEG = 25.5
BASKET_RUN = 0.272

# Objects are dropped from z = 0.12 at x in [0.50, 0.70], y in [-0.1, 0.1] with a random 3D orientation.
DROP_Z = 0.12
DROP_LO = np.array([0.50, -0.10])
DROP_HI = np.array([0.70, 0.10])


def integrate_position(target: np.ndarray, velocity: np.ndarray, dt: float) -> np.ndarray:
    """target + velocity * dt, clipped to the box; a target already outside may move back in, never further out."""
    target = np.asarray(target, float)
    new = target + np.asarray(velocity, float) * dt
    return np.clip(new, np.minimum(BOX_LO, target), np.maximum(BOX_HI, target))


def integrate_yaw(yaw: float, rate: float, dt: float) -> float:
    """yaw + rate * dt clipped to +-pi/2 (same rule as the position: never further out)."""
    new = yaw + rate * dt
    return float(np.clip(new, min(-YAW_LIMIT, yaw), max(YAW_LIMIT, yaw)))


def wrap_half_turn(angle: float) -> float:
    """Angle modulo pi into [-pi/2, pi/2): a parallel gripper is symmetric under a half turn."""
    return float((angle + np.pi / 2) % np.pi - np.pi / 2)


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a unit quaternion xyzw."""
    x, y, z, w = (float(v) for v in quat)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def yaw_from_quat(quat: np.ndarray) -> float:
    """Tool yaw (the action's yaw axis) from the tool quaternion: the fingers close along angle pi/2 - yaw."""
    closing = quat_to_matrix(quat)[:, 1]  # the hand's y axis is the fingers' axis
    return wrap_half_turn(-np.arctan2(closing[0], -closing[1]))


def basket_height(xy: np.ndarray) -> np.ndarray:
    """Height (m) of the basket's surface under points ``xy`` (..., 2): 0 on the floor, rising on the panels."""
    d = np.abs(np.asarray(xy, float) - BASKET_CENTER[:2]) - BASKET_FLOOR_HALF
    return np.clip(d.max(axis=-1), 0.0, BASKET_RUN) * np.tan(np.deg2rad(BASKET_SLOPE_DEG))
