"""Does a stacking policy see where the red object is? Open-loop heading towards red during the approach.

    python benchmarks/policy_perception.py --model runs/stacking-dagger2/onnx --episodes runs/stack_data/probe \\
        --reference runs/stack_data/mastery64 [--json outputs/perception.json]

The policy steps through expert demonstrations (images and proprioception; its history holds its own actions, as
on the robot). At the steps of the approach where the expert travels towards red (before the tool first comes
within 5 cm of red; the expert moving horizontally faster than 1 cm/s, its heading within 45 degrees of red: not
pushing blue over first, not adjusting above the grasp) each commanded horizontal velocity (vx, vy) is compared with
the true direction from the tool to red, read from the privileged object poses the collector stores in
``extras/object_poses`` (never a policy input). Reported: the mean cosine and the share of steps within 45 degrees,
for the policy and for two blind baselines that see nothing but the tool's position: one heads for red's average
start position over the ``--reference`` episodes, the other keeps going away from the tool's average start
position (the expert travels roughly straight, so where the tool already is tells where it is heading). A policy
that does no better than the blind baselines is not locating red in its camera images.

Open loop, a policy with history can also read the expert's heading off its inputs instead of the images: from
``proprio/previous_action`` (the copycat shortcut), or from the change of the tool pose between the timesteps in its
context. ``--no-history`` starts every step from an empty context (one timestep: no motion to read), so only
what the current images and proprioception say about red's direction remains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gato_robot.core import specs
from gato_robot.data.episodes import EpisodeReader, list_episodes, read_episode
from gato_robot.runtime.onnx_policy import OnnxPolicy

TOOL = specs.TOOL_POSE_KEY
REACHED_M = 0.05  # the benchmark's "reached red" radius
MIN_SPEED = 0.01  # m/s: the expert moves horizontally


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 1e-9)


def mean_starts(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Red's and the tool's average start positions (x, y) over ``files``."""
    eps = []
    for f in files:  # the first timestep only (checksummed): not 400 steps of images per episode
        with EpisodeReader(f) as r:
            eps.append(r.read(0, 1))
    return (np.mean([e.extras["object_poses"][0, 0, :2] for e in eps], axis=0),
            np.mean([e.observations[TOOL][0, :2] for e in eps], axis=0))


def approach_steps(ep) -> np.ndarray:
    """Indices of the approach: before the tool first comes within REACHED_M of red, expert moving horizontally."""
    tool = np.asarray(ep.observations[TOOL][:, :3], np.float64)
    red = np.asarray(ep.extras["object_poses"][:, 0, :3], np.float64)
    near = np.nonzero(np.linalg.norm(tool - red, axis=1) < REACHED_M)[0]
    end = int(near[0]) if near.size else len(tool)
    speed = np.linalg.norm(np.asarray(ep.actions["action"][:end, :2], np.float64), axis=1)
    return np.nonzero(speed > MIN_SPEED)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported ONNX policy directory")
    p.add_argument("--episodes", required=True, help="expert episodes the policy was not trained on")
    p.add_argument("--reference", required=True, help="training episodes: red's average position for the baseline")
    p.add_argument("--files", type=int, default=0, help="at most this many episodes (0: all)")
    p.add_argument("--no-history", action="store_true", help="an empty context at every step (one timestep)")
    p.add_argument("--json", help="write the result here")
    a = p.parse_args(argv)
    files = list_episodes(a.episodes)
    files = files[:a.files] if a.files else files
    if not files:
        p.error(f"no episodes under {a.episodes}")
    reference = list_episodes(a.reference)
    if not reference:
        p.error(f"no episodes under {a.reference}")
    try:
        red_avg, tool_start = mean_starts(reference)
    except KeyError as e:
        p.error(f"--reference episodes need extras/object_poses and {TOOL} (gato_robot.sim.collect): missing {e}")
    policy = OnnxPolicy.from_directory(a.model, providers="cpu")
    cos: dict[str, list[float]] = {"policy": [], "blind (average red position)": [], "blind (on from the start)": []}
    for f in files:
        ep = read_episode(f)
        if "object_poses" not in ep.extras:
            p.error(f"{f} has no extras/object_poses: use episodes from gato_robot.sim.collect")
        steps = set(approach_steps(ep).tolist())
        if not steps:
            continue
        state = policy.initial_state()
        for t in range(max(steps) + 1):
            if a.no_history:
                if t not in steps:
                    continue
                state = policy.initial_state()
            action, state = policy.step(ep.observation(t), state)
            if t not in steps:
                continue
            action = np.asarray(action["action"] if isinstance(action, dict) else action, np.float64)
            tool = np.asarray(ep.observations[TOOL][t, :2], np.float64)
            to_red = _unit(np.asarray(ep.extras["object_poses"][t, 0, :2], np.float64) - tool)
            if float(_unit(np.asarray(ep.actions["action"][t, :2], np.float64)) @ to_red) < np.cos(np.pi / 4):
                continue  # the expert is doing something else here
            cos["policy"].append(float(_unit(action[:2]) @ to_red))
            cos["blind (average red position)"].append(float(_unit(red_avg - tool) @ to_red))
            cos["blind (on from the start)"].append(float(_unit(tool - tool_start) @ to_red))
    rows = {k: {"mean_cosine": float(np.mean(v)), "within_45deg": float(np.mean(np.asarray(v) > np.cos(np.pi / 4)))}
            for k, v in cos.items()}
    n = len(cos["policy"])
    print(f"heading towards red during the approach: {n} steps of {len(files)} episodes ({a.episodes})")
    print(f"{'':>30}{'mean cosine':>14}{'within 45 deg':>15}")
    for k, r in rows.items():
        print(f"{k:>30}{r['mean_cosine']:>14.3f}{100 * r['within_45deg']:>14.1f}%")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"model": a.model, "episodes": a.episodes, "steps": n,
                                            "no_history": a.no_history, **rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
