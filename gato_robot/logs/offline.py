"""Offline use of logs: the token stream a log gives the tokenizer, and a policy evaluated on a log's observations.

``token_stream_sha256``: convert a log (:func:`gato_robot.logs.convert.log_to_episodes`), tokenize every timestep
(observation then action, as training does) and hash ids, kinds, positions and patch values: replaying a log
must give the same stream every time (safety.md scenario 12).

``evaluate_policy``: step a policy (``initial_state()`` / ``step(observation, state)``, PyTorch or ONNX; history
kept across steps, reset per episode) on each logged observation and compare its action with the logged one:
per-dimension mean absolute error, action-token accuracy (the logged action tokenized with the spec's bins vs
the policy's ``state.action_tokens``), and a PNG of predicted vs logged actions over time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core import specs
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.data.episodes import Episode
from gato_robot.logs.convert import log_to_episodes


def episode_tokens(episode: Episode, tokenizer: Tokenizer) -> Iterable[bytes]:
    for t in range(len(episode)):
        block = tokenizer.tokenize_observation(episode.observation(t))
        yield block.tokens.astype("<i8").tobytes()
        yield block.kinds.astype("u1").tobytes()
        yield block.local_pos.astype("<i8").tobytes()
        yield block.patches.astype("<f4").tobytes()
        yield tokenizer.tokenize_action(episode.actions[specs.ACTION_KEY][t]).astype("<i8").tobytes()


def token_stream_sha256(log: str | os.PathLike, spec: specs.RobotSpec | None = None) -> tuple[str, int]:
    """(sha256 hex, number of timesteps) of the token stream of every episode of ``log``."""
    episodes, _ = log_to_episodes(log, spec)
    h = hashlib.sha256()
    steps = 0
    for e in episodes:
        tokenizer = Tokenizer(e.spec)
        for part in episode_tokens(e, tokenizer):
            h.update(part)
        steps += len(e)
    return h.hexdigest(), steps


def evaluate_policy(policy: Any, log: str | os.PathLike, plot: str | os.PathLike | None = None) -> dict[str, Any]:
    """Per-dimension action error and token accuracy of ``policy`` on a log; optionally a PNG plot."""
    episodes, report = log_to_episodes(log)
    if not episodes:
        raise ValueError(f"{log}: no convertible episode ({report.dropped}); nothing to evaluate")
    tokenizer = Tokenizer(episodes[0].spec)
    predicted, logged, hits, total = [], [], 0, 0
    for e in episodes:
        state = policy.initial_state()
        for t in range(len(e)):
            action, state = policy.step(e.observation(t), state)
            want = np.asarray(e.actions[specs.ACTION_KEY][t], np.float64)
            predicted.append(np.asarray(action, np.float64).ravel())
            logged.append(want)
            tokens = np.asarray(state.action_tokens).ravel()
            hits += int(np.count_nonzero(tokens == tokenizer.tokenize_action(want.astype(np.float32))))
            total += tokens.size
    pred, real = np.stack(predicted), np.stack(logged)
    names = list(episodes[0].spec.actions[0].names or range(pred.shape[1]))
    mae = np.mean(np.abs(pred - real), axis=0)
    result = {"log": str(log), "steps": int(pred.shape[0]), "episodes": len(episodes),
              "mae": {str(n): float(v) for n, v in zip(names, mae)},
              "token_accuracy": hits / max(total, 1), "dropped": report.dropped}
    if plot is not None:
        result["plot"] = str(plot_actions(pred, real, names, plot))
    return result


def plot_actions(predicted: np.ndarray, logged: np.ndarray, names: list[Any], path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = predicted.shape[1]
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.6 * n), sharex=True)
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.plot(logged[:, i], label="logged", lw=1.2)
        ax.plot(predicted[:, i], label="policy", lw=1.0, ls="--")
        ax.set_ylabel(str(names[i]), fontsize=8)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper right")
    np.atleast_1d(axes)[-1].set_xlabel("step (20 Hz)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
