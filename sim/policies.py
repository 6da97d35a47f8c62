"""Policies for the simulator, behind the project's protocol: ``initial_state()`` and
``step(observation, state) -> (action, state)``, the action a (5,) float32 array in physical units or a dict
``{"action": array}``. PyTorch and ONNX policies are imported lazily from their own packages."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from gato_robot.core import specs


class Policy(Protocol):
    def initial_state(self) -> Any: ...

    def step(self, observation: dict[str, np.ndarray], state: Any) -> tuple[Any, Any]: ...


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


class Memoryless:
    """Any policy restarted from its initial state at every step: it acts on the current observation only.
    ``markov:<policy>`` (e.g. ``markov:onnx:runs/x/onnx``) runs a history model this way, the ablation that
    showed closed-loop latching on its own previous actions (docs/stacking.md, run 8)."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def initial_state(self) -> None:
        return None

    def step(self, observation: dict[str, np.ndarray], state: None) -> tuple[Any, None]:
        action, _ = self.policy.step(observation, self.policy.initial_state())
        return action, None


def make_policy(name: str, seed: int = 0, threads: int | None = None, temperature: float = 0.0) -> Policy:
    """``expert`` (scripted), ``feedback-expert`` (state feedback, memoryless), ``random``, ``torch:<checkpoint>``,
    ``onnx:<export dir>`` or ``ensemble:<dir>,<dir>[,...]`` (exported policies sampled as one, a product of experts
    per action token: ``gato_robot.runtime.ensemble``); ``markov:<any of these>`` restarts
    it at every step (:class:`Memoryless`). ``temperature`` (model policies): 0 greedy, above 0 sampled, as Gato
    acts; ``seed`` seeds the draws of each episode (``initial_state``). ``threads``: the CPU threads a torch
    or ONNX policy may use (None: the library's default, all cores). Parallel workers must split the cores: with
    two workers of two threads each on two cores, the thread pools' spin-waiting made an episode 30x slower."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if name.startswith("markov:"):
        if temperature > 0:  # a restart re-seeds the draws: every step would draw the same numbers
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
    if name.startswith("torch:"):
        try:
            from gato_robot.model.policy import TorchPolicy
        except ImportError as e:
            raise ValueError(
                f"torch policies need gato_robot.model.policy.TorchPolicy and PyTorch (pip install -e .[torch]): {e}"
            ) from e
        return TorchPolicy.from_checkpoint(name.split(":", 1)[1], threads=threads, temperature=temperature, seed=seed)
    if name.startswith("onnx:"):
        try:
            from gato_robot.runtime.onnx_policy import OnnxPolicy
        except ImportError as e:
            raise ValueError(
                f"onnx policies need gato_robot.runtime.onnx_policy.OnnxPolicy and onnxruntime "
                f"(pip install -e .[onnx]): {e}"
            ) from e
        return OnnxPolicy.from_directory(name.split(":", 1)[1], intra_op_threads=threads or 0,
                                         temperature=temperature, seed=seed)
    if name.startswith("ensemble:"):  # ensemble:DIR1,DIR2[,...]: exported policies averaged per action token
        from gato_robot.runtime.ensemble import EnsemblePolicy

        return EnsemblePolicy(name.split(":", 1)[1].split(","), intra_op_threads=threads or 0,
                              temperature=temperature, seed=seed)
    raise ValueError(f"unknown policy {name!r}; use expert, feedback-expert, random, torch:<checkpoint> or "
                     "onnx:<directory> or ensemble:<dir>,<dir>, optionally after markov:")
