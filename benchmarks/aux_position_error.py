"""How precisely does a model trained with auxiliary position targets locate the objects in its camera images?

    python benchmarks/aux_position_error.py --checkpoint runs/stacking-aux/checkpoints/step_000006000 \\
        --episodes runs/stack_data/probe [--json outputs/aux_position_error.json]

A model trained with ``data.aux_extras=object_poses`` has a training-only head that regresses the objects'
positions at every timestep's separator, after it has seen that timestep's images and proprioception (the policy
never uses the head). This script runs the model over held-out episodes (training-style windows of the
checkpoint's context, evaluation-mode patch positions) and reports the head's error per object in centimetres:
median, 90th percentile, and the error of always answering the mean position over the episodes (what a model
that does not look would score). The centring and scale come from the checkpoint's own training configuration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gato_robot.model.checkpoint import load_checkpoint
from gato_robot.training import data
from gato_robot.training.config import DataSection
from gato_robot.training.trainer import to_inputs

OBJECTS = ("red", "green", "blue")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a checkpoint directory of a run with data.aux_extras")
    ap.add_argument("--episodes", nargs="+", required=True, help="held-out episode folders (with extras)")
    ap.add_argument("--sequences", type=int, default=200, help="windows drawn from the episodes")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    ckpt = Path(args.checkpoint)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    section = DataSection(**{k: v for k, v in state["config"]["data"].items() if k.startswith("aux_")})
    aux = data.AuxTargets.from_config(section)
    if aux is None:
        raise SystemExit(f"{ckpt}: trained without data.aux_extras: no auxiliary head to measure")
    model, _ = load_checkpoint(ckpt)
    if model.aux_head is None:
        raise SystemExit(f"{ckpt}: the model has no auxiliary head")
    drop = tuple(state["config"]["data"].get("drop_observations", ()))
    index = data.EpisodeIndex.build(args.episodes, max_damaged=0, drop_observations=drop)
    ds = data.WindowDataset(index, context=model.config.context, seed=0, stream=data.EVAL_STREAM, train=False,
                            prompt_fraction=0.0, aux=aux)
    preds, targets = [], []
    with torch.inference_mode():
        for start in range(0, args.sequences, 16):
            batch = data.collate_samples([ds[i] for i in range(start, min(start + 16, args.sequences))])
            inputs, _, _ = to_inputs(batch, torch.device("cpu"))
            mask = batch["aux_mask"]
            preds.append(model.aux_predictions(model.states(inputs), mask).numpy())
            targets.append(batch["aux"][mask].numpy())
    k = aux.take
    pred = np.concatenate(preds).reshape(-1, len(OBJECTS), k) * aux.scale  # metres, centred
    true = np.concatenate(targets).reshape(-1, len(OBJECTS), k) * aux.scale
    err = np.linalg.norm(pred - true, axis=-1) * 100  # cm, per object
    blind = np.linalg.norm(true - true.mean(axis=0), axis=-1) * 100
    result = {"checkpoint": str(ckpt), "episodes": args.episodes, "timesteps": int(err.shape[0]), "objects": {}}
    print(f"{err.shape[0]} timesteps from {len(index)} episodes; auxiliary head's position error (cm):")
    axes = "xyz"[:k]  # world axes: x away from the robot base (depth for the front cameras), y across, z up
    print(f"{'object':8s} {'median':>8s} {'p90':>8s} {'blind median':>13s}   median |error| per axis")
    for j, name in enumerate(OBJECTS):
        per_axis = np.median(np.abs(pred[:, j] - true[:, j]), axis=0) * 100
        row = {"median_cm": float(np.median(err[:, j])), "p90_cm": float(np.percentile(err[:, j], 90)),
               "blind_median_cm": float(np.median(blind[:, j])),
               "axis_median_abs_cm": {a: float(v) for a, v in zip(axes, per_axis)}}
        result["objects"][name] = row
        print(f"{name:8s} {row['median_cm']:8.2f} {row['p90_cm']:8.2f} {row['blind_median_cm']:13.2f}   "
              + " ".join(f"{a} {v:.2f}" for a, v in zip(axes, per_axis)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
