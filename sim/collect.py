"""Demo collection: N scripted-expert episodes per triplet, in parallel processes, one HDF5 file per episode
in the project's episode format (gato_robot.data.episodes: gzip-compressed images, checksums, no pickles).

    python -m gato_robot.sim.collect --triplets test --episodes-per-triplet 100 --workers 2 --out data/rgb_demos

Each file holds the policy observations of the spec (images rendered), the clipped actions, the sparse
rewards, metadata (task, triplet, objects, seed, success, return, policy="scripted_expert", success rule)
and the privileged object poses in ``extras/object_poses`` (T, 3, 7), never a policy input.
``--successful-only`` keeps only successful episodes (failed seeds are skipped, not retried). ``--max-steps N``
stops each episode after N steps: short demonstrations of the approach and grasp, more start layouts per CPU
second (the expert reaches red after 40-220 steps and lifts it after 80-260).

Two ways to show a behaviour-cloned policy the states its own mistakes lead to; in both the recorded action is
always the expert's (the label), only the executed action differs:

- ``--action-noise SIGMA`` (DART, Laskey et al. 2017): the env executes the expert's action plus temporally
  correlated Gaussian noise on the motion dimensions (an AR(1) process, correlation 0.9 per 50 ms step, standard
  deviation SIGMA times each limit); the gripper is left alone. The expert, acting from the true state each step,
  demonstrates the recovery.
- ``--dagger onnx:DIR`` (DAgger, Ross et al. 2011): a trained policy drives; at each step the expert's action is
  executed instead with probability ``--dagger-beta``. The expert labels every state the learner visits.
  ``--dagger-temperature 1`` lets the learner sample its actions, as it does when evaluated that way.

    python -m gato_robot.sim.collect --triplets test --episodes-per-triplet 40 --image-size 64 --seed 200000 \
        --dagger onnx:runs/stacking-cpu/onnx --dagger-beta 0.3 --out runs/stack_data/dagger1
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.data.episodes import Episode, EpisodeError, write_episode
from gato_robot.robots import load_embodiment
from gato_robot.runtime.contract import check_temperature
from gato_robot.sim import objects
from gato_robot.sim.env import RgbStackingEnv
from gato_robot.sim.policies import EXPERTS, action_array, make_policy
from gato_robot.sim.rollout import EpisodeResult, Executor, run_episode

EXPERT_LABELS = {"expert": "scripted_expert", "feedback-expert": "feedback_expert"}  # metadata "policy"
NOISE_CORRELATION = 0.9  # AR(1) coefficient of the DART noise per control step (about 0.5 s correlation time)


def noise_executor(env: RgbStackingEnv, sigma: float, seed: int) -> Executor:
    """The expert's action plus AR(1) Gaussian noise of standard deviation ``sigma`` x each motion limit."""
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    scale = sigma * (high - low) / 2
    scale[-1] = 0.0  # the gripper: a random release is not a mistake the policy would make
    rng = np.random.default_rng([seed, 0xDA27])
    noise = np.zeros_like(scale)
    innovation = np.sqrt(1 - NOISE_CORRELATION**2)

    def execute(action: np.ndarray, obs: dict[str, np.ndarray]) -> np.ndarray:
        nonlocal noise
        noise = NOISE_CORRELATION * noise + innovation * scale * rng.standard_normal(scale.shape)
        return np.clip(action + noise, low, high).astype(np.float32)

    return execute


def dagger_executor(learner: Any, beta: float, seed: int) -> Executor:
    """The learner's action, or with probability ``beta`` the expert's. The learner steps every control cycle
    (its context holds every observation), whichever action is executed."""
    rng = np.random.default_rng([seed, 0xDA66])
    state = learner.initial_state()

    def execute(action: np.ndarray, obs: dict[str, np.ndarray]) -> np.ndarray:
        nonlocal state
        learned, state = learner.step(obs, state)
        return action if rng.random() < beta else action_array(learned)

    return execute


def collect_one(triplet: str, seed: int, out: Path, cameras: int, image_size: int,
                successful_only: bool, action_noise: float = 0.0, dagger: str | None = None,
                dagger_beta: float = 0.0, max_steps: int | None = None,
                dagger_temperature: float = 0.0, expert: str = "expert", robot: str = "panda") -> dict[str, Any]:
    if expert not in EXPERTS:
        raise ValueError(f"expert must be one of {EXPERTS}, got {expert!r}")
    env = _env(triplet, cameras, image_size, robot)
    labeller = EXPERT_LABELS[expert]
    execute, executed = None, labeller
    if action_noise > 0:
        execute = noise_executor(env, action_noise, seed)
        executed = f"{labeller} + AR(1) noise, sigma {action_noise} of the limits"
    elif dagger:
        learner = _learner(dagger, dagger_temperature)
        if dagger_temperature > 0:
            learner.seed = seed  # the learner's draws: seeded by the episode
        execute = dagger_executor(learner, dagger_beta, seed)
        sampled = f", sampled at temperature {dagger_temperature:g}" if dagger_temperature > 0 else ""
        executed = f"{dagger} (the expert's action with probability {dagger_beta}{sampled})"
    result = run_episode(env, make_policy(expert), seed, record=True, execute=execute, max_steps=max_steps)
    info = {"triplet": triplet, "seed": seed, "success": result.success, "path": None}
    if successful_only and not result.success:
        return info
    episode = recorded_episode(env, result, triplet, labeller, executed, max_steps)
    try:
        info["path"] = str(write_episode(out / triplet / f"{triplet}_seed{seed:06d}", episode))
    except EpisodeError as e:  # e.g. a physics blow-up left NaN in it: the episode is not written, the rest go on
        info["refused"] = f"{triplet} seed {seed}: {e}"
    return info


def recorded_episode(env: RgbStackingEnv, result: EpisodeResult, triplet: str, policy: str, executed: str,
                     max_steps: int | None = None) -> Episode:
    """A recorded rollout (``run_episode(..., record=True)``) as an episode file's contents: the observations, the
    recorded actions (the labels) and rewards, metadata (``policy``: who labelled, ``executed``: who drove) and the
    privileged object poses as extras."""
    return Episode(
        spec=env.spec_,
        observations={k: np.stack(v) for k, v in result.observations.items()},
        actions={"action": np.stack(result.actions).astype(np.float32)},
        rewards=np.asarray(result.rewards, np.float32),
        metadata={
            "task": "rgb_stacking", "triplet": triplet, "objects": result.objects, "seed": result.seed,
            "success": result.success, "stacked_at_end": result.stacked_at_end, "return": result.episode_return,
            "policy": policy, "success_rule": "stacked for >= 20 consecutive control steps (1 s)",
            "simulator": "pybullet", "control_hz": 20, "executed": executed, "robot": env.embodiment.name,
            **({"max_steps": max_steps} if max_steps else {}),
        },
        extras={"object_poses": np.stack(result.object_poses).astype(np.float32)},
    )


_ENVS: dict[tuple, RgbStackingEnv] = {}


def _env(triplet: str, cameras: int, image_size: int, robot: str = "panda") -> RgbStackingEnv:
    """One env per worker process and configuration, reused across episodes."""
    key = (triplet, cameras, image_size, robot)
    if key not in _ENVS:
        _ENVS[key] = RgbStackingEnv(triplet=triplet, cameras=cameras, image_size=image_size, privileged=True,
                                    robot=robot)
    return _ENVS[key]


_LEARNERS: dict[tuple[str, float], Any] = {}


def _learner(name: str, temperature: float = 0.0) -> Any:
    """One learner per worker process, on one CPU thread: the workers are the parallelism."""
    if (name, temperature) not in _LEARNERS:
        _LEARNERS[name, temperature] = make_policy(name, threads=1, temperature=temperature)
    return _LEARNERS[name, temperature]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triplets", default="test", help="test, all, or comma-separated triplet names")
    ap.add_argument("--episodes-per-triplet", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--expert", default="expert", choices=EXPERTS,
                    help="the labelling expert: expert (the scripted state machine) or feedback-expert (memoryless "
                         "state feedback: its label is a function of the state alone, what behaviour cloning and "
                         "DAgger assume; docs/stacking.md)")
    ap.add_argument("--cameras", type=int, default=2, help="2 (front left/right, as Gato) or 3")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="first seed; episode i of each triplet uses seed + i")
    ap.add_argument("--robot", default="panda",
                    help="the simulated arm: a robot file's name (config/robots: panda, xarm6) or path")
    ap.add_argument("--successful-only", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("data/rgb_stacking_demos"))
    ap.add_argument("--action-noise", type=float, default=0.0, metavar="SIGMA",
                    help="DART: execute the expert's action plus correlated noise of SIGMA x each motion limit")
    ap.add_argument("--dagger", default=None, metavar="POLICY",
                    help="DAgger: this policy (onnx:DIR or torch:CHECKPOINT) drives, the expert labels")
    ap.add_argument("--dagger-beta", type=float, default=0.0,
                    help="DAgger: probability of executing the expert's action at a step (default 0)")
    ap.add_argument("--dagger-temperature", type=float, default=0.0,
                    help="DAgger: the learner samples its actions at this temperature (0: greedy); drive as you evaluate")
    ap.add_argument("--max-steps", type=int, default=None, metavar="N",
                    help="stop each episode after N control steps (short demonstrations of the approach and grasp: "
                         "more start layouts per CPU second; success is then rare)")
    args = ap.parse_args(argv)
    try:
        triplets = objects.expand_triplets(args.triplets)
        if args.episodes_per_triplet < 1 or args.workers < 1:
            raise ValueError("--episodes-per-triplet and --workers must be at least 1")
        if not 0 <= args.action_noise <= 1 or not 0 <= args.dagger_beta <= 1:
            raise ValueError("--action-noise and --dagger-beta must be within [0, 1]")
        if args.max_steps is not None and args.max_steps < 1:
            raise ValueError("--max-steps must be at least 1")
        if args.action_noise > 0 and args.dagger:
            raise ValueError("choose one of --action-noise and --dagger")
        check_temperature(args.dagger_temperature, "--dagger-temperature")  # the policy contract's one check
        if args.dagger and not args.dagger.startswith(("onnx:", "torch:")):
            raise ValueError(f"--dagger takes onnx:DIR or torch:CHECKPOINT, got {args.dagger!r}")
        objects.mesh_files()  # fail here, once, if the mesh wheel is missing
        load_embodiment(args.robot)  # and on a bad robot
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    jobs = [(t, args.seed + i) for t in triplets for i in range(args.episodes_per_triplet)]
    done: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(collect_one, t, s, args.out, args.cameras, args.image_size, args.successful_only,
                               args.action_noise, args.dagger, args.dagger_beta, args.max_steps,
                               args.dagger_temperature, args.expert, args.robot) for t, s in jobs]
        with tqdm(total=len(futures), desc="episodes", unit="ep") as bar:
            for f in as_completed(futures):
                done.append(f.result())
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([d['success'] for d in done]):.0%}")
    for d in done:
        if "refused" in d:
            print(f"not written: {d['refused']}", file=sys.stderr)
    written = sum(d["path"] is not None for d in done)
    print(f"wrote {written} episodes under {args.out} (expert success {np.mean([d['success'] for d in done]):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
