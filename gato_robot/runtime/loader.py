"""The one loader of model policies from a policy URI, and the wrapper that restarts a policy every step.

URIs: ``onnx:<export dir>``, ``ensemble:<dir>,<dir>[,...]`` (exported policies sampled as one,
``gato_robot.runtime.ensemble``), ``torch:<checkpoint>``, each optionally after ``markov:`` (:class:`Memoryless`).
The simulator's scripted policies (``expert``, ``feedback-expert``, ``random``) are the simulator's
(``gato_robot.sim.policies.make_policy``, which hands every other URI to :func:`load`).

Sampling: ``temperature=None`` takes the model's recommendation (``gato_robot.runtime.contract``: an export's
``sampling.json``; ensembles: the members' when they agree) and is greedy when there is none; a number overrides
it. PyTorch is imported only for ``torch:`` URIs and onnxruntime only for ``onnx:``/``ensemble:``, so this module
imports with neither.
"""

from __future__ import annotations

import os
from typing import Any

from gato_robot.runtime.contract import Policy, Sampling, check_temperature, recommended_sampling

MODEL_KINDS = ("onnx", "ensemble", "torch")


class Memoryless:
    """Any policy restarted from its initial state at every step: it acts on the current observation only.
    ``markov:<policy>`` (e.g. ``markov:onnx:runs/x/onnx``) runs a history model this way, the ablation that
    showed closed-loop latching on its own previous actions (docs/stacking.md, run 8). Greedy only: a restart
    re-seeds the draws, so every step would draw the same numbers."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def initial_state(self) -> None:
        return None

    def step(self, observation: Any, state: None) -> tuple[Any, None]:
        action, _ = self.policy.step(observation, self.policy.initial_state())
        return action, None


def is_model_uri(uri: str) -> bool:
    return uri.removeprefix("markov:").partition(":")[0] in MODEL_KINDS


def recommended_temperature(uri: str) -> float | None:
    """The temperature the model behind ``uri`` recommends, or None (no recommendation; ``markov:`` wrappers and
    ``torch:`` checkpoints carry none; an ensemble's members must agree)."""
    kind, _, rest = uri.partition(":")
    if kind == "onnx":
        found = recommended_sampling(rest)
        return None if found is None else found.temperature
    if kind == "ensemble":
        members = {recommended_temperature(f"onnx:{d}") for d in rest.split(",")}
        return members.pop() if len(members) == 1 else None
    return None


def resolve_temperature(uri: str, temperature: float | None) -> float:
    """``temperature`` checked, or when None the model's recommendation, else 0 (greedy)."""
    if temperature is not None:
        return check_temperature(temperature)
    recommended = recommended_temperature(uri) if is_model_uri(uri) else None
    return 0.0 if recommended is None else recommended


def load(uri: str, *, temperature: float | None = None, seed: int = 0, threads: int | None = None,
         trusted_key: str | os.PathLike | None = None) -> Policy:
    """The model policy named by ``uri`` (module docstring). ``temperature`` None: the model's recommendation
    (:func:`resolve_temperature`); ``seed`` seeds each episode's draws; ``threads``: the CPU threads a torch or
    ONNX policy may use (None: the library's default, all cores; parallel workers must split the cores: two
    workers of two threads each on two cores made an episode 30x slower through the pools' spin-waiting);
    ``trusted_key``: refuse an ONNX model not signed by it. Raises ValueError for an unknown URI, a bad
    temperature or a refused model."""
    if uri.startswith("markov:"):
        inner = uri.split(":", 1)[1]
        if temperature is not None and check_temperature(temperature) > 0:
            raise ValueError("markov:<policy> is greedy only; sample from a model trained with model.markov instead")
        return Memoryless(load(inner, temperature=0.0, seed=seed, threads=threads, trusted_key=trusted_key))
    kind, _, rest = uri.partition(":")
    if kind not in MODEL_KINDS or not rest:
        raise ValueError(f"unknown model policy {uri!r}; use torch:<checkpoint>, onnx:<directory> or "
                         "ensemble:<dir>,<dir>, optionally after markov:")
    sampling = Sampling(resolve_temperature(uri, temperature), seed)
    if kind == "torch":
        try:
            from gato_robot.model.policy import TorchPolicy
        except ImportError as e:
            raise ValueError(f"torch policies need PyTorch (pip install -e .[torch]): {e}") from e
        return TorchPolicy.from_checkpoint(rest, threads=threads, temperature=sampling.temperature, seed=sampling.seed)
    try:
        from gato_robot.runtime.ensemble import EnsemblePolicy
        from gato_robot.runtime.onnx_policy import load_policy
    except ImportError as e:
        raise ValueError(f"onnx policies need onnxruntime (pip install -e .[onnx]): {e}") from e
    if kind == "onnx":
        return load_policy(rest, intra_op_threads=threads or 0, temperature=sampling.temperature,
                           seed=sampling.seed, trusted_key=trusted_key)
    return EnsemblePolicy(rest.split(","), intra_op_threads=threads or 0, temperature=sampling.temperature,
                          seed=sampling.seed, trusted_key=trusted_key)
