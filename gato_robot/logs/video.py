"""An MP4 of a log's camera streams with the actions drawn alongside (and optionally a rerun.io recording).

One frame per control tick of the converted episode (:func:`gato_robot.logs.convert.log_to_episodes`): the
cameras side by side, then a panel with one row per action dimension: a bar of the current value (scaled to the
spec's bounds; green positive, red negative) over the trace of the last ``history`` steps. Drawn with numpy
(no per-frame matplotlib), written with imageio's ffmpeg (H.264, yuv420p: plays everywhere).

``gato-log-video LOG --out video.mp4 [--scale 2] [--rerun rec.rrd]``
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core import specs
from gato_robot.logs import bag
from gato_robot.logs.convert import log_to_episodes

BACKGROUND, AXIS, TRACE = (24, 24, 24), (90, 90, 90), (200, 200, 80)
POSITIVE, NEGATIVE = (60, 190, 90), (210, 70, 60)


def action_panel(actions: np.ndarray, t: int, low: np.ndarray, high: np.ndarray, height: int, width: int,
                 history: int = 40) -> np.ndarray:
    """(height, width, 3) uint8: one row per action dimension, the value at ``t`` as a bar over its recent trace."""
    panel = np.empty((height, width, 3), np.uint8)
    panel[:] = BACKGROUND
    n = actions.shape[1]
    row_h = height // n
    scaled = np.clip(2 * (actions - low) / (high - low) - 1, -1, 1)  # (T, A) in [-1, 1]
    for d in range(n):
        top = d * row_h
        mid = top + row_h // 2
        half = max(row_h // 2 - 2, 1)
        panel[mid, :] = AXIS
        lo = max(0, t - history + 1)
        xs = np.linspace(0, width - 1, history).astype(int)[history - (t + 1 - lo):]
        ys = (mid - scaled[lo:t + 1, d] * half).astype(int)
        panel[np.clip(ys, top, top + row_h - 1), xs] = TRACE
        v = scaled[t, d]
        x0, x1 = sorted((width // 2, int(width // 2 + v * (width // 2 - 1))))
        panel[mid - 2:mid + 3, x0:x1 + 1] = POSITIVE if v >= 0 else NEGATIVE
        panel[top, :] = AXIS
    return panel


def frames(episode: Any, history: int = 40) -> list[np.ndarray]:
    cams = [s.name for s in episode.spec.observations if s.kind is specs.Kind.IMAGE]
    actions = np.asarray(episode.actions[specs.ACTION_KEY], np.float64)
    low, high = (np.asarray(b) for b in episode.spec.action_bounds())
    out = []
    for t in range(len(episode)):
        images = [episode.observations[c][t] for c in cams]
        h = images[0].shape[0]
        out.append(np.concatenate([*images, action_panel(actions, t, low, high, h, h, history)], axis=1))
    return out


def write_video(log: str | os.PathLike, out: str | os.PathLike, *, scale: int = 2, fps: float = 20.0,
                rerun_path: str | os.PathLike | None = None) -> dict[str, Any]:
    import imageio.v2 as imageio

    episodes, report = log_to_episodes(log, keep_incomplete=True)
    if not episodes:
        raise ValueError(f"{log}: no episode to draw ({report.dropped})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with imageio.get_writer(out, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1) as w:
        for e in episodes:
            for f in frames(e):
                w.append_data(np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) if scale > 1 else f)
                n += 1
    result = {"video": str(out), "frames": n, "episodes": len(episodes)}
    if rerun_path is not None:
        result["rerun"] = str(write_rerun(episodes, rerun_path))
    return result


def write_rerun(episodes: Sequence[Any], path: str | os.PathLike) -> Path:
    """A rerun.io recording (.rrd): cameras as images, each action dimension as a scalar series."""
    try:
        import rerun as rr
    except ImportError as e:
        raise ValueError("a rerun recording needs the rerun-sdk package: pip install rerun-sdk") from e
    rr.init("gato_robot_log")
    for e in episodes:
        names = e.spec.actions[0].names or tuple(range(e.spec.action_tokens))
        for t in range(len(e)):
            rr.set_time_seconds("sim_time", float(e.extras["stamp"][t]))
            for s in e.spec.observations:
                if s.kind is specs.Kind.IMAGE:
                    rr.log(s.name, rr.Image(e.observations[s.name][t]))
            for name, v in zip(names, e.actions[specs.ACTION_KEY][t]):
                rr.log(f"action/{name}", rr.Scalar(float(v)))
    rr.save(str(path))
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="gato-log-video", description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--out", required=True, help="output .mp4")
    ap.add_argument("--scale", type=int, default=2, help="pixel repeat factor (128 px cameras are small)")
    ap.add_argument("--rerun", default=None, help="also write a rerun.io .rrd recording here")
    args = ap.parse_args(argv)
    if args.scale < 1:
        ap.error(f"argument --scale: must be a whole number >= 1, got {args.scale}")
    problem = bag.log_path_problem(args.log)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        print(write_video(args.log, args.out, scale=args.scale, rerun_path=args.rerun))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the output cannot be written, or ffmpeg failed
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
