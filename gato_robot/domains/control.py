"""Shared pieces of the control domains: writing an episode, Gato's return filter, the rollout protocol.

Episode metadata written by the generators (``gato_robot.data.episodes`` format): ``domain``, ``task`` (the
level or task name), ``seed``, ``success``, ``return``, ``expert_return`` (the expert's own return for
expert episodes), ``policy``, ``steps``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core.specs import RobotSpec
from gato_robot.data.episodes import Episode, write_episode
from gato_robot.runtime.contract import Policy  # the one protocol; re-exported for the domains

# Gato (Sec. 3.1 / appendix): only episodes with return >= 80% of the expert's return are used.
DEFAULT_RETURN_FRACTION = 0.8


def write_control_episode(path: Path, spec: RobotSpec, observations: Sequence[Mapping[str, Any]],
                          actions: Sequence[Any], rewards: Sequence[float], metadata: Mapping[str, Any]) -> Path:
    """One episode (lists of per-step observation mappings and actions) to ``path`` in the HDF5 episode format."""
    obs = {}
    for s in spec.observations:
        values = [o[s.name] for o in observations]
        obs[s.name] = np.asarray(values, dtype=object) if s.kind.value == "text" else np.stack(values)
    act = {spec.actions[0].name: np.stack([np.asarray(a) for a in actions])} if len(spec.actions) == 1 else {
        s.name: np.stack([np.asarray(a[s.name]) for a in actions]) for s in spec.actions}
    ep = Episode(spec, obs, act, np.asarray(rewards, np.float32), dict(metadata))
    return write_episode(path, ep)


def passes_return_filter(metas: Sequence[Mapping[str, Any]], fraction: float = DEFAULT_RETURN_FRACTION) -> list[bool]:
    """Gato's filter over the episodes of ONE task: keep return >= ``fraction`` x the expert's return.

    The expert's return for an episode is its own ``expert_return`` metadata when recorded (the expert's return in
    the same setting: the generators record it, so an expert episode always passes; Meta-World episodes end a few
    steps after success, so returns of different seeds are not comparable); else the mean ``expert_return`` of
    the task's files; else the best return among the task's episodes. Episodes without a ``return`` are kept.
    ``fraction`` 0 keeps everything.
    """
    experts = [float(m["expert_return"]) for m in metas if m.get("expert_return") is not None]
    returns = [float(m["return"]) for m in metas if m.get("return") is not None]
    if fraction <= 0 or not returns:
        return [True] * len(metas)
    task_reference = float(np.mean(experts)) if experts else max(returns)
    keep = []
    for m in metas:
        if m.get("return") is None:
            keep.append(True)
            continue
        ref = float(m["expert_return"]) if m.get("expert_return") is not None else task_reference
        threshold = fraction * ref if ref >= 0 else ref / max(fraction, 1e-9)  # negative returns: 80% as good
        keep.append(float(m["return"]) >= threshold - 1e-9)
    return keep


__all__ = ["DEFAULT_RETURN_FRACTION", "Policy", "RandomPolicy", "RolloutResult", "passes_return_filter", "timed",
           "write_control_episode"]


class RandomPolicy:
    """Uniform random actions of a spec (discrete: uniform over values; continuous: uniform in [low, high]).
    The baseline every rollout evaluation reports beside the trained policy, through the same code."""

    def __init__(self, spec: RobotSpec, seed: int = 0) -> None:
        self.spec, self.seed = spec, seed
        self.low, self.high = (np.asarray(b, np.float64) for b in spec.action_bounds())
        self.discrete = np.concatenate([np.full(a.size, a.kind.value == "discrete") for a in spec.actions])

    def initial_state(self) -> np.random.Generator:
        self.seed += 1
        return np.random.default_rng(self.seed)

    def step(self, observation: Mapping[str, Any], state: np.random.Generator) -> tuple[np.ndarray, Any]:
        cont = state.uniform(self.low, self.high)
        disc = state.integers(self.low.astype(np.int64), self.high.astype(np.int64) + 1)
        return np.where(self.discrete, disc, cont).astype(np.float32), state


@dataclasses.dataclass
class RolloutResult:
    task: str
    episodes: int
    successes: int
    mean_return: float
    mean_steps: float
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.episodes, 1)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "success_rate": self.success_rate}


def timed(fn: Callable[[], tuple[int, float, float]]) -> tuple[int, float, float, float]:
    t0 = time.perf_counter()
    s, r, n = fn()
    return s, r, n, time.perf_counter() - t0
