"""The PyBullet RGB-stacking env: spec, gymnasium contract, seeding, action handling, bad input."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pybullet")
from gymnasium.utils.env_checker import check_env

from gato_robot.core.specs import rgb_stacking_spec
from gato_robot.sim import objects
from gato_robot.sim import workspace as ws
from gato_robot.sim.env import PRIVILEGED_POSES, PRIVILEGED_VERTICES, RgbStackingEnv


@pytest.fixture(scope="module")
def env():
    e = RgbStackingEnv(triplet="rgb_test_triplet1", render_images=False)
    yield e
    e.close()


def test_gymnasium_env_checker():
    e = RgbStackingEnv(triplet="rgb_test_triplet2", cameras=2, image_size=64)
    try:
        check_env(e, skip_render_check=True)
    finally:
        e.close()


@pytest.mark.parametrize("cameras", [2, 3])
def test_observation_matches_the_tokenizer_spec_exactly(cameras):
    spec = rgb_stacking_spec(cameras, 128)
    e = RgbStackingEnv(cameras=cameras)
    try:
        obs, info = e.reset(seed=3)
        assert set(obs) == set(spec.observation_keys)
        for s in spec.observations:
            assert obs[s.name].shape == s.shape, s.name
            assert obs[s.name].dtype == (np.uint8 if s.kind.value == "image" else np.float32), s.name
        images = [obs[k] for k in obs if k.startswith("camera/")]
        assert all(img.std() > 5 for img in images), "cameras should see a scene, not a blank image"
        assert info["object_poses"].shape == (3, 7)
        assert e.action_space.shape == (5,)
        np.testing.assert_allclose(e.action_space.low, spec.action_bounds()[0])
        np.testing.assert_allclose(e.action_space.high, spec.action_bounds()[1])
    finally:
        e.close()


def test_privileged_observation_adds_object_state_only_on_request(env):
    obs, _ = env.reset(seed=0)
    assert PRIVILEGED_POSES not in obs
    e = RgbStackingEnv(render_images=False, privileged=True)
    try:
        obs, info = e.reset(seed=0)
        np.testing.assert_allclose(obs[PRIVILEGED_POSES], info["object_poses"], atol=1e-6)
        assert obs[PRIVILEGED_VERTICES].shape == (3, 20, 3)
    finally:
        e.close()


def test_same_seed_reproduces_the_episode_and_another_seed_differs():
    def rollout(seed):
        e = RgbStackingEnv(triplet="rgb_train_random", cameras=2, image_size=64)
        obs, info = e.reset(seed=seed)
        rng = np.random.default_rng(0)
        for _ in range(10):
            obs, *_ = e.step(e.action_space.low + rng.random(5) * (e.action_space.high - e.action_space.low))
        out = (info["objects"], e.scene.object_poses(), obs["camera/basket_front_left"], obs["proprio/joint_angles"])
        e.close()
        return out

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[3], b[3])
    assert not np.allclose(a[1], c[1])


def test_start_state_follows_the_original_distribution(env):
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        tool = obs["proprio/tool_pose"][:3]
        assert np.all(tool >= ws.START_LO - 0.01) and np.all(tool <= ws.START_HI + 0.01)
        poses = env.scene.object_poses()
        assert np.all(np.abs(poses[:, :2] - [0.6, 0.0]).max(axis=0) < 0.4), "objects stay in the basket"
        assert obs["proprio/gripper"][0] > 0.07, "the gripper starts open"


def test_actions_are_clipped_to_the_spec_bounds(env):
    env.reset(seed=1)
    obs, *_ = env.step(np.array([1.0, -1.0, 0.5, 5.0, 1000.0]))
    np.testing.assert_allclose(obs["proprio/previous_action"], [0.07, -0.07, 0.07, 1.0, 255.0], rtol=1e-6)
    before = env.robot.target_pos.copy()
    env.step(np.array([1.0, 0.0, 0.0, 0.0, 0.0]))
    assert env.robot.target_pos[0] - before[0] == pytest.approx(0.07 * ws.CONTROL_DT, abs=1e-9)


def test_the_tool_target_never_leaves_the_workspace(env):
    env.reset(seed=2)
    for _ in range(80):  # 4 s down and forward at full speed: far beyond the box
        env.step(np.array([0.07, 0.07, -0.07, 1.0, 0.0]))
    target = env.robot.target_pos
    assert np.all(target <= ws.BOX_HI + 1e-9) and target[2] >= ws.BOX_LO[2] - 1e-9
    assert env.robot.target_yaw <= ws.YAW_LIMIT + 1e-9


def test_gripper_is_bang_bang(env):
    env.reset(seed=4)
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 1.0]))
    assert obs["proprio/gripper"][0] < 0.005, "any positive command closes fully"
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0.0]))
    assert obs["proprio/gripper"][0] > 0.075, "zero opens"


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((5, 1)), [0, 0, 0, 0, 0, 0], "fast"])
def test_actions_of_the_wrong_shape_raise(env, bad):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape|5 numbers"):
        env.step(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_raise_and_never_reach_the_physics(env, value):
    env.reset(seed=0)
    joints, poses, target = env.robot.joint_state()[0], env.scene.object_poses(), env.robot.target_pos.copy()
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([0.01, value, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(env.robot.joint_state()[0], joints)
    np.testing.assert_array_equal(env.scene.object_poses(), poses)
    np.testing.assert_array_equal(env.robot.target_pos, target)


def test_unknown_triplet_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"rgb_test_triplet1.*rgb_heldout_random"):
        RgbStackingEnv(triplet="rgb_test_triplet9")
    with pytest.raises(ValueError, match="rgb_test_triplet3"):
        objects.expand_triplets("rgb_test_triplet3,nope")


def test_triplets_resolve_to_the_original_objects():
    rng = np.random.default_rng(0)
    assert objects.resolve_triplet("rgb_test_triplet3", rng) == ("r6", "g3", "b5")
    assert len(objects.object_set("train")) == 103
    assert len(objects.object_set("heldout")) == 49
    assert set(objects.object_set("test")) == {"s0", "r2", "r3", "r5", "r6", "g2", "g3", "g5", "g6",
                                               "b2", "b3", "b5", "b6"}
    train = set(objects.object_set("train"))
    assert all(i in train for i in objects.resolve_triplet("rgb_train_random", rng))
    assert objects.resolve_triplet("rgb_test_random", rng) in objects.TEST_TRIPLETS.values()
    assert objects.expand_triplets("test") == [f"rgb_test_triplet{i}" for i in range(1, 6)]


def test_objects_are_02_kg_and_coloured():
    import pybullet as p

    e = RgbStackingEnv(render_images=False)
    try:
        e.reset(seed=0)
        for o in e.scene.objects:
            assert p.getDynamicsInfo(o.body, -1, physicsClientId=e.client)[0] == pytest.approx(0.2)
            rgba = p.getVisualShapeData(o.body, physicsClientId=e.client)[0][7]
            assert rgba[:3] == pytest.approx(objects.RGBA[o.color][:3])
    finally:
        e.close()


def test_a_seed_reproduces_in_a_reused_env(env):
    """Episodes run before must not change a seed's rollout (benchmark workers reuse one env)."""

    def rollout(seed):
        obs, _ = env.reset(seed=seed)
        for t in range(15):
            obs, *_ = env.step(np.array([0.07, -0.05, -0.07, 0.5, 255.0 if t > 8 else -255.0]))
        return env.scene.object_poses(), obs["proprio/joint_angles"]

    first = rollout(11)
    rollout(12)
    again = rollout(11)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_grasp_flag_is_the_ros_tokenizers_rule_and_recordings_rederive_it():
    """The default grasp flag is core.gripper's (what the ROS tokenizer computes from the finger joints), and the
    trainer's re-derivation from a recording (opening, velocity, previous gripper command) gives it back exactly."""
    from gato_robot.core.gripper import episode_grasp_flags
    from gato_robot.sim.policies import make_policy

    env = RgbStackingEnv(triplet="rgb_test_triplet5", cameras=2, image_size=64, render_images=False, privileged=True)
    expert = make_policy("feedback-expert")
    obs, _ = env.reset(seed=3)
    state = expert.initial_state()
    rows, previous = [], []
    for _ in range(150):
        rows.append(obs["proprio/gripper"].copy())
        previous.append(obs["proprio/previous_action"][-1])
        action, state = expert.step(obs, state)
        obs, *_ = env.step(np.asarray(action, np.float32))
    env.close()
    rows = np.array(rows)
    assert rows[:, 2].sum() >= 10  # the expert grasped: the flag was on for a while
    np.testing.assert_array_equal(episode_grasp_flags(rows, np.array(previous)), rows[:, 2] > 0.5)
    with pytest.raises(ValueError, match="grasp_flag"):
        RgbStackingEnv(grasp_flag="magic")
