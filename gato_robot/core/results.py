"""Reading episode results (stdlib only): one loader for every tool that reads what another wrote.

The benchmark runner (``gato_robot.sim.benchmark``), the stack evaluation (``gato_robot.ros.evaluate``) and the
ROS-path ablation (``benchmarks/ros_path_ablation.py``) all write a JSON object whose ``episodes`` list holds one
entry per episode with at least ``triplet``, ``seed`` and ``success``. Readers (merging, paired comparison, the
learning curve's benchmark points, the demo) take it through :func:`load_results`, so a malformed file is refused
the same way everywhere and an episode is keyed the same way everywhere: by ``(triplet, seed)``, which fixes the
initial layout and the sampling seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EpisodeKey = tuple[str, int]


class ResultsError(ValueError):
    """A file that is not episode results (unreadable, not JSON, missing fields, mixed ablation variants)."""


def load_results(path: str | Path, *, allow_empty: bool = False) -> dict[str, Any]:
    """The results object at ``path`` (a ``results.json`` or a folder holding one), with every episode's
    ``triplet``, ``seed`` and ``success`` checked and normalised to ``str``, ``int`` and ``bool`` (other fields are
    kept). Raises :class:`ResultsError` with the path and the reason."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text())
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        episodes = data["episodes"]
        if not isinstance(episodes, list):
            raise TypeError(f"'episodes' is a {type(episodes).__name__}, not a list")
        normalised = []
        for i, e in enumerate(episodes):
            if not isinstance(e, dict):
                raise TypeError(f"episode {i} is a {type(e).__name__}, not an object")
            normalised.append({**e, "triplet": str(e["triplet"]), "seed": int(e["seed"]), "success": bool(e["success"])})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResultsError(f"{p}: not a results file with episodes ({type(e).__name__}: {e})") from None
    if len({e.get("variant") for e in normalised}) > 1:
        raise ResultsError(f"{p}: episodes of several ablation variants; run the ablation with one --variants")
    if not normalised and not allow_empty:
        raise ResultsError(f"{p}: no episodes")
    keys = [(e["triplet"], e["seed"]) for e in normalised]
    if len(set(keys)) != len(keys):
        raise ResultsError(f"{p}: an episode (triplet, seed) appears twice")
    return {**data, "episodes": normalised}


def outcomes(episodes: list[dict[str, Any]]) -> dict[EpisodeKey, bool]:
    """``{(triplet, seed): success}`` of episodes read by :func:`load_results`."""
    return {(e["triplet"], e["seed"]): e["success"] for e in episodes}
