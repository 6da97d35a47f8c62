"""Optional hooks that need other packages: the simulated benchmark and the ONNX export (both imported lazily).

- Simulated benchmark: ``gato_robot.sim.benchmark.run("torch:<checkpoint>", triplets, episodes, workers, out, seed,
  video_episodes=0)`` over the five test triplets; its per-triplet rows become ``success_<triplet>`` and
  ``success_mean`` scalars. Skipped, with a notice, when the simulator (PyBullet) is not installed.
- ONNX export: ``gato_robot.model.export.export_onnx(checkpoint_dir, out_dir)`` writes the policy and its
  manifest. When it cannot be imported the caller is told that ONNX export is unavailable and why.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

SIM_MODULE, SIM_FUNCTION = "gato_robot.sim.benchmark", "run"
EXPORT_MODULE, EXPORT_FUNCTION = "gato_robot.model.export", "export_onnx"


class ExportUnavailable(RuntimeError):
    """The ONNX exporter (or its dependencies: onnx, onnxscript) cannot be imported here."""


def _function(module: str, name: str) -> tuple[object | None, str]:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return None, f"{module} cannot be imported ({e})"
    fn = getattr(mod, name, None)
    if not callable(fn):
        return None, f"{module} has no function {name}()"
    return fn, ""


def sim_benchmark_available() -> tuple[bool, str]:
    fn, why = _function(SIM_MODULE, SIM_FUNCTION)
    return fn is not None, why


def run_sim_benchmark(checkpoint_dir: str | os.PathLike, *, episodes: int, seed: int,
                      triplets: str = "test", temperature: float = 0.0) -> dict[str, float] | None:
    """Success rates of the simulated benchmark for a checkpoint, or None when unavailable or failing (logged)."""
    fn, why = _function(SIM_MODULE, SIM_FUNCTION)
    if fn is None:
        log.info("simulated benchmark skipped: %s", why)
        return None
    try:
        from gato_robot.sim.objects import expand_triplets

        workers = max(1, min(4, os.cpu_count() or 1))  # the training step waits: use the cores
        rows = fn(f"torch:{checkpoint_dir}", expand_triplets(triplets), episodes, workers,  # type: ignore[operator]
                  Path(checkpoint_dir) / "sim_benchmark", seed, video_episodes=0, temperature=temperature)
    except Exception as e:  # the benchmark must never take the training run down
        log.warning("simulated benchmark failed on %s: %s: %s", checkpoint_dir, type(e).__name__, e)
        return None
    return {f"success_{r['triplet']}": float(r["success_rate"]) for r in rows
            if isinstance(r, Mapping) and "success_rate" in r}


def export_onnx(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Export the ONNX policy and its manifest from a model checkpoint; raises ExportUnavailable with the reason."""
    fn, why = _function(EXPORT_MODULE, EXPORT_FUNCTION)
    if fn is None:
        raise ExportUnavailable(f"ONNX export unavailable: {why}; install the exporter with pip install -e '.[export]'")
    try:
        out = fn(str(checkpoint_dir), str(out_dir))  # type: ignore[operator]
    except ImportError as e:  # onnx / onnxruntime are imported inside the exporter
        raise ExportUnavailable(f"ONNX export unavailable: {e}; install with pip install -e '.[export,onnx]'") from e
    return Path(out) if out is not None else Path(out_dir)
