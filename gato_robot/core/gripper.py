"""The grasp flag of a parallel gripper from its finger joints (numpy only): what the ROS tokenizer reports.

A real parallel gripper reports an object when its closing fingers stop before they are closed (Robotiq's object
detection works this way), and keeps reporting it while it holds the object. :class:`GraspDetector` does the same
from the opening and its velocity, one update per control step:

- set when the gripper is commanded closed, the opening is above ``GRASP_MIN_OPENING`` (fingers closed on
  nothing read below it) and the fingers have stopped (``|opening velocity| < GRASP_MAX_SPEED``);
- kept while the gripper stays commanded closed and the opening stays above the minimum: a held object's weight
  and the arm's motion move the fingers a little, and a flag that flickered off would tell the policy it had
  dropped the object;
- cleared when the gripper is commanded open or the fingers close fully (the object slipped out).

The simulator's own flag is a contact test (both fingers touching one object); the two differ mainly in the
step or two while the fingers squeeze before they stop.
"""

from __future__ import annotations

import numpy as np

GRASP_MIN_OPENING = 0.002  # m: below this, the fingers closed on nothing (as sim/env.py)
GRASP_MAX_SPEED = 0.005  # m/s: fingers slower than this have stopped


class GraspDetector:
    """Grasp flag from (opening, opening velocity, commanded closed), with the hold described above."""

    def __init__(self) -> None:
        self.detected = False

    def reset(self) -> None:
        self.detected = False

    def update(self, opening: float, speed: float, closing: bool) -> bool:
        if not closing or opening <= GRASP_MIN_OPENING or not np.isfinite(opening):
            self.detected = False
        elif abs(speed) < GRASP_MAX_SPEED:
            self.detected = True
        return self.detected

    def state(self, opening: float, speed: float, closing: bool) -> np.ndarray:
        """The spec's ``proprio/gripper`` entry after this step's update: (opening, opening velocity, grasp)."""
        grasp = self.update(opening, speed, closing)
        return np.array([opening, speed, 1.0 if grasp else 0.0], np.float64)


def episode_grasp_flags(gripper: np.ndarray, previous_gripper: np.ndarray) -> np.ndarray:
    """The detector's flag at every step of a recorded episode, from its ``proprio/gripper`` rows (T, 3: opening,
    opening velocity, recorded flag) and the gripper command before each step (T,: ``proprio/previous_action``'s
    last value; > 0 closes). Re-derives the flag of data recorded with another rule (``data.grasp_flag``)."""
    gripper = np.asarray(gripper, np.float64)
    previous_gripper = np.asarray(previous_gripper, np.float64)
    if gripper.ndim != 2 or gripper.shape[1] < 2 or previous_gripper.shape != gripper.shape[:1]:
        raise ValueError(f"gripper rows (T, 3) and previous gripper commands (T,) expected, got {gripper.shape} "
                         f"and {previous_gripper.shape}")
    detector = GraspDetector()
    return np.array([detector.update(float(o), float(v), bool(c > 0))
                     for (o, v), c in zip(gripper[:, :2], previous_gripper)], bool)
