"""Forward kinematics from a robot's URDF: the tool pose a real robot does not publish, from its joint positions.

The observation ``proprio/tool_pose`` is the tool link's pose as the simulator reports it (``sim/robot.py``
``Panda.tool_pose``: PyBullet's ``getLinkState(..., computeForwardKinematics=True)`` world link frame, positions
in m and quaternion x, y, z, w; the robot base stands at the world origin). :class:`ForwardKinematics` computes the
same 7 values from the joint positions, so that the ROS tokenizer can build observations from ``/joint_states``
alone (``tool_pose_source: fk``, docs/ros.md).

Why yourdfpy: pure Python on numpy (lxml and trimesh underneath, no compiled robotics stack), maintained, and it
parses everything a URDF's kinematics needs (joint tree, origins, axes, types, limits, mimic joints) without
loading meshes. pinocchio (``pin``) would do the same with a ~10 MB wheel plus its Boost/urdfdom/coal wheels, and
offers nothing one serial chain needs. yourdfpy's own FK (``update_cfg`` + ``get_transform``) costs ~1.1 ms per
configuration because it maintains a trimesh scene graph, so the chain is composed here from yourdfpy's parsed
joints (4x4 origins, Rodrigues rotations; ~0.2 ms), and ``tests/test_kinematics.py`` checks it equals yourdfpy's.

The quaternion's sign is part of the observation: q and -q are the same rotation but different tokens, and the
model was trained on PyBullet's sign. PyBullet converts the link's world rotation matrix with Bullet's
``btMatrix3x3::getRotation`` (:func:`bullet_quat_from_matrix`); a w >= 0 convention flips 19 of 300 random Panda
configurations. The test checks positions, orientations and signs against PyBullet's link state (Panda, xArm6).

Shapes: ``xyz`` (3,), ``quat_xyzw`` (4,), float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IDENTITY_XYZW = (0.0, 0.0, 0.0, 1.0)
_EYE3 = np.eye(3)


# -- rotation math, free functions ------------------------------------------------------------------------------
def cross_matrix(axis: np.ndarray) -> np.ndarray:
    """(3, 3) K with K @ v = axis x v."""
    x, y, z = axis
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def axis_angle_matrix(k: np.ndarray, k2: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` about a unit axis given as K = cross_matrix(axis) and K @ K (Rodrigues)."""
    return _EYE3 + math.sin(angle) * k + (1.0 - math.cos(angle)) * k2


def bullet_quat_from_matrix(m: np.ndarray) -> np.ndarray:
    """The quaternion (xyzw) of a (3, 3) rotation matrix, with Bullet's sign: ``btMatrix3x3::getRotation`` (w > 0
    when the trace is positive, else the component of the largest diagonal entry > 0). PyBullet's getLinkState
    converts the link's world transform with it, so this is the sign the simulator's observations carry."""
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    q = np.empty(4)
    if trace > 0:
        s = np.sqrt(trace + 1.0)
        q[3] = 0.5 * s
        s = 0.5 / s
        q[0], q[1], q[2] = (m[2, 1] - m[1, 2]) * s, (m[0, 2] - m[2, 0]) * s, (m[1, 0] - m[0, 1]) * s
    else:
        if m[0, 0] < m[1, 1]:
            i = 2 if m[1, 1] < m[2, 2] else 1
        else:
            i = 2 if m[0, 0] < m[2, 2] else 0
        j, k = (i + 1) % 3, (i + 2) % 3
        s = np.sqrt(m[i, i] - m[j, j] - m[k, k] + 1.0)
        q[i] = 0.5 * s
        s = 0.5 / s
        q[3], q[j], q[k] = (m[k, j] - m[j, k]) * s, (m[j, i] + m[i, j]) * s, (m[k, i] + m[i, k]) * s
    return q / np.linalg.norm(q)


def matrix_from_quat(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a unit quaternion (xyzw)."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def resolve_urdf(urdf: str | Path) -> Path:
    """An existing path as it is; otherwise a path relative to pybullet_data (how robot description files name
    the simulator's URDFs, e.g. ``franka_panda/panda.urdf``)."""
    path = Path(urdf).expanduser()
    if path.is_file():
        return path
    try:
        import pybullet_data  # ships with pybullet: only needed for URDFs named relative to it
    except ImportError:
        raise ValueError(f"URDF {urdf} does not exist (and pybullet_data, which relative URDF names are looked "
                         f"up in, is not installed): give the URDF's absolute path") from None
    candidate = Path(pybullet_data.getDataPath()) / path
    if not candidate.is_file():
        raise ValueError(f"URDF {urdf} exists neither as a path nor under pybullet_data ({candidate})")
    return candidate


class ForwardKinematics:
    """Tool pose of ``tool_link`` from the positions of ``joint_names``, in the frame the robot base stands in.

    ``base_pose``: (x, y, z, qx, qy, qz, qw) of ``base_link`` in the reported frame (where the simulator placed
    the robot: ``loadURDF``'s base position and orientation; identity for the Panda of ``sim/robot.py``).
    ``tool_offset``: the tool centre point in ``tool_link``'s frame (m), for a URDF with no link at the pinch point.
    Movable joints on the chain must be in ``joint_names`` or mimic one that is; other joints are ignored.
    """

    def __init__(self, urdf_path: str | Path, base_link: str, tool_link: str, joint_names: Sequence[str],
                 base_pose: Sequence[float] = (0.0, 0.0, 0.0, *IDENTITY_XYZW),
                 tool_offset: Sequence[float] = (0.0, 0.0, 0.0)):
        import yourdfpy  # lazily: importing this module costs nothing until a robot is built

        self.urdf_path = resolve_urdf(urdf_path)
        robot = yourdfpy.URDF.load(str(self.urdf_path), build_scene_graph=False, load_meshes=False,
                                   load_collision_meshes=False).robot
        self.joint_names = tuple(joint_names)
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f"joint_names has duplicates: {self.joint_names}")
        base = np.asarray(base_pose, np.float64)
        if base.shape != (7,) or not np.all(np.isfinite(base)) or abs(np.linalg.norm(base[3:]) - 1.0) > 1e-6:
            raise ValueError(f"base_pose must be x, y, z, qx, qy, qz, qw with a unit quaternion, got {base_pose}")
        self.base = np.eye(4)  # (4, 4) base_link in the reported frame
        self.base[:3, :3], self.base[:3, 3] = matrix_from_quat(base[3:] / np.linalg.norm(base[3:])), base[:3]
        links = {link.name for link in robot.links}
        for name, what in ((base_link, "base_link"), (tool_link, "tool_link")):
            if name not in links:
                raise ValueError(f"{what} {name!r} is not a link of {self.urdf_path.name}: one of {sorted(links)}")
        by_child = {j.child: j for j in robot.joints}
        by_name = {j.name: j for j in robot.joints}
        chain = []  # joints from the base to the tool
        link = tool_link
        while link != base_link:
            if link not in by_child:
                raise ValueError(f"{tool_link!r} is not below {base_link!r} in {self.urdf_path.name}")
            chain.append(by_child[link])
            link = by_child[link].parent
        chain.reverse()
        index = {n: i for i, n in enumerate(self.joint_names)}
        unknown = [n for n in self.joint_names if n not in by_name]
        if unknown:
            raise ValueError(f"joints {unknown} are not in {self.urdf_path.name}: one of {sorted(by_name)}")
        # per joint: (4, 4) origin, type, motion (prismatic: the unit axis; revolute: K, K @ K), (index into the joint positions, multiplier, offset) or None
        self._chain = []
        for j in chain:
            origin = np.eye(4) if j.origin is None else np.asarray(j.origin, np.float64)
            if j.type == "fixed":
                self._chain.append((origin, j.type, None, None))
                continue
            if j.type not in ("revolute", "continuous", "prismatic"):
                raise ValueError(f"joint {j.name!r} is a {j.type} joint: only fixed, revolute, continuous and "
                                 f"prismatic joints are supported")
            source, multiplier, offset = j.name, 1.0, 0.0
            if j.name not in index and j.mimic is not None:
                source = j.mimic.joint
                multiplier = 1.0 if j.mimic.multiplier is None else float(j.mimic.multiplier)
                offset = 0.0 if j.mimic.offset is None else float(j.mimic.offset)
            if source not in index:
                raise ValueError(f"joint {j.name!r} ({j.type}) moves {tool_link!r} but is not in joint_names "
                                 f"{self.joint_names}")
            axis = np.asarray((1.0, 0.0, 0.0) if j.axis is None else j.axis, np.float64)  # URDF's default axis
            axis = axis / np.linalg.norm(axis)
            k = cross_matrix(axis)
            motion = axis if j.type == "prismatic" else (k, k @ k)
            self._chain.append((origin, j.type, motion, (index[source], multiplier, offset)))
        offset = np.asarray(tool_offset, np.float64)
        if offset.shape != (3,) or not np.all(np.isfinite(offset)):
            raise ValueError(f"tool_offset must be 3 finite numbers, got {tool_offset}")
        if offset.any():
            tcp = np.eye(4)
            tcp[:3, 3] = offset
            self._chain.append((tcp, "fixed", None, None))
        self.base_link, self.tool_link = base_link, tool_link

    def pose(self, joint_positions: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(xyz (3,), quat_xyzw (4,)) of the tool link for joint positions in the order of ``joint_names``."""
        q = np.asarray(joint_positions, np.float64)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"expected {len(self.joint_names)} joint positions {self.joint_names}, got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError("non-finite joint positions")
        t = self.base.copy()  # (4, 4) the current link in the reported frame
        for origin, kind, motion, moves in self._chain:
            t = t @ origin
            if moves is None:
                continue
            i, multiplier, offset = moves
            value = multiplier * float(q[i]) + offset
            if kind == "prismatic":
                t[:3, 3] += t[:3, :3] @ (motion * value)
            else:
                t[:3, :3] = t[:3, :3] @ axis_angle_matrix(*motion, value)
        return t[:3, 3].copy(), bullet_quat_from_matrix(t[:3, :3])

    def tool_pose(self, joint_positions: Sequence[float]) -> np.ndarray:
        """(7,) x, y, z, qx, qy, qz, qw: the layout of the observation ``proprio/tool_pose``."""
        xyz, quat = self.pose(joint_positions)
        return np.concatenate([xyz, quat])


def for_embodiment(embodiment, base_pose: Sequence[float] | None = None) -> ForwardKinematics:
    """The forward kinematics of a robot description (``gato_robot.core.embodiment.Embodiment``, or anything with
    ``urdf``, ``base_link``, ``tool_link`` and ``arm_joints``): the tool pose from the arm joints, in their order,
    in the cell frame (``base_pose`` default: the description's ``base_position``, not rotated)."""
    if base_pose is None:
        base_pose = (*getattr(embodiment, "base_position", (0.0, 0.0, 0.0)), *IDENTITY_XYZW)
    return ForwardKinematics(embodiment.urdf, embodiment.base_link, embodiment.tool_link, embodiment.arm_joints,
                             base_pose=base_pose, tool_offset=getattr(embodiment, "tool_offset", (0.0, 0.0, 0.0)))
