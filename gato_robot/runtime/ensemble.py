"""``EnsemblePolicy``: several exported policies of the same robot spec acting as one (numpy + onnxruntime).

At every action token each member scores the same prefix; the ensemble averages the members' log-probabilities
(a product of experts, renormalised) and samples one token from that at ``temperature``; the chosen token is
appended to every member's cache, so all members see the same history. Same protocol as ``OnnxPolicy``:
``initial_state()`` and ``step(observation, state)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gato_robot.core.sequence import TokenBlock
from gato_robot.core.stepping import softmax_sample
from gato_robot.runtime.contract import CONSUMED_ERROR, Sampling
from gato_robot.runtime.onnx_policy import OnnxPolicy, OnnxPolicyState

__all__ = ["EnsemblePolicy", "EnsembleState"]


@dataclasses.dataclass
class EnsembleState:
    members: list[OnnxPolicyState]
    rng: np.random.Generator | None = None
    timestep: int = 0
    action_tokens: np.ndarray | None = None
    logits: np.ndarray | None = None  # (A, window): the combined log-probabilities the last step sampled from
    consumed: bool = False  # set by the step it was passed to (gato_robot.runtime.contract)

    def successor(self) -> EnsembleState:
        """The state a step works on: new objects sharing the members' buffers; this one is consumed."""
        if self.consumed:
            raise ValueError(CONSUMED_ERROR)
        self.consumed = True
        return dataclasses.replace(self, members=[m.successor() for m in self.members], consumed=False)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64)
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


class EnsemblePolicy:
    """``directories``: exported policy folders of one robot spec (checked); ``weights``: each member's share of
    the mean log-probability (default equal); other keywords (``providers``, ``intra_op_threads``, ...) go to every
    member's ``OnnxPolicy``. ``temperature``/``seed`` as for ``OnnxPolicy``: the ensemble draws, the members score;
    ``temperature`` None: the members' recommendation when they all carry the same one, else greedy."""

    def __init__(self, directories: Sequence[str | os.PathLike], *, temperature: float | None = 0.0, seed: int = 0,
                 weights: Sequence[float] | None = None, **kw: Any) -> None:
        if len(directories) < 2:
            raise ValueError(f"an ensemble needs at least two policies, got {len(directories)}")
        if temperature is not None:  # checked before anything loads
            Sampling(temperature, seed)
        self.members = [OnnxPolicy(d, temperature=temperature, seed=seed, **kw) for d in directories]
        first = self.members[0]
        for m in self.members[1:]:
            if m.spec.to_dict() != first.spec.to_dict() or m.ranges != first.ranges or m.markov != first.markov:
                raise ValueError(f"{m.directory} and {first.directory} differ in robot spec, action ids or memory; "
                                 "an ensemble needs members that read and write the same tokens")
        if first.markov and any(m._prompt is not None for m in self.members):
            raise ValueError("an ensemble of Markov policies takes no prompt")
        w = np.ones(len(self.members)) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (len(self.members),) or (w < 0).any() or w.sum() == 0:
            raise ValueError(f"weights must be {len(self.members)} non-negative numbers, not all 0; got {weights}")
        self.weights = w / w.sum()
        self.spec, self.tokenizer, self.markov, self.ranges = first.spec, first.tokenizer, first.markov, first.ranges
        if temperature is None:
            recommended = {m.recommended for m in self.members}
            temperature = 0.0 if len(recommended) != 1 or None in recommended else recommended.pop().temperature
        self.sampling = Sampling(temperature, seed)

    @property
    def temperature(self) -> float:
        return self.sampling.temperature

    @property
    def seed(self) -> int:
        return self.sampling.seed

    @seed.setter
    def seed(self, seed: int) -> None:  # the next initial_state() draws from it (an episode's seed)
        self.sampling = dataclasses.replace(self.sampling, seed=seed)

    def initial_state(self) -> EnsembleState:
        return EnsembleState(members=[m.initial_state() for m in self.members], rng=self.sampling.rng())

    def step(self, observation: Mapping[str, Any], state: EnsembleState) -> tuple[np.ndarray, EnsembleState]:
        return self.step_tokens(self.tokenizer.tokenize_observation(observation), state)

    def step_tokens(self, observation: TokenBlock, state: EnsembleState) -> tuple[np.ndarray, EnsembleState]:
        """:meth:`step` for a tokenized observation; ``state`` is consumed (the returned state reuses its buffers)."""
        state = state.successor()
        logits = []
        for i, m in enumerate(self.members):
            x, n_obs, state.members[i] = m.observe(observation, state.members[i])
            logits.append(x)
        chosen, combined = [], []
        for j, (lo, hi) in enumerate(self.ranges):
            logp = _log_softmax(sum(w * _log_softmax(x[lo - m.logits_lo: hi - m.logits_lo])
                                    for w, x, m in zip(self.weights, logits, self.members)))
            combined.append(logp)
            chosen.append(lo + softmax_sample(logp, self.sampling.temperature, state.rng))
            if j + 1 < len(self.ranges):
                logits = [m.append_action(chosen[-1], j, n_obs, s) for m, s in zip(self.members, state.members)]
        ids = np.asarray(chosen, np.int64)
        for m, s in zip(self.members, state.members):
            m.finish_step(ids, n_obs, s)
        state.action_tokens, state.logits = ids, np.stack(combined)
        state.timestep += 1
        return self.tokenizer.detokenize_action(ids), state
