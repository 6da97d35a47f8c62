"""Non-control samples as token blocks, and any block as the trainer's sample dict.

A text document or an image-text pair is a "timestep" without a separator or action (project choice, issue 8):
- text: SentencePiece tokens, every one a loss target; a chunk longer than the 512 local positions is split
  into consecutive pseudo-timesteps of at most 512 tokens (local position = index inside the piece);
- caption: the image's patches (never targets) then the caption (targets); VQA: patches, the question
  (context, not a target) and the answer (targets). One timestep, local positions 0..N-1 (< 512).
Control episodes come from ``gato_robot.core.sequence.build_episode`` as before.
"""

from __future__ import annotations

import numpy as np

from gato_robot.core import vocab
from gato_robot.core.sequence import TokenBlock, collate
from gato_robot.core.tokenizer import patchify

TokenKind = vocab.TokenKind
SAMPLE_KEYS = ("tokens", "pixels", "patch_row", "patch_col", "local_pos", "is_image", "loss_mask", "valid", "domain")


def text_block(ids: np.ndarray, *, piece: int = vocab.MAX_TOKENS_PER_TIMESTEP) -> TokenBlock:
    """Text tokens, all targets, cut into pseudo-timesteps of ``piece`` tokens (local positions < 512)."""
    b = TokenBlock.of_tokens(np.asarray(ids, np.int64), TokenKind.TEXT, loss=True)
    idx = np.arange(len(b), dtype=np.int64)
    b.local_pos, b.timestep = idx % piece, idx // piece
    return b


def image_text_block(image: np.ndarray, context_ids: np.ndarray | None, target_ids: np.ndarray,
                     max_tokens: int) -> TokenBlock:
    """``[image patches][context text][target text]`` as one timestep of at most ``max_tokens`` tokens (the target
    text is truncated to fit); loss on the target text only."""
    patches, rows, cols = patchify(image)
    parts = [TokenBlock.of_patches(patches, rows, cols)]
    room = max_tokens - patches.shape[0]
    if context_ids is not None and len(context_ids):
        ctx = np.asarray(context_ids, np.int64)[: max(0, room - 1)]
        parts.append(TokenBlock.of_tokens(ctx, TokenKind.TEXT, loss=False))
        room -= len(ctx)
    if room <= 0:
        raise ValueError(f"an image of {patches.shape[0]} patches leaves no room for text in {max_tokens} tokens")
    parts.append(TokenBlock.of_tokens(np.asarray(target_ids, np.int64)[:room], TokenKind.TEXT, loss=True))
    block = TokenBlock.concatenate(parts)
    block.local_pos = np.arange(len(block), dtype=np.int64)
    return block


def to_sample(block: TokenBlock, context: int, rng: np.random.Generator | None, domain_id: int) -> dict[str, np.ndarray]:
    """A block (<= ``context`` tokens) as the trainer's per-sequence arrays (``training.data.WindowDataset``'s
    layout: uint8 pixels, patch positions sampled with ``rng`` in training, rounded means when ``None``)."""
    b = collate([block], context, rng)
    pixels = np.zeros(b.patches[0].shape, np.uint8)
    img = b.is_image[0]
    # exact inverse of patchify's scaling (see training.data._pixels / patches_to_float)
    pixels[img] = (b.patches[0][img] * np.float32(vocab.PATCH_SCALE * 127.5) + np.float32(128.0)).astype(np.uint8)
    return {"tokens": b.tokens[0], "pixels": pixels, "patch_row": b.patch_row[0], "patch_col": b.patch_col[0],
            "local_pos": b.local_pos[0], "is_image": img, "loss_mask": b.loss_mask[0], "valid": b.valid[0],
            "domain": np.int64(domain_id)}


SPLITS = ("all", "train", "eval")


def held_out(n: int, fraction: float) -> int:
    """How many of ``n`` items (documents, images) are held out: round(n * fraction), at least 1, none when fewer
    than 3 (a tiny corpus is then evaluated on its training items; the control index does the same per task)."""
    if fraction <= 0 or n < 3:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def split_keys(keys: list, split: str, fraction: float) -> set:
    """The keys (in first-seen order) of ``split``: the last ``held_out`` keys form "eval", the others "train"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    unique = list(dict.fromkeys(keys))
    k = held_out(len(unique), fraction)
    if split == "all" or k == 0:
        return set(unique)
    return set(unique[len(unique) - k:]) if split == "eval" else set(unique[: len(unique) - k])
