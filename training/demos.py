"""Demonstration episodes for tests, benchmarks and smoke runs, in the project's episode format.

``synthetic_episodes`` writes episodes with a learnable rule (the action is a fixed function of the
proprioception, the images show a blob whose position follows it), so a model's loss must fall on them. When the
simulator is installed, ``python -m gato_robot.sim.collect`` writes real scripted-expert demonstrations instead.

``python -m gato_robot.training.demos OUT --episodes 16 --length 40 --image-size 32`` writes synthetic ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec
from gato_robot.data.episodes import Episode, write_episode


def small_spec(image_size: int = 32, cameras: int = 2) -> RobotSpec:
    """Two small cameras, 9 proprioceptive values, a 3-D action (the RGB-stacking layout at a test size)."""
    obs = [TensorSpec(f"camera/{c}", Kind.IMAGE, (image_size, image_size, 3)) for c in "ab"[:cameras]]
    obs += [TensorSpec("proprio/joints", Kind.CONTINUOUS, (7,)), TensorSpec("proprio/gripper", Kind.CONTINUOUS, (2,))]
    act = TensorSpec("action", Kind.CONTINUOUS, (3,), Encoding.LINEAR, low=(-1, -1, -1), high=(1, 1, 1))
    return RobotSpec(name=f"synthetic_{cameras}cam_{image_size}px", observations=tuple(obs), actions=(act,))


def synthetic_episode(spec: RobotSpec, length: int, rng: np.random.Generator, task: str) -> Episode:
    """Joints follow a smooth random walk; action = tanh(joints[:3] * 2) (learnable); images echo the joints."""
    n_img = [s for s in spec.observations if s.kind is Kind.IMAGE]
    joints = np.cumsum(rng.normal(0, 0.15, size=(length, 7)), axis=0).astype(np.float32)
    gripper = np.stack([np.sin(np.arange(length) / 5.0), np.cos(np.arange(length) / 7.0)], 1).astype(np.float32)
    action = np.tanh(joints[:, :3] * 2.0).astype(np.float32)
    obs: dict[str, np.ndarray] = {"proprio/joints": joints, "proprio/gripper": gripper}
    for k, s in enumerate(n_img):
        h, w, _ = s.shape
        img = np.full((length, h, w, 3), 40, np.uint8)
        ys = ((np.tanh(joints[:, k]) + 1) / 2 * (h - 4)).astype(int)
        xs = ((np.tanh(joints[:, k + 1]) + 1) / 2 * (w - 4)).astype(int)
        for t in range(length):
            img[t, ys[t]:ys[t] + 4, xs[t]:xs[t] + 4] = (220, 60 + 40 * k, 30)
        obs[s.name] = img
    (a,) = spec.actions
    return Episode(spec, obs, {a.name: action}, np.zeros(length, np.float32),
                   metadata={"task": task, "success": True, "return": 1.0, "policy": "synthetic", "seed": 0})


def synthetic_episodes(out_dir: str | Path, *, episodes: int = 8, length: int = 30, image_size: int = 32,
                       tasks: int = 2, seed: int = 0) -> list[Path]:
    spec = small_spec(image_size)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    return [write_episode(out / f"episode_{i:05d}.h5", synthetic_episode(spec, length, rng, f"task_{i % tasks}"))
            for i in range(episodes)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write synthetic demonstration episodes (HDF5 episode format).")
    p.add_argument("out")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--tasks", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    paths = synthetic_episodes(a.out, episodes=a.episodes, length=a.length, image_size=a.image_size, tasks=a.tasks,
                               seed=a.seed)
    print(f"wrote {len(paths)} episodes to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
