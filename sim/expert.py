"""A scripted, shape-aware expert for RGB stacking that acts through the env's own 5-D action space.

It reads the privileged observation (``privileged=True``: object poses and world-frame mesh vertices) and
the tool pose, and runs a small state machine with proportional velocity commands (so every action is a valid
demonstration action within +-0.07 m/s and +-1 rad/s):

    clear (if green or red lies on blue: move it aside) -> approach red from above, yaw aligned with red's
    narrowest horizontal axis -> descend -> close -> lift -> carry red's centre over blue's top face ->
    lower slowly until red sits on blue -> open -> retreat upward -> watch; if the stack falls apart or a
    grasp fails, plan again (retry loop).

Follows the policy protocol: ``initial_state()`` and ``step(observation, state) -> (action, state)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gato_robot.core import specs
from gato_robot.sim import env as env_lib
from gato_robot.sim import workspace as ws

RED, GREEN, BLUE = 0, 1, 2
GRIPPER_OPEN = -255.0
GRIPPER_CLOSE = 255.0
# Panda finger geometry relative to the TCP (measured from the URDF's collision meshes, open gripper): inner
# faces 3.6 cm either side, outer faces 7.0 cm, 1.45 cm half-width, tips 1.1 cm below the TCP; the hand's body
# starts 3.5 cm above the TCP and spans +-10.5 cm along the fingers' axis and +-3.6 cm across.
MAX_FINGER_GAP = 0.064  # m: widest object we try to grasp (the open fingertips leave 7.2 cm)
SAFE_Z = 0.17
FINGER_REACH = 0.076  # m from the grasp centre to the outside of an open finger, plus a margin
FINGER_HALF_WIDTH = 0.02  # m: half the finger's width plus a margin
HAND_HALF = (0.11, 0.04)  # m: the hand's half extent along and across the fingers' axis, plus a margin
HAND_ABOVE_TCP = 0.032
MAX_PUSHES = 3  # tries at tipping blue onto a flat top
PUSH_DEADLINE = 220  # steps: no push starts later (red still needs ~120 steps and the 20-step hold)
PUSH_DISTANCE = 0.12  # m
TIP_RATIO = 0.9  # tip a ridged prism onto its end only if its height exceeds this fraction of its length
TIP_MIN_LENGTH = 0.06  # m: ... and it is this long (shorter ridged blues, b5, b6, s0, do better pushed across)
PUSH_DROP = 0.02  # m: the TCP starts this far below blue's ridge
PUSH_RISE = 0.04  # m: the TCP rises this much over the push (finger friction lifts the pushed end)
GAIN = 3.0  # 1/s: proportional gain from position error to commanded velocity


@dataclasses.dataclass(frozen=True)
class ExpertState:
    phase: str = "plan"
    target: int = RED  # object being moved
    steps_in_phase: int = 0
    grasp_xy: tuple[float, float] = (0.0, 0.0)
    grasp_z: float = 0.0
    grasp_yaw: float = 0.0
    place_xy: tuple[float, float] = (0.0, 0.0)
    place_z: float = 0.0  # target z of the TCP when placing
    attempts: int = 0
    planned_centre: tuple[float, float, float] = (0.0, 0.0, 0.0)  # target's centre when the grasp was planned
    avoid_yaw: float | None = None  # a grasp yaw whose descent was blocked: avoid it next time
    last_z: float = 1.0  # TCP height some steps ago, to notice a blocked descent
    adjustments: int = 0  # re-aims before releasing red in this attempt
    pushes: int = 0  # pushes that tried to tip blue onto a flat top (its top was a ridge)
    t: int = 0  # control steps since the episode began
    push_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    push_dir: tuple[float, float] = (0.0, 0.0)
    push_along: bool = False  # the push runs along blue's ridge (tips it onto its end) rather than across


def _width(points_xy: np.ndarray, angle: float) -> tuple[float, float, float]:
    """Extent along direction ``angle``: (width, low, high)."""
    proj = points_xy @ np.array([np.cos(angle), np.sin(angle)])
    return float(proj.max() - proj.min()), float(proj.min()), float(proj.max())


def _contact_band(v: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    """Heights (lo, hi) where both fingers, closing along ``u``, meet the object: the overlap of the z ranges
    of the two extreme faces. A short band means slanted faces that squeeze the object out of the grasp."""
    proj = v[:, :2] @ u
    lo_face, hi_face = v[proj < proj.min() + 0.004, 2], v[proj > proj.max() - 0.004, 2]
    return max(lo_face.min(), hi_face.min()), min(lo_face.max(), hi_face.max())


def _densify(v: np.ndarray, samples: int = 6) -> np.ndarray:
    """Points on every segment between two vertices: a convex object's faces, not only its corners."""
    i, j = np.triu_indices(len(v), 1)
    t = np.linspace(0.0, 1.0, samples)[:, None, None]
    return (v[i][None] * (1 - t) + v[j][None] * t).reshape(-1, 3)


def plan_grasp(verts: np.ndarray, k: int, prefer_yaw: float | None = None, avoid_yaw: float | None = None,
               com: np.ndarray | None = None, yaw_cost: float = 0.0) -> tuple[np.ndarray, float, float]:
    """(grasp xy, grasp z, tool yaw) for object ``k``: fingers close across a narrow horizontal axis whose two
    contact faces are vertical over a common height band, at a point where the open fingers (4 cm either side of
    the centre, 2 cm wide) clear the other objects. Along the fingers' contact line the grasp is centred on the
    centre of mass ``com`` (default: the vertex mean), so the object does not pivot between the pads.
    ``yaw_cost`` > 0 adds that much score per radian the wrist must turn from ``prefer_yaw`` (within its +-pi/2
    range, no wrap-around), so that of equally good grasps the nearest is chosen: a memoryless expert's choice
    between the symmetric grasps of a cube is then a function of the tool's yaw, not of rounding."""
    v = np.unique(verts[k], axis=0)
    com = v.mean(axis=0) if com is None else np.asarray(com, float)
    xy = v[:, :2]
    top, bottom = float(v[:, 2].max()), float(v[:, 2].min())
    dense = [_densify(np.unique(verts[j], axis=0)) for j in range(3) if j != k]
    best: tuple[float, np.ndarray, float, float] | None = None
    for angle in np.deg2rad(np.arange(0.0, 180.0, 5.0)):
        w, lo, hi = _width(xy, angle)
        if w > MAX_FINGER_GAP:
            continue
        u = np.array([np.cos(angle), np.sin(angle)])
        n = np.array([-u[1], u[0]])
        band_lo, band_hi = _contact_band(v, u)
        band = band_hi - band_lo
        # grasp low in the band but not above top - 2.2 cm (the fingers are ~5 cm long) nor below the reach
        z = float(np.clip(min(0.5 * (band_lo + band_hi), top - 0.022), band_lo + min(0.004, band / 2), band_hi))
        z = max(z, ws.BOX_LO[2] + 0.001, bottom + 0.008, top - HAND_ABOVE_TCP + 0.004)  # the hand clears the top
        band_ok = band >= 0.008 and band_lo - 0.002 <= z <= band_hi + 0.002
        _, nlo, nhi = _width(xy, angle + np.pi / 2)
        com_n = float(com[:2] @ n)
        slack = max(0.0, min(com_n - nlo, nhi - com_n) - 0.012)  # how far along the object the fingers may slide
        others = [d[d[:, 2] > z - 0.014, :2] for d in dense]
        tall = [d[d[:, 2] > z + HAND_ABOVE_TCP, :2] for d in dense]
        for shift in np.linspace(-slack, slack, 2 * int(slack / 0.008) + 1):
            centre = u * (lo + hi) / 2 + n * (com_n + shift)
            score = w + 0.3 * abs(shift) + (0.0 if band_ok else 0.5) - 0.2 * min(band, 0.03)
            yaw = ws.wrap_half_turn(np.pi / 2 - angle)
            if prefer_yaw is not None and abs(ws.wrap_half_turn(yaw - prefer_yaw)) > 0.2:
                score += 0.01  # hysteresis: keep the current plan unless another is clearly better
            if prefer_yaw is not None:
                score += yaw_cost * abs(yaw - prefer_yaw)
            if avoid_yaw is not None and abs(ws.wrap_half_turn(yaw - avoid_yaw)) < 0.3:
                score += 0.3
            for o in others:
                rel = o - centre
                along, across = np.abs(rel @ u), np.abs(rel @ n)
                if ((along < FINGER_REACH) & (along > w / 2 - 0.005) & (across < FINGER_HALF_WIDTH)).any():
                    score += 1.0
            fingers = centre + np.array([sa * a * u + sc * FINGER_HALF_WIDTH * n for sa in (-1, 1)
                                         for a in (0.04, 0.055, 0.07) for sc in (-1, 0, 1)])
            if ws.basket_height(fingers).max() > z - 0.013:  # a fingertip would hit the basket's slope
                score += 1.0
            for o in tall:
                rel = o - centre
                if ((np.abs(rel @ u) < HAND_HALF[0]) & (np.abs(rel @ n) < HAND_HALF[1])).any():
                    score += 1.0
            if best is None or score < best[0]:
                best = (score, centre, float(angle), z)
    if best is None:  # nothing fits between the fingers: try the narrowest way anyway
        angles = np.deg2rad(np.arange(0.0, 180.0, 5.0))
        angle = float(min(angles, key=lambda a: _width(xy, a)[0]))
        best = (0.0, xy.mean(axis=0), angle, max(0.5 * (top + bottom), ws.BOX_LO[2] + 0.001))
    _, centre, angle, z = best
    return centre, z, ws.wrap_half_turn(np.pi / 2 - angle)


def _top_face_centre(v: np.ndarray) -> tuple[np.ndarray, float]:
    top = float(v[:, 2].max())
    face = np.unique(v[v[:, 2] > top - 0.004], axis=0)  # unique: the vertex array is padded with repeats
    return face[:, :2].mean(axis=0), top


def _topple_push(v: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """If the object's top is a ridge (fewer than 3 vertices within 4 mm of its top), where to start a push that
    tips it onto a face with a flat top (TCP start point), the push direction (unit xy) and whether the push runs
    along the ridge; else None.

    A ridge between two vertices is the top edge of a prism lying on a side face (b3's quadrilateral prism): no
    two of its side faces are parallel, so rolling it across the ridge only brings up another ridge. The push
    therefore runs along the ridge, high on the end face, and tips the prism up onto its end cap, whose opposite
    cap is a flat top, if the prism is about as tall as long. Otherwise (or for a single top vertex) the push goes
    across, toward the basket centre, once."""
    v = np.unique(v, axis=0)
    top = float(v[:, 2].max())
    ridge = v[v[:, 2] > top - 0.004]
    if len(ridge) >= 3:
        return None
    to_centre = ws.BASKET_CENTER[:2] - centre[:2]
    along = np.zeros(2)
    if len(ridge) == 2 and np.linalg.norm(ridge[1, :2] - ridge[0, :2]) > 1e-3:
        along = (ridge[1, :2] - ridge[0, :2]) / np.linalg.norm(ridge[1, :2] - ridge[0, :2])
    length = _width(v[:, :2], float(np.arctan2(along[1], along[0])))[0]
    bottom = float(v[:, 2].min())
    lying = int((v[:, 2] < bottom + 0.003).sum()) >= 3  # resting on a face, not leaning on something
    if np.any(along) and lying and length >= TIP_MIN_LENGTH and top - bottom > TIP_RATIO * length:
        if along @ to_centre < 0:
            along = -along
        mid = ridge[:, :2].mean(axis=0)
        back = float(np.max((v[:, :2] - mid) @ -along))  # the end face's farthest point behind the ridge's middle
        z = max(top - PUSH_DROP, ws.BOX_LO[2] + 0.001)
        start = np.array([*(mid - along * (back + 0.026)), z])
        start[:2] = np.clip(start[:2], ws.BOX_LO[:2], ws.BOX_HI[:2])
        return start, along, True
    if np.any(along):
        across = np.array([-along[1], along[0]])
    else:
        across = to_centre if np.linalg.norm(to_centre) > 1e-3 else np.array([1.0, 0.0])
        across = across / np.linalg.norm(across)
    if across @ to_centre < 0:
        across = -across
    mid = ridge[:, :2].mean(axis=0)
    z = max(top - 0.015, ws.BOX_LO[2] + 0.001)
    start = np.array([*(mid - across * 0.055), z])
    start[:2] = np.clip(start[:2], ws.BOX_LO[:2], ws.BOX_HI[:2])
    return start, across, False


def _resting_on(verts: np.ndarray, upper: int, lower: int) -> bool:
    """Does object ``upper`` rest on ``lower`` (its bottom near lower's top, overlapping horizontally)?"""
    centre, top = _top_face_centre(verts[lower])
    bottom = float(verts[upper][:, 2].min())
    upper_xy = 0.5 * (verts[upper][:, :2].min(0) + verts[upper][:, :2].max(0))
    return abs(bottom - top) < 0.015 and float(np.linalg.norm(upper_xy - centre)) < 0.05


def red_resting_on_blue(verts: np.ndarray) -> bool:
    """Red rests on blue (mesh vertices, world frame): what the expert watches for, and what a scripted operator
    judges a stack by (``gato_robot.ros.scripted_operator``)."""
    return _resting_on(np.asarray(verts, np.float64), RED, BLUE)


def _free_spot(verts: np.ndarray, avoid: list[int]) -> np.ndarray:
    """A point on the basket floor far from the given objects."""
    grid = np.array([[x, y] for x in np.linspace(0.51, 0.69, 7) for y in np.linspace(-0.09, 0.09, 7)])
    dist = np.min([np.linalg.norm(grid[:, None, :] - verts[j][None, :, :2], axis=2).min(1) for j in avoid], axis=0)
    return grid[int(np.argmax(dist))]


class ScriptedExpert:
    """IK-based scripted expert (the env does the IK); needs ``RgbStackingEnv(privileged=True)``."""

    def initial_state(self) -> ExpertState:
        return ExpertState()

    def step(self, observation: dict[str, np.ndarray], state: ExpertState) -> tuple[np.ndarray, ExpertState]:
        if env_lib.PRIVILEGED_VERTICES not in observation:
            raise ValueError("the scripted expert reads object poses: create the env with privileged=True")
        verts = np.asarray(observation[env_lib.PRIVILEGED_VERTICES], np.float64)
        centres = np.asarray(observation[env_lib.PRIVILEGED_POSES], np.float64)[:, :3]
        tool = np.asarray(observation[specs.TOOL_POSE_KEY], np.float64)
        grasped = bool(observation[specs.GRIPPER_KEY][2] > 0.5)
        s = dataclasses.replace(state, steps_in_phase=state.steps_in_phase + 1, t=state.t + 1)
        pos, yaw = tool[:3], ws.yaw_from_quat(tool[3:])
        phase = s.phase

        if phase == "plan":
            target = RED
            for j in (GREEN, RED):  # anything lying on blue must go first
                if _resting_on(verts, j, BLUE) and not (j == RED and self._stack_ok(verts)):
                    target = j
                    break
            if target == RED and self._stack_ok(verts) and not grasped:
                return self._act(pos, yaw, pos, yaw, GRIPPER_OPEN), self._go(s, "watch")
            push = _topple_push(verts[BLUE], centres[BLUE]) if target == RED and not grasped else None
            if push is not None and s.pushes < (MAX_PUSHES if push[2] else 1) and s.t < PUSH_DEADLINE:
                # red cannot rest on a ridge: tip blue onto a flat-topped face first
                start, direction, _ = push
                s = dataclasses.replace(s, pushes=s.pushes + 1, push_start=tuple(start), push_dir=tuple(direction),
                                        push_along=push[2])
                return self._act(pos, yaw, pos, yaw, GRIPPER_CLOSE), self._go(s, "topple_above")
            if target != s.target:
                s = dataclasses.replace(s, avoid_yaw=None)
            s = dataclasses.replace(self._replan(verts, centres, s, target, None), attempts=s.attempts + 1,
                                    adjustments=0)
            return self._act(pos, yaw, pos, yaw, GRIPPER_OPEN), self._go(s, "approach")

        if phase.startswith("topple"):
            start, direction = np.array(s.push_start), np.array(s.push_dir)
            clear = self._clear_z(verts, s)
            # the closed fingers side by side across the push: a broad pusher
            push_yaw = ws.wrap_half_turn(-float(np.arctan2(direction[1], direction[0])))
            if phase == "topple_above":
                goal = np.array([*start[:2], clear])
                if pos[2] < clear - 0.03 and np.linalg.norm(pos[:2] - start[:2]) > 0.02:
                    goal = np.array([*pos[:2], clear])
                near = np.linalg.norm(pos[:2] - goal[:2]) < 0.008 and abs(pos[2] - goal[2]) < 0.02
                nxt = self._go(s, "topple_down") if near else self._timeout(s, 80)
            elif phase == "topple_down":
                goal = start
                nxt = self._go(s, "topple_push") if np.linalg.norm(pos - goal) < 0.006 else self._timeout(s, 40)
            elif phase == "topple_push":
                dist, rise = (PUSH_DISTANCE, PUSH_RISE) if s.push_along else (0.09, 0.0)
                goal = start + np.array([*direction * dist, rise])
                # a stalled push also backs off upward, so that blue does not stay propped on the fingers
                done = np.linalg.norm(pos - goal) < 0.008 or s.steps_in_phase > (75 if s.push_along else 50)
                nxt = self._go(s, "topple_up") if done else s
            else:
                goal = np.array([*pos[:2], clear + 0.02])
                nxt = self._go(s, "plan") if pos[2] > clear else self._timeout(s, 40)
            vmax = 0.04 if phase == "topple_push" else ws.MAX_SPEED
            turn = s.push_along and phase in ("topple_above", "topple_down")
            goal_yaw = push_yaw if turn else yaw
            if turn and phase == "topple_above" and abs(yaw - push_yaw) > 0.08:
                nxt = s if s.steps_in_phase <= 80 else nxt
            return self._act(pos, yaw, goal, goal_yaw, GRIPPER_CLOSE, vmax=vmax), nxt
        if phase == "approach":  # objects may still slide or rock: follow them until the descent starts
            s = self._replan(verts, centres, s, s.target, s.grasp_yaw)
            gxy = np.array(s.grasp_xy)
            goal = np.array([*gxy, self._clear_z(verts, s)])
            if np.linalg.norm(pos[:2] - gxy) > 0.03 and pos[2] < goal[2] - 0.03:
                goal = np.array([*pos[:2], goal[2]])  # rise first, then travel
            done = (np.linalg.norm(pos[:2] - goal[:2]) < 0.008 and abs(pos[2] - goal[2]) < 0.02
                    and abs(yaw - s.grasp_yaw) < 0.08)
            nxt = self._go(s, "descend") if done else self._timeout(s, 80)
            return self._act(pos, yaw, goal, s.grasp_yaw, GRIPPER_OPEN), nxt
        gxy = np.array(s.grasp_xy)
        if phase == "descend":
            goal = np.array([*gxy, s.grasp_z])
            moved = np.linalg.norm(centres[s.target] - np.array(s.planned_centre)) > 0.006
            if s.steps_in_phase % 5 == 0:
                blocked = s.steps_in_phase > 0 and s.last_z - pos[2] < 0.002 and pos[2] > goal[2] + 0.008
                s = dataclasses.replace(s, last_z=float(pos[2]))
                if blocked:  # a finger sits on something: try another way
                    s = dataclasses.replace(s, avoid_yaw=s.grasp_yaw)
                    return self._act(pos, yaw, pos, yaw, GRIPPER_OPEN), self._go(s, "plan")
            if moved:
                return self._act(pos, yaw, pos, yaw, GRIPPER_OPEN), self._go(s, "plan")
            done = ((np.linalg.norm(pos[:2] - goal[:2]) < 0.004 and pos[2] < goal[2] + 0.003)
                    or (s.steps_in_phase > 40 and abs(pos[2] - goal[2]) < 0.01))
            nxt = self._go(s, "close") if done else self._timeout(s, 60)
            vmax = 0.07 if pos[2] > goal[2] + 0.02 else 0.04
            aim = goal - np.array([0.0, 0.0, 0.005])  # aim a little low: no slow creep over the last millimetres
            return self._act(pos, yaw, aim, s.grasp_yaw, GRIPPER_OPEN, vmax=vmax), nxt
        if phase == "close":
            goal = np.array([*gxy, s.grasp_z])
            nxt = self._go(s, "lift") if s.steps_in_phase >= 8 or (grasped and s.steps_in_phase >= 5) else s
            return self._act(pos, yaw, goal, s.grasp_yaw, GRIPPER_CLOSE), nxt
        if phase == "lift":
            goal = np.array([*gxy, self._carry_z(verts, s, pos)])
            if s.steps_in_phase > 5 and not grasped:
                return self._act(pos, yaw, pos, yaw, GRIPPER_OPEN), self._go(s, "plan")
            if pos[2] > goal[2] - 0.03:  # the held object's bottom is level with the other tops: move on
                s = self._plan_place(verts, centres, s, pos)
                return self._act(pos, yaw, goal, s.grasp_yaw, GRIPPER_CLOSE), self._go(s, "carry")
            return self._act(pos, yaw, goal, s.grasp_yaw, GRIPPER_CLOSE), self._timeout(s, 60)
        if phase == "carry":
            if not grasped:
                return self._act(pos, yaw, pos, yaw, GRIPPER_OPEN), self._go(s, "plan")
            s = self._plan_place(verts, centres, s, pos)  # the object may shift in the fingers: re-aim every step
            goal = np.array([*s.place_xy, self._carry_z(verts, s, pos)])
            done = np.linalg.norm(pos[:2] - goal[:2]) < 0.006 and abs(pos[2] - goal[2]) < 0.01
            nxt = self._go(s, "lower") if done else self._timeout(s, 100)
            return self._act(pos, yaw, goal, s.grasp_yaw, GRIPPER_CLOSE), nxt
        if phase == "lower":
            if pos[2] > s.place_z + 0.015:  # re-aim while well above; near contact, hold the aim fixed
                s = self._plan_place(verts, centres, s, pos)
            goal = np.array([*s.place_xy, s.place_z])
            stalled = s.steps_in_phase > 3 and s.last_z - pos[2] < 0.0005  # red rests on blue: stop pushing
            s = dataclasses.replace(s, last_z=float(pos[2]))
            done = pos[2] - goal[2] < 0.001 or stalled or s.steps_in_phase > 80
            nxt = self._go(s, "release") if done else s
            if done and s.target == RED and s.adjustments < 2:
                # before letting go, check that red's centre sits over blue's top face; if it slipped, lift a
                # little and aim again
                top_xy, _ = _top_face_centre(verts[BLUE])
                if np.linalg.norm(centres[RED, :2] - top_xy) > 0.008:
                    nxt = dataclasses.replace(self._go(s, "adjust"), adjustments=s.adjustments + 1)
            vmax = 0.07 if pos[2] > goal[2] + 0.015 else 0.025  # slow for the last 1.5 cm: set down, not drop
            return self._act(pos, yaw, goal, s.grasp_yaw, GRIPPER_CLOSE, vmax=vmax), nxt
        if phase == "adjust":  # rise 1.5 cm with red, then lower again with a fresh aim
            goal = np.array([*pos[:2], s.place_z + 0.015])
            if pos[2] > s.place_z + 0.012:
                return self._act(pos, yaw, goal, s.grasp_yaw, GRIPPER_CLOSE), self._go(s, "lower")
            return self._act(pos, yaw, goal, s.grasp_yaw, GRIPPER_CLOSE), self._timeout(s, 20)
        if phase == "release":
            nxt = self._go(s, "retreat") if s.steps_in_phase >= 6 else s
            return self._act(pos, yaw, pos, s.grasp_yaw, GRIPPER_OPEN), nxt
        if phase == "retreat":
            goal = np.array([*pos[:2], SAFE_Z + 0.03])
            vmax = 0.02 if s.steps_in_phase < 10 else 0.07  # leave slowly: fingers drag the object otherwise
            done = pos[2] > SAFE_Z + 0.02
            return self._act(pos, yaw, goal, yaw, GRIPPER_OPEN, vmax=vmax), (self._go(s, "watch") if done else s)
        # watch: hold still; re-plan when the stack is not there (or the moved obstacle is done)
        if s.target != RED or not self._stack_ok(verts):
            return self._act(pos, yaw, pos, yaw, GRIPPER_OPEN), self._go(s, "plan")
        return self._act(pos, yaw, pos, yaw, GRIPPER_OPEN), s

    # -- helpers --------------------------------------------------------------------------------------------
    @staticmethod
    def _replan(verts: np.ndarray, centres: np.ndarray, s: ExpertState, target: int,
                prefer_yaw: float | None) -> ExpertState:
        gxy, gz, gyaw = plan_grasp(verts, target, prefer_yaw, s.avoid_yaw, com=centres[target])
        return dataclasses.replace(s, target=target, grasp_xy=tuple(gxy), grasp_z=gz, grasp_yaw=gyaw,
                                   planned_centre=tuple(centres[target]))

    @staticmethod
    def _go(s: ExpertState, phase: str) -> ExpertState:
        return dataclasses.replace(s, phase=phase, steps_in_phase=0, last_z=1.0)

    def _timeout(self, s: ExpertState, limit: int) -> ExpertState:
        return self._go(s, "plan") if s.steps_in_phase > limit else s

    @staticmethod
    def _stack_ok(verts: np.ndarray) -> bool:
        return _resting_on(verts, RED, BLUE)

    @staticmethod
    def _clear_z(verts: np.ndarray, s: ExpertState) -> float:
        """Travel height of the open hand: fingertips 4 cm above every object."""
        return float(min(max(float(verts[:, :, 2].max()) + 0.05, s.grasp_z + 0.05, 0.09), ws.BOX_HI[2]))

    @staticmethod
    def _carry_z(verts: np.ndarray, s: ExpertState, pos: np.ndarray) -> float:
        """TCP height that carries the held object's bottom 3 cm above the other objects."""
        below = pos[2] - float(verts[s.target][:, 2].min())
        others = max(float(verts[j][:, 2].max()) for j in range(3) if j != s.target)
        return float(min(others + below + 0.03, ws.BOX_HI[2]))

    @staticmethod
    def _plan_place(verts: np.ndarray, centres: np.ndarray, s: ExpertState, pos: np.ndarray) -> ExpertState:
        """TCP goal that puts the held object's centre over its destination, its bottom 2 mm into it (the descent
        stops when the object rests on it)."""
        held = verts[s.target]
        offset = pos[:2] - centres[s.target, :2]  # TCP relative to the held object's centre, as held now
        below = pos[2] - float(held[:, 2].min())
        if s.target == RED:
            face_xy, dest_top = _top_face_centre(verts[BLUE])
            # halfway between blue's top face and its centre of mass: on a tilted blue the "top face" found by
            # height is only its upper edge
            dest_xy = 0.5 * (face_xy + centres[BLUE, :2])
        else:
            dest_xy, dest_top = _free_spot(verts, [RED, BLUE]), 0.0
        return dataclasses.replace(s, place_xy=tuple(dest_xy + offset), place_z=dest_top + below - 0.002)

    @staticmethod
    def _act(pos: np.ndarray, yaw: float, goal: np.ndarray, goal_yaw: float, gripper: float,
             vmax: float = ws.MAX_SPEED) -> np.ndarray:
        v = np.clip(GAIN * (np.asarray(goal) - pos), -vmax, vmax)
        rate = float(np.clip(4.0 * (goal_yaw - yaw), -ws.MAX_YAW_RATE, ws.MAX_YAW_RATE))
        return np.array([*v, rate, gripper], np.float32)
