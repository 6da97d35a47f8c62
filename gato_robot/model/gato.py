"""The Gato transformer (paper Sec. 2.3): a decoder-only, pre-norm GPT over embedded token sequences.

Pure computation: no tokenizer, no device policy, no rollout state (that is ``policy.py``). Two entry points:

- ``forward``: causal over whole sequences (training, evaluation); returns logits and the paper's masked loss
  (logits at t predict token t+1, counted only where that target is a text or action token and valid).
  ``window=`` restricts every query to the last ``window`` tokens, the semantics of the inference cache.
- ``forward_cached``: appends n tokens (a timestep's observation, or one action token) to a ``KVCache`` and
  returns the logits of the last position only (all the policy samples from).

Output head tied to the token table (GPT-2 convention): one table maps ids to vectors and back, which keeps
the paper's parameter counts (an untied head adds 25M / 51M / 68M, 364M would then miss by 23%).

Shape legend: B batch, T tokens, n tokens appended to the cache, D d_model, H heads, hd head dim (D / H),
S cache slots, L layers, V vocab, K counted loss targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gato_robot.core import vocab
from gato_robot.model.config import GatoConfig
from gato_robot.model.embedding import GatoEmbedding, GatoInputs
from gato_robot.model.kv_cache import (
    KVCache,
    attention_mask,
    banded_causal_mask,
    capacity_for,
    empty_cache,
    write_slots,
)

DEFAULT_MAX_APPEND = vocab.MAX_TOKENS_PER_TIMESTEP + 1  # a whole timestep plus the previous step's last action


class LayerCache(NamedTuple):
    """One layer's view of a ``KVCache`` during an append: its buffers and the slots the new tokens go to."""

    k: torch.Tensor  # (B, H, S, hd)
    v: torch.Tensor  # (B, H, S, hd)
    slots: torch.Tensor  # (n,) int64


class SelfAttention(nn.Module):
    def __init__(self, cfg: GatoConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.dropout = cfg.n_head, cfg.head_dim, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: LayerCache | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). mask: (T, T) bool, or None for plain causal.

        With a cache, this call's keys/values are first written into the layer's (B, H, S, hd) buffers at
        ``cache.slots``, then the T queries attend over all S slots under mask (T, S).
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
        if cache is not None:
            cache.k.index_copy_(2, cache.slots, k)  # (B, H, S, hd) <- (B, H, T, hd)
            cache.v.index_copy_(2, cache.slots, v)
            k, v = cache.k, cache.v
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GatoConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask, cache))
        return x + self.drop(self.mlp(self.ln2(x)))


class GatoOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, T, V), None when not asked for
    loss: torch.Tensor | None  # () mean cross-entropy over counted targets, None without loss_mask
    aux_loss: torch.Tensor | None = None  # () auxiliary regression loss, None without aux targets


class Gato(nn.Module):
    def __init__(self, cfg: GatoConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = GatoEmbedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        # training-only: regresses e.g. object positions from the final states (GatoConfig.aux_outputs)
        self.aux_head = nn.Linear(cfg.d_model, cfg.aux_outputs) if cfg.aux_outputs else None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 L)
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def head(self, h: torch.Tensor, ids: tuple[int, int] | None = None) -> torch.Tensor:
        """Final norm and the tied output projection: (..., D) -> (..., V), or only the ids [lo, hi)."""
        weight = self.embed.tokens.weight if ids is None else self.embed.tokens.weight[ids[0] : ids[1]]
        return F.linear(self.ln_f(h), weight)

    # -- whole sequences ---------------------------------------------------------------------------------
    def states(self, x: GatoInputs, window: int | None = None) -> torch.Tensor:
        """The final (pre-norm) states (B, T, D) of a causal pass over whole sequences (``forward``'s ``window``)."""
        t = x.tokens.shape[1]
        mask = None if window is None or window >= t else banded_causal_mask(t, window, x.tokens.device)
        h = self.embed(x)  # (B, T, D)
        for block in self.blocks:
            h = block(h, mask)
        return h

    def aux_predictions(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's outputs (M, aux_outputs) at the M positions where ``mask`` (B, T) is set."""
        if self.aux_head is None:
            raise ValueError("this model has no auxiliary head (GatoConfig.aux_outputs=0)")
        return self.aux_head(self.ln_f(h[mask]))

    def forward(self, x: GatoInputs, loss_mask: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                window: int | None = None, return_logits: bool = True, aux_targets: torch.Tensor | None = None,
                aux_mask: torch.Tensor | None = None) -> GatoOutput:
        """Causal forward over (B, T) right-padded sequences.

        loss_mask, valid: (B, T) bool; the target tokens[t + 1] counts where loss_mask[t + 1] & valid[t + 1].
        window: each query sees only the last ``window`` tokens (itself included); None = plain causal.
        return_logits=False skips the (B, T, V) logits and evaluates the head only at counted targets.
        aux_targets (B, T, aux_outputs), aux_mask (B, T) bool: the auxiliary head's smooth-L1 loss at the masked
        positions (the state there has seen only tokens up to and including that position).
        """
        h = self.states(x, window)
        loss = None
        if loss_mask is not None:
            counted = loss_mask[:, 1:] if valid is None else loss_mask[:, 1:] & valid[:, 1:]  # (B, T-1)
            targets = x.tokens[:, 1:][counted]  # (K,)
            logits_k = self.head(h[:, :-1][counted])  # (K, V)
            loss = F.cross_entropy(logits_k.float(), targets, reduction="sum") / counted.sum().clamp(min=1)
        aux_loss = None
        if aux_targets is not None:
            if self.aux_head is None:
                raise ValueError("aux_targets given to a model without an auxiliary head (GatoConfig.aux_outputs=0)")
            if aux_mask is None or aux_targets.shape[-1] != self.config.aux_outputs:
                raise ValueError(f"aux_targets must be (B, T, {self.config.aux_outputs}) with an aux_mask (B, T), "
                                 f"got {tuple(aux_targets.shape)}")
            pred = self.aux_predictions(h, aux_mask)
            aux_loss = F.smooth_l1_loss(pred.float(), aux_targets[aux_mask].float(), reduction="sum")
            aux_loss = aux_loss / (aux_mask.sum().clamp(min=1) * self.config.aux_outputs)
        return GatoOutput(self.head(h) if return_logits else None, loss, aux_loss)

    # -- step by step ------------------------------------------------------------------------------------
    def empty_cache(self, batch: int = 1, max_append: int = DEFAULT_MAX_APPEND,
                    device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """A cache for appends of up to ``max_append`` tokens at once (capacity context + max_append - 1)."""
        p = self.embed.tokens.weight
        c = self.config
        return empty_cache(c.n_layer, batch, c.n_head, capacity_for(c.context, max_append), c.head_dim,
                           device=p.device if device is None else device, dtype=p.dtype if dtype is None else dtype)

    def forward_cached(self, x: GatoInputs, cache: KVCache,
                       logits_ids: tuple[int, int] | None = None) -> tuple[torch.Tensor, KVCache]:
        """Append x's n tokens (n <= the cache's max_append) to the cache; return the last position's logits (B, V).

        Equal, to float tolerance, to ``forward(whole sequence, window=config.context)`` at the same position.
        ``logits_ids=(lo, hi)`` returns only the logits of ids [lo, hi) (B, hi - lo): an action needs only
        its bins, and the full 33k-row head would cost a third of a 79M single-token decode.
        The cache's k/v are updated in place; the returned cache has ``pos`` advanced by n.
        """
        layers = [(cache.k[i], cache.v[i]) for i in range(self.config.n_layer)]
        logits = self.append(x, layers, cache.pos, logits_ids)
        return logits, KVCache(cache.k, cache.v, cache.pos + x.tokens.shape[1])

    def append(self, x: GatoInputs, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], pos: torch.Tensor,
               logits_ids: tuple[int, int] | None = None) -> torch.Tensor:
        """``forward_cached`` over one (k, v) buffer pair per layer, each (B, H, S, hd), written in place.

        Separate per-layer tensors are what the ONNX export uses: writing into a slice of one stacked (L, ...)
        tensor exports as a scatter over the whole stack (measured: 90% of a tiny model's decode time).
        """
        n, cap, window = x.tokens.shape[1], layers[0][0].shape[2], self.config.context
        if n > cap - window + 1:
            raise ValueError(
                f"cannot append {n} tokens at once to a cache of capacity {cap} with a {window}-token window; "
                f"split the chunk or create the cache with empty_cache(max_append={n})"
            )
        mask = attention_mask(pos, n, cap, window)  # (n, S)
        slots = write_slots(pos, n, cap)  # (n,)
        h = self.embed(x)  # (B, n, D)
        for block, (k, v) in zip(self.blocks, layers):
            h = block(h, mask, LayerCache(k, v, slots))
        return self.head(h[:, -1], logits_ids)
