"""The simulated arms: a Franka Panda (the default) and a UFactory xArm6 with its xArm gripper, from pybullet_data,
standing in for the original's Sawyer + Robotiq 2F-85. :func:`make_arm` builds the one a robot file names
(``config/robots/<name>.yaml``: URDF, joints, tool link and offset, gripper opening).

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
from typing import Any

import numpy as np
import pybullet as p
import pybullet_data

from gato_robot.kinematics import resolve_urdf  # the URDF path rule FK uses (pybullet_data relative)
from gato_robot.robots import load_embodiment
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


class VelocityArm:
    """An arm + gripper in one PyBullet client with the 5-D velocity interface: each control step integrates the
    tool velocity and yaw rate into a target pose (workspace box, yaw range), solves IK for the tool centre point
    pointing down and drives the arm joints with position control. The gripper is bang-bang: its joints'
    position target moves toward ``gripper_open`` or ``gripper_closed_at`` at ``gripper_speed`` per second, pushed
    with ``gripper_force``. Subclasses load the body and set the joints and these numbers; the observation reads
    ``finger_joints``, mapped to an opening by the robot file (``embodiment.opening``)."""

    arm_joints: tuple[int, ...]
    tcp_link: int
    rest_pose: tuple[float, ...]
    joint_low: tuple[float, ...]
    joint_high: tuple[float, ...]
    arm_forces: tuple[float, ...]
    finger_links: tuple[int, ...]  # the links whose contacts with one object make the "contact" grasp test
    gripper_joints: tuple[int, ...]  # driven, all to the same target
    finger_joints: tuple[int, ...]  # read: the robot file's finger joints
    gripper_open: float
    gripper_closed_at: float
    gripper_speed: float  # joint units per second
    gripper_force: float  # per gripper joint
    client: int
    body: int
    embodiment: Any

    def _init_targets(self) -> None:
        self.target_pos = np.zeros(3)
        self.target_yaw = 0.0
        self.gripper_closed = False
        self.gripper_target = self.gripper_open

    # -- reset ----------------------------------------------------------------------------------------------
    def reset(self, tool_pos: np.ndarray, tool_yaw: float) -> None:
        """Teleport the joints to a configuration whose tool is at ``tool_pos`` with ``tool_yaw``, gripper open."""
        c = self.client
        for j, q in zip(self.arm_joints, self.rest_pose):
            p.resetJointState(self.body, j, q, physicsClientId=c)
        self._reset_gripper()
        for _ in range(4):  # IK starts from the current joints; a few teleports converge
            q = self._ik(tool_pos, tool_yaw, iterations=50)
            for j, qj in zip(self.arm_joints, q):
                p.resetJointState(self.body, j, qj, physicsClientId=c)
        self.target_pos = np.asarray(tool_pos, float).copy()
        self.target_yaw = float(tool_yaw)
        self.gripper_closed = False
        self.gripper_target = self.gripper_open
        self._command_joints(q)
        self._command_fingers()

    # -- control --------------------------------------------------------------------------------------------
    def apply(self, velocity: np.ndarray, yaw_rate: float, close: bool, dt: float) -> None:
        """Integrate one control step of the 5-D action into joint and finger targets."""
        self.target_pos = ws.integrate_position(self.target_pos, velocity, dt)
        self.target_yaw = ws.integrate_yaw(self.target_yaw, yaw_rate, dt)
        self.gripper_closed = bool(close)
        self._command_joints(self._ik(self.target_pos, self.target_yaw, iterations=10))

    def _ik(self, pos: np.ndarray, yaw: float, iterations: int) -> np.ndarray:
        q = p.calculateInverseKinematics(
            self.body, self.tcp_link, list(pos), tool_orientation(yaw),
            lowerLimits=self.joint_low, upperLimits=self.joint_high,
            jointRanges=[h - lo for lo, h in zip(self.joint_low, self.joint_high)], restPoses=self.rest_pose,
            maxNumIterations=iterations, residualThreshold=1e-5, physicsClientId=self.client,
        )
        return np.asarray(q[:len(self.arm_joints)])

    def _command_joints(self, q: np.ndarray) -> None:
        p.setJointMotorControlArray(
            self.body, self.arm_joints, p.POSITION_CONTROL, targetPositions=list(q), forces=self.arm_forces,
            physicsClientId=self.client,
        )

    # -- gripper ------------------------------------------------------------------------------------------
    def _reset_gripper(self) -> None:
        for j in self.gripper_joints:
            p.resetJointState(self.body, j, self.gripper_open, physicsClientId=self.client)

    def substep(self, dt: float) -> None:
        """Per physics step: move the gripper target toward open/closed at ``gripper_speed``."""
        goal = self.gripper_closed_at if self.gripper_closed else self.gripper_open
        step = self.gripper_speed * dt
        delta = np.clip(goal - self.gripper_target, -step, step)
        if delta:
            self.gripper_target += float(delta)
            self._command_fingers()

    def _command_fingers(self) -> None:
        n = len(self.gripper_joints)
        p.setJointMotorControlArray(
            self.body, self.gripper_joints, p.POSITION_CONTROL, targetPositions=[self.gripper_target] * n,
            forces=[self.gripper_force] * n, physicsClientId=self.client,
        )

    def finger_readings(self) -> tuple[list[float], list[float]]:
        """Positions and velocities of the robot file's finger joints (the observation builder's input)."""
        states = p.getJointStates(self.body, self.finger_joints, physicsClientId=self.client)
        return [s[0] for s in states], [s[1] for s in states]

    # -- sensing --------------------------------------------------------------------------------------------
    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        states = p.getJointStates(self.body, self.arm_joints, physicsClientId=self.client)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def finger_state(self) -> tuple[float, float]:
        """(opening m, opening velocity m/s), as the robot file maps the finger joints."""
        return self.embodiment.opening(*self.finger_readings())

    def tool_pose(self) -> np.ndarray:
        """(7,) TCP position and quaternion xyzw in the robot base (= world) frame."""
        s = p.getLinkState(self.body, self.tcp_link, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array([*s[4], *s[5]])

    def tool_yaw(self) -> float:
        """Yaw of the current tool orientation in the convention of :func:`tool_orientation`."""
        return ws.yaw_from_quat(self.tool_pose()[3:])


class Panda(VelocityArm):
    """Panda arm + gripper in one PyBullet client, with the 5-D velocity interface."""

    arm_joints, tcp_link, rest_pose = ARM_JOINTS, TCP_LINK, REST_POSE
    joint_low, joint_high, arm_forces, finger_links = JOINT_LOW, JOINT_HIGH, ARM_FORCES, FINGER_JOINTS
    gripper_joints = finger_joints = FINGER_JOINTS  # two coupled prismatic fingers, each FINGER_OPEN when open
    gripper_open, gripper_closed_at, gripper_speed, gripper_force = FINGER_OPEN, 0.0, FINGER_SPEED, FINGER_FORCE_N

    def __init__(self, client: int, low_poly: bool = True, embodiment: Any = None):
        self.client = client
        self.embodiment = load_embodiment("panda") if embodiment is None else embodiment
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
        self._init_targets()


# -- UFactory xArm6 + xArm gripper ---------------------------------------------------------------------------
XARM_TCP_LINK_NAME = "gato_tcp"  # added to a copy of the URDF at the robot file's tool_offset below its tool_link
XARM_GRIPPER_JOINTS = ("drive_joint", "left_finger_joint", "left_inner_knuckle_joint", "right_outer_knuckle_joint",
                       "right_finger_joint", "right_inner_knuckle_joint")  # all mimic drive_joint, multiplier 1
XARM_GRIPPER_CLOSED = 0.85  # rad: drive_joint's upper limit (fingers together)
XARM_GRIPPER_SPEED = 2.0  # rad/s: the URDF's velocity limit; about 0.43 s from open to closed, as the Panda's
XARM_GRIPPER_FORCE = 2.0  # N m per gripper joint: about 40 N at the pads (5 cm levers), as the Panda's 40 N
XARM_FINGER_FRICTION = 1.0
# Elbow up, wrist pointing down over the basket: the configuration IK starts from at every reset.
XARM_REST_POSE = (0.0, -0.6, -0.9, 0.0, 1.5, 0.0)


@functools.cache
def _urdf_with_tcp(urdf: str, tool_link: str, offset: tuple[float, float, float]) -> str:
    """A copy of ``urdf`` (absolute mesh paths, temp folder) with a fixed link at ``offset`` in ``tool_link``'s frame:
    PyBullet reports and solves IK for link frames, and the xArm's URDF has no link at its pinch point."""
    src = Path(urdf)
    text = src.read_text().replace("package://", f"{src.parent.as_posix()}/")
    x, y, z = offset
    tcp = (f'  <link name="{XARM_TCP_LINK_NAME}">\n    <inertial><mass value="1e-6"/>'
           f'<inertia ixx="1e-9" ixy="0" ixz="0" iyy="1e-9" iyz="0" izz="1e-9"/></inertial>\n  </link>\n'
           f'  <joint name="{XARM_TCP_LINK_NAME}_joint" type="fixed">\n'
           f'    <parent link="{tool_link}"/>\n    <child link="{XARM_TCP_LINK_NAME}"/>\n'
           f'    <origin rpy="0 0 0" xyz="{x!r} {y!r} {z!r}"/>\n  </joint>\n</robot>')
    head, _, _ = text.rpartition("</robot>")
    path = Path(tempfile.mkdtemp(prefix="gato_xarm_")) / src.name
    path.write_text(head + tcp + "\n")
    return str(path)


class XArm6(VelocityArm):
    """A 6-joint UFactory xArm6 with the xArm gripper (a revolute linkage, 8.3 cm opening): a different maker, joint
    count and gripper from the Panda's. Joints, tool link and offset and the gripper's opening come from the robot
    file (config/robots/xarm6.yaml); the linkage's closed loop is approximated by driving all six gripper joints,
    which mimic ``drive_joint`` in the URDF, to the same angle."""

    rest_pose = XARM_REST_POSE
    gripper_open, gripper_closed_at = 0.0, XARM_GRIPPER_CLOSED
    gripper_speed, gripper_force = XARM_GRIPPER_SPEED, XARM_GRIPPER_FORCE

    def __init__(self, client: int, low_poly: bool = True, embodiment: Any = None):
        if embodiment is None:
            raise ValueError("XArm6 needs its robot file (config/robots/xarm6.yaml)")
        self.client, self.embodiment = client, embodiment
        path = _urdf_with_tcp(str(resolve_urdf(embodiment.urdf)), embodiment.tool_link, tuple(embodiment.tool_offset))
        flags = p.URDF_USE_SELF_COLLISION_EXCLUDE_ALL_PARENTS
        self.body = p.loadURDF(path, embodiment.base_position, useFixedBase=True, flags=flags,
                               physicsClientId=client)
        index = {p.getJointInfo(self.body, j, physicsClientId=client)[1].decode(): j
                 for j in range(p.getNumJoints(self.body, physicsClientId=client))}
        links = {p.getJointInfo(self.body, j, physicsClientId=client)[12].decode(): j for j in index.values()}
        missing = [n for n in (*embodiment.arm_joints, *XARM_GRIPPER_JOINTS) if n not in index]
        if missing:
            raise ValueError(f"{embodiment.urdf} has no joints {missing}")
        self.arm_joints = tuple(index[n] for n in embodiment.arm_joints)
        self.gripper_joints = tuple(index[n] for n in XARM_GRIPPER_JOINTS)
        self.finger_joints = tuple(index[n] for n in embodiment.finger_joints)
        self.finger_links = (links["left_finger"], links["right_finger"])
        self.tcp_link = links[XARM_TCP_LINK_NAME]
        info = [p.getJointInfo(self.body, j, physicsClientId=client) for j in self.arm_joints]
        self.joint_low = tuple(i[8] for i in info)
        self.joint_high = tuple(i[9] for i in info)
        self.arm_forces = tuple(i[10] for i in info)  # the URDF's effort limits
        for j in self.gripper_joints:
            p.changeDynamics(self.body, j, lateralFriction=XARM_FINGER_FRICTION, physicsClientId=client)
        self._init_targets()


ARMS: dict[str, type[VelocityArm]] = {"panda": Panda, "xarm6": XArm6}


def make_arm(client: int, embodiment: Any, low_poly: bool = True) -> VelocityArm:
    """The simulated arm of a robot file (``embodiment.name``: one of :data:`ARMS`)."""
    if embodiment.name not in ARMS:
        raise ValueError(f"the simulator has no arm for robot {embodiment.name!r}; it builds {sorted(ARMS)}")
    return ARMS[embodiment.name](client, low_poly=low_poly, embodiment=embodiment)
