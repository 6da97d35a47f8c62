"""BabyAI (the ``minigrid`` package): mission text + agent-view image, 7 discrete actions; BabyAIBot expert.

Observation: ``mission`` (TEXT, <= 16 SentencePiece tokens) and ``image``: minigrid's agent-view RGB frame at
tile size 8 (7x7 cells -> 56x56), padded with black to 64x64 on the bottom/right. Why: 16 patches per timestep
keep a CPU-trained model's sequences short (tile 16 would be 49 patches), and padding instead of resizing keeps
every cell's 8 pixels crisp, each 16x16 patch holding exactly 2x2 cells (a resize to 64 would blur cell edges).
Control episodes are tokenized with ``text_targets=False``: the mission is context, only actions are targets.

    python -m gato_robot.domains.generate babyai --levels GoToRedBall --episodes 200 --out data/domains/babyai
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core.specs import Kind, RobotSpec, TensorSpec
from gato_robot.domains.control import Policy, RolloutResult, write_control_episode

DOMAIN = "babyai"
TILE_SIZE = 8  # pixels per grid cell in the agent view (7 cells -> 56 px)
VIEW_PIXELS = 56
IMAGE_SIZE = 64  # multiple of 16: 56 padded by 8
MISSION_TOKENS = 16
NUM_ACTIONS = 7  # minigrid Actions: left, right, forward, pickup, drop, toggle, done
DEFAULT_LEVELS = ("GoToRedBall",)
MISSION_KEY, IMAGE_KEY, ACTION_KEY = "mission", "image", "action"

logging.getLogger("minigrid").setLevel(logging.ERROR)


def spec() -> RobotSpec:
    return RobotSpec(
        name="babyai",
        observations=(
            TensorSpec(MISSION_KEY, Kind.TEXT, max_tokens=MISSION_TOKENS, description="the level's mission"),
            TensorSpec(IMAGE_KEY, Kind.IMAGE, (IMAGE_SIZE, IMAGE_SIZE, 3),
                       description=f"agent view, tile {TILE_SIZE}, 56x56 padded to 64x64"),
        ),
        actions=(TensorSpec(ACTION_KEY, Kind.DISCRETE, (1,), num_values=NUM_ACTIONS,
                            description="left, right, forward, pickup, drop, toggle, done"),),
        control_hz=10.0,
    )


def env_id(level: str) -> str:
    return level if level.startswith("BabyAI-") else f"BabyAI-{level}-v0"


def make_env(level: str) -> Any:
    import gymnasium as gym
    import minigrid  # noqa: F401 - registers the BabyAI environments

    return gym.make(env_id(level))


def observe(env: Any, mission: str) -> dict[str, Any]:
    """The policy observation of the env's current state (spec keys)."""
    frame = env.unwrapped.get_frame(highlight=False, tile_size=TILE_SIZE, agent_pov=True)  # (56, 56, 3) uint8
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    image[: frame.shape[0], : frame.shape[1]] = frame
    return {MISSION_KEY: mission, IMAGE_KEY: image}


def expert_episode(env: Any, seed: int) -> tuple[list[dict[str, Any]], list[np.ndarray], list[float], bool]:
    from minigrid.utils.baby_ai_bot import BabyAIBot

    obs, _ = env.reset(seed=seed)
    bot = BabyAIBot(env.unwrapped)
    observations, actions, rewards = [], [], []
    done, reward = False, 0.0
    while not done:
        observations.append(observe(env, obs["mission"]))
        a = int(bot.replan())
        obs, reward, term, trunc, _ = env.step(a)
        actions.append(np.array([a], np.int64))
        rewards.append(float(reward))
        done = term or trunc
    return observations, actions, rewards, bool(term and reward > 0)


def generate(out: str | Path, levels: Sequence[str] = DEFAULT_LEVELS, episodes: int = 100, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> list[Path]:
    """``episodes`` BabyAIBot episodes per level into ``out/<level>/``; deterministic in ``seed``."""
    out, the_spec, paths = Path(out), spec(), []
    for li, level in enumerate(levels):
        env = make_env(level)
        for k in range(episodes):
            s = seed * 1_000_003 + li * 100_000 + k  # distinct, reproducible env seeds per level
            observations, actions, rewards, success = expert_episode(env, s)
            ret = float(sum(rewards))
            meta = {"domain": DOMAIN, "task": level, "seed": s, "success": success, "return": ret,
                    "expert_return": ret, "policy": "BabyAIBot", "steps": len(actions)}
            paths.append(write_control_episode(out / level / f"{level}_seed{s:09d}", the_spec, observations,
                                               actions, rewards, meta))
        env.close()
        if progress:
            progress(f"babyai {level}: {episodes} episodes")
    return paths


def rollout(policy: Policy, level: str, episodes: int, seed: int = 10_000_000) -> RolloutResult:
    """Success rate of ``policy`` on ``episodes`` fresh seeds of ``level`` (held out from the generator's seeds)."""
    env = make_env(level)
    successes, total_return, total_steps, t0 = 0, 0.0, 0, time.perf_counter()
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        state, done = policy.initial_state(), False
        while not done:
            action, state = policy.step(observe(env, obs["mission"]), state)
            a = int(np.clip(np.rint(np.asarray(action).ravel()[0]), 0, NUM_ACTIONS - 1))
            obs, reward, term, trunc, _ = env.step(a)
            total_steps += 1
            done = term or trunc
        successes += int(term and reward > 0)
        total_return += float(reward)
    env.close()
    return RolloutResult(level, episodes, successes, total_return / max(episodes, 1),
                         total_steps / max(episodes, 1), time.perf_counter() - t0)
