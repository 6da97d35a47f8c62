"""The stacking condition and the episode rule, on hand-placed scenes and on hand-built inputs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pybullet")

from gato_robot.sim import success
from gato_robot.sim.env import RgbStackingEnv

UPRIGHT = (0.0, 0.0, 0.0, 1.0)
ON_SIDE_ALONG_X = (0.0, np.sin(np.pi / 4), 0.0, np.cos(np.pi / 4))  # 90 deg about y: long axis along x
ALL_TOUCHING = success.Contacts(blue=True, basket=False, robot=False)


def test_condition_on_hand_built_inputs():
    blue = np.array([0.6, 0.0, 0.025])
    assert success.stacked([0.6, 0.0, 0.075], blue, ALL_TOUCHING)
    assert success.stacked([0.649, 0.0, 0.075], blue, ALL_TOUCHING)
    assert not success.stacked([0.651, 0.0, 0.075], blue, ALL_TOUCHING), "more than 5 cm horizontally"
    assert not success.stacked([0.6, 0.0, 0.045], blue, ALL_TOUCHING), "not 2 cm above"
    assert not success.stacked([0.6, 0.0, 0.075], blue, success.Contacts(False, False, False))
    assert not success.stacked([0.6, 0.0, 0.075], blue, success.Contacts(True, True, False))
    assert not success.stacked([0.6, 0.0, 0.075], blue, success.Contacts(True, False, True))


def test_episode_rule_needs_twenty_consecutive_steps():
    t = success.SuccessTracker()
    for _ in range(19):
        assert not t.update(True)
    assert not t.update(False), "a break resets the count"
    for _ in range(19):
        t.update(True)
    assert t.update(True), "20 in a row"
    assert t.update(False), "success is latched for the episode"


def _pose(xyz, quat=UPRIGHT):
    return [*xyz, *quat]


@pytest.fixture(scope="module")
def cube_env():
    """Triplet 5 has a cube for blue (s0) and a decagonal prism (r2) for red; green (g6) is parked aside."""
    e = RgbStackingEnv(triplet="rgb_test_triplet5", render_images=False)
    e.reset(seed=0)
    yield e
    e.close()


GREEN_ASIDE = _pose((0.52, -0.09, 0.04))


def test_red_stacked_on_blue(cube_env):
    cube_env.place_objects([_pose((0.6, 0.0, 0.0752)), GREEN_ASIDE, _pose((0.6, 0.0, 0.025))])
    assert cube_env.stacked()
    for _ in range(10):  # and it stays stacked under physics
        _, reward, _, _, info = cube_env.step(np.zeros(5))
    assert info["stacked"] and reward == 1.0


def test_side_by_side_is_not_stacked(cube_env):
    cube_env.place_objects([_pose((0.6, 0.06, 0.0251)), GREEN_ASIDE, _pose((0.6, 0.0, 0.025))])
    c = cube_env.red_contacts()
    assert c.basket and not cube_env.stacked()
    _, reward, _, _, info = cube_env.step(np.zeros(5))
    assert not info["stacked"] and reward == 0.0


def test_red_in_the_air_above_blue_is_not_stacked(cube_env):
    cube_env.place_objects([_pose((0.6, 0.0, 0.15)), GREEN_ASIDE, _pose((0.6, 0.0, 0.025))])
    assert not cube_env.red_contacts().blue
    assert not cube_env.stacked()


def test_red_held_by_the_robot_on_blue_is_not_stacked(cube_env):
    # park the open fingers around red: red touches blue and the robot
    cube_env.place_objects([_pose((0.6, 0.0, 0.0752)), GREEN_ASIDE, _pose((0.6, 0.0, 0.025))],
                           tool_pos=(0.6, 0.0, 0.075))
    for _ in range(6):
        cube_env.step(np.array([0, 0, 0, 0, 255.0]))
    c = cube_env.red_contacts()
    assert c.robot and c.blue
    assert not cube_env.stacked()


def test_red_on_blue_but_touching_the_basket_is_not_stacked():
    # Triplet 3: red r6 is a 15 cm bar. Lying across blue at the floor's edge, its far end rests on the slope.
    e = RgbStackingEnv(triplet="rgb_test_triplet3", render_images=False)
    try:
        e.reset(seed=0)
        e.place_objects([_pose((0.745, 0.0, 0.066), ON_SIDE_ALONG_X), _pose((0.52, -0.09, 0.04)),
                         _pose((0.69, 0.0, 0.025))])
        for _ in range(20):  # let the bar settle onto blue's edge and the slope
            _, _, _, _, info = e.step(np.zeros(5))
        c = e.red_contacts()
        poses = e.scene.object_poses()
        assert c.blue and c.basket, c
        assert np.linalg.norm(poses[0, :2] - poses[2, :2]) < 0.05 + 0.03
        assert not info["stacked"]
    finally:
        e.close()
