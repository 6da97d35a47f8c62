"""RGB stacking: simulated scripted-expert demonstrations (``gato_robot.sim``, PyBullet) and logged robot episodes,
both in the project's HDF5 episode format; images + proprioception, 5-D continuous actions
(``gato_robot.core.specs.rgb_stacking_spec``). Generation and rollouts use the simulator package as it is
(read-only here): ``gato_robot.sim.collect.collect_one`` and ``gato_robot.sim.rollout.run_episode``.

    python -m gato_robot.domains.generate rgb_stacking --tasks rgb_test_triplet1 --episodes 2 --out DIR
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gato_robot.domains.control import Policy, RolloutResult

DOMAIN = "rgb_stacking"
DEFAULT_TRIPLETS = ("rgb_test_triplet1",)


def spec(cameras: int = 2, image_size: int = 64) -> Any:
    from gato_robot.core.specs import rgb_stacking_spec

    return rgb_stacking_spec(cameras, image_size)


def generate(out: str | Path, triplets: Sequence[str] = DEFAULT_TRIPLETS, episodes: int = 2, seed: int = 0,
             cameras: int = 2, image_size: int = 64, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Scripted-expert episodes per triplet via the simulator's collector (one process: tests and benchmarks;
    use ``python -m gato_robot.sim.collect --workers N`` for large sets). Metadata gains ``domain``."""
    from gato_robot.sim.collect import collect_one

    paths = []
    for ti, triplet in enumerate(triplets):
        for k in range(episodes):
            info = collect_one(triplet, seed * 1_000_003 + ti * 100_000 + k, Path(out), cameras, image_size, False)
            if info.get("path"):
                paths.append(Path(info["path"]))
        if progress:
            progress(f"rgb_stacking {triplet}: {episodes} episodes")
    return paths


def rollout(policy: Policy, triplet: str, episodes: int, seed: int = 10_000_000, cameras: int = 2,
            image_size: int = 64) -> RolloutResult:
    from gato_robot.sim.env import RgbStackingEnv
    from gato_robot.sim.rollout import run_episode

    env = RgbStackingEnv(triplet=triplet, cameras=cameras, image_size=image_size)
    successes, total_return, total_steps, t0 = 0, 0.0, 0, time.perf_counter()
    try:
        for k in range(episodes):
            r = run_episode(env, policy, seed + k)  # type: ignore[arg-type]
            successes += int(r.success)
            total_return += r.episode_return
            total_steps += r.steps
    finally:
        env.close()
    return RolloutResult(triplet, episodes, successes, total_return / max(episodes, 1),
                         total_steps / max(episodes, 1), time.perf_counter() - t0)
