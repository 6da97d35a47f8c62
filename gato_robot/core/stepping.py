"""The token layout of one control step, shared by the PyTorch and the ONNX policy (numpy only).

A step appends one chunk ``[previous step's last action token], observation tokens, '|'`` to the model's
cache; the separator's logits give action dimension 0; each further dimension is one single-token append
of the token just chosen. The last action token waits (``pending``) and opens the next step's chunk, so
the cache always holds exactly the training layout ``obs | a0 .. a(A-1) obs | ...`` and a step costs one
prefill plus A - 1 single-token decodes.
"""

from __future__ import annotations

import numpy as np

from gato_robot.core import vocab
from gato_robot.core.sequence import TokenBlock
from gato_robot.core.specs import RobotSpec


def max_append_for(spec: RobotSpec) -> int:
    """Largest cache append a policy makes: a whole prompt timestep, or [pending action token, observation, '|']."""
    return spec.max_timestep_tokens + 1


def observation_chunk(observation: TokenBlock, pending: TokenBlock | None) -> tuple[TokenBlock, int]:
    """(chunk to append, n) for a tokenized observation (``Tokenizer.tokenize_observation``: observation tokens
    and the separator); n is its length, the local position of the first action token."""
    if len(observation) == 0 or int(observation.tokens[-1]) != vocab.SEPARATOR:
        raise ValueError("an observation block must end with the separator '|'")
    chunk = observation if pending is None else TokenBlock.concatenate([pending, observation])
    return chunk, len(observation)


def action_token(token: int, local_pos: int) -> TokenBlock:
    """A chosen action token as a one-token block at its local position."""
    block = TokenBlock.single(int(token), vocab.TokenKind.ACTION, loss=True)
    block.local_pos[:] = local_pos
    return block


def pending_token(ids: np.ndarray, n_obs: int) -> TokenBlock:
    """The step's last action token, to be appended at the start of the next step."""
    return action_token(int(ids[-1]), n_obs + len(ids) - 1)


def softmax_sample(logits: np.ndarray, temperature: float, rng: np.random.Generator | None) -> int:
    """Index into ``logits`` (1-D): argmax when temperature == 0, else a draw from softmax(logits / T)."""
    if temperature == 0 or rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(p.shape[0], p=p / p.sum()))
