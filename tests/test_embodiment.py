"""The embodiment (gato_robot.core.embodiment): one robot file, one spec, one observation builder.

The simulator, the ROS tokenizer node's builder, the log converter and the synthetic log writer must produce the
same observation from the same raw readings, grasp flag and previous action included (they once differed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data
import pytest
import yaml

from gato_robot import wire
from gato_robot.core import specs
from gato_robot.core.embodiment import RawObservation, embodiment_from_dict
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.logs import bag
from gato_robot.logs.convert import log_to_episodes
from gato_robot.logs.synthetic import write_step
from gato_robot.robots import load_embodiment
from gato_robot.sim.env import RgbStackingEnv

PANDA_FILE = Path(__file__).resolve().parents[1] / "config" / "robots" / "panda.yaml"
PROPRIO = (specs.JOINT_ANGLES_KEY, specs.JOINT_VELOCITIES_KEY, specs.TOOL_POSE_KEY, specs.GRIPPER_KEY,
           specs.PREVIOUS_ACTION_KEY)


def test_panda_is_the_rgb_stacking_spec_and_loads_by_name_or_path():
    panda = load_embodiment("panda")
    assert load_embodiment(PANDA_FILE) == panda
    for cameras in (1, 2, 3, ["basket_back_left"]):
        assert panda.spec(cameras, 64).to_json() == specs.rgb_stacking_spec(cameras, 64).to_json()
    assert panda.arm_joints == specs.PANDA_ARM_JOINTS
    assert (panda.base_link, panda.tool_link) == ("panda_link0", "panda_grasptarget")
    assert len(panda.differences_from_deepmind) >= 6
    with pytest.raises(ValueError, match="no robot named 'sawyer'"):
        load_embodiment("sawyer")


def test_panda_file_names_what_its_urdf_has():
    panda = load_embodiment("panda")
    client = p.connect(p.DIRECT)
    try:
        body = p.loadURDF(str(Path(pybullet_data.getDataPath()) / panda.urdf), physicsClientId=client)
        info = [p.getJointInfo(body, j, physicsClientId=client) for j in range(p.getNumJoints(body, physicsClientId=client))]
        joints = [i[1].decode() for i in info]
        links = [i[12].decode() for i in info] + [p.getBodyInfo(body, physicsClientId=client)[0].decode()]
    finally:
        p.disconnect(client)
    assert set(panda.arm_joints + panda.finger_joints) <= set(joints)
    assert [joints.index(j) for j in panda.finger_joints] == [9, 10]  # sim/robot.py's finger joint indices
    assert panda.base_link in links and panda.tool_link in links


def test_action_split_and_its_inverse():
    panda = load_embodiment("panda")
    c = panda.arm_command([0.01, -0.02, 0.03, 0.5, 255.0])
    assert (c.linear, c.angular, c.gripper) == ((0.01, -0.02, 0.03), (0.0, 0.0, 0.5), 255.0)
    assert wire.action_to_twist(np.array([0.01, -0.02, 0.03, 0.5, 255.0])) == (c.linear, c.angular, c.gripper)
    np.testing.assert_array_equal(panda.velocity_from_twist(c.linear, (9.0, 9.0, 0.5)), [0.01, -0.02, 0.03, 0.5])
    np.testing.assert_array_equal(wire.forward_command_to_velocity([1, 2, 3, 4, 5, 6]), [1, 2, 3, 6])
    with pytest.raises(ValueError, match="5 values"):
        panda.arm_command([0.0] * 4)


def test_a_turned_base_splits_commands_as_its_file_says():
    """tool_vx on the twist's linear.y, tool_vy on linear.x: the forward command the controller sends and the
    velocity the sim node and the log converter read back follow the file, not the Panda's layout."""
    data = yaml.safe_load(PANDA_FILE.read_text())
    data["action"][0]["command"], data["action"][1]["command"] = "linear_y", "linear_x"
    turned = embodiment_from_dict(data)
    action = np.array([0.01, -0.02, 0.03, 0.5, 255.0])
    forward = wire.action_to_forward_command(action, turned)
    assert forward == [-0.02, 0.01, 0.03, 0.0, 0.0, 0.5]
    assert wire.action_to_forward_command(action) == [0.01, -0.02, 0.03, 0.0, 0.0, 0.5]  # the Panda's
    np.testing.assert_array_equal(wire.forward_command_to_velocity(forward, turned), action[:4])


def six_joint_arm() -> dict:
    data = yaml.safe_load(PANDA_FILE.read_text())
    data.update(name="six", arm_joints=[f"j{i}" for i in range(6)], finger_joints=["f"])
    data["action"][0]["high"] = 0.05
    return data


def test_a_six_joint_arm_gets_its_own_shapes_and_bounds(tmp_path):
    path = tmp_path / "six.yaml"
    path.write_text(yaml.safe_dump(six_joint_arm()))
    six = load_embodiment(path)
    spec = six.spec(2, 64)
    assert spec.name == "rgb_stacking_six_2cam"
    assert spec.observation(specs.JOINT_ANGLES_KEY).shape == (6,)
    assert spec.observation(specs.JOINT_VELOCITIES_KEY).names == tuple(f"j{i}" for i in range(6))
    assert spec.observation(specs.PREVIOUS_ACTION_KEY).shape == (5,)
    assert spec.action_bounds()[1][0] == 0.05
    assert Tokenizer(spec).tokenize_observation({
        **{k: np.zeros(spec.observation(k).shape, np.uint8) for k in spec.observation_keys if k.startswith("camera/")},
        specs.JOINT_ANGLES_KEY: np.zeros(6), specs.JOINT_VELOCITIES_KEY: np.zeros(6),
        specs.TOOL_POSE_KEY: np.zeros(7), specs.GRIPPER_KEY: np.zeros(3), specs.PREVIOUS_ACTION_KEY: np.zeros(5),
    }).tokens.size == 2 * 16 + 6 + 6 + 7 + 3 + 5 + 1  # 4x4 patches per image, the tensors, the separator
    builder = six.observation_builder(["basket_front_left"])
    raw = RawObservation({"basket_front_left": np.zeros((64, 64, 3), np.uint8)}, np.arange(6.0), np.zeros(6),
                         [0, 0, 0, 0, 0, 0, 1], [0.03], [0.0])
    assert builder.build(raw)[specs.JOINT_ANGLES_KEY].shape == (6,)
    with pytest.raises(ValueError, match="needs 6 values"):
        builder.build(RawObservation(raw.images, np.zeros(7), np.zeros(7), raw.tool_pose, [0.03], [0.0]))


@pytest.mark.parametrize("change, match", [
    ({"arm_joints": []}, "arm_joints"),
    ({"cameras": ["wrist"]}, "unknown cameras"),
    ({"finger_joints": ["j0"]}, "both arm and finger"),
    ({"colour": "red"}, "unknown fields"),
    ({"gripper_opening": {"offset": 0.08, "scale": 0}}, "non-zero scale"),
    ({"gripper_opening": {"offset": 0.08, "gain": 1}}, "gripper_opening"),
    ({"tool_offset": [0, 0]}, "tool_offset"),
    ({"base_position": [0, 0, "x"]}, "base_position"),
])
def test_bad_robot_files_say_what_is_wrong(change, match):
    with pytest.raises(ValueError, match=match):
        embodiment_from_dict({**six_joint_arm(), **change})


def test_a_linkage_grippers_opening_is_mapped_from_its_joint_and_back():
    """gripper_opening: opening = offset + scale * sum(finger joints), its rate scale * sum(velocities); the sim node
    publishes finger joint states that read back as the observed opening (finger_joint_states)."""
    linkage = embodiment_from_dict({**six_joint_arm(), "gripper_opening": {"offset": 0.0889, "scale": -0.1032}})
    assert linkage.opening([0.0], [0.0]) == (0.0889, -0.0)
    opening, rate = linkage.opening([0.5], [2.0])
    assert opening == pytest.approx(0.0889 - 0.0516) and rate == pytest.approx(-0.2064)
    q, dq = linkage.finger_joint_states(opening, rate)
    assert q == pytest.approx([0.5]) and dq == pytest.approx([2.0])
    builder = linkage.observation_builder(["basket_front_left"])
    raw = RawObservation({"basket_front_left": np.zeros((8, 8, 3), np.uint8)}, np.zeros(6), np.zeros(6),
                         [0.6, 0, 0.2, 1, 0, 0, 0], [0.85], [0.0])
    assert builder.build(raw)[specs.GRIPPER_KEY][0] == pytest.approx(0.0889 - 0.1032 * 0.85, abs=1e-7)
    # prismatic fingers (the default) are the plain sum, bit for bit, both ways
    panda = load_embodiment("panda")
    assert panda.opening([0.01234, 0.01234], [0.1, 0.1]) == (0.02468, 0.2)
    assert panda.finger_joint_states(0.02468, 0.2) == ([0.01234] * 2, [0.1] * 2)


def test_bad_action_in_a_robot_file():
    data = six_joint_arm()
    data["action"][4]["command"] = "linear_x"
    with pytest.raises(ValueError, match="its own command part"):
        embodiment_from_dict(data)
    data["action"] = data["action"][:4]
    with pytest.raises(ValueError, match="must list"):
        embodiment_from_dict(data)


@pytest.fixture(scope="module")
def grasp_episode():
    """The simulator closing on a cube (the grasp flag turns on, then off when it opens): observations, actions."""
    env = RgbStackingEnv(cameras=list(bag.CAMERAS), image_size=32, render_images=False, object_ids=("s0",) * 3)
    try:
        first, _ = env.reset(seed=0)
        env.place_objects(np.array([[0.6, 0, 0.025, 0, 0, 0, 1], [0.5, 0.1, 0.025, 0, 0, 0, 1],
                                    [0.7, -0.1, 0.025, 0, 0, 0, 1]]), tool_pos=(0.6, 0.0, 0.03))
        obs, actions = [first], []
        for k in range(12):
            a = np.array([0.01 * (k % 3 - 1), 0.0, 0.005, 0.1, 255.0 if k < 9 else -255.0], np.float32)
            actions.append(a)
            o, *_ = env.step(a)
            obs.append(o)
    finally:
        env.close()
    grasps = [o[specs.GRIPPER_KEY][2] for o in obs]
    assert 1.0 in grasps and grasps[-1] == 0.0  # the flag turned on, and off again after opening
    return obs, actions


def test_builder_fed_the_sims_readings_gives_the_sims_observation(grasp_episode):
    obs, actions = grasp_episode
    builder = load_embodiment().observation_builder(list(bag.CAMERAS))
    for k, o in enumerate(obs):
        opening, speed = o[specs.GRIPPER_KEY][:2]
        raw = RawObservation({c: o[f"camera/{c}"] for c in bag.CAMERAS}, o[specs.JOINT_ANGLES_KEY],
                             o[specs.JOINT_VELOCITIES_KEY], o[specs.TOOL_POSE_KEY], [opening / 2, opening / 2],
                             [speed / 2, speed / 2])
        built = builder.build(raw)
        for key in PROPRIO:
            assert built[key].dtype == o[key].dtype and built[key].tobytes() == o[key].tobytes(), (k, key)
        if k < len(actions):
            builder.command(actions[k])


def test_the_ros_tokenizers_builder_and_the_log_converter_see_the_sims_observation(grasp_episode, tmp_path):
    """The sim's observations as the sim node publishes them (JointState: each finger half the opening, float64)
    through the tokenizer node's builder (float64, commands arriving apart) and, logged with the synthetic log's
    writer, through the log converter: the same values and the same tokens as the simulator's own."""
    obs, actions = grasp_episode
    panda = load_embodiment()
    tokenizer = Tokenizer(panda.spec(list(bag.CAMERAS), 32))
    node = panda.observation_builder(list(bag.CAMERAS), np.float64)  # as TokenizerNode configures it
    path = tmp_path / "grasp"
    t, wall = 1.0, 1_700_000_000_000_000_000
    with bag.BagWriter(path) as w:
        conns = {topic: w.add_topic(topic, msgtype) for topic, (msgtype, _) in bag.contract_topics().items()}
        w.episode = {"episode": 0, "seed": 0, "triplet": "rgb_test_triplet1", "policy": "scripted"}
        for k, o in enumerate(obs):
            opening, speed = (float(v) for v in o[specs.GRIPPER_KEY][:2])
            built = node.build(RawObservation(
                {c: o[f"camera/{c}"] for c in bag.CAMERAS}, [float(v) for v in o[specs.JOINT_ANGLES_KEY]],
                [float(v) for v in o[specs.JOINT_VELOCITIES_KEY]], np.asarray(o[specs.TOOL_POSE_KEY], np.float64),
                [opening / 2, opening / 2], [speed / 2, speed / 2]))
            for key in PROPRIO:
                np.testing.assert_array_equal(built[key].astype(np.float32), o[key], err_msg=f"step {k} {key}")
            np.testing.assert_array_equal(tokenizer.tokenize_observation(built).tokens,
                                          tokenizer.tokenize_observation(o).tokens)
            done = k == len(actions)
            status = {"episode": 0, "step": k, "stacked": False, "success": False, "done": done,
                      "triplet": "rgb_test_triplet1", "sim_time": round(t, 6), "invalid_commands": 0}
            action = None if done else actions[k].astype(np.float64)
            write_step(w, conns, wall, t, o, status, action, None, "")
            if action is not None:
                twist = wire.action_to_twist(action)
                node.command_gripper(twist[2])
                node.command_velocity(panda.velocity_from_twist(twist[0], twist[1]))
            t, wall = t + 0.05, wall + 50_000_000
    (episode,), report = log_to_episodes(path)
    assert episode.observations[specs.GRIPPER_KEY].shape[0] == len(actions), report.to_dict()
    for key in PROPRIO:
        converted = episode.observations[key]
        assert converted.tobytes() == np.stack([o[key] for o in obs[:-1]]).tobytes(), key
