"""The second simulated arm: a UFactory xArm6 with its linkage gripper, built from config/robots/xarm6.yaml alone.

A different maker, joint count (6) and gripper (a revolute linkage) from the Panda's: the environment, its spec, the
observation builder's gripper mapping, the workspace, the grasp tests and the scripted expert all work with it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pybullet")
import pybullet as p
from gymnasium.utils.env_checker import check_env

from gato_robot.core import specs
from gato_robot.robots import load_embodiment
from gato_robot.sim import workspace as ws
from gato_robot.sim.env import RgbStackingEnv
from gato_robot.sim.expert import ScriptedExpert
from gato_robot.sim.rollout import run_episode


@pytest.fixture(scope="module")
def env():
    e = RgbStackingEnv(triplet="rgb_test_triplet5", render_images=False, robot="xarm6")
    yield e
    e.close()


def test_the_spec_and_observation_are_the_xarm6s():
    e = RgbStackingEnv(triplet="rgb_test_triplet2", cameras=2, image_size=64, robot="xarm6")
    try:
        check_env(e, skip_render_check=True)
        spec = load_embodiment("xarm6").spec(2, 64)
        assert spec.name == "rgb_stacking_xarm6_2cam" and e.spec_ == spec
        assert spec.observation(specs.JOINT_ANGLES_KEY).names == tuple(f"joint{i}" for i in range(1, 7))
        obs, _ = e.reset(seed=0)
        assert set(obs) == set(spec.observation_keys)
        assert obs[specs.JOINT_ANGLES_KEY].shape == (6,) and obs[specs.JOINT_VELOCITIES_KEY].shape == (6,)
        assert all(obs[k].std() > 5 for k in obs if k.startswith(specs.CAMERA_PREFIX)), "the cameras see the cell"
    finally:
        e.close()


def test_the_tool_starts_where_the_start_distribution_puts_it(env):
    """The base stands 0.15 m into the cell (base_position); the tool pose is in the cell frame, as the Panda's."""
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        tool = obs[specs.TOOL_POSE_KEY]
        assert np.all(tool[:3] >= ws.START_LO - 3e-3) and np.all(tool[:3] <= ws.START_HI + 3e-3), tool
        np.testing.assert_allclose(tool[:3], env.robot.target_pos, atol=3e-3)
        assert abs(ws.yaw_from_quat(tool[3:]) - env.robot.target_yaw) < 0.01


def test_the_arm_reaches_the_corners_of_the_workspace_box(env):
    env.reset(seed=1)
    worst = 0.0
    for x in (ws.BOX_LO[0], ws.BOX_HI[0]):
        for y in (ws.BOX_LO[1], ws.BOX_HI[1]):
            for z in (ws.BOX_LO[2], ws.BOX_HI[2]):
                env.robot.reset(np.array([x, y, z]), 0.0)
                worst = max(worst, float(np.linalg.norm(env.robot.tool_pose()[:3] - [x, y, z])))
    assert worst < 0.005, f"a box corner is {worst * 1e3:.1f} mm out of reach"


def test_velocity_commands_move_the_tool(env):
    obs, _ = env.reset(seed=2)
    start = obs[specs.TOOL_POSE_KEY][:3].copy()
    for _ in range(20):  # 1 s at 5 cm/s down and 3 cm/s along y
        obs, *_ = env.step(np.array([0.0, 0.03, -0.05, 0.0, -255.0]))
    moved = obs[specs.TOOL_POSE_KEY][:3] - start
    np.testing.assert_allclose(moved, [0.0, 0.03, -0.05], atol=0.01)


def test_gripper_opening_is_in_metres_and_bang_bang(env):
    """The robot file maps the drive joint's angle to the pads' opening (gripper_opening); the physics agrees."""
    env.reset(seed=4)
    env.robot.reset(np.array([0.6, 0.0, 0.3]), 0.0)  # in the air, nothing between the fingers
    obs, *_ = env.step(np.zeros(5) - np.array([0, 0, 0, 0, 255.0]))
    assert 0.08 < obs[specs.GRIPPER_KEY][0] < 0.095, "open: about 8.9 cm between the pads"

    def pads_apart() -> float:
        left, right = env.robot.finger_links
        points = p.getClosestPoints(env.robot.body, env.robot.body, 0.2, linkIndexA=left, linkIndexB=right,
                                    physicsClientId=env.client)
        return min(c[8] for c in points)

    assert abs(obs[specs.GRIPPER_KEY][0] - pads_apart()) < 0.003
    for _ in range(6):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 1.0]))
        assert abs(obs[specs.GRIPPER_KEY][0] - pads_apart()) < 0.003, "the mapping holds while the fingers move"
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 1.0]))
    assert obs[specs.GRIPPER_KEY][0] < 0.01, "any positive command closes fully"
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0.0]))
    assert obs[specs.GRIPPER_KEY][0] > 0.08, "zero opens"


def test_the_scripted_expert_stacks_with_the_xarm6():
    """The expert commands the 5-D action only; the xArm6 carries it out. A smoke test on two seeds of the range the
    xArm6's gripper settings were chosen on (50000+), where it stacks; the expert table in docs/robots.md (seeds
    0-99) is the measure."""
    env = RgbStackingEnv(triplet="rgb_test_triplet5", render_images=False, privileged=True, robot="xarm6")
    try:
        results = [run_episode(env, ScriptedExpert(), seed) for seed in (50000, 50001)]
    finally:
        env.close()
    assert all(r.success for r in results), [r.summary() for r in results]
    assert all(r.summary()["lifted_red"] for r in results)


def test_an_unknown_robot_names_the_known_ones():
    with pytest.raises(ValueError, match="xarm6"):
        RgbStackingEnv(robot="ur5e")
