"""RgbStackingEnv: a gymnasium re-creation of DeepMind's RGB-stacking benchmark in PyBullet.

Faithful to rgb_stacking.md: 20 Hz control, 400-step (20 s) episodes, the original 5-D action (tool velocity
x/y/z within +-0.07 m/s, wrist yaw rate within +-1 rad/s, gripper +-255 bang-bang, > 0 closes), workspace box
and wrist-yaw limits, cameras named as the original's (128 x 128 by default), proprioception with the original's
meaning, RGB objects from the real meshes dropped with random orientations and settled. The observation and
action spaces are derived from :func:`gato_robot.core.specs.rgb_stacking_spec`, the spec the tokenizer uses.

Reward: 1.0 at each step where the sparse stacking condition holds, else 0.0. ``info["stacked"]`` is that
condition, ``info["success"]`` the episode rule (held for >= 1 s = 20 consecutive steps; see success.py).
Episodes truncate after 400 steps; they never terminate early.

Observation options:
- default: exactly the spec's keys.
- ``render_images=False``: image keys are present but all zero (no rendering; about 20x faster), so code
  that expects the spec's keys still works; use it for state-based experts and benchmarks of the expert.
- ``object_ids=("s0", "s0", "s0")`` overrides the triplet's objects (tests, analysis); ``triplet`` still names
  the run.
- ``grasp_flag``: how ``proprio/gripper``'s third value (grasp) is made. ``"fingers"`` (default): from the
  fingers, as a real gripper reports an object and as the ROS tokenizer infers it
  (:class:`gato_robot.core.gripper.GraspDetector`: closing fingers that stopped open, held until the gripper opens
  or closes fully), so a policy sees the same flag here, through the ROS stack and on a robot. ``"contact"``: both
  fingers touching one object (a simulator-only test, which turns on a step or two earlier while the fingers still
  squeeze; the data of runs 1-16 was recorded with it).
- ``robot``: the arm, by robot file (``config/robots/<name>.yaml``): ``"panda"`` (default) or ``"xarm6"`` (a 6-joint
  UFactory xArm6 with its linkage gripper, standing 15 cm closer to the basket). Its spec has its joints.
- ``privileged=True``: also ``privileged/object_poses`` (3, 7: red, green, blue centre + quaternion xyzw) and
  ``privileged/object_vertices`` (3, 20, 3: world-frame mesh vertices, padded by repeating the last vertex),
  for experts and analysis; ``info["object_poses"]`` always carries the poses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pybullet as p

from gato_robot.core import specs
from gato_robot.core.embodiment import RawObservation
from gato_robot.robots import load_embodiment
from gato_robot.sim import objects, success
from gato_robot.sim import workspace as ws
from gato_robot.sim.robot import make_arm
from gato_robot.sim.scene import SUBSTEPS, Scene

PRIVILEGED_POSES = "privileged/object_poses"
PRIVILEGED_VERTICES = "privileged/object_vertices"
MAX_VERTICES = 20  # the largest RGB-object mesh (r2, a decagonal prism) has 20 vertices
GRASP_OPENING_MIN = 0.002  # m: fingers closed on nothing read below this
GRASP_FLAGS = ("fingers", "contact")


def _space(spec: specs.TensorSpec) -> gym.spaces.Box:
    if spec.kind is specs.Kind.IMAGE:
        return gym.spaces.Box(0, 255, spec.shape, np.uint8)
    return gym.spaces.Box(-np.inf, np.inf, spec.shape, np.float32)


class RgbStackingEnv(gym.Env):
    """Stack red on blue with an arm (``robot``: a robot file's name or path; the Panda by default, or the xArm6) in
    a sloped basket. See the module docstring for the contract."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": int(ws.CONTROL_HZ)}

    def __init__(
        self,
        triplet: str = "rgb_test_triplet1",
        cameras: int | Sequence[str] = 3,
        image_size: int = 128,
        render_images: bool = True,
        low_poly_arm: bool = True,
        privileged: bool = False,
        render_mode: str | None = None,
        object_ids: tuple[str, str, str] | None = None,
        grasp_flag: str = "fingers",
        robot: str = "panda",
    ):
        if grasp_flag not in GRASP_FLAGS:
            raise ValueError(f"grasp_flag must be one of {GRASP_FLAGS}, got {grasp_flag!r}")
        self.grasp_flag = grasp_flag
        self.embodiment = load_embodiment(robot)  # the arm: its robot file (config/robots) and sim/robot.py's class
        self.triplet_name = objects.check_triplet_name(triplet)
        self.object_ids = None if object_ids is None else objects.check_object_ids(object_ids)
        self.spec_ = self.embodiment.spec(cameras, image_size)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.image_size = int(image_size)
        self.render_images = bool(render_images)
        self.privileged = bool(privileged)
        self.camera_names = [s.name[len(specs.CAMERA_PREFIX):] for s in self.spec_.observations
                             if s.kind is specs.Kind.IMAGE]
        # previous action and grasp flag: the one observation builder (also the ROS tokenizer's and the logs')
        self._builder = self.embodiment.observation_builder(self.camera_names)
        obs_spaces = {s.name: _space(s) for s in self.spec_.observations}
        if self.privileged:
            obs_spaces[PRIVILEGED_POSES] = gym.spaces.Box(-np.inf, np.inf, (3, 7), np.float32)
            obs_spaces[PRIVILEGED_VERTICES] = gym.spaces.Box(-np.inf, np.inf, (3, MAX_VERTICES, 3), np.float32)
        self.observation_space = gym.spaces.Dict(obs_spaces)
        low, high = self.spec_.action_bounds()
        self.action_space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32), dtype=np.float32)
        self.client = p.connect(p.DIRECT)
        self.scene = Scene(self.client)
        self.low_poly_arm = bool(low_poly_arm)
        self.robot = make_arm(self.client, self.embodiment, low_poly=self.low_poly_arm)
        self.triplet: tuple[str, str, str] | None = None
        self._tracker = success.SuccessTracker()
        self._t = 0

    # -- gymnasium API --------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        triplet = self.object_ids or objects.resolve_triplet(self.triplet_name, rng)
        self.scene.reset_world()  # a fresh world: a seed reproduces whatever ran before in this process
        self.robot = make_arm(self.client, self.embodiment, low_poly=self.low_poly_arm)
        self.scene.load_objects(triplet)
        self.triplet = triplet
        tool = rng.uniform(ws.START_LO, ws.START_HI)
        yaw = float(rng.uniform(-ws.START_YAW, ws.START_YAW))
        self.robot.reset(tool, yaw)
        self.scene.drop_objects(rng)
        self.scene.settle(self._substep)
        self.robot.reset(tool, yaw)  # settling let the arm sag a little under position control
        self._tracker = success.SuccessTracker()
        self._t = 0
        self._builder.reset()
        return self._observation(), self._info(False)

    def step(self, action: Any):
        action = self._check_action(action)
        self.robot.apply(action[:3], float(action[3]), bool(action[4] > 0), ws.CONTROL_DT)
        for _ in range(SUBSTEPS):
            self._substep()
        self._builder.command(action)
        self._t += 1
        is_stacked = self.stacked()
        self._tracker.update(is_stacked)
        truncated = self._t >= ws.EPISODE_STEPS
        return self._observation(), float(is_stacked), False, truncated, self._info(is_stacked)

    def render(self) -> np.ndarray | None:
        """The cameras side by side (H, n*W, 3), whatever ``render_images`` says."""
        if self.render_mode != "rgb_array":
            return None
        return np.concatenate([self.scene.render(n, self.image_size) for n in self.camera_names], axis=1)

    def close(self) -> None:
        if getattr(self, "client", None) is not None and p.isConnected(self.client):
            self.scene.close()
            p.disconnect(self.client)
        self.client = None

    # -- internals ------------------------------------------------------------------------------------------
    def _check_action(self, action: Any) -> np.ndarray:
        if isinstance(action, dict):
            if specs.ACTION_KEY not in action:
                raise ValueError(f"action dict needs the key {specs.ACTION_KEY!r}, got {sorted(action)}")
            action = action[specs.ACTION_KEY]
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"action must be 5 numbers (vx, vy, vz, yaw rate, gripper), got {action!r}") from e
        if a.shape != (5,):
            raise ValueError(f"action must have shape (5,): vx, vy, vz (m/s), yaw rate (rad/s), gripper; got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values {a.tolist()}; nothing was applied")
        return np.clip(a, self.action_space.low, self.action_space.high).astype(np.float32)

    def _substep(self) -> None:
        self.robot.substep(1.0 / (ws.CONTROL_HZ * SUBSTEPS))
        p.stepSimulation(physicsClientId=self.client)

    def place_objects(self, poses: np.ndarray, tool_pos: Sequence[float] = (0.6, 0.0, 0.3)) -> None:
        """Hand-place red, green, blue at ``poses`` (3, 7: centre xyz + quaternion xyzw), at rest, and park the
        tool at ``tool_pos``; contacts are updated without stepping. For tests and analysis."""
        poses = np.asarray(poses, float)
        if poses.shape != (3, 7):
            raise ValueError(f"poses must have shape (3, 7) for red, green, blue; got {poses.shape}")
        self.robot.reset(np.asarray(tool_pos, float), 0.0)
        for o, pose in zip(self.scene.objects, poses):
            p.resetBasePositionAndOrientation(o.body, pose[:3].tolist(), pose[3:].tolist(), physicsClientId=self.client)
            p.resetBaseVelocity(o.body, [0, 0, 0], [0, 0, 0], physicsClientId=self.client)
        p.performCollisionDetection(physicsClientId=self.client)

    def red_contacts(self) -> success.Contacts:
        red, _, blue = (o.body for o in self.scene.objects)
        return success.Contacts(
            blue=self.scene.touching(red, [blue]),
            basket=self.scene.touching(red, self.scene.static_bodies),
            robot=self.scene.touching(red, [self.robot.body]),
        )

    def stacked(self) -> bool:
        """The sparse stacking condition at the current state."""
        poses = self.scene.object_poses()
        return success.stacked(poses[0, :3], poses[2, :3], self.red_contacts())

    def grasping(self) -> bool:
        """The contact test (``grasp_flag="contact"``): closing, not fully closed, and both fingers on one object."""
        opening, _ = self.robot.finger_state()
        if not self.robot.gripper_closed or opening < GRASP_OPENING_MIN:
            return False
        c = self.client
        for o in self.scene.objects:
            if all(p.getContactPoints(self.robot.body, o.body, linkIndexA=j, physicsClientId=c)
                   for j in self.robot.finger_links):
                return True
        return False

    def _observation(self) -> dict[str, np.ndarray]:
        q, dq = self.robot.joint_state()
        finger_q, finger_dq = self.robot.finger_readings()
        if self.render_images:
            images = {name: self.scene.render(name, self.image_size) for name in self.camera_names}
        else:
            images = {name: np.zeros((self.image_size, self.image_size, 3), np.uint8) for name in self.camera_names}
        obs = self._builder.build(RawObservation(
            images=images, joint_positions=q, joint_velocities=dq, tool_pose=self.robot.tool_pose(),
            finger_positions=finger_q, finger_velocities=finger_dq,
            grasp=None if self.grasp_flag == "fingers" else self.grasping()))
        if self.privileged:
            obs[PRIVILEGED_POSES] = self.scene.object_poses().astype(np.float32)
            verts = np.zeros((3, MAX_VERTICES, 3), np.float32)
            for k, v in enumerate(self.scene.object_vertices()):
                verts[k, : len(v)] = v
                verts[k, len(v):] = v[-1]
            obs[PRIVILEGED_VERTICES] = verts
        return obs

    def _info(self, is_stacked: bool) -> dict[str, Any]:
        return {
            "stacked": bool(is_stacked),
            "success": bool(self._tracker.success),
            "triplet": self.triplet_name,
            "objects": list(self.triplet or ()),
            "object_poses": self.scene.object_poses().astype(np.float32),
            "step": self._t,
        }

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: pybullet may already be gone
            self.close()
