"""One episode of a policy in the env: the shared loop of the benchmark runner and demo collection."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gato_robot.sim.env import PRIVILEGED_POSES, PRIVILEGED_VERTICES, RgbStackingEnv
from gato_robot.sim.policies import Policy, action_array


@dataclasses.dataclass
class EpisodeResult:
    triplet: str
    objects: list[str]
    seed: int
    success: bool
    stacked_at_end: bool
    episode_return: float
    steps: int
    observations: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    actions: list[np.ndarray] = dataclasses.field(default_factory=list)
    rewards: list[float] = dataclasses.field(default_factory=list)
    object_poses: list[np.ndarray] = dataclasses.field(default_factory=list)
    frames: list[np.ndarray] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in
                ("triplet", "objects", "seed", "success", "stacked_at_end", "episode_return", "steps")}


def run_episode(env: RgbStackingEnv, policy: Policy, seed: int, record: bool = False,
                frames: bool = False) -> EpisodeResult:
    """Roll out one 400-step episode. ``record`` keeps the policy observations, actions and object poses;
    ``frames`` keeps a rendered image per step for videos."""
    obs, info = env.reset(seed=seed)
    state = policy.initial_state()
    result = EpisodeResult(env.triplet_name, list(info["objects"]), seed, False, False, 0.0, 0)
    policy_keys = [k for k in obs if k not in (PRIVILEGED_POSES, PRIVILEGED_VERTICES)]
    truncated = terminated = False
    while not (truncated or terminated):
        action, state = policy.step(obs, state)
        action = action_array(action)
        if record:
            for k in policy_keys:
                result.observations.setdefault(k, []).append(obs[k])
            result.object_poses.append(info["object_poses"])
        if frames:
            result.frames.append(np.concatenate([obs[k] for k in policy_keys if k.startswith("camera/")], axis=1))
        obs, reward, terminated, truncated, info = env.step(action)
        if record:
            result.actions.append(np.clip(action, env.action_space.low, env.action_space.high))
            result.rewards.append(float(reward))
        result.episode_return += float(reward)
        result.steps += 1
    result.success = bool(info["success"])
    result.stacked_at_end = bool(info["stacked"])
    return result
