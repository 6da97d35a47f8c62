"""Re-execute a logged episode's actions in the simulator from its initial state and report the divergence.

Initial state: the simulator has no state save/restore across processes, but its episodes are reproducible from
``env.reset(seed=...)`` (a fresh world per reset). The recorder stores ``seed`` (the sim node's seed parameter
+ the episode number) and ``triplet`` in the episode metadata; here the environment is re-created with them,
the initial observation is compared with the log's first (``initial`` divergence: a non-zero one means the seed
or triplet does not reproduce the logged start), then every logged action is applied and each logged observation
compared with the simulator's: tool position error (m), joint angle error (rad), and the step at which the tool
error first exceeds ``threshold_m``. Physics is deterministic in one process; across machines it may drift.

``gato-log-sim-replay LOG [--threshold 0.01] [--json out.json]``
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from gato_robot.core import specs
from gato_robot.logs import bag
from gato_robot.logs.convert import cli_error, log_to_episodes


def replay_in_sim(log: str | os.PathLike, *, threshold_m: float = 0.01, seed: int | None = None) -> dict[str, Any]:
    """Divergence per episode of ``log`` (``seed`` overrides the metadata's)."""
    from gato_robot.sim.env import RgbStackingEnv  # lazily: pybullet

    episodes, report = log_to_episodes(log)
    out: dict[str, Any] = {"log": str(log), "episodes": [], "dropped": report.dropped}
    for e in episodes:
        meta = e.metadata
        s = seed if seed is not None else meta.get("seed")
        if s is None:
            out["episodes"].append({"episode": meta.get("episode"), "error": "no seed in the episode metadata"})
            continue
        cameras = [k.name[len(specs.CAMERA_PREFIX):] for k in e.spec.observations if k.kind is specs.Kind.IMAGE]
        env = RgbStackingEnv(triplet=meta.get("triplet") or "rgb_test_triplet1", cameras=cameras,
                             image_size=e.spec.observations[0].shape[0], render_images=False)
        try:
            obs, _ = env.reset(seed=int(s))
            tool_err, joint_err = [], []
            for t in range(len(e)):
                tool_err.append(float(np.linalg.norm(obs[specs.TOOL_POSE_KEY][:3]
                                                     - e.observations[specs.TOOL_POSE_KEY][t][:3])))
                joint_err.append(float(np.max(np.abs(obs[specs.JOINT_ANGLES_KEY]
                                                     - e.observations[specs.JOINT_ANGLES_KEY][t]))))
                obs, _, _, _, info = env.step(e.actions[specs.ACTION_KEY][t])
        finally:
            env.close()
        tool, joint = np.array(tool_err), np.array(joint_err)
        over = np.flatnonzero(tool > threshold_m)
        out["episodes"].append({
            "episode": meta.get("episode"), "seed": int(s), "triplet": meta.get("triplet"), "steps": len(e),
            "initial_tool_error_m": float(tool[0]), "initial_joint_error_rad": float(joint[0]),
            "tool_error_m": {"mean": float(tool.mean()), "max": float(tool.max()), "final": float(tool[-1])},
            "joint_error_rad": {"mean": float(joint.mean()), "max": float(joint.max())},
            "diverged_at_step": int(over[0]) if over.size else None,
            "logged_success": bool(meta.get("success")), "replayed_success": bool(info["success"]),
        })
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="gato-log-sim-replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--threshold", type=float, default=0.01, help="tool position error counted as diverged (m)")
    ap.add_argument("--seed", type=int, default=None, help="override the episode metadata's reset seed")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        ap.error(f"argument --threshold: must be a positive distance in metres, got {args.threshold}")
    problem = bag.log_path_problem(args.log)
    if problem:
        return cli_error(problem, 2)
    try:
        result = replay_in_sim(args.log, threshold_m=args.threshold, seed=args.seed)
        text = json.dumps(result, indent=1)
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                f.write(text)
    except (OSError, ValueError) as e:
        return cli_error(f"{type(e).__name__}: {e}", 1)
    if not result["episodes"]:
        return cli_error(f"{args.log}: no episode to replay (dropped: {result['dropped']})", 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
