"""The RGB-stacking success test: the original's sparse stacking condition and our episode-level rule.

Sparse condition (rgb_stacking.md, the environment's sparse reward), evaluated every control step:
red's centre within 5 cm of blue's centre horizontally, red's centre more than 2 cm above blue's, red touching
blue, and red touching neither the basket (nor the floor around it) nor the robot.

Episode rule (the papers' rule is not public; this is ours): an episode succeeds once the condition has held
for at least 1 s, i.e. 20 consecutive control steps at 20 Hz, at any time in the 400 steps. ``info["success"]``
reports that (latched), ``info["stacked"]`` the condition at this step, and the reward is 1.0 exactly at the
steps where the condition holds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MAX_HORIZONTAL_M = 0.05
MIN_HEIGHT_M = 0.02
HOLD_STEPS = 20  # 1 s at 20 Hz


@dataclasses.dataclass(frozen=True)
class Contacts:
    """Which bodies red touches at this step."""

    blue: bool
    basket: bool
    robot: bool


def stacked(red_pos: np.ndarray, blue_pos: np.ndarray, contacts: Contacts) -> bool:
    """The original's sparse stacking condition for red on blue (positions are object centres, metres)."""
    red_pos = np.asarray(red_pos, float)
    blue_pos = np.asarray(blue_pos, float)
    horizontal = float(np.linalg.norm(red_pos[:2] - blue_pos[:2]))
    above = float(red_pos[2] - blue_pos[2])
    return (
        horizontal < MAX_HORIZONTAL_M and above > MIN_HEIGHT_M
        and contacts.blue and not contacts.basket and not contacts.robot
    )


@dataclasses.dataclass
class SuccessTracker:
    """Episode-level rule: success once ``stacked`` held for ``hold_steps`` consecutive steps."""

    hold_steps: int = HOLD_STEPS
    streak: int = 0
    success: bool = False

    def update(self, is_stacked: bool) -> bool:
        self.streak = self.streak + 1 if is_stacked else 0
        self.success = self.success or self.streak >= self.hold_steps
        return self.success
