"""Meta-World (the ``metaworld`` package, MuJoCo): 39-D state, 4-D continuous actions in [-1, 1]; the 50
scripted expert policies of ``metaworld.policies``. MT10 task list by default.

State is CONTINUOUS with mu-law companding (positions in metres, quaternions, goal); the action is CONTINUOUS,
LINEAR on [-1, 1] (no companding, Gato appendix B). Episodes stop ``tail_steps`` after the first success (the
expert keeps acting, so the model also sees what to do at the goal) or at ``max_steps``.

    python -m gato_robot.domains.generate metaworld --tasks reach-v3 --episodes 50 --out data/domains/metaworld
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec
from gato_robot.domains.control import Policy, RolloutResult, write_control_episode

DOMAIN = "metaworld"
MT10 = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3")
STATE_KEY, ACTION_KEY = "state", "action"
STATE_DIM, ACTION_DIM = 39, 4
DEFAULT_MAX_STEPS = 200
DEFAULT_TAIL_STEPS = 10
TASK_LIST_SEED = 0  # MT1 draws its 50 task variations from this seed at construction (else randomly)


def spec() -> RobotSpec:
    return RobotSpec(
        name="metaworld",
        observations=(TensorSpec(STATE_KEY, Kind.CONTINUOUS, (STATE_DIM,), encoding=Encoding.MU_LAW,
                                 description="hand pos, gripper, two object poses, previous frame, goal"),),
        actions=(TensorSpec(ACTION_KEY, Kind.CONTINUOUS, (ACTION_DIM,), encoding=Encoding.LINEAR, low=-1.0, high=1.0,
                            names=("dx", "dy", "dz", "gripper"), description="end-effector delta and gripper"),),
        control_hz=80.0,
    )


def make_env(task: str) -> Any:
    import gymnasium as gym
    import metaworld  # noqa: F401 - registers Meta-World/MT1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make("Meta-World/MT1", env_name=task, seed=TASK_LIST_SEED, disable_env_checker=True)


def expert_policy(task: str) -> Any:
    """The scripted expert of a task, from ``metaworld.policies.ENV_POLICY_MAP`` ('reach-v3' -> SawyerReachV3Policy)."""
    from metaworld.policies import ENV_POLICY_MAP

    if task not in ENV_POLICY_MAP:
        raise ValueError(f"no Meta-World expert policy for task {task!r}; tasks: {sorted(ENV_POLICY_MAP)}")
    return ENV_POLICY_MAP[task]()


def _task_wrapper(env: Any) -> Any:
    while env is not None and not hasattr(env, "tasks"):
        env = getattr(env, "env", None)
    return env


def _reset(env: Any, seed: int) -> np.ndarray:
    """Reset to the task variation (object and goal positions) chosen by ``seed``: MT1's wrapper draws it from its
    own unseeded generator before ``reset(seed=...)`` seeds the env, so the choice is made here instead."""
    wrapper = _task_wrapper(env)
    if wrapper is not None:
        wrapper.toggle_sample_tasks_on_reset(False)
        env.unwrapped.set_task(wrapper.tasks[int(np.random.default_rng(seed).integers(len(wrapper.tasks)))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs, _ = env.reset(seed=seed)
    return np.asarray(obs, np.float64)


def _step(env: Any, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs, reward, term, trunc, info = env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
    return np.asarray(obs, np.float64), float(reward), bool(info.get("success", 0.0) > 0), bool(term or trunc)


def run_episode(env: Any, act: Callable[[np.ndarray], np.ndarray], seed: int, max_steps: int,
                tail_steps: int) -> tuple[list[np.ndarray], list[np.ndarray], list[float], bool]:
    obs = _reset(env, seed)
    states, actions, rewards, success, stop_at = [], [], [], False, max_steps
    for t in range(max_steps):
        action = np.clip(np.asarray(act(obs), np.float64).ravel(), -1.0, 1.0)
        states.append(obs.astype(np.float32))
        actions.append(action.astype(np.float32))
        obs, reward, ok, done = _step(env, action)
        rewards.append(reward)
        if ok and not success:
            success, stop_at = True, min(max_steps, t + 1 + tail_steps)
        if done or t + 1 >= stop_at:
            break
    return states, actions, rewards, success


def generate(out: str | Path, tasks: Sequence[str] = MT10, episodes: int = 20, seed: int = 0,
             max_steps: int = DEFAULT_MAX_STEPS, tail_steps: int = DEFAULT_TAIL_STEPS,
             progress: Callable[[str], None] | None = None) -> list[Path]:
    """``episodes`` expert episodes per task into ``out/<task>/``; deterministic in ``seed``."""
    out, the_spec, paths = Path(out), spec(), []
    for ti, task in enumerate(tasks):
        env, expert = make_env(task), expert_policy(task)
        for k in range(episodes):
            s = seed * 1_000_003 + ti * 100_000 + k
            states, actions, rewards, success = run_episode(env, expert.get_action, s, max_steps, tail_steps)
            ret = float(sum(rewards))
            meta = {"domain": DOMAIN, "task": task, "seed": s, "success": success, "return": ret,
                    "expert_return": ret, "policy": type(expert).__name__, "steps": len(actions)}
            paths.append(write_control_episode(out / task / f"{task}_seed{s:09d}", the_spec,
                                               [{STATE_KEY: x} for x in states], actions, rewards, meta))
        env.close()
        if progress:
            progress(f"metaworld {task}: {episodes} episodes")
    return paths


def rollout(policy: Policy, task: str, episodes: int, seed: int = 10_000_000,
            max_steps: int = DEFAULT_MAX_STEPS) -> RolloutResult:
    """Success rate (Meta-World's ``info['success']`` at any step) of ``policy`` on ``episodes`` fresh seeds."""
    env = make_env(task)
    successes, total_return, total_steps, t0 = 0, 0.0, 0, time.perf_counter()
    for k in range(episodes):
        obs = _reset(env, seed + k)
        state, ret = policy.initial_state(), 0.0
        for _ in range(max_steps):
            action, state = policy.step({STATE_KEY: obs.astype(np.float32)}, state)
            obs, reward, ok, done = _step(env, np.asarray(action, np.float64))
            ret += reward
            total_steps += 1
            if ok:
                successes += 1
                break
            if done:
                break
        total_return += ret
    env.close()
    return RolloutResult(task, episodes, successes, total_return / max(episodes, 1),
                         total_steps / max(episodes, 1), time.perf_counter() - t0)
