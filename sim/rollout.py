"""One episode of a policy in the env: the shared loop of the benchmark runner and demo collection."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from gato_robot.core import specs
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
    # How far the episode got, from the privileged poses (analysis only, never a policy input): the closest the
    # tool came to red's centre, red's highest lift above its start, and red's closest horizontal approach to
    # blue while lifted by more than LIFTED_M.
    min_tool_red_m: float = float("inf")
    max_red_lift_m: float = 0.0
    min_red_blue_xy_lifted_m: float = float("inf")

    def summary(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in
               ("triplet", "objects", "seed", "success", "stacked_at_end", "episode_return", "steps")}
        lifted = self.max_red_lift_m > LIFTED_M  # a lift implies a reach (a long object may be held 5+ cm off-centre)
        out.update(reached_red=self.min_tool_red_m < REACHED_M or lifted, lifted_red=lifted,
                   red_over_blue=self.min_red_blue_xy_lifted_m < OVER_M,
                   min_tool_red_m=round(self.min_tool_red_m, 4), max_red_lift_m=round(self.max_red_lift_m, 4),
                   min_red_blue_xy_lifted_m=round(min(self.min_red_blue_xy_lifted_m, 9.0), 4))
        return out


# Progress stages of an episode (benchmark tables): tool within 5 cm of red's centre, red lifted 3 cm, red within
# 5 cm of blue horizontally while lifted (the success rule's horizontal tolerance).
REACHED_M, LIFTED_M, OVER_M = 0.05, 0.03, 0.05


Executor = Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]


def run_episode(env: RgbStackingEnv, policy: Policy, seed: int, record: bool = False,
                frames: bool = False, execute: Executor | None = None, max_steps: int | None = None) -> EpisodeResult:
    """Roll out one 400-step episode. ``record`` keeps the policy observations, actions and object poses;
    ``frames`` keeps a rendered image per step for videos. ``max_steps`` stops it earlier (short demonstrations:
    more start layouts per CPU second).

    ``execute(action, observation)``, when given, returns the action the env executes instead of ``policy``'s,
    while ``policy``'s action is the one recorded: the label. Demo collection uses it for noise injection (DART)
    and DAgger (a learner drives, the expert labels the states it visits)."""
    obs, info = env.reset(seed=seed)
    state = policy.initial_state()
    result = EpisodeResult(env.triplet_name, list(info["objects"]), seed, False, False, 0.0, 0)
    policy_keys = [k for k in obs if k not in (PRIVILEGED_POSES, PRIVILEGED_VERTICES)]
    truncated = terminated = False
    red_z0 = float(info["object_poses"][0][2])
    while not (truncated or terminated) and (max_steps is None or result.steps < max_steps):
        _progress(result, obs[specs.TOOL_POSE_KEY], info["object_poses"], red_z0)
        action, state = policy.step(obs, state)
        action = action_array(action)
        executed = action if execute is None else np.asarray(execute(action, obs), np.float32)
        if record:
            for k in policy_keys:
                result.observations.setdefault(k, []).append(obs[k])
            result.object_poses.append(info["object_poses"])
        if frames:
            result.frames.append(np.concatenate([obs[k] for k in policy_keys if k.startswith(specs.CAMERA_PREFIX)], axis=1))
        obs, reward, terminated, truncated, info = env.step(executed)
        if record:
            result.actions.append(np.clip(action, env.action_space.low, env.action_space.high))
            result.rewards.append(float(reward))
        result.episode_return += float(reward)
        result.steps += 1
    _progress(result, obs[specs.TOOL_POSE_KEY], info["object_poses"], red_z0)
    result.success = bool(info["success"])
    result.stacked_at_end = bool(info["stacked"])
    return result


def _progress(result: EpisodeResult, tool_pose: np.ndarray, poses: np.ndarray, red_z0: float) -> None:
    red, blue = np.asarray(poses[0], np.float64), np.asarray(poses[2], np.float64)
    result.min_tool_red_m = min(result.min_tool_red_m, float(np.linalg.norm(np.asarray(tool_pose[:3]) - red[:3])))
    lift = float(red[2] - red_z0)
    result.max_red_lift_m = max(result.max_red_lift_m, lift)
    if lift > LIFTED_M:
        result.min_red_blue_xy_lifted_m = min(result.min_red_blue_xy_lifted_m, float(np.linalg.norm(red[:2] - blue[:2])))
