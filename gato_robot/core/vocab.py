"""The vocabulary layout: every token id range in one place (README, "Vocabulary", mirrors this table).

| ids              | what                                   | source                                   |
|------------------|----------------------------------------|------------------------------------------|
| [0, 32000)       | text (SentencePiece pieces)            | Gato paper, Sec. 2.1                     |
| [32000, 33024)   | continuous bins (1024 uniform on [-1,1]) | Gato paper, Sec. 2.1                   |
| [32000, 33024)   | discrete values 0..1023 (same ids)     | project choice, see below                |
| 33024            | separator '|' (observation -> action)  | project choice (paper gives no id)       |
| vocab size 33025 |                                        |                                          |

Discrete values share the continuous bin ids (value v -> 32000 + v) instead of colliding with text ids as
in the paper's text: open re-implementations do the same, it keeps the vocabulary at 33025, and the kind
of a token is always known from its place in the timestep (the spec fixes the layout), so the shared
ids are never ambiguous for the model.

Image patches are not vocabulary tokens: they are embedded by a ResNet block. Their slot in the token id
array holds ``IMAGE_PLACEHOLDER`` and the per-token ``kinds`` array (``TokenKind.IMAGE``) is authoritative.
"""

from __future__ import annotations

import enum

TEXT_VOCAB_SIZE = 32000  # SentencePiece pieces, Gato Sec. 2.1
NUM_BINS = 1024  # uniform bins on [-1, 1] for continuous values, Gato Sec. 2.1
BIN_OFFSET = TEXT_VOCAB_SIZE  # continuous bins live at [32000, 33024)
DISCRETE_OFFSET = BIN_OFFSET  # discrete values share the bin ids (see module docstring)
NUM_DISCRETE_VALUES = NUM_BINS  # discrete values are integers in [0, 1024)
SEPARATOR = BIN_OFFSET + NUM_BINS  # 33024, the '|' between observation and action
VOCAB_SIZE = SEPARATOR + 1  # 33025
IMAGE_PLACEHOLDER = 0  # id stored at image-patch positions; never embedded, never a target

# mu-law companding of continuous observations (Gato appendix B; checked against re-implementations).
MU = 100.0
MU_LAW_M = 256.0

# Images (Gato Sec. 2.1, ViT-style patches) and their position encodings (appendix C.2).
PATCH_SIZE = 16
PATCH_PIXELS = PATCH_SIZE * PATCH_SIZE * 3  # 768 values per patch, (row, col, channel) order
PATCH_SCALE = 4.0  # pixels in [-1, 1] are divided by sqrt(patch_size) = 4
PATCH_POSITION_BINS = 128  # row / column interval quantisation; indices in [0, 128), never 128

# Local position encodings: index of a token inside its timestep (observation, separator and actions).
MAX_TOKENS_PER_TIMESTEP = 512

DEFAULT_CONTEXT_LENGTH = 1024


class TokenKind(enum.IntEnum):
    """What each token of a sequence is. Stored per token (``kinds`` arrays) so nothing slices by offset."""

    TEXT = 0
    IMAGE = 1
    DISCRETE = 2
    CONTINUOUS = 3
    SEPARATOR = 4
    ACTION = 5
