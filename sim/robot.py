"""The arm: a Franka Panda from pybullet_data standing in for the original's Sawyer + Robotiq 2F-85.

Control is the original's velocity-level Cartesian interface (rgb_stacking.md): each 50 ms control step
integrates the commanded tool velocity (+-0.07 m/s) and wrist yaw rate (+-1 rad/s) into a target pose,
clipped to the workspace box and the wrist-yaw range, solves inverse kinematics for the tool centre point
(``panda_grasptarget``, the point between the fingertips, pointing down) and drives the joints with position
control. The gripper is bang-bang: a command above 0 closes it fully, otherwise it opens.

Low-poly arm: the stock visual meshes (~100k triangles) make TinyRenderer about 3x slower
(rgb_stacking.md); with ``low_poly=True`` the Panda's own collision meshes (~3.4k triangles) are used as
visual meshes. Collision geometry and dynamics are identical either way.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data

from gato_robot.sim import workspace as ws

ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
TCP_LINK = 11  # panda_grasptarget: 0.105 m below the hand flange, between the fingertips
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)  # N m, the URDF's effort limits
FINGER_FORCE_N = 40.0
FINGER_SPEED = 0.1  # m/s per finger: the bang-bang command moves the fingers at this rate, not instantly
FINGER_OPEN = 0.04  # m per finger: 8 cm opening (the Robotiq 2F-85 opens 8.5 cm)
# Rest pose for the IK null space: elbow up, hand pointing down, wrist yaw 0 when joint 7 is at pi/4.
REST_POSE = (0.0, 0.2, 0.0, -2.2, 0.0, 2.4, np.pi / 4)
JOINT_LOW = (-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671)
JOINT_HIGH = (2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671)
ARM_FRICTION = 1.0  # finger pads: rubber-like; PyBullet multiplies the two bodies' coefficients


@functools.cache
def _low_poly_urdf() -> str:
    """A copy of panda.urdf whose visual meshes are the collision meshes (absolute paths, temp folder)."""
    root = Path(pybullet_data.getDataPath()) / "franka_panda"
    text = (root / "panda.urdf").read_text()
    text = text.replace("package://meshes/visual/", "package://meshes/collision/")
    text = text.replace("package://meshes/", f"{root.as_posix()}/meshes/")
    folder = Path(tempfile.mkdtemp(prefix="gato_panda_"))
    path = folder / "panda_low_poly.urdf"
    path.write_text(text)
    return str(path)


def tool_orientation(yaw: float) -> tuple[float, float, float, float]:
    """Quaternion (xyzw) of the tool pointing down, rotated by ``yaw`` about world z (0: fingers close along y)."""
    return p.getQuaternionFromEuler((np.pi, 0.0, -yaw))


class Panda:
    """Panda arm + gripper in one PyBullet client, with the 5-D velocity interface."""

    def __init__(self, client: int, low_poly: bool = True):
        self.client = client
        if low_poly:
            path = _low_poly_urdf()
        else:
            path = str(Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf")
        flags = p.URDF_USE_SELF_COLLISION_EXCLUDE_ALL_PARENTS
        self.body = p.loadURDF(path, (0, 0, 0), useFixedBase=True, flags=flags, physicsClientId=client)
        if low_poly:  # the collision meshes carry no materials: give the links the Panda's white and grey
            for link in range(-1, p.getNumJoints(self.body, physicsClientId=client)):
                grey = link in (7, 8, 9, 10)
                rgba = (0.3, 0.3, 0.3, 1) if grey else (0.92, 0.92, 0.92, 1)
                p.changeVisualShape(self.body, link, rgbaColor=rgba, physicsClientId=client)
        for j in FINGER_JOINTS:
            p.changeDynamics(self.body, j, lateralFriction=ARM_FRICTION, physicsClientId=client)
        # Couple the fingers like the real gripper's linkage: with two independent position-controlled fingers a
        # grasped object floats sideways between them (both push with the same force wherever they are).
        gear = p.createConstraint(self.body, FINGER_JOINTS[0], self.body, FINGER_JOINTS[1], p.JOINT_GEAR,
                                  (1, 0, 0), (0, 0, 0), (0, 0, 0), physicsClientId=client)
        p.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50, physicsClientId=client)
        self.target_pos = np.zeros(3)
        self.target_yaw = 0.0
        self.gripper_closed = False
        self.finger_target = FINGER_OPEN

    # -- reset ----------------------------------------------------------------------------------------------
    def reset(self, tool_pos: np.ndarray, tool_yaw: float) -> None:
        """Teleport the joints to a configuration whose tool is at ``tool_pos`` with ``tool_yaw``, gripper open."""
        c = self.client
        for j, q in zip(ARM_JOINTS, REST_POSE):
            p.resetJointState(self.body, j, q, physicsClientId=c)
        for j in FINGER_JOINTS:
            p.resetJointState(self.body, j, FINGER_OPEN, physicsClientId=c)
        for _ in range(4):  # IK starts from the current joints; a few teleports converge
            q = self._ik(tool_pos, tool_yaw, iterations=50)
            for j, qj in zip(ARM_JOINTS, q):
                p.resetJointState(self.body, j, qj, physicsClientId=c)
        self.target_pos = np.asarray(tool_pos, float).copy()
        self.target_yaw = float(tool_yaw)
        self.gripper_closed = False
        self.finger_target = FINGER_OPEN
        self._command_joints(q)
        self._command_fingers()

    # -- control --------------------------------------------------------------------------------------------
    def apply(self, velocity: np.ndarray, yaw_rate: float, close: bool, dt: float) -> None:
        """Integrate one control step of the 5-D action into joint and finger targets."""
        self.target_pos = ws.integrate_position(self.target_pos, velocity, dt)
        self.target_yaw = ws.integrate_yaw(self.target_yaw, yaw_rate, dt)
        self.gripper_closed = bool(close)
        self._command_joints(self._ik(self.target_pos, self.target_yaw, iterations=10))

    def substep(self, dt: float) -> None:
        """Per physics step: move the finger target toward open/closed at FINGER_SPEED."""
        goal = 0.0 if self.gripper_closed else FINGER_OPEN
        delta = np.clip(goal - self.finger_target, -FINGER_SPEED * dt, FINGER_SPEED * dt)
        if delta:
            self.finger_target += float(delta)
            self._command_fingers()

    def _ik(self, pos: np.ndarray, yaw: float, iterations: int) -> np.ndarray:
        q = p.calculateInverseKinematics(
            self.body, TCP_LINK, list(pos), tool_orientation(yaw),
            lowerLimits=JOINT_LOW, upperLimits=JOINT_HIGH,
            jointRanges=[h - lo for lo, h in zip(JOINT_LOW, JOINT_HIGH)], restPoses=REST_POSE,
            maxNumIterations=iterations, residualThreshold=1e-5, physicsClientId=self.client,
        )
        return np.asarray(q[:7])

    def _command_joints(self, q: np.ndarray) -> None:
        p.setJointMotorControlArray(
            self.body, ARM_JOINTS, p.POSITION_CONTROL, targetPositions=list(q), forces=ARM_FORCES,
            physicsClientId=self.client,
        )

    def _command_fingers(self) -> None:
        p.setJointMotorControlArray(
            self.body, FINGER_JOINTS, p.POSITION_CONTROL, targetPositions=[self.finger_target] * 2,
            forces=[FINGER_FORCE_N] * 2, physicsClientId=self.client,
        )

    # -- sensing --------------------------------------------------------------------------------------------
    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        states = p.getJointStates(self.body, ARM_JOINTS, physicsClientId=self.client)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def finger_state(self) -> tuple[float, float]:
        """(opening m, opening velocity m/s): the sum over both fingers."""
        states = p.getJointStates(self.body, FINGER_JOINTS, physicsClientId=self.client)
        return float(states[0][0] + states[1][0]), float(states[0][1] + states[1][1])

    def tool_pose(self) -> np.ndarray:
        """(7,) TCP position and quaternion xyzw in the robot base (= world) frame."""
        s = p.getLinkState(self.body, TCP_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array([*s[4], *s[5]])

    def tool_yaw(self) -> float:
        """Yaw of the current tool orientation in the convention of :func:`tool_orientation`."""
        return ws.yaw_from_quat(self.tool_pose()[3:])
