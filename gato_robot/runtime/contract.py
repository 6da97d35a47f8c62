"""The policy contract, owned once: the :class:`Policy` protocol, the validated :class:`Sampling` setting and a
model's recommended sampling (standard library and numpy only: no torch, no onnxruntime).

Every policy (``TorchPolicy``, ``OnnxPolicy``, ``EnsemblePolicy``, :class:`Memoryless`, the simulator's scripted
experts and random policy) implements ``state = policy.initial_state()`` and, every control step,
``action, state = policy.step(observation, state)`` (rgb_stacking's policy protocol; shared/reference/style.md 3).

**State ownership.** ``step`` returns the next state, a new object; the state passed in is *consumed*: the
model policies share its cache buffers and random generator with the state they return (no per-step copy of the
KV cache, CUDA graphs replay on fixed buffers), so it must not be stepped again. Stepping a consumed state
raises ``ValueError`` (:data:`CONSUMED_ERROR`) instead of acting on a cache the step overwrote; ``clone()`` a
state before stepping it to branch or replay. Callers always use the returned state.

**Sampling.** One setting, :class:`Sampling` (temperature 0: greedy, the argmax token; above 0: a draw from
softmax(logits / T) seeded by ``seed`` at every ``initial_state()``), validated by :func:`check_temperature`,
the one place a temperature is checked and the one error message (:data:`TEMPERATURE_ERROR`).

**Recommendation.** An exported model may carry the sampling it was evaluated at: ``sampling.json``
(``{"temperature": 1.0}``), a file its manifest lists and hashes, so an edited recommendation is refused like an
edited weight (and signed with the rest). It is a file and not a bound manifest field so that a model exported
before it (the shipped ``rgb_stacking_mini``, identified by its ``model.onnx`` sha256 in the report ledger) gains
one without a change to its graph. No file: no recommendation (entry points then decode greedily).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

SAMPLING_FILE = "sampling.json"  # an exported model's recommended sampling, listed in its manifest's files
TEMPERATURE_ERROR = "{what} must be a finite number >= 0 (0: greedy; above 0: sampled), got {value!r}"
CONSUMED_ERROR = ("this policy state was consumed by an earlier step (it shares buffers with the state that step "
                  "returned); step the returned state, or clone() a state before stepping it to branch or replay")


@runtime_checkable
class Policy(Protocol):
    """``initial_state()`` and ``step(observation, state) -> (action, state)``; the action a flat float32 array in
    physical units (or a dict ``{"action": array}`` from a scripted policy). The state passed to ``step`` is
    consumed (module docstring)."""

    def initial_state(self) -> Any: ...

    def step(self, observation: Any, state: Any) -> tuple[Any, Any]: ...


def check_temperature(value: Any, what: str = "temperature") -> float:
    """``value`` as a float temperature, or ValueError (:data:`TEMPERATURE_ERROR`): a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(TEMPERATURE_ERROR.format(what=what, value=value))
    t = float(value)
    if not math.isfinite(t) or t < 0:
        raise ValueError(TEMPERATURE_ERROR.format(what=what, value=value))
    return t


def parse_temperature(text: str, what: str = "temperature") -> float:
    """A temperature given as text (a command line or launch argument), checked as :func:`check_temperature`."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(TEMPERATURE_ERROR.format(what=what, value=text)) from None
    return check_temperature(value, what)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How a policy picks action tokens: ``temperature`` 0 greedy, above 0 sampled; ``seed`` seeds the draws of
    every ``initial_state()`` (an episode)."""

    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def rng(self) -> np.random.Generator | None:
        """A fresh numpy generator for one episode's draws, or None when greedy."""
        return None if self.greedy else np.random.default_rng(self.seed)


def read_recommendation(directory: str | os.PathLike, manifest: dict[str, Any]) -> Sampling | None:
    """The sampling an exported model recommends (:data:`SAMPLING_FILE`), or None when its manifest lists none.
    ``manifest`` must already be verified (``verify_manifest``: the file's sha256). A malformed file raises
    ``ModelIntegrityError`` naming it."""
    from gato_robot.core.manifest import ModelIntegrityError

    files = manifest.get("files")
    if not isinstance(files, dict) or SAMPLING_FILE not in files:
        return None
    path = Path(directory) / SAMPLING_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelIntegrityError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict) or "temperature" not in data or set(data) - {"temperature", "note"}:
        raise ModelIntegrityError(f'{path}: expected {{"temperature": T}} (and an optional "note"), got {data!r:.80}')
    try:
        return Sampling(check_temperature(data["temperature"], f"{SAMPLING_FILE} field 'temperature'"))
    except ValueError as e:
        raise ModelIntegrityError(f"{path}: {e}") from e


def recommended_sampling(directory: str | os.PathLike) -> Sampling | None:
    """:func:`read_recommendation` of an export directory, its manifest verified first (sha256 of every file)."""
    from gato_robot.core.manifest import verify_manifest

    return read_recommendation(directory, verify_manifest(directory))


def write_recommendation(directory: str | os.PathLike, temperature: float, note: str = "") -> str:
    """Write :data:`SAMPLING_FILE` into an export directory (before its manifest is written); return its name."""
    data: dict[str, Any] = {"temperature": check_temperature(temperature)}
    if note:
        data["note"] = note
    (Path(directory) / SAMPLING_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return SAMPLING_FILE
