"""Does the trainer see what the runtime sees? The trainer's held-out loss (its own data path: episode index,
windows, grasp flags re-derived, dropped observations, evaluation-mode and training-mode patch positions) against
the ONNX runtime's cross entropy of the same episodes' recorded action tokens (the policy's own tokenizer, one
control step at a time, as it acts). With the same weights the two agree if the paths match.

    python benchmarks/train_runtime_loss.py --config runs/RUN/train_config.json --model models/rgb_stacking_mini

``--config``: a run's resolved training configuration (its data, drops and grasp flag); ``--model``: an exported
policy folder (``model.onnx`` and the PyTorch weights), loaded by both sides. The held-out episodes are the run's own
split. The trainer's figure averages ``--batches`` x 32 windows drawn from them, the runtime's every timestep of
them, so they agree to within the windows' sampling (about 1% at the default), not to the last digit.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from gato_robot.data.episodes import EpisodeReader
from gato_robot.runtime.onnx_policy import OnnxPolicy
from gato_robot.training import data, distributed
from gato_robot.training.config import TrainConfig
from gato_robot.training.trainer import Trainer, counted_targets, to_inputs


def runtime_cross_entropy(policy: OnnxPolicy, paths: list[str]) -> tuple[float, int]:
    """Mean cross entropy (nats per action token) of the recorded actions under ``policy``, every timestep."""
    ces = []
    for path in paths:
        reader = EpisodeReader(path)
        episode = reader.read(0, reader.length)
        for t in range(len(episode)):
            ids = policy.tokenizer.tokenize_action(episode.action(t))
            state = policy.initial_state()
            logits, n_obs, state = policy.observe(policy.tokenizer.tokenize_observation(episode.observation(t)),
                                                  state.successor())
            ce = 0.0
            for j, (lo, hi) in enumerate(policy.ranges):
                w = logits[lo - policy.logits_lo: hi - policy.logits_lo].astype(np.float64)
                w -= w.max()
                ce -= w[ids[j] - lo] - np.log(np.exp(w).sum())
                if j + 1 < len(policy.ranges):
                    logits = policy.append_action(int(ids[j]), j, n_obs, state)
            ces.append(ce / len(policy.ranges))
    return float(np.mean(ces)), len(ces)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="a run's train_config.json")
    ap.add_argument("--model", required=True, help="an exported policy folder (model.onnx, model.safetensors)")
    ap.add_argument("--batches", type=int, default=8, help="held-out batches of 32 windows on the trainer's side")
    args = ap.parse_args(argv)

    d = json.loads(Path(args.config).read_text())
    d["run"]["out_dir"] = tempfile.mkdtemp(prefix="train_runtime_loss_")
    d["run"]["eval_batches"] = args.batches
    d["model"]["init_from"] = args.model
    d["model"]["aux_outputs"], d["data"]["aux_extras"] = 0, ""  # the action loss only
    cfg = TrainConfig.from_dict(d)
    trainer = Trainer(cfg, distributed.init("cpu"))
    if trainer.eval_set is None:
        raise SystemExit("the run holds out no episodes (data.eval_fraction)")
    eval_mode = trainer.evaluate()["eval/loss"]

    held_out = trainer.eval_set
    train_mode = copy.copy(held_out)  # the same windows, with patch positions drawn as in training
    train_mode.train = True
    total = count = 0.0
    trainer.model.eval()  # no dropout; the windows' patch positions are drawn as in training
    with torch.no_grad():
        for j in range(args.batches):
            b = data.collate_samples([train_mode[j * 32 + i] for i in range(32)])
            n = counted_targets(b)
            inputs, loss_mask, valid = to_inputs(b, trainer.device)
            total += trainer.model(inputs, loss_mask=loss_mask, valid=valid, return_logits=False).loss.item() * n
            count += n
    paths = [e.path for e in held_out.index.episodes]
    runtime, steps = runtime_cross_entropy(OnnxPolicy(args.model, providers="cpu"), paths)
    print(json.dumps({"held_out_episodes": len(paths), "trainer_windows": args.batches * 32,
                      "trainer_eval_positions": round(eval_mode, 4), "trainer_training_positions": round(total / count, 4),
                      "runtime_timesteps": steps, "runtime_onnx": round(runtime, 4),
                      "relative_difference": round(abs(runtime - eval_mode) / runtime, 4)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
