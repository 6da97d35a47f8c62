"""Which difference of the ROS 2 path costs a policy its success? Direct episodes with one difference added at a time.

    python benchmarks/ros_path_ablation.py --policy onnx:models/rgb_stacking_mini --temperature 1 \
        --triplets rgb_test_triplet4,rgb_test_triplet5 --episodes 8 --workers 2

Through the ROS 2 stack an action differs from the direct benchmark's in known ways; each variant adds one of them
to the direct episode loop (same seeds, same seeded sampling), so a variant that loses the successes points at
the cause of a mismatch between ``gato_robot.ros.evaluate`` and ``gato_robot.sim.benchmark``:

- ``none``: the direct benchmark's loop;
- ``rate_limit``: the controller's per-step change limits (read from config/stack.yaml);
- ``delay``: every command one control step late (a lockstep sim that stepped before the action arrived);
- ``gripper_late``: only the gripper command one step late (arm and gripper are separate topics);
- ``grasp_flag``: the grasp flag inferred as the ROS tokenizer does (fingers stopped while closing,
  ``wire.gripper_state``) instead of the simulator's contact test;
- ``all``: rate limit, delay and the inferred grasp flag together.

Prints successes per variant with Wilson 95% intervals. Needs PyBullet and onnxruntime (or torch for torch:).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

VARIANTS = ("none", "rate_limit", "delay", "gripper_late", "grasp_flag", "all")
OPEN = np.array([0.0, 0.0, 0.0, 0.0, -255.0])  # what the arm does before the first command: still, gripper open


def controller_max_step() -> np.ndarray:
    """The controller's per-command change limits (vx, vy, vz, yaw rate, gripper) from the stack's parameter file."""
    import yaml

    from gato_robot.ros.stack import default_params_file

    params = yaml.safe_load(default_params_file().read_text())["gato_controller"]["ros__parameters"]
    linear = float(params["max_linear_step"])
    return np.array([linear, linear, linear, float(params["max_yaw_step"]), float(params["max_gripper_step"])])


def episode(job: tuple[str, str, int, str, float, int]) -> tuple[str, bool]:
    policy_name, triplet, seed, variant, temperature, steps = job
    from gato_robot.ros.wire import gripper_state  # numpy only: the ROS tokenizer's grasp flag
    from gato_robot.sim.benchmark import _env_for
    from gato_robot.sim.policies import action_array, make_policy

    policy = make_policy(policy_name, seed=seed, threads=1, temperature=temperature)
    env = _env_for(policy, policy_name, triplet, True)
    limit = variant in ("rate_limit", "all")
    delay = variant in ("delay", "all")
    flag = variant in ("grasp_flag", "all")
    max_step = controller_max_step() if limit else None
    success = False
    try:
        obs, _ = env.reset(seed=seed)
        state = policy.initial_state()
        command, pending = OPEN.copy(), OPEN.copy()
        for _ in range(steps):
            if flag:
                opening, speed, _ = obs["proprio/gripper"]
                obs = dict(obs)  # the sim publishes the opening and its velocity; the tokenizer infers the flag
                obs["proprio/gripper"] = gripper_state(np.array([opening]), np.array([speed]),
                                                       closing=command[4] > 0).astype(np.float32)
            action, state = policy.step(obs, state)
            action = np.asarray(action_array(action), np.float64)
            if limit:
                action = command + np.clip(action - command, -max_step, max_step)
            executed = action.copy()
            if delay:
                executed = pending.copy()
            elif variant == "gripper_late":
                executed[4] = pending[4]
            pending, command = action, action
            obs, _, terminated, truncated, info = env.step(executed.astype(np.float32))
            success = success or bool(info.get("success", False))
            if terminated or truncated:
                break
    finally:
        env.close()
    return variant, success


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="onnx:models/rgb_stacking_mini")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--triplets", default="rgb_test_triplet4,rgb_test_triplet5")
    p.add_argument("--episodes", type=int, default=8, help="episodes per triplet and variant (seeds --seed..)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    from gato_robot.core.stats import wilson_interval
    from gato_robot.sim.objects import expand_triplets

    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    triplets = expand_triplets(a.triplets)
    jobs = [(a.policy, t, a.seed + k, v, a.temperature, a.steps) for v in variants for t in triplets
            for k in range(a.episodes)]
    with ProcessPoolExecutor(a.workers) as pool:
        results = list(pool.map(episode, jobs))
    print(f"{a.policy}, temperature {a.temperature}, {', '.join(triplets)}, seeds {a.seed}-{a.seed + a.episodes - 1}")
    for v in variants:
        wins = [s for name, s in results if name == v]
        lo, hi = wilson_interval(sum(wins), len(wins))
        print(f"{v:>13}: {sum(wins)}/{len(wins)}  ({100 * lo:.0f}-{100 * hi:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
