"""Evaluation rollouts of the domains that have an environment, by domain kind (lazy imports)."""

from __future__ import annotations

import importlib
from typing import Any

from gato_robot.domains import ROLLOUT_KINDS
from gato_robot.domains.control import Policy, RolloutResult

DEFAULT_TASKS = {"babyai": ("GoToRedBall",), "metaworld": ("reach-v3",), "rgb_stacking": ("rgb_test_triplet1",)}


def module(kind: str) -> Any:
    if kind not in ROLLOUT_KINDS:
        raise ValueError(f"no environment for domain kind {kind!r}; rollouts exist for {list(ROLLOUT_KINDS)}")
    return importlib.import_module(f"gato_robot.domains.{kind}")


def domain_spec(kind: str) -> Any:
    return module(kind).spec()


def rollout(kind: str, policy: Policy, task: str, episodes: int, seed: int = 10_000_000) -> RolloutResult:
    """Success rate of ``policy`` on ``episodes`` evaluation seeds (disjoint from the generators' seeds)."""
    return module(kind).rollout(policy, task, episodes, seed=seed)
