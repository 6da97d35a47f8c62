"""Shared fixtures: small specs and observations that keep tests fast."""

from __future__ import annotations

import numpy as np
import pytest

from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec


def random_observation(spec: RobotSpec, rng: np.random.Generator) -> dict:
    obs = {}
    for s in spec.observations:
        if s.kind is Kind.IMAGE:
            obs[s.name] = rng.integers(0, 256, s.shape, dtype=np.uint8)
        elif s.kind is Kind.DISCRETE:
            obs[s.name] = rng.integers(0, s.num_values, s.shape)
        elif s.kind is Kind.TEXT:
            obs[s.name] = "go to the red ball"
        else:
            obs[s.name] = rng.normal(size=s.shape)
    return obs


def random_action(spec: RobotSpec, rng: np.random.Generator) -> np.ndarray:
    (a,) = spec.actions
    return rng.uniform(np.asarray(a.low), np.asarray(a.high)).astype(np.float32)


@pytest.fixture
def one_torch_thread():
    """Small ops: one thread is as fast alone and far faster when other processes share the cores.
    Model test modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch  # lazily: core tests never import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_spec() -> RobotSpec:
    """Two 32x32 cameras, 9 proprio values, a 3-D action: the RGB-stacking shape at a test size."""
    return RobotSpec(
        name="small",
        observations=(
            TensorSpec("camera/a", Kind.IMAGE, (32, 32, 3)),
            TensorSpec("camera/b", Kind.IMAGE, (32, 32, 3)),
            TensorSpec("proprio/joints", Kind.CONTINUOUS, (7,)),
            TensorSpec("proprio/gripper", Kind.CONTINUOUS, (2,)),
        ),
        actions=(TensorSpec("action", Kind.CONTINUOUS, (3,), Encoding.LINEAR, low=(-1, -1, -2), high=(1, 1, 2)),),
    )
