"""Gato's embedding function (paper Sec. 2.2): every token of a sequence becomes one d_model vector.

- Text, discrete, continuous, separator and action tokens: one learned lookup table over the vocabulary
  (``gato_robot.core.vocab``; the output head reuses it, see ``gato.py``).
- Image patches: a single ResNet v2 block (pre-activation, GroupNorm(32), GELU) giving one vector per patch,
  plus learned row and column patch position encodings (128 bins each; the index is chosen by the collator:
  random inside the patch's interval when training, the rounded mean at evaluation).
- Every token: a learned local position encoding, indexed by the token's place inside its timestep.

Action tokens and the separator (the paper's versions differ: no local encoding vs one shared encoding). Here
the separator and each action dimension get their own local position (the separator follows the n observation
tokens at n, action dimension j at n + 1 + j), so each action dimension has a distinct learned encoding and
the model can tell "which dimension comes next" without a global position. The separator has its own vocabulary
id (33024); action values share the continuous bin ids [32000, 33024) with continuous observations, the local
position and the separator before them tell them apart.

Shape legend: B batch, T tokens, D d_model, C patch_channels, P patch pixels (16 * 16 * 3 = 768).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gato_robot.core import vocab
from gato_robot.model.config import GROUPNORM_GROUPS, GatoConfig

STEM_STRIDE = 4  # the 16x16 patch is cut into a 4x4 grid of 4x4-pixel cells before the ResNet block
STEM_GRID = vocab.PATCH_SIZE // STEM_STRIDE


class GatoInputs(NamedTuple):
    """The model's input tensors, one row per sequence; the dense layout of the collator's ``Batch``."""

    tokens: torch.Tensor  # (B, T) int64 vocab ids (anything at image positions, it is not looked up there)
    patches: torch.Tensor  # (B, T, P) float, (row, col, channel) order, in [-0.25, 0.25]; zeros elsewhere
    patch_row: torch.Tensor  # (B, T) int64 in [0, 128)
    patch_col: torch.Tensor  # (B, T) int64 in [0, 128)
    local_pos: torch.Tensor  # (B, T) int64 in [0, 512)
    is_image: torch.Tensor  # (B, T) bool


def inputs_from_batch(batch: Any, device: torch.device | str = "cpu") -> GatoInputs:
    """``GatoInputs`` from a collated batch (attributes or mapping of numpy arrays, ``gato_robot.core``)."""
    get = batch.__getitem__ if isinstance(batch, Mapping) else lambda name: getattr(batch, name)
    arrays = {name: np.asarray(get(name)) for name in GatoInputs._fields}
    return GatoInputs(
        tokens=torch.as_tensor(arrays["tokens"], dtype=torch.long, device=device),
        patches=torch.as_tensor(arrays["patches"], dtype=torch.float32, device=device),
        patch_row=torch.as_tensor(arrays["patch_row"], dtype=torch.long, device=device),
        patch_col=torch.as_tensor(arrays["patch_col"], dtype=torch.long, device=device),
        local_pos=torch.as_tensor(arrays["local_pos"], dtype=torch.long, device=device),
        is_image=torch.as_tensor(arrays["is_image"], dtype=torch.bool, device=device),
    )


class PatchResNet(nn.Module):
    """One 16x16x3 patch -> one D vector: a 4x4 stride-4 stem, one pre-activation ResNet v2 block at 4x4
    (x + conv(gelu(gn(conv(gelu(gn(x))))))), then a linear map of the flattened 4x4xC grid.

    The stem keeps the block cheap (a full-resolution 3x3 block at C=128 costs ~75M MACs per patch, 128 patches
    per control step); flattening keeps where inside the patch a feature is, which average pooling would lose.
    No GroupNorm after the residual sum (ResNet v2 stacks end with one): GroupNorm removes each group's mean,
    so a uniform patch of any colour would embed to the same vector; the identity path keeps colour and
    brightness, and the transformer's pre-norm LayerNorms normalise scale anyway.
    """

    def __init__(self, cfg: GatoConfig) -> None:
        super().__init__()
        c = cfg.patch_channels
        self.stem = nn.Conv2d(3, c, kernel_size=STEM_STRIDE, stride=STEM_STRIDE)
        self.norm1 = nn.GroupNorm(GROUPNORM_GROUPS, c, eps=cfg.norm_eps)
        self.conv1 = nn.Conv2d(c, c, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(GROUPNORM_GROUPS, c, eps=cfg.norm_eps)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, padding=1)
        self.proj = nn.Linear(c * STEM_GRID * STEM_GRID, cfg.d_model)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        n = patches.shape[0]
        x = patches.view(n, vocab.PATCH_SIZE, vocab.PATCH_SIZE, 3).permute(0, 3, 1, 2)  # (N, 3, 16, 16)
        x = self.stem(x)  # (N, C, 4, 4)
        h = self.conv1(F.gelu(self.norm1(x)))
        h = self.conv2(F.gelu(self.norm2(h)))
        return self.proj((x + h).flatten(1))  # (N, C * 4 * 4) -> (N, D)


class GatoEmbedding(nn.Module):
    """``GatoInputs`` -> (B, T, D). Image positions take the patch vector plus row/column encodings, all other
    positions the vocabulary row; every position adds its local position encoding.

    In eval mode (export, decoding) the patch block runs densely over every position and ``torch.where`` picks (no
    data-dependent shapes, so the same code exports to ONNX); in training mode it runs only on image positions.
    Both give the same vectors (GroupNorm normalises each patch on its own).
    """

    def __init__(self, cfg: GatoConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.patch = PatchResNet(cfg)
        self.patch_row = nn.Embedding(cfg.patch_position_bins, cfg.d_model)
        self.patch_col = nn.Embedding(cfg.patch_position_bins, cfg.d_model)
        self.local_pos = nn.Embedding(cfg.local_positions, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: GatoInputs) -> torch.Tensor:
        b, t = x.tokens.shape
        image = x.is_image.unsqueeze(-1)  # (B, T, 1)
        tok = self.tokens(torch.where(x.is_image, 0, x.tokens))  # (B, T, D)
        if self.training:
            # Training: the patch block only where there are patches (a Markov RGB-stacking window is 32 patches
            # of 56 tokens). Data-dependent shapes are fine here; export and decoding (eval mode) stay dense.
            flat = x.is_image.reshape(-1)  # (B*T,)
            vectors = self.patch(x.patches.reshape(b * t, vocab.PATCH_PIXELS)[flat].to(tok.dtype))  # (N, D)
            patch = tok.new_zeros(b * t, tok.shape[-1]).index_put((flat.nonzero().squeeze(1),), vectors).view(b, t, -1)
        else:
            patch = self.patch(x.patches.reshape(b * t, vocab.PATCH_PIXELS).to(tok.dtype)).view(b, t, -1)
        patch = patch + self.patch_row(x.patch_row) + self.patch_col(x.patch_col)  # (B, T, D)
        h = torch.where(image, patch, tok) + self.local_pos(x.local_pos)
        return self.drop(h)
