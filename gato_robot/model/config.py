"""Model configuration: one typed dataclass that validates itself, and the named presets.

The three paper sizes (Gato appendix C.1, Table 6) plus small presets for tests and CPU experiments.
``python -m gato_robot.model.config`` builds every preset on the meta device (no memory, no time) and prints
its parameter count.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

from gato_robot.core import vocab

GROUPNORM_GROUPS = 32  # the patch ResNet block's GroupNorm (Gato Sec. 2.2); patch_channels must divide by it


@dataclasses.dataclass(frozen=True)
class GatoConfig:
    """Shapes and regularisation of one Gato model. Frozen: a config is a value, shared by model and checkpoint.

    ``context`` is both the training sequence length and the attention window at inference (a query sees at
    most the last ``context`` tokens, itself included; see ``kv_cache``).
    """

    n_layer: int
    d_model: int
    d_ff: int
    n_head: int
    context: int = vocab.DEFAULT_CONTEXT_LENGTH
    vocab_size: int = vocab.VOCAB_SIZE
    patch_channels: int = 128  # ResNet patch block width; the paper gives none, re-implementations use 64-128
    local_positions: int = vocab.MAX_TOKENS_PER_TIMESTEP
    patch_position_bins: int = vocab.PATCH_POSITION_BINS
    dropout: float = 0.0  # embeddings, attention weights and residual branches; the paper fine-tunes with 0.1
    norm_eps: float = 1e-5
    name: str = "custom"
    # training-only auxiliary regression head (e.g. object positions from the images at each separator; the
    # policy, its KV-cache decoding and the ONNX export never use it): its outputs, 0 = none
    aux_outputs: int = 0
    # a Markov policy: every action sees only its own timestep (and a prompt), never earlier timesteps. Training
    # windows hold one timestep each and both policies (torch, ONNX) restart from the initial state at every
    # step. Why: behaviour cloning with history learns to copy its own previous action tokens, which are in the
    # context whatever the observation drops (the copycat problem, de Haan et al. 2019; docs/stacking.md)
    markov: bool = False

    def __post_init__(self) -> None:
        for field in ("n_layer", "d_model", "d_ff", "n_head", "context", "vocab_size", "patch_channels",
                      "local_positions", "patch_position_bins"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GatoConfig.{field} must be a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            divisors = [h for h in range(1, min(self.d_model, 64) + 1) if self.d_model % h == 0]
            raise ValueError(
                f"GatoConfig: d_model {self.d_model} is not divisible by n_head {self.n_head}; "
                f"pick n_head from {divisors}"
            )
        if self.patch_channels % GROUPNORM_GROUPS:
            raise ValueError(
                f"GatoConfig.patch_channels {self.patch_channels} must be a multiple of {GROUPNORM_GROUPS} "
                f"(GroupNorm with {GROUPNORM_GROUPS} groups), e.g. {max(32, round(self.patch_channels / 32) * 32)}"
            )
        if self.vocab_size < vocab.VOCAB_SIZE:
            raise ValueError(
                f"GatoConfig.vocab_size {self.vocab_size} is smaller than the tokenizer's {vocab.VOCAB_SIZE} ids"
            )
        if self.local_positions < vocab.MAX_TOKENS_PER_TIMESTEP:
            raise ValueError(
                f"GatoConfig.local_positions {self.local_positions} < {vocab.MAX_TOKENS_PER_TIMESTEP}, the "
                "tokenizer's maximum tokens per timestep"
            )
        if not isinstance(self.aux_outputs, int) or isinstance(self.aux_outputs, bool) or self.aux_outputs < 0:
            raise ValueError(f"GatoConfig.aux_outputs must be a non-negative integer, got {self.aux_outputs!r}")
        if not isinstance(self.markov, bool):
            raise ValueError(f"GatoConfig.markov must be true or false, got {self.markov!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GatoConfig.dropout must be in [0, 1), got {self.dropout}")
        if not self.norm_eps > 0:
            raise ValueError(f"GatoConfig.norm_eps must be positive, got {self.norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def replace(self, **changes: Any) -> GatoConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GatoConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown GatoConfig fields {unknown}; known fields: {sorted(names)}")
        return cls(**d)


# The paper's sizes (appendix C.1); head dim 32 / 128 / 128. Context 1024 everywhere (Sec. 2.3).
PRESETS: dict[str, GatoConfig] = {
    "tiny": GatoConfig(n_layer=2, d_model=64, d_ff=256, n_head=4, patch_channels=32, name="tiny"),
    "mini": GatoConfig(n_layer=4, d_model=128, d_ff=512, n_head=4, patch_channels=32, name="mini"),
    "small": GatoConfig(n_layer=4, d_model=256, d_ff=1024, n_head=8, patch_channels=64, name="small"),
    "79M": GatoConfig(n_layer=8, d_model=768, d_ff=3072, n_head=24, name="79M"),
    "364M": GatoConfig(n_layer=12, d_model=1536, d_ff=6144, n_head=12, name="364M"),
    "1.18B": GatoConfig(n_layer=24, d_model=2048, d_ff=8192, n_head=16, name="1.18B"),
}


def preset(name: str, **overrides: Any) -> GatoConfig:
    """The named preset, with fields overridden (``preset("tiny", context=32)``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {list(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def count_parameters(config: GatoConfig) -> int:
    """Parameters of a model of this config, built on the meta device (no allocation)."""
    import torch

    from gato_robot.model.gato import Gato

    with torch.device("meta"):
        model = Gato(config)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the parameter count of every model preset.")
    parser.add_argument("presets", nargs="*", default=list(PRESETS), help=f"presets (default: all of {list(PRESETS)})")
    args = parser.parse_args(argv)
    print(f"{'preset':>7} {'layers':>6} {'d_model':>7} {'d_ff':>5} {'heads':>5} {'params':>15}")
    for name in args.presets:
        c = preset(name)
        n = count_parameters(c)
        print(f"{name:>7} {c.n_layer:>6} {c.d_model:>7} {c.d_ff:>5} {c.n_head:>5} {n:>15,} ({n / 1e6:.1f}M)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
