"""Action-token sampling restricted to the vocabulary range an action dimension allows (free functions).

Gato samples one token per action dimension (Sec. 2.4). Only ids the action spec can decode are candidates:
[32000, 33024) for a continuous dimension, [32000, 32000 + num_values) for a discrete one
(``Tokenizer.action_token_ranges``). Greedy (temperature 0) by default, as for robot control one wants the mode.
"""

from __future__ import annotations

import torch

from gato_robot.runtime.contract import check_temperature


def restrict(logits: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """(..., V) -> (..., V) with every id outside [lo, hi) at -inf."""
    if not 0 <= lo < hi <= logits.shape[-1]:
        raise ValueError(f"token range [{lo}, {hi}) is empty or outside the vocabulary of {logits.shape[-1]}")
    ids = torch.arange(logits.shape[-1], device=logits.device)
    return logits.masked_fill((ids < lo) | (ids >= hi), float("-inf"))


def sample_in_range(logits: torch.Tensor, lo: int, hi: int, temperature: float = 0.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) int64 ids in [lo, hi): argmax when temperature == 0, else softmax(logits / T)."""
    if not 0 <= lo < hi <= logits.shape[-1]:
        raise ValueError(f"token range [{lo}, {hi}) is empty or outside the vocabulary of {logits.shape[-1]}")
    check_temperature(temperature)
    window = logits[..., lo:hi].float()  # (B, hi - lo)
    if temperature == 0:
        return window.argmax(-1) + lo
    probs = torch.softmax(window / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1) + lo
