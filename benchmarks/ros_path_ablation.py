"""Which difference of the ROS 2 path costs a policy its success? Direct episodes with one difference added at a time.

    python benchmarks/ros_path_ablation.py --policy onnx:models/rgb_stacking_mini --temperature 1 \
        --triplets rgb_test_triplet4,rgb_test_triplet5 --episodes 8 --workers 2

Through the ROS 2 stack an action differs from the direct benchmark's in known ways; each variant adds one of them
to the direct episode loop (same seeds, same seeded sampling), so a variant that loses the successes points at
the cause of a mismatch between ``gato_robot.ros.evaluate`` and ``gato_robot.sim.benchmark``:

- ``none``: the direct benchmark's loop (the simulator's default grasp flag: the ROS tokenizer's rule,
  ``core.gripper.GraspDetector``);
- ``rate_limit``: the controller's safety filter: its clamps and per-step change limits (config/stack.yaml). This
  is what the simulated ROS stack does: with the same seeded draws, ``gato_robot.ros.evaluate`` reproduces these
  episodes one for one (``--compare`` it with this variant's ``--out``);
- ``delay``: every command one control step late (a lockstep sim that stepped before the action arrived);
- ``gripper_late``: only the gripper command one step late (arm and gripper are separate topics);
- ``contact_flag``: the simulator's contact test as the grasp flag (both fingers touching one object: turns on a
  step or two before the fingers stop), which no robot reports; data before run 17 was recorded with it;
- ``all``: the safety filter and the delay together.

Prints successes per variant with Wilson 95% intervals. Needs PyBullet and onnxruntime (or torch for torch:).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gato_robot.core.results import ResultsError, load_results, outcomes

VARIANTS = ("none", "rate_limit", "delay", "gripper_late", "contact_flag", "all")
OPEN = np.array([0.0, 0.0, 0.0, 0.0, -255.0])  # what the arm does before the first command: still, gripper open


def episode(job: tuple[str, str, int, str, float, int]) -> tuple[str, str, int, bool]:
    policy_name, triplet, seed, variant, temperature, steps = job
    from gato_robot.ros.stack import controller_filter  # no rclpy: the stack's parameter file
    from gato_robot.sim.benchmark import _env_for
    from gato_robot.sim.policies import action_array, make_policy

    policy = make_policy(policy_name, seed=seed, threads=1, temperature=temperature)
    env = _env_for(policy, policy_name, triplet, True)
    if variant == "contact_flag":
        env.grasp_flag = "contact"
    limit = variant in ("rate_limit", "all")
    delay = variant in ("delay", "all")
    filt = controller_filter(env.action_space.low, env.action_space.high) if limit else None
    success = False
    try:
        obs, _ = env.reset(seed=seed)
        state = policy.initial_state()
        pending = OPEN.copy()
        for k in range(steps):
            action, state = policy.step(obs, state)
            action = np.asarray(action_array(action), np.float64)
            if filt is not None:  # the controller's filter, on sim time (one step = 50 ms)
                action = filt.filter_action(action, 0.05 * k, 0.05 * k).command.values
            executed = action.copy()
            if delay:
                executed = pending.copy()
            elif variant == "gripper_late":
                executed[4] = pending[4]
            pending = action
            obs, _, terminated, truncated, info = env.step(executed.astype(np.float32))
            success = bool(info.get("success", False))  # at the end, as the benchmark runner counts it
            if terminated or truncated:
                break
    finally:
        env.close()
    return variant, triplet, seed, success


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
    p.add_argument("--compare", help="a benchmark results.json of the same policy and temperature: paired counts "
                                     "against its episodes on the same seeds (the 'none' variant reproduces them)")
    p.add_argument("--out", help="write every episode here (JSON)")
    a = p.parse_args(argv)
    from gato_robot.core.stats import exact_mcnemar, wilson_interval
    from gato_robot.sim.objects import expand_triplets

    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    triplets = expand_triplets(a.triplets)
    jobs = [(a.policy, t, a.seed + k, v, a.temperature, a.steps) for v in variants for t in triplets
            for k in range(a.episodes)]
    reference: dict[tuple[str, int], bool] = {}
    if a.compare:  # read before the episodes run: a bad file must not cost them
        try:
            reference = outcomes(load_results(a.compare)["episodes"])
        except ResultsError as e:
            p.error(f"--compare {e}")
    with ProcessPoolExecutor(a.workers) as pool:
        results = list(pool.map(episode, jobs))
    if a.out:
        Path(a.out).write_text(json.dumps({"policy": a.policy, "temperature": a.temperature, "episodes": [
            {"variant": v, "triplet": t, "seed": s, "success": ok} for v, t, s, ok in results]}, indent=1))
    print(f"{a.policy}, temperature {a.temperature}, {', '.join(triplets)}, seeds {a.seed}-{a.seed + a.episodes - 1}")
    for v in variants:
        rows = [(t, s, ok) for name, t, s, ok in results if name == v]
        wins = sum(ok for _, _, ok in rows)
        lo, hi = wilson_interval(wins, len(rows))
        line = f"{v:>13}: {wins}/{len(rows)}  ({100 * lo:.0f}-{100 * hi:.0f}%)"
        paired = [(ok, reference[(t, s)]) for t, s, ok in rows if (t, s) in reference]
        if paired:
            only_v = sum(ok and not ref for ok, ref in paired)
            only_ref = sum(ref and not ok for ok, ref in paired)
            line += (f"; against --compare on the same {len(paired)} seeds: {sum(r for _, r in paired)} there, "
                     f"{only_v} only here, {only_ref} only there (exact McNemar p = {exact_mcnemar(only_v, only_ref):.3f})")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
