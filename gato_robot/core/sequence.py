"""Sequences of tokens: timesteps in the paper's order, loss masks, positions, windows and batches.

A timestep is ``[observation tokens..., '|', action tokens...]`` (Gato, Sec. 2.1 / Fig. 2). Per token we
keep its vocabulary id, its kind (:class:`~gato_robot.core.vocab.TokenKind`), its local position (index
inside its timestep: observation tokens, the separator and each action dimension get their own), whether
it is a loss target (text and actions only), and its timestep index. Image patches travel beside the ids:
the k-th IMAGE token of a block is ``patches[k]``.

Shapes: N tokens in a block, P image patches in it, B sequences in a batch, T padded length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gato_robot.core import vocab

if TYPE_CHECKING:  # the tokenizer imports this module; avoid the cycle at run time
    from gato_robot.core.tokenizer import Tokenizer

TokenKind = vocab.TokenKind
_P = vocab.PATCH_SIZE


@dataclasses.dataclass
class TokenBlock:
    """A run of tokens with their side information (numpy, one or many timesteps)."""

    tokens: np.ndarray  # (N,) int64 vocabulary ids; IMAGE_PLACEHOLDER at patch positions
    kinds: np.ndarray  # (N,) uint8 TokenKind
    local_pos: np.ndarray  # (N,) int64 index inside the timestep, < MAX_TOKENS_PER_TIMESTEP
    loss_mask: np.ndarray  # (N,) bool, True where the token is a training target
    timestep: np.ndarray  # (N,) int64 timestep index inside the episode
    patches: np.ndarray  # (P, 16, 16, 3) float32 in [-0.25, 0.25]
    patch_rows: np.ndarray  # (P, 2) int64 [lo, hi) in 128 position bins
    patch_cols: np.ndarray  # (P, 2) int64

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    # -- constructors ------------------------------------------------------------------------------------
    @staticmethod
    def empty() -> TokenBlock:
        return TokenBlock(
            np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, bool),
            np.zeros(0, np.int64), np.zeros((0, _P, _P, 3), np.float32), np.zeros((0, 2), np.int64),
            np.zeros((0, 2), np.int64),
        )

    @staticmethod
    def of_tokens(ids: np.ndarray, kind: TokenKind, loss: bool = False) -> TokenBlock:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        n = ids.shape[0]
        b = TokenBlock.empty()
        b.tokens = ids
        b.kinds = np.full(n, kind, np.uint8)
        b.local_pos = np.zeros(n, np.int64)
        b.loss_mask = np.full(n, loss, bool)
        b.timestep = np.zeros(n, np.int64)
        return b

    @staticmethod
    def single(token: int, kind: TokenKind, loss: bool = False) -> TokenBlock:
        return TokenBlock.of_tokens(np.array([token]), kind, loss)

    @staticmethod
    def of_patches(patches: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> TokenBlock:
        b = TokenBlock.of_tokens(np.full(patches.shape[0], vocab.IMAGE_PLACEHOLDER), TokenKind.IMAGE)
        b.patches = patches.astype(np.float32, copy=False)
        b.patch_rows = np.asarray(rows, np.int64)
        b.patch_cols = np.asarray(cols, np.int64)
        return b

    @staticmethod
    def concatenate(blocks: Sequence[TokenBlock]) -> TokenBlock:
        if not blocks:
            return TokenBlock.empty()
        return TokenBlock(**{
            f.name: np.concatenate([getattr(b, f.name) for b in blocks]) for f in dataclasses.fields(TokenBlock)
        })

    # -- views -------------------------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return int(self.patches.shape[0])

    def slice(self, start: int, stop: int) -> TokenBlock:
        """Tokens [start, stop), with the patches that belong to them."""
        is_img = self.kinds == TokenKind.IMAGE
        p0 = int(is_img[:start].sum())
        p1 = p0 + int(is_img[start:stop].sum())
        return TokenBlock(
            self.tokens[start:stop], self.kinds[start:stop], self.local_pos[start:stop],
            self.loss_mask[start:stop], self.timestep[start:stop], self.patches[p0:p1],
            self.patch_rows[p0:p1], self.patch_cols[p0:p1],
        )

    def timestep_starts(self) -> np.ndarray:
        """Token indices where a new timestep begins (local position 0)."""
        return np.flatnonzero(self.local_pos == 0)

    def describe(self) -> list[tuple[str, int, int]]:
        """Runs of equal kind as (kind name, first index, length): the token layout, for humans."""
        runs: list[tuple[str, int, int]] = []
        for i, k in enumerate(self.kinds):
            name = TokenKind(int(k)).name.lower()
            if runs and runs[-1][0] == name and runs[-1][1] + runs[-1][2] == i:
                runs[-1] = (name, runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((name, i, 1))
        return runs


# ----------------------------------------------------------------------------------------------------------
# Building timesteps and episodes
# ----------------------------------------------------------------------------------------------------------
def action_block(tokenizer: Tokenizer, action: Any, first_local_pos: int, *, loss: bool = True) -> TokenBlock:
    """Action tokens with their local positions (continuing after the separator)."""
    ids = tokenizer.tokenize_action(action)
    b = TokenBlock.of_tokens(ids, TokenKind.ACTION, loss=loss)
    b.local_pos = first_local_pos + np.arange(len(b), dtype=np.int64)
    return b


def build_timestep(
    tokenizer: Tokenizer,
    observation: Mapping[str, Any],
    action: Any | None = None,
    *,
    t: int = 0,
    text_targets: bool = True,
    action_targets: bool = True,
) -> TokenBlock:
    """``[observation..., '|', action...]`` for timestep ``t``; without ``action`` it ends at the separator."""
    obs = tokenizer.tokenize_observation(observation, text_targets=text_targets)
    parts = [obs]
    if action is not None:
        parts.append(action_block(tokenizer, action, len(obs), loss=action_targets))
    block = TokenBlock.concatenate(parts)
    block.timestep[:] = t
    return block


def build_episode(
    tokenizer: Tokenizer,
    observations: Sequence[Mapping[str, Any]],
    actions: Sequence[Any],
    *,
    first_timestep: int = 0,
    text_targets: bool = True,
) -> TokenBlock:
    """All timesteps of an episode, in time order."""
    if len(observations) != len(actions):
        raise ValueError(f"episode has {len(observations)} observations but {len(actions)} actions")
    return TokenBlock.concatenate([
        build_timestep(tokenizer, o, a, t=first_timestep + i, text_targets=text_targets)
        for i, (o, a) in enumerate(zip(observations, actions))
    ])


# ----------------------------------------------------------------------------------------------------------
# Windows and batches
# ----------------------------------------------------------------------------------------------------------
def windows(block: TokenBlock, context_len: int = vocab.DEFAULT_CONTEXT_LENGTH) -> list[TokenBlock]:
    """Split a long sequence into consecutive pieces of at most ``context_len`` tokens.

    Cuts fall at timestep boundaries; only a single timestep longer than the context is cut inside
    (then at exactly ``context_len`` tokens), since nothing else would fit.
    """
    if context_len <= 0:
        raise ValueError("context_len must be positive")
    starts = sorted({0, *block.timestep_starts().tolist(), len(block)})
    out: list[TokenBlock] = []
    begin = 0
    while begin < len(block):
        # the furthest timestep boundary within reach
        reach = [s for s in starts if begin < s <= begin + context_len]
        end = reach[-1] if reach else begin + context_len
        out.append(block.slice(begin, end))
        begin = end
    return out


def last_window(block: TokenBlock, context_len: int = vocab.DEFAULT_CONTEXT_LENGTH) -> TokenBlock:
    """The most recent whole timesteps that fit in ``context_len`` tokens (e.g. a prompt's tail)."""
    if len(block) <= context_len:
        return block
    starts = block.timestep_starts()
    fit = starts[starts >= len(block) - context_len]
    start = int(fit[0]) if fit.size else len(block) - context_len
    return block.slice(start, len(block))


def patch_position_index(intervals: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Choose one index per [lo, hi) interval: uniform inside it in training (``rng``), else the rounded mean."""
    intervals = np.asarray(intervals, dtype=np.int64)
    lo, hi = intervals[..., 0], intervals[..., 1]
    if rng is not None:
        idx = lo + np.floor(rng.random(lo.shape) * (hi - lo)).astype(np.int64)
    else:
        idx = np.floor((lo + hi - 1) / 2.0 + 0.5).astype(np.int64)
    return np.clip(idx, 0, vocab.PATCH_POSITION_BINS - 1)


@dataclasses.dataclass
class Batch:
    """Dense, right-padded model inputs (numpy). Position t's logits predict ``tokens[t+1]``, counted in the
    loss where ``loss_mask[t+1] & valid[t+1]`` (the paper's masked loss)."""

    tokens: np.ndarray  # (B, T) int64
    patches: np.ndarray  # (B, T, 768) float32, (row, col, channel) order per patch; 0 at non-image positions
    patch_row: np.ndarray  # (B, T) int64 chosen row position bin in [0, 128)
    patch_col: np.ndarray  # (B, T) int64
    local_pos: np.ndarray  # (B, T) int64
    is_image: np.ndarray  # (B, T) bool
    loss_mask: np.ndarray  # (B, T) bool
    valid: np.ndarray  # (B, T) bool, False on padding

    def as_dict(self) -> dict[str, np.ndarray]:
        """The arrays by name (no copies; ``dataclasses.asdict`` would deep-copy each one)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def collate(
    blocks: Iterable[TokenBlock], context_len: int | None = None, rng: np.random.Generator | None = None
) -> Batch:
    """Pad sequences to a common length (``context_len``, or the longest) into a :class:`Batch`.

    ``rng``: training mode, patch positions sampled inside their intervals; ``None``: evaluation mode,
    the rounded interval mean (Gato appendix C.2).
    """
    blocks = list(blocks)
    if not blocks:
        raise ValueError("collate needs at least one sequence")
    longest = max(len(b) for b in blocks)
    t_len = longest if context_len is None else context_len
    if longest > t_len:
        raise ValueError(f"a sequence has {longest} tokens, more than context_len={t_len}; use windows() first")
    n = len(blocks)
    out = Batch(
        tokens=np.zeros((n, t_len), np.int64),
        patches=np.zeros((n, t_len, vocab.PATCH_PIXELS), np.float32),
        patch_row=np.zeros((n, t_len), np.int64),
        patch_col=np.zeros((n, t_len), np.int64),
        local_pos=np.zeros((n, t_len), np.int64),
        is_image=np.zeros((n, t_len), bool),
        loss_mask=np.zeros((n, t_len), bool),
        valid=np.zeros((n, t_len), bool),
    )
    for i, b in enumerate(blocks):
        m = len(b)
        out.tokens[i, :m] = b.tokens
        out.local_pos[i, :m] = b.local_pos
        out.loss_mask[i, :m] = b.loss_mask
        out.valid[i, :m] = True
        img = np.flatnonzero(b.kinds == TokenKind.IMAGE)
        out.is_image[i, img] = True
        out.patches[i, img] = b.patches.reshape(b.num_patches, vocab.PATCH_PIXELS)
        out.patch_row[i, img] = patch_position_index(b.patch_rows, rng)
        out.patch_col[i, img] = patch_position_index(b.patch_cols, rng)
    return out
