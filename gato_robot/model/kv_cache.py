"""The key/value cache for step-by-step inference: fixed capacity, sliding window, plain tensors.

Context-full policy: a sliding window, as Gato's deployment (Transformer-XL-style memory). Every query attends
to at most the last ``window`` tokens (itself included), during training over long sequences (``Gato.forward``
with ``window=``) and at inference alike. Why:

- Gato has no global position encoding (only local positions inside a timestep), so a key never needs to know
  where it sits: tokens evicted from the window need no re-indexing and the cache can be a ring buffer.
- Per-step cost is constant: every step attends over the same ``capacity`` slots. Re-encoding the last
  ``context`` tokens when the window fills gives a latency spike (a full 1024-token forward) every few steps,
  which a 20 Hz controller cannot absorb.
- Fixed shapes: the cache is ``k, v (L, B, H, S, hd)`` and one int64 scalar ``pos`` (tokens seen so far), so
  an ONNX export takes them as explicit inputs/outputs with batch 1 and fixed S; slot validity, causality and
  the window are arithmetic on ``pos`` (no Python branching on values).

Ring layout (gpt-fast style, write then attend): the token with absolute index a lives in slot a % S. An append
of n tokens at absolute positions pos .. pos+n-1 first writes their keys/values to slots (pos + i) % S, then the
n queries attend over all S slots under ``attention_mask``; after the write, slot s holds absolute index
``last - ((last - s) mod S)`` with last = pos + n - 1 (negative: never written). A query needs the keys of the
``window`` tokens up to itself, so the capacity is ``S = window + max_append - 1``: the write never evicts a key
that the chunk's first query still needs. Keys need no order (attention has no position term), so nothing is
ever shifted; one buffer per layer is updated in place, which is also what ONNX Runtime's fused attention does
with a shared past/present buffer.

Shape legend: L layers, B batch, H heads, S capacity (window + max_append - 1), hd head dim, n new tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class KVCache(NamedTuple):
    """Keys and values of the last ``S`` tokens of every layer, and how many tokens the sequence has seen.

    ``Gato.forward_cached`` writes the new keys into ``k``/``v`` in place and returns a cache with ``pos``
    advanced: the returned cache shares storage with the one passed in (no 2 x L x S x D copy per token). Use
    ``clone()`` to branch.
    """

    k: torch.Tensor  # (L, B, H, S, hd)
    v: torch.Tensor  # (L, B, H, S, hd)
    pos: torch.Tensor  # () int64: tokens appended so far (all of them, not only those still in the window)

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def clone(self) -> KVCache:
        return KVCache(self.k.clone(), self.v.clone(), self.pos.clone())

    def to(self, device: torch.device | str) -> KVCache:
        return KVCache(self.k.to(device), self.v.to(device), self.pos.to(device))


def empty_cache(n_layer: int, batch: int, n_head: int, capacity: int, head_dim: int,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> KVCache:
    shape = (n_layer, batch, n_head, capacity, head_dim)
    return KVCache(
        k=torch.zeros(shape, device=device, dtype=dtype),
        v=torch.zeros(shape, device=device, dtype=dtype),
        pos=torch.zeros((), device=device, dtype=torch.long),
    )


def capacity_for(window: int, max_append: int) -> int:
    """Slots a cache needs so that appends of up to ``max_append`` tokens keep every key inside the window."""
    return window + max_append - 1


def write_slots(pos: torch.Tensor, n: int, capacity: int) -> torch.Tensor:
    """(n,) slots that the n tokens appended at ``pos`` go to."""
    return torch.remainder(pos + torch.arange(n, device=pos.device), capacity)


def slot_positions(pos: torch.Tensor, n: int, capacity: int) -> torch.Tensor:
    """(S,) absolute index held by each slot once n tokens are written at ``pos``; negative for empty slots."""
    last = pos + n - 1
    return last - torch.remainder(last - torch.arange(capacity, device=pos.device), capacity)


def attention_mask(pos: torch.Tensor, n: int, capacity: int, window: int) -> torch.Tensor:
    """(n, S) bool, True where new query i (absolute pos + i) may attend to slot s (after the write)."""
    q = (pos + torch.arange(n, device=pos.device)).unsqueeze(1)  # (n, 1) absolute query positions
    k = slot_positions(pos, n, capacity).unsqueeze(0)  # (1, S)
    return (k >= 0) & (k <= q) & (k > q - window)


def banded_causal_mask(t: int, window: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, T) bool: query i sees keys j with i - window < j <= i (the full-sequence reference of the cache)."""
    i = torch.arange(t, device=device)
    return (i.unsqueeze(0) <= i.unsqueeze(1)) & (i.unsqueeze(0) > i.unsqueeze(1) - window)
