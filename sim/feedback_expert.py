"""A state-feedback expert for RGB stacking: its action is a function of the current state alone.

Why a second expert. Behaviour cloning and DAgger assume the expert is a policy of the state, pi*(s). The
scripted expert (``expert.py``) is a state machine: its action also depends on a hidden phase, counters and
timers ("close for 8 steps", "at most 2 re-aims", "no push after step 220", "rise first, then travel"). A
memoryless learner then sees the same state labelled differently in different demonstrations, and DAgger's
labels are wrong: run on a learner's states, the script's phase never matches them (traced in
docs/stacking.md: the script stayed in its approach phase for 400 steps, labelling "rise and turn" while the
learner hovered over red).

This expert infers the phase from what a learner can perceive too: the objects (the cameras), the tool pose, and
the gripper's opening, opening velocity and grasp flag (proprioception). Each step it plans afresh:

- red rests on blue, nothing held: open the gripper, rise slowly, then hold still;
- holding an object (grasp flag, the TCP at that object): squeeze until the fingers stop, carry it (lift first
  when low and far) over its destination (red: blue's top face; green: a free spot), lower it, re-aim 1.5 cm
  higher when off-centre, open once it rests there;
- holding nothing: if green lies on blue, move green away first; else approach red's grasp
  (``expert.plan_grasp``, of the good grasps the one nearest the tool's current yaw), descend in a funnel (the
  allowed sideways error shrinks towards the grasp height), close at the grasp pose, and re-open after closing on
  nothing.

Gains, speeds and geometry are the scripted expert's. ``initial_state()`` is None: there is no hidden state.
What it does not do: tip a ridge-topped blue over before stacking (the scripted expert's pushes). A push needs to
remember how often it has pushed; a memoryless version pushed blue back and forth until the episode ended, and
without it the success rate was the same (82.5% vs 81.5% on 40 episodes per test triplet). On a ridge it places
red anyway and, when red slides off, picks it up again.
"""

from __future__ import annotations

import numpy as np

from gato_robot.core import specs
from gato_robot.sim import env as env_lib
from gato_robot.sim import workspace as ws
from gato_robot.sim.expert import (
    BLUE,
    GREEN,
    GRIPPER_CLOSE,
    GRIPPER_OPEN,
    RED,
    SAFE_Z,
    ScriptedExpert,
    _free_spot,
    _resting_on,
    _top_face_centre,
    plan_grasp,
)

OPEN_M = 0.075  # finger opening (sum of both, m) above which the gripper counts as open (fully open: 0.08)
EMPTY_M = 0.003  # closed below this: the fingers met nothing
MOVING = 0.01  # m/s of opening velocity that counts as the fingers moving
HOLD_MARGIN = 0.015  # m: the TCP of a held object lies within its bounding box grown by this
AT_GRASP_XY, AT_GRASP_Z, AT_GRASP_YAW = 0.005, 0.004, 0.1
YAW_OK = 0.12  # rad: aligned enough to descend
FUNNEL = 0.3  # the allowed sideways error while descending grows by 0.3 m per m above the grasp height
FUNNEL_MIN = 0.006
NEAR_XY = 0.02  # within this, correct sideways at the current height instead of going back up
RESTING_GAP = 0.004  # m between the held object's bottom and its destination's top: it rests there
PLACE_OK = 0.012  # m: red's centre this close to its destination may be released
YAW_COST = 0.02  # plan_grasp score per rad of wrist rotation: of equally good grasps, the nearest


class FeedbackExpert:
    """Memoryless privileged expert; needs ``RgbStackingEnv(privileged=True)``. Policy protocol."""

    def initial_state(self) -> None:
        return None

    def step(self, observation: dict[str, np.ndarray], state: None = None) -> tuple[np.ndarray, None]:
        return self.act(observation), None

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        if env_lib.PRIVILEGED_VERTICES not in observation:
            raise ValueError("the feedback expert reads object poses: create the env with privileged=True")
        verts = np.asarray(observation[env_lib.PRIVILEGED_VERTICES], np.float64)
        centres = np.asarray(observation[env_lib.PRIVILEGED_POSES], np.float64)[:, :3]
        tool = np.asarray(observation[specs.TOOL_POSE_KEY], np.float64)
        opening, opening_vel, grasp = (float(v) for v in observation[specs.GRIPPER_KEY])
        pos, yaw = tool[:3], ws.yaw_from_quat(tool[3:])

        held = _held(verts, centres, pos) if grasp > 0.5 else None
        if held is not None:
            return _carry(verts, centres, pos, yaw, held, opening_vel)
        if _resting_on(verts, RED, BLUE):
            return _leave(verts, pos, yaw, opening)
        target = GREEN if _resting_on(verts, GREEN, BLUE) else RED
        return _grasp(verts, centres, pos, yaw, target, opening, opening_vel)


# -- behaviours ---------------------------------------------------------------------------------------------
def _carry(verts: np.ndarray, centres: np.ndarray, pos: np.ndarray, yaw: float, k: int,
           opening_vel: float) -> np.ndarray:
    """Holding object k: bring it over its destination, set it down, let go once it rests there."""
    if opening_vel < -MOVING:  # the fingers are still closing on it: squeeze before lifting
        return _act(pos, yaw, pos, yaw, GRIPPER_CLOSE)
    held = verts[k]
    if k == RED:
        face_xy, dest_top = _top_face_centre(verts[BLUE])
        # halfway between blue's top face and its centre: on a tilted blue the "top face" is only its upper edge
        dest_xy = 0.5 * (face_xy + centres[BLUE, :2])
    else:
        dest_xy, dest_top = _free_spot(verts, [RED, BLUE]), 0.0
    offset = pos[:2] - centres[k, :2]  # TCP relative to the held object's centre, as held now
    # the TCP cannot leave the workspace box: aim at the nearest reachable point (a blue at the box's edge)
    place_xy = np.clip(dest_xy + offset, ws.BOX_LO[:2], ws.BOX_HI[:2])
    dest_xy = place_xy - offset
    below = pos[2] - float(held[:, 2].min())
    others = max(float(verts[j][:, 2].max()) for j in range(3) if j != k)
    carry_z = float(min(others + below + 0.03, ws.BOX_HI[2]))
    place_z = dest_top + below - 0.002
    gap = float(held[:, 2].min()) - dest_top
    err = float(np.linalg.norm(centres[k, :2] - dest_xy))
    if err > 0.03:  # travel at carry height; lift first when low
        goal_xy = pos[:2] if pos[2] < carry_z - 0.02 else place_xy
        return _act(pos, yaw, np.array([*goal_xy, carry_z]), yaw, GRIPPER_CLOSE)
    if gap < RESTING_GAP and (k != RED or err <= PLACE_OK):
        return _act(pos, yaw, pos, yaw, GRIPPER_OPEN)  # it rests on its destination: let go
    if err > FUNNEL_MIN + 0.2 * max(gap, 0.0):  # off-centre for this height: re-aim at least 1.5 cm above
        return _act(pos, yaw, np.array([*place_xy, max(pos[2], place_z + 0.015)]), yaw, GRIPPER_CLOSE)
    vmax = ws.MAX_SPEED if pos[2] > place_z + 0.015 else 0.025  # slow for the last 1.5 cm: set down, not drop
    return _act(pos, yaw, np.array([*place_xy, place_z]), yaw, GRIPPER_CLOSE, vmax=vmax)


def _leave(verts: np.ndarray, pos: np.ndarray, yaw: float, opening: float) -> np.ndarray:
    """Red rests on blue: open fully, then rise, slowly while the fingers are beside red, and hold."""
    if opening < OPEN_M:
        return _act(pos, yaw, pos, yaw, GRIPPER_OPEN)
    near = pos[2] < float(verts[RED][:, 2].max()) + 0.01
    return _act(pos, yaw, np.array([*pos[:2], SAFE_Z + 0.03]), yaw, GRIPPER_OPEN, vmax=0.02 if near else ws.MAX_SPEED)


def _grasp(verts: np.ndarray, centres: np.ndarray, pos: np.ndarray, yaw: float, k: int, opening: float,
           opening_vel: float) -> np.ndarray:
    """Nothing held: approach object k's grasp, descend, close; re-open after closing on nothing."""
    gxy, gz, gyaw = plan_grasp(verts, k, prefer_yaw=yaw, com=centres[k], yaw_cost=YAW_COST)
    gxy = np.clip(gxy, ws.BOX_LO[:2], ws.BOX_HI[:2])  # reachable: the TCP stays inside the workspace box
    xy_err = float(np.linalg.norm(pos[:2] - gxy))
    yaw_err = abs(gyaw - yaw)
    dz = pos[2] - gz
    grasp_pose = np.array([*gxy, gz])
    if opening < EMPTY_M:  # closed on nothing: open where we are
        return _act(pos, yaw, pos, yaw, GRIPPER_OPEN)
    at_grasp = xy_err < AT_GRASP_XY and dz < AT_GRASP_Z and yaw_err < AT_GRASP_YAW
    closing = opening_vel < -MOVING and xy_err < 2 * AT_GRASP_XY and dz < 2.5 * AT_GRASP_Z
    if at_grasp or closing:
        return _act(pos, yaw, grasp_pose, gyaw, GRIPPER_CLOSE)
    if opening < OPEN_M and opening_vel > MOVING:  # still opening after a miss: wait until open
        return _act(pos, yaw, pos, yaw, GRIPPER_OPEN)
    clear = _clear_z(verts, gz)
    if xy_err < FUNNEL_MIN + FUNNEL * max(dz, 0.0) and yaw_err < YAW_OK:
        vmax = ws.MAX_SPEED if dz > 0.02 else 0.04
        aim = grasp_pose - np.array([0.0, 0.0, 0.005])  # aim a little low: no slow creep over the last millimetres
        return _act(pos, yaw, aim, gyaw, GRIPPER_OPEN, vmax=vmax)
    if xy_err < NEAR_XY and yaw_err < YAW_OK:  # a little off: correct sideways at this height
        return _act(pos, yaw, np.array([*gxy, pos[2]]), gyaw, GRIPPER_OPEN)
    goal = np.array([*gxy, clear])
    if xy_err > 0.03 and pos[2] < clear - 0.03:
        goal = np.array([*pos[:2], clear])  # low and far: rise first, then travel
    return _act(pos, yaw, goal, gyaw, GRIPPER_OPEN)


# -- state helpers --------------------------------------------------------------------------------------------
def _held(verts: np.ndarray, centres: np.ndarray, pos: np.ndarray) -> int | None:
    """The object between the fingers (the grasp flag is on): the TCP lies within its bounding box (1.5 cm margin;
    a long object may be held near one end), the nearest centre if several."""
    inside = [k for k in range(len(verts))
              if np.all(pos >= verts[k].min(axis=0) - HOLD_MARGIN) and np.all(pos <= verts[k].max(axis=0) + HOLD_MARGIN)]
    if not inside:
        return None
    return min(inside, key=lambda k: float(np.linalg.norm(centres[k] - pos)))


def _clear_z(verts: np.ndarray, grasp_z: float) -> float:
    """Travel height of the open hand: fingertips 4 cm above every object (the scripted expert's)."""
    return float(min(max(float(verts[:, :, 2].max()) + 0.05, grasp_z + 0.05, 0.09), ws.BOX_HI[2]))


_act = ScriptedExpert._act  # proportional velocity towards a goal pose, within the action limits
