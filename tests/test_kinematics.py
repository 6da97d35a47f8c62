"""Forward kinematics (gato_robot.kinematics) against PyBullet's own link state and yourdfpy's matrix FK.

The figures printed here are the ones in docs/ros.md ("Tool pose from the joints"):
``.venv/bin/python -m pytest -q -s -p no:cacheprovider tests/test_kinematics.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data
import pytest

from gato_robot.kinematics import ForwardKinematics, bullet_quat_from_matrix, for_embodiment
from gato_robot.robots import load_embodiment
from gato_robot.sim import robot as sim_robot

CONFIGS = 1000
MAX_POSITION_MM = 0.001  # PyBullet reports link states in float32: 1 um is ~15 float32 steps at 1 m
MAX_ANGLE_DEG = 0.001


def quat_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The rotation angle between unit quaternions a and b (xyzw), whatever their signs (accurate near 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = a[3] * b[3] + a[:3] @ b[:3]
    v = a[3] * b[:3] - b[3] * a[:3] - np.cross(a[:3], b[:3])
    return float(np.degrees(2.0 * np.arctan2(np.linalg.norm(v), abs(w))))


@pytest.fixture
def client():
    c = p.connect(p.DIRECT)
    yield c
    p.disconnect(c)


def compare(client: int, body: int, fk: ForwardKinematics, joints: list[int], link: int, low, high,
            n: int, seed: int) -> tuple[float, float, float]:
    """(max position error mm, max angle error deg, max |quaternion difference|) over n random configurations."""
    rng = np.random.default_rng(seed)
    pos_mm, angle_deg, quat = 0.0, 0.0, 0.0
    for _ in range(n):
        q = rng.uniform(low, high)
        for j, v in zip(joints, q):
            p.resetJointState(body, j, v, physicsClientId=client)
        state = p.getLinkState(body, link, computeForwardKinematics=True, physicsClientId=client)
        xyz, xyzw = fk.pose(q)
        pos_mm = max(pos_mm, 1e3 * float(np.abs(xyz - state[4]).max()))
        angle_deg = max(angle_deg, quat_angle_deg(xyzw, state[5]))
        quat = max(quat, float(np.abs(xyzw - state[5]).max()))  # the sign too: q and -q are different tokens
    return pos_mm, angle_deg, quat


def test_panda_fk_matches_the_simulated_panda(client):
    """The simulator's Panda (sim/robot.py: low-poly URDF, base at the origin) against FK built from the robot
    description (config/robots/panda.yaml), 1,000 random configurations within the joint limits."""
    panda = sim_robot.Panda(client)
    fk = for_embodiment(load_embodiment("panda"))
    pos_mm, angle_deg, quat = compare(client, panda.body, fk, list(sim_robot.ARM_JOINTS), sim_robot.TCP_LINK,
                                      sim_robot.JOINT_LOW, sim_robot.JOINT_HIGH, CONFIGS, seed=0)
    print(f"\nPanda {fk.tool_link}, {CONFIGS} configurations: max position error {pos_mm:.2e} mm, "
          f"max orientation error {angle_deg:.2e} deg, max |quaternion difference| {quat:.1e}")
    assert pos_mm < MAX_POSITION_MM and angle_deg < MAX_ANGLE_DEG
    assert quat < 1e-5  # same sign as PyBullet's (a flip would be ~1)
    # and the sim's own tool_pose() is that link state
    xyz, xyzw = fk.pose(panda.joint_state()[0])
    np.testing.assert_allclose(panda.tool_pose(), np.concatenate([xyz, xyzw]), atol=1e-6)


def test_xarm6_fk_matches_the_simulated_xarm6(client):
    """The simulator's second arm (sim/robot.py XArm6: the robot file's URDF with a link added at its tool_offset,
    its base at base_position) against FK built from config/robots/xarm6.yaml alone, 1,000 configurations."""
    embodiment = load_embodiment("xarm6")
    arm = sim_robot.XArm6(client, embodiment=embodiment)
    fk = for_embodiment(embodiment)
    pos_mm, angle_deg, quat = compare(client, arm.body, fk, list(arm.arm_joints), arm.tcp_link,
                                      arm.joint_low, arm.joint_high, CONFIGS, seed=1)
    print(f"\nxArm6 {fk.tool_link} + {list(embodiment.tool_offset)}, base at {list(embodiment.base_position)}, "
          f"{CONFIGS} configurations: max position error {pos_mm:.2e} mm, max orientation error {angle_deg:.2e} deg, "
          f"max |quaternion difference| {quat:.1e}")
    assert pos_mm < MAX_POSITION_MM and angle_deg < MAX_ANGLE_DEG
    assert quat < 1e-5
    arm.reset(np.array([0.6, 0.05, 0.2]), 0.3)  # a tool pose the simulator reached: FK of its joints is that pose
    np.testing.assert_allclose(fk.tool_pose(arm.joint_state()[0]), arm.tool_pose(), atol=1e-6)
    np.testing.assert_allclose(arm.tool_pose()[:3], [0.6, 0.05, 0.2], atol=2e-3)


def _pybullet_robot(client, urdf, base_xyz=(0, 0, 0), base_xyzw=(0, 0, 0, 1)):
    body = p.loadURDF(str(Path(pybullet_data.getDataPath()) / urdf), base_xyz, base_xyzw, useFixedBase=True,
                      physicsClientId=client)
    info = [p.getJointInfo(body, j, physicsClientId=client) for j in range(p.getNumJoints(body, physicsClientId=client))]
    return body, {i[1].decode(): i for i in info}, {i[12].decode(): i[0] for i in info}


@pytest.mark.parametrize("urdf, base, tool, joints", [
    ("xarm/xarm6_robot.urdf", "world", "link6", [f"joint{i}" for i in range(1, 7)]),
    ("franka_panda/panda.urdf", "panda_link0", "panda_grasptarget", [f"panda_joint{i}" for i in range(1, 8)]),
])
def test_fk_matches_pybullet_with_the_base_placed_elsewhere(client, urdf, base, tool, joints):
    """A second arm (the xArm6 of pybullet_data), and a base pose that is not the identity: the FK applies it."""
    base_xyz, base_xyzw = (0.3, -0.2, 0.1), p.getQuaternionFromEuler((0.2, -0.1, 2.5))
    body, info, links = _pybullet_robot(client, urdf, base_xyz, base_xyzw)
    fk = ForwardKinematics(urdf, base, tool, joints, base_pose=(*base_xyz, *base_xyzw))
    low, high = [info[j][8] for j in joints], [info[j][9] for j in joints]
    pos_mm, angle_deg, quat = compare(client, body, fk, [info[j][0] for j in joints], links[tool], low, high,
                                      CONFIGS, seed=1)
    print(f"\n{urdf} {tool}, base moved, {CONFIGS} configurations: max position error {pos_mm:.2e} mm, "
          f"max orientation error {angle_deg:.2e} deg, max |quaternion difference| {quat:.1e}")
    assert pos_mm < MAX_POSITION_MM and angle_deg < MAX_ANGLE_DEG and quat < 1e-5


def test_fk_matches_yourdfpys_own_fk():
    """The chain composed here equals yourdfpy's scene-graph FK (the library's own), in double precision."""
    import yourdfpy

    e = load_embodiment("panda")
    fk = for_embodiment(e)
    model = yourdfpy.URDF.load(str(fk.urdf_path), load_meshes=False)
    rng = np.random.default_rng(2)
    for _ in range(30):
        q = rng.uniform(sim_robot.JOINT_LOW, sim_robot.JOINT_HIGH)
        model.update_cfg(dict(zip(e.arm_joints, q)))
        t = model.get_transform(e.tool_link, e.base_link)
        xyz, xyzw = fk.pose(q)
        np.testing.assert_allclose(xyz, t[:3, 3], atol=1e-12)
        assert quat_angle_deg(xyzw, bullet_quat_from_matrix(t[:3, :3])) < 1e-9


def test_quaternion_sign_follows_bullet():
    """Bullet's rule (btMatrix3x3::getRotation): w > 0 for a positive trace, else the largest diagonal's part > 0."""
    half_turn_x = np.diag([1.0, -1.0, -1.0])  # trace -1: x is the largest diagonal entry
    np.testing.assert_allclose(bullet_quat_from_matrix(half_turn_x), [1, 0, 0, 0], atol=1e-12)
    c, s = np.cos(3.0), np.sin(3.0)
    rz = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])  # -3 rad about z: trace < 0, z largest, so z > 0, w < 0
    q = bullet_quat_from_matrix(rz)
    assert q[2] > 0 and q[3] < 0
    np.testing.assert_allclose(q, [0, 0, np.sin(1.5), -np.cos(1.5)], atol=1e-12)


def test_bad_descriptions_say_what_is_wrong():
    e = load_embodiment("panda")
    with pytest.raises(ValueError, match="not a link"):
        ForwardKinematics(e.urdf, e.base_link, "no_such_link", e.arm_joints)
    with pytest.raises(ValueError, match="is not below"):
        ForwardKinematics(e.urdf, e.tool_link, e.base_link, e.arm_joints)
    with pytest.raises(ValueError, match="not in joint_names"):
        ForwardKinematics(e.urdf, e.base_link, e.tool_link, e.arm_joints[:6])
    with pytest.raises(ValueError, match="neither as a path nor under pybullet_data"):
        ForwardKinematics("no/such.urdf", e.base_link, e.tool_link, e.arm_joints)
    with pytest.raises(ValueError, match="unit quaternion"):
        ForwardKinematics(e.urdf, e.base_link, e.tool_link, e.arm_joints, base_pose=(0, 0, 0, 0, 0, 0, 2))
    fk = for_embodiment(e)
    with pytest.raises(ValueError, match="expected 7 joint positions"):
        fk.pose(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        fk.pose([np.nan] * 7)


@pytest.mark.ros
def test_tokenizer_node_in_fk_mode_publishes_the_fk_tool_pose(tmp_path, monkeypatch, request):
    """The real tokenizer node with ``tool_pose_source: fk``, fed only /joint_states and camera images (nothing on
    /gato/tool_pose): each observation's tool pose tokens are those of the FK of the joint state of its set."""
    pytest.importorskip("rclpy")
    import time

    from sensor_msgs.msg import Image, JointState

    from gato_robot import wire
    from gato_robot.core import specs, vocab
    from gato_robot.core.embodiment import RawObservation
    from gato_robot.core.tokenizer import Tokenizer
    from gato_robot.ros import common, testing

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = testing.domain_for(request.node.nodeid)
    # as docs/ros.md tells a robot's user: in the tokenizer's own section (it wins over a -p override)
    params = testing.write_params(tmp_path / "stack.yaml", {"gato_tokenizer": {"tool_pose_source": "fk"}})
    cameras = list(specs.RGB_STACKING_CAMERAS[:2])
    e = load_embodiment("panda")
    fk = for_embodiment(e)
    probe = testing.Probe(domain)
    node = testing.NodeProcess("gato_tokenizer", domain, tmp_path, params)
    try:
        probe.record(common.OBSERVATION_TOPIC, Image, common.QoSProfile(
            depth=200, reliability=common.ReliabilityPolicy.RELIABLE))
        sensors = testing.FakeRobotSensors(probe, cameras)  # cameras only: joints=False below
        joints = probe.publisher(common.JOINT_STATES_TOPIC, JointState, common.SENSOR_QOS)
        probe.wait_matched([common.OBSERVATION_TOPIC], 60)
        probe.wait_subscribers(joints)
        for pub in sensors.cameras.values():
            probe.wait_subscribers(pub)
        rng = np.random.default_rng(3)
        sent: dict[float, np.ndarray] = {}  # set stamp -> arm joint positions
        end = time.monotonic() + 60
        while len(probe.received(common.OBSERVATION_TOPIC)) < 5 and time.monotonic() < end:
            stamp = common.sec_to_stamp(probe.now())
            q = rng.uniform(sim_robot.JOINT_LOW, sim_robot.JOINT_HIGH)
            js = JointState(name=[*e.arm_joints, *e.finger_joints], position=[*q, 0.02, 0.02], velocity=[0.0] * 9)
            js.header.stamp = stamp
            joints.publish(js)
            sensors.publish(common.stamp_to_sec(stamp), joints=False)
            sent[common.stamp_to_sec(stamp)] = q
            time.sleep(0.05)
        received = probe.received(common.OBSERVATION_TOPIC)
        assert len(received) >= 5, node.log()
        assert "pose forward kinematics of panda.urdf" in node.log()
        spec = e.spec(cameras, 128)
        offset = sum(n for key, _, n in spec.layout()[:[k for k, _, _ in spec.layout()].index("proprio/tool_pose")])
        tokenizer, builder = Tokenizer(spec), e.observation_builder(cameras, np.float64)
        for _, msg in received:
            tokens = wire.decode_observation_rows(common.observation_rows(msg)).tokens
            q = sent[common.stamp_to_sec(msg.header.stamp)]
            expected = tokenizer.tokenize_observation(builder.build(RawObservation(
                images=sensors.images, joint_positions=q, joint_velocities=np.zeros(7), tool_pose=fk.tool_pose(q),
                finger_positions=np.full(2, 0.02), finger_velocities=np.zeros(2)))).tokens
            pose_tokens = tokens[offset:offset + 7]
            assert np.all(pose_tokens >= vocab.BIN_OFFSET)  # continuous-value tokens: the slice is the pose's
            np.testing.assert_array_equal(pose_tokens, expected[offset:offset + 7])
        print(f"\ntokenizer node, tool_pose_source fk: {len(received)} observations, tool pose tokens = FK's")
    finally:
        node.stop()
        probe.close()
