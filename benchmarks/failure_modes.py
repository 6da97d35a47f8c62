"""Where do a policy's episodes fail? The benchmark's episodes, re-run with a per-step trace, each given one label.

    python benchmarks/failure_modes.py --policy onnx:runs/stacking-markov2/onnx --temperature 1 \\
        --episodes 20 --workers 2 --json runs/failure_modes.json

Runs the same episodes as ``gato_robot.sim.benchmark`` with the same arguments (same seeds; a sampling policy's
draws seeded by each episode's seed, as there), so its success column reproduces the benchmark's. From the
privileged state (analysis only: object poses, red's contacts, the gripper) it labels each episode by the last
stage it reached:

- ``success``: the episode rule held (stacked for 1 s);
- ``no_reach``: the tool never came within 5 cm of red;
- ``no_grasp``: reached red, never lifted it 3 cm;
- ``dropped_in_carry``: lifted red, never brought it within 5 cm of blue horizontally while lifted;
- over blue but no success, by what the trace shows after the first time red was over blue:
  - ``stacked_briefly``: the stacking condition held, but never 20 steps in a row;
  - ``held_on_blue``: red rested on blue with the gripper still touching it (the release never came);
  - ``fell_off``: red ended off blue, not held (released beside blue, or slid or toppled off);
  - ``still_carrying``: red still held in the air at the end (hovered, never set down).

Prints a table per triplet, and per label how far red's centre was from blue's (horizontally) when the gripper let
go of it over blue (``release_xy_m``: the feedback expert releases within 1.2 cm), and writes the labels and
per-episode figures to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core import specs
from gato_robot.sim import success
from gato_robot.sim.objects import expand_triplets
from gato_robot.sim.policies import action_array, make_policy
from gato_robot.sim.rollout import LIFTED_M, OVER_M, REACHED_M

LABELS = ("success", "no_reach", "no_grasp", "dropped_in_carry", "stacked_briefly", "held_on_blue", "fell_off",
          "still_carrying")


def trace_episode(env: Any, policy: Any, seed: int, temperature: float) -> dict[str, Any]:
    """One episode with the per-step facts the labels need."""
    if temperature > 0:
        policy.seed = seed  # as sim.benchmark: each episode's draws from its seed
    obs, info = env.reset(seed=seed)
    state = policy.initial_state()
    red_z0 = float(info["object_poses"][0][2])
    rows = []
    done = False
    while not done:
        action, state = policy.step(obs, state)
        obs, _, terminated, truncated, info = env.step(action_array(action))
        done = terminated or truncated
        poses = info["object_poses"]
        red, blue = np.asarray(poses[0][:3]), np.asarray(poses[2][:3])
        c = env.red_contacts()
        rows.append((float(np.linalg.norm(obs[specs.TOOL_POSE_KEY][:3] - red)), float(red[2] - red_z0),
                     float(np.linalg.norm(red[:2] - blue[:2])), float(red[2] - blue[2]), c.blue, c.robot, c.basket,
                     bool(info["stacked"])))
    tool_red, lift, xy, dz, on_blue, robot, basket, stacked = (np.array(col) for col in zip(*rows))
    over = (lift > LIFTED_M) & (xy < OVER_M)
    streak = best = 0
    breaks: Counter[str] = Counter()  # why a stacked streak ended before the 1 s the rule asks for
    for t, s in enumerate(stacked):
        if streak and not s and streak < success.HOLD_STEPS:
            breaks["gripper touches red" if robot[t] else "red off blue" if not on_blue[t] or basket[t]
                   else "red off-centre or low"] += 1
        streak = streak + 1 if s else 0
        best = max(best, streak)
    # the release: the first step after red was first over blue at which the robot no longer touches red;
    # red's horizontal offset from blue's centre just before it (the expert lets go within 1.2 cm)
    release_xy = None
    if over.any():
        first = int(np.argmax(over))
        let_go = np.flatnonzero(robot[first:-1] & ~robot[first + 1:])
        if let_go.size:
            release_xy = round(float(xy[first + int(let_go[0])]), 4)
    if info["success"]:
        label = "success"
    elif not over.any():
        label = ("dropped_in_carry" if (lift > LIFTED_M).any()
                 else "no_grasp" if (tool_red < REACHED_M).any() else "no_reach")
    else:
        after = slice(int(np.argmax(over)), None)
        resting_held = (on_blue[after] & robot[after] & ~basket[after] & (xy[after] < success.MAX_HORIZONTAL_M)
                        & (dz[after] > success.MIN_HEIGHT_M))
        if stacked[after].any():
            label = "stacked_briefly"
        elif resting_held.sum() >= 10:
            label = "held_on_blue"
        elif robot[-1] and not basket[-1] and lift[-1] > LIFTED_M:
            label = "still_carrying"
        else:
            label = "fell_off"
    return {"triplet": env.triplet_name, "seed": seed, "label": label, "success": bool(info["success"]),
            "release_xy_m": release_xy, "longest_stacked_streak": int(best), "streak_breaks": dict(breaks),
            "steps_over_blue": int(over.sum()),
            "steps_held_on_blue": int((on_blue & robot & (xy < success.MAX_HORIZONTAL_M)).sum()),
            "end": {"red_lift_m": round(float(lift[-1]), 4), "red_blue_xy_m": round(float(xy[-1]), 4),
                    "red_touches_robot": bool(robot[-1]), "red_touches_blue": bool(on_blue[-1])}}


def _chunk(policy_name: str, triplet: str, seeds: list[int], temperature: float) -> list[dict[str, Any]]:
    from gato_robot.sim.benchmark import _env_for

    policy = make_policy(policy_name, seed=seeds[0], threads=1, temperature=temperature)
    env = _env_for(policy, policy_name, triplet, True)  # the model's cameras and image size, as the benchmark's
    try:
        return [trace_episode(env, policy, s, temperature) for s in seeds]
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="as sim.benchmark: expert | onnx:DIR | torch:CHECKPOINT ...")
    ap.add_argument("--triplets", default="test")
    ap.add_argument("--episodes", type=int, default=20, help="episodes per triplet")
    ap.add_argument("--seed", type=int, default=0, help="first episode seed")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    triplets = expand_triplets(args.triplets)
    seeds = list(range(args.seed, args.seed + args.episodes))
    size = max(1, -(-args.episodes // max(1, args.workers)))
    chunks = [(t, seeds[i:i + size]) for t in triplets for i in range(0, len(seeds), size)]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_chunk, args.policy, t, s, args.temperature) for t, s in chunks]
        episodes = [e for f in futures for e in f.result()]
    print(f"{args.policy} (temperature {args.temperature:g}), {args.episodes} episodes per triplet from seed {args.seed}")
    header = "| label | " + " | ".join(t.replace("rgb_test_", "") for t in triplets) + " | all | % |"
    print(header + "\n|" + "---|" * (len(triplets) + 3))
    per = {t: Counter(e["label"] for e in episodes if e["triplet"] == t) for t in triplets}
    total = Counter(e["label"] for e in episodes)
    for label in LABELS:
        cells = " | ".join(str(per[t][label]) for t in triplets)
        print(f"| {label} | {cells} | {total[label]} | {100 * total[label] / len(episodes):.0f} |")
    breaks = sum((Counter(e["streak_breaks"]) for e in episodes), Counter())
    if breaks:
        print("stacked streaks shorter than 1 s ended because: " + ", ".join(f"{k} {v}" for k, v in breaks.items()))
    for label in LABELS:
        offsets = [e["release_xy_m"] for e in episodes if e["label"] == label and e["release_xy_m"] is not None]
        if offsets:
            q = np.percentile(offsets, [25, 50, 75]) * 100
            print(f"red released over blue, {label}: {len(offsets)} episodes, red's offset from blue's centre at the "
                  f"release {q[1]:.1f} cm (quartiles {q[0]:.1f}-{q[2]:.1f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"policy": args.policy, "temperature": args.temperature,
                                         "counts": dict(total), "episodes": episodes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
