"""The simulator's policies (the scripted experts, the random floor) and :func:`make_policy`, which names them
and hands every model policy URI (``onnx:``, ``ensemble:``, ``torch:``, ``markov:``) to the one loader,
``gato_robot.runtime.loader.load``. All follow the one protocol, ``gato_robot.runtime.contract.Policy``:
``initial_state()`` and ``step(observation, state) -> (action, state)``, the action a (5,) float32 array in
physical units or a dict ``{"action": array}``."""

from __future__ import annotations

from typing import Any

import numpy as np

from gato_robot.core import specs
from gato_robot.runtime.contract import Policy, check_temperature
from gato_robot.runtime.loader import Memoryless, is_model_uri, load

__all__ = ["EXPERTS", "Memoryless", "Policy", "RandomPolicy", "action_array", "make_policy", "needs_privileged"]


class RandomPolicy:
    """Uniform actions within the spec's bounds (a floor for the benchmark)."""

    def __init__(self, seed: int = 0):
        low, high = specs.rgb_stacking_spec().action_bounds()
        self.low, self.high = np.array(low, np.float32), np.array(high, np.float32)
        self.rng = np.random.default_rng(seed)

    def initial_state(self) -> None:
        return None

    def step(self, observation: dict[str, np.ndarray], state: None) -> tuple[np.ndarray, None]:
        return self.rng.uniform(self.low, self.high).astype(np.float32), state


def action_array(action: Any) -> np.ndarray:
    """Accept both an array and a dict {"action": array} from a policy."""
    if isinstance(action, dict):
        if specs.ACTION_KEY not in action:
            raise ValueError(f"policy returned a dict without {specs.ACTION_KEY!r}: keys {sorted(action)}")
        action = action[specs.ACTION_KEY]
    return np.asarray(action, np.float32)


EXPERTS = ("expert", "feedback-expert")  # privileged experts: the scripted state machine, the state-feedback one


def needs_privileged(name: str) -> bool:
    return name.removeprefix("markov:") in EXPERTS


def make_policy(name: str, seed: int = 0, threads: int | None = None, temperature: float | None = 0.0,
                trusted_key: str | None = None) -> Policy:
    """``expert`` (scripted), ``feedback-expert`` (state feedback, memoryless), ``random``, or a model policy URI
    (``torch:<checkpoint>``, ``onnx:<export dir>``, ``ensemble:<dir>,<dir>[,...]``: ``gato_robot.runtime.loader``);
    ``markov:<any of these>`` restarts it at every step (:class:`Memoryless`). ``temperature`` (model policies):
    0 greedy, above 0 sampled, as Gato acts; None: the model's recommended sampling (its export's
    ``sampling.json``; greedy without one). ``seed`` seeds the draws of each episode (``initial_state``).
    ``threads``: the CPU threads a torch or ONNX policy may use (None: the library's default, all cores)."""
    if temperature is not None:
        check_temperature(temperature)
    if is_model_uri(name):
        return load(name, temperature=temperature, seed=seed, threads=threads, trusted_key=trusted_key)
    if name.startswith("markov:"):
        if temperature:  # a restart re-seeds the draws: every step would draw the same numbers
            raise ValueError("markov:<policy> is greedy only; sample from a model trained with model.markov instead")
        return Memoryless(make_policy(name.split(":", 1)[1], seed, threads))
    if name == "expert":
        from gato_robot.sim.expert import ScriptedExpert

        return ScriptedExpert()
    if name == "feedback-expert":
        from gato_robot.sim.feedback_expert import FeedbackExpert

        return FeedbackExpert()
    if name == "random":
        return RandomPolicy(seed)
    raise ValueError(f"unknown policy {name!r}; use expert, feedback-expert, random, torch:<checkpoint> or "
                     "onnx:<directory> or ensemble:<dir>,<dir>, optionally after markov:")
