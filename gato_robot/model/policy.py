"""``TorchPolicy``: runs a Gato model step by step on one robot, with explicit state.

Protocol (shared with the ONNX runtime policy): ``state = policy.initial_state()``, then every control step
``action, state = policy.step(observation, state)``. The state holds the KV cache (the whole history the
model still sees, see ``kv_cache`` for the sliding window), the timestep count and the chosen action tokens.

One control step (layout shared with the ONNX policy, ``gato_robot.core.stepping``) = one cached append of
``[previous step's last action token], observation tokens, '|'``, whose last logits give action dimension 0,
then one single-token append per further dimension (A - 1 of them). The last action token is appended at the
start of the next step (``PolicyState.pending``), so a step costs one prefill and A - 1 decodes, and the cache
ends up holding exactly the training sequence layout.

Prompting (Gato Sec. 4, evaluated with a successful demonstration): ``prompt`` is a ``TokenBlock`` of whole
timesteps, or a list of (observation, action) pairs; it is encoded once and every ``initial_state()`` starts
from a copy of its cache. It slides out of the window like any history once the episode fills the context.

A Markov model (``GatoConfig.markov``) sees no history: every step starts again from that initial cache.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from gato_robot.core import vocab
from gato_robot.core.sequence import TokenBlock, build_episode, collate, windows
from gato_robot.core.specs import RobotSpec
from gato_robot.core.stepping import max_append_for, observation_chunk, pending_token
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.model.embedding import GatoInputs, inputs_from_batch
from gato_robot.model.gato import Gato
from gato_robot.model.kv_cache import KVCache
from gato_robot.model.sampling import sample_in_range
from gato_robot.runtime.contract import CONSUMED_ERROR, Sampling


@dataclasses.dataclass
class PolicyState:
    """Everything a policy remembers between steps. ``step`` updates the cache tensors in place and returns a
    new state sharing them: a state is consumed by ``step`` (``consumed``; stepping it again raises,
    ``gato_robot.runtime.contract``); ``clone()`` it first to branch or replay."""

    cache: KVCache
    timestep: int = 0  # control steps taken since initial_state()
    pending: TokenBlock | None = None  # the previous step's last action token, appended with the next observation
    action_tokens: np.ndarray | None = None  # (A,) int64 vocabulary ids chosen at the last step
    logits: np.ndarray | None = None  # (A, hi - lo) float32 logits over ``TorchPolicy.logits_ids`` (record_logits)
    generator: torch.Generator | None = None  # for temperature > 0
    consumed: bool = False  # set by the step it was passed to

    def clone(self) -> PolicyState:
        gen = None
        if self.generator is not None:
            gen = torch.Generator(self.generator.device)
            gen.set_state(self.generator.get_state())
        return dataclasses.replace(
            self, cache=self.cache.clone(), generator=gen, consumed=False,
            action_tokens=None if self.action_tokens is None else self.action_tokens.copy(),
            logits=None if self.logits is None else self.logits.copy(),
        )


class TorchPolicy:
    """``initial_state()`` / ``step(observation, state) -> (action, state)`` over a ``Gato`` model.

    ``temperature`` 0 is greedy; above 0 samples (seeded by ``seed``, the generator lives in the state).
    ``record_logits`` keeps each step's action logits in ``state.logits`` (for parity checks, e.g. with ONNX).
    """

    def __init__(self, model: Gato, spec: RobotSpec, tokenizer: Tokenizer | None = None,
                 prompt: TokenBlock | Sequence[tuple[Mapping[str, Any], Any]] | None = None,
                 temperature: float = 0.0, device: torch.device | str = "cpu", seed: int = 0,
                 record_logits: bool = False) -> None:
        self.sampling = Sampling(temperature, seed)  # the one check (gato_robot.runtime.contract)
        context = model.config.context
        if spec.max_timestep_tokens + 1 > context:
            raise ValueError(
                f"a timestep of spec {spec.name!r} takes up to {spec.max_timestep_tokens} tokens, too many for the "
                f"model's context of {context}; use a model with a longer context or fewer/smaller images"
            )
        self.model = model.to(device).eval()
        self.spec = spec
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer(spec)
        self.device = torch.device(device)
        self.record_logits = record_logits
        self.ranges = self.tokenizer.action_token_ranges()
        # the head is evaluated only over the ids some action dimension may take
        self.logits_ids = (min(lo for lo, _ in self.ranges), max(hi for _, hi in self.ranges))
        if self.logits_ids[1] > model.config.vocab_size:
            raise ValueError("the tokenizer's action ids exceed the model's vocabulary")
        self.max_append = max_append_for(spec)
        self._prompt = self._prompt_block(prompt)
        self._prompt_cache: KVCache | None = None  # encoded on first initial_state()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: torch.device | str = "cpu", threads: int | None = None,
                        **kw: Any) -> TorchPolicy:
        """``threads``: torch's intra-op CPU threads for this process (None: leave the setting alone)."""
        from gato_robot.model.checkpoint import load_checkpoint, read_checkpoint_config

        if threads is not None:
            torch.set_num_threads(threads)
        model, spec = load_checkpoint(path, device=device)
        if "tokenizer" not in kw:
            kw["tokenizer"] = Tokenizer.from_settings(spec, read_checkpoint_config(path).get("tokenizer"))
        return cls(model, spec, device=device, **kw)

    @property
    def temperature(self) -> float:
        return self.sampling.temperature

    @property
    def seed(self) -> int:
        return self.sampling.seed

    @seed.setter
    def seed(self, seed: int) -> None:  # the next initial_state() draws from it (an episode's seed)
        self.sampling = dataclasses.replace(self.sampling, seed=seed)

    # -- state -------------------------------------------------------------------------------------------
    def initial_state(self) -> PolicyState:
        if self._prompt_cache is None:
            cache = self.model.empty_cache(batch=1, max_append=self.max_append, device=self.device)
            if self._prompt is not None:
                with torch.inference_mode():
                    for piece in windows(self._prompt, self.max_append):  # one or more whole timesteps per append
                        _, cache = self.model.forward_cached(self._inputs(piece), cache)
            self._prompt_cache = cache
        generator = None
        if not self.sampling.greedy:
            generator = torch.Generator(self.device)
            generator.manual_seed(self.sampling.seed)
        return PolicyState(cache=self._prompt_cache.clone(), generator=generator)

    # -- acting ------------------------------------------------------------------------------------------
    def step(self, observation: Mapping[str, Any], state: PolicyState) -> tuple[np.ndarray, PolicyState]:
        """One control step: (flat float32 action in physical units, in spec token order; the next state)."""
        return self.step_tokens(self.tokenizer.tokenize_observation(observation), state)

    def step_tokens(self, observation: TokenBlock, state: PolicyState) -> tuple[np.ndarray, PolicyState]:
        """``step`` for an observation tokenized elsewhere (``Tokenizer.tokenize_observation``: one timestep's
        observation ending with the separator, e.g. from the ROS tokenizer node). Chosen ids: ``state.action_tokens``.
        ``state`` is consumed (the returned state shares its cache tensors)."""
        if state.consumed:
            raise ValueError(CONSUMED_ERROR)
        state.consumed = True
        if self.model.config.markov:  # only this timestep (and a prompt): start again from the initial cache
            if self._prompt is None:  # slots at positions >= pos are masked: rewind, no copy (as OnnxPolicy)
                cache = state.cache._replace(pos=torch.zeros_like(state.cache.pos))
            else:
                cache = self._prompt_cache.clone()
            state = dataclasses.replace(state, cache=cache, pending=None)
        chunk, n_obs = observation_chunk(observation, state.pending)  # n_obs: observation tokens + '|'
        chosen: list[torch.Tensor] = []
        recorded: list[torch.Tensor] = []
        with torch.inference_mode():
            base = self.logits_ids[0]
            logits, cache = self.model.forward_cached(self._inputs(chunk), state.cache, self.logits_ids)
            for j, (lo, hi) in enumerate(self.ranges):
                token = sample_in_range(logits, lo - base, hi - base, self.sampling.temperature, state.generator) + base
                chosen.append(token)  # (1,) vocabulary id
                if self.record_logits:
                    recorded.append(logits[0])
                if j + 1 < len(self.ranges):
                    x = self._action_inputs(token, n_obs + j)
                    logits, cache = self.model.forward_cached(x, cache, self.logits_ids)
        ids = torch.cat(chosen).cpu().numpy().astype(np.int64)
        action = self.tokenizer.detokenize_action(ids)
        new_state = PolicyState(
            cache=cache, timestep=state.timestep + 1, pending=pending_token(ids, n_obs), action_tokens=ids,
            generator=state.generator,
            logits=torch.stack(recorded).float().cpu().numpy() if recorded else None,
        )
        return action, new_state

    # -- helpers -----------------------------------------------------------------------------------------
    def _inputs(self, block: TokenBlock) -> GatoInputs:
        return inputs_from_batch(collate([block]), self.device)  # evaluation: rounded-mean patch positions

    def _action_inputs(self, token: torch.Tensor, local_pos: int) -> GatoInputs:
        d = self.device
        zeros = torch.zeros((1, 1), dtype=torch.long, device=d)
        return GatoInputs(
            tokens=token.view(1, 1), patches=torch.zeros((1, 1, vocab.PATCH_PIXELS), device=d),
            patch_row=zeros, patch_col=zeros, local_pos=torch.full((1, 1), local_pos, dtype=torch.long, device=d),
            is_image=torch.zeros((1, 1), dtype=torch.bool, device=d),
        )

    def _prompt_block(self, prompt: TokenBlock | Sequence[tuple[Mapping[str, Any], Any]] | None) -> TokenBlock | None:
        if prompt is None:
            return None
        if isinstance(prompt, TokenBlock):
            block = prompt
        else:
            pairs = list(prompt)
            if not pairs:
                return None
            block = build_episode(self.tokenizer, [o for o, _ in pairs], [a for _, a in pairs])
        if len(block) == 0:
            return None
        if int(block.local_pos[0]) != 0:
            raise ValueError("a prompt must start at a timestep boundary (local position 0)")
        return block
