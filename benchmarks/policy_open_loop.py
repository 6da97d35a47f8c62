"""Open-loop action error of an exported policy along demonstration episodes, beside two baselines.

    python benchmarks/policy_open_loop.py --model runs/stacking-cpu/onnx \\
        --episodes runs/stack_data/mastery64 --files 3 --steps 250 [--json outputs/open_loop.json]

The policy steps through the episodes' own observations (its history holds its own previous actions, as on the
robot) and each predicted action is compared with the demonstrator's. Baselines: "copy previous action" (the
``proprio/previous_action`` entry of the observation, which is the demonstrator's action one step earlier) and
"zero". A policy whose error is no better than copying the previous action has learned the copycat shortcut
(de Haan et al. 2019, "Causal confusion in imitation learning"): smooth demonstrations make the previous action
an excellent predictor of the next, and closed loop such a policy never corrects its own mistakes.
By default the last ``--files`` episodes in file order (the trainer's held-out split takes the last episodes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gato_robot.core import specs
from gato_robot.data.episodes import list_episodes, read_episode
from gato_robot.runtime.onnx_policy import OnnxPolicy

PREVIOUS_ACTION = specs.PREVIOUS_ACTION_KEY


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported ONNX policy directory")
    p.add_argument("--episodes", required=True, help="episode folder (HDF5, the project's format)")
    p.add_argument("--files", type=int, default=3, help="how many episodes (the last ones in file order)")
    p.add_argument("--steps", type=int, default=250, help="steps per episode")
    p.add_argument("--json", help="write the result here")
    a = p.parse_args(argv)
    policy = OnnxPolicy.from_directory(a.model)
    files = list_episodes(a.episodes)[-a.files:]
    if not files:
        p.error(f"no episodes under {a.episodes}")
    model, copy, zero = [], [], []
    names = None
    for f in files:
        ep = read_episode(f)
        if PREVIOUS_ACTION not in ep.observations:
            p.error(f"{f} has no {PREVIOUS_ACTION} observation")
        key = next(iter(ep.actions))
        names = next(s.names for s in ep.spec.actions if s.name == key)
        state = policy.initial_state()
        for t in range(min(a.steps, len(ep))):
            action, state = policy.step(ep.observation(t), state)
            action = np.asarray(action[key] if isinstance(action, dict) else action, np.float64)
            target = np.asarray(ep.actions[key][t], np.float64)
            model.append(np.abs(action - target))
            copy.append(np.abs(np.asarray(ep.observations[PREVIOUS_ACTION][t], np.float64) - target))
            zero.append(np.abs(target))
    rows = {"policy": np.mean(model, 0), "copy previous action": np.mean(copy, 0), "zero": np.mean(zero, 0)}
    labels = list(names) if names else [f"a{i}" for i in range(len(rows["policy"]))]
    print(f"mean absolute action error over {len(model)} steps of {len(files)} episodes ({a.episodes})")
    print(f"{'':>22}" + "".join(f"{n:>14}" for n in labels))
    for name, err in rows.items():
        print(f"{name:>22}" + "".join(f"{v:>14.4g}" for v in err))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"model": a.model, "episodes": [str(f) for f in files], "steps": len(model),
                                            "dims": labels, **{k: v.tolist() for k, v in rows.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
