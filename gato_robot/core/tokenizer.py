"""The Gato tokenizer (Reed et al. 2022, Sec. 2.1 and appendix B): numpy and SentencePiece only.

Pure math first, as encode/decode pairs with fixed parameters (a value always gets the same token, in
any batch); then images; then text; then :class:`Tokenizer`, which applies them as a :class:`RobotSpec`
says. Vocabulary ids come from :mod:`gato_robot.core.vocab`.

Bad input raises ``ValueError`` naming the key and what was expected. Continuous observations beyond
+-M (256) saturate to the edge bins (never wrap); actions outside their spec bounds saturate likewise.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core import vocab
from gato_robot.core.sequence import TokenBlock
from gato_robot.core.specs import Encoding, Kind, RobotSpec, TensorSpec

# ----------------------------------------------------------------------------------------------------------
# Continuous values: mu-law companding and uniform binning
# ----------------------------------------------------------------------------------------------------------
_LOG_MU_M = math.log1p(vocab.MU * vocab.MU_LAW_M)  # ln(1 + mu*M), the mu-law normaliser


def _require_finite(x: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: non-finite values (NaN or Inf) cannot be tokenized")


def mu_law_encode(x: np.ndarray | float) -> np.ndarray:
    """F(x) = sign(x) ln(1 + mu|x|) / ln(1 + mu M), mu=100, M=256; |x| > M gives |F| > 1 (clipped when binned)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(vocab.MU * np.abs(x)) / _LOG_MU_M


def mu_law_decode(y: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`mu_law_encode` on [-1, 1]."""
    y = np.asarray(y, dtype=np.float64)
    return np.sign(y) * np.expm1(np.abs(y) * _LOG_MU_M) / vocab.MU


def bin_encode(y: np.ndarray | float) -> np.ndarray:
    """Values in [-1, 1] to bin indices in [0, 1024): uniform bins, +1 lands in the last bin (never 1024)."""
    y = np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0)
    k = np.floor((y + 1.0) * (vocab.NUM_BINS / 2.0)).astype(np.int64)
    return np.minimum(k, vocab.NUM_BINS - 1)


def bin_decode(k: np.ndarray | int) -> np.ndarray:
    """Bin index to the bin's centre (decoding to the lower edge would double the error)."""
    k = np.asarray(k, dtype=np.int64)
    if np.any((k < 0) | (k >= vocab.NUM_BINS)):
        raise ValueError(f"bin indices must be in [0, {vocab.NUM_BINS})")
    return -1.0 + (k.astype(np.float64) + 0.5) * (2.0 / vocab.NUM_BINS)


def encode_mu_law(x: np.ndarray | float) -> np.ndarray:
    """Continuous observation values to bin indices [0, 1024) (mu-law, then bins). Non-finite values raise."""
    x = np.asarray(x, dtype=np.float64)
    _require_finite(x, "continuous value")
    return bin_encode(mu_law_encode(x))


def decode_mu_law(k: np.ndarray | int) -> np.ndarray:
    return mu_law_decode(bin_decode(k))


def encode_linear(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Values in [low, high] mapped affinely onto [-1, 1] and binned without companding (Gato, appendix B)."""
    x = np.asarray(x, dtype=np.float64)
    _require_finite(x, "continuous value")
    return bin_encode(2.0 * (x - low) / (high - low) - 1.0)


def decode_linear(k: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return low + (bin_decode(k) + 1.0) * 0.5 * (high - low)


# ----------------------------------------------------------------------------------------------------------
# Images: resize policy, 16x16 patches, patch position intervals
# ----------------------------------------------------------------------------------------------------------
def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (half-pixel centres, like OpenCV's INTER_LINEAR) of an (H, W, C) uint8 image.

    Downscaling by more than 2x first box-averages by the integer factor so thin features are not aliased.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    out = img.astype(np.float32)
    fy, fx = h // height, w // width
    if fy >= 2 or fx >= 2:  # integer box pre-filter
        fy, fx = max(fy, 1), max(fx, 1)
        hh, ww = (h // fy) * fy, (w // fx) * fx
        out = out[:hh, :ww].reshape(hh // fy, fy, ww // fx, fx, -1).mean(axis=(1, 3))
        h, w = out.shape[:2]

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(c).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (c - lo).astype(np.float32)

    y0, y1, wy = coords(height, h)
    x0, x1, wx = coords(width, w)
    rows = out[y0] * (1 - wy)[:, None, None] + out[y1] * wy[:, None, None]
    res = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.rint(res), 0, 255).astype(np.uint8)


def check_image(image: Any, key: str = "image") -> np.ndarray:
    """Validate an (H, W, 3) uint8 image of at least 16x16 pixels, or raise ValueError naming ``key``."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"{key}: images must be uint8 (H, W, 3), got dtype {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{key}: images must be (H, W, 3) RGB, got shape {img.shape}")
    if img.shape[0] < vocab.PATCH_SIZE or img.shape[1] < vocab.PATCH_SIZE:
        raise ValueError(f"{key}: image {img.shape[0]}x{img.shape[1]} is smaller than one 16x16 patch")
    return img


def fit_image(image: np.ndarray, height: int | None = None, width: int | None = None, key: str = "image") -> np.ndarray:
    """The documented size policy: an image is resized (never cropped or truncated) to ``height x width``;
    without a target size, to the nearest multiples of 16 (at least 16)."""
    img = check_image(image, key)
    h, w = img.shape[:2]
    height = height or max(vocab.PATCH_SIZE, round(h / vocab.PATCH_SIZE) * vocab.PATCH_SIZE)
    width = width or max(vocab.PATCH_SIZE, round(w / vocab.PATCH_SIZE) * vocab.PATCH_SIZE)
    return resize_image(img, height, width)


def patchify(image: np.ndarray, key: str = "image") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an image into non-overlapping 16x16 patches in raster order (ViT).

    Returns ``patches`` (N, 16, 16, 3) float32 with pixels scaled to [-1, 1] then divided by 4, and the
    patches' row and column intervals as [lo, hi) indices into 128 position bins (appendix C.2): the
    pixel interval normalised by the image size and quantised, so the upper bound 1.0 is exclusive and
    no index ever reaches 128. Sizes not divisible by 16 are resized first (:func:`fit_image`).
    """
    img = check_image(image, key)
    if img.shape[0] % vocab.PATCH_SIZE or img.shape[1] % vocab.PATCH_SIZE:
        img = fit_image(img, key=key)
    h, w = img.shape[:2]
    p = vocab.PATCH_SIZE
    # (H, W, 3) -> (H/p, p, W/p, p, 3) -> (H/p, W/p, p, p, 3): raster order over patches
    grid = img.reshape(h // p, p, w // p, p, 3).swapaxes(1, 2)
    patches = patch_values(grid.reshape(-1, p, p, 3))
    rows = _intervals(h // p, h)
    cols = _intervals(w // p, w)
    n_cols = w // p
    return patches, np.repeat(rows, n_cols, axis=0), np.tile(cols, (h // p, 1))


def patch_pixels_of(image: np.ndarray, height: int, width: int, key: str = "image") -> np.ndarray:
    """The (N, 768) uint8 pixels of an image's patches for a ``height x width`` spec entry, in :func:`patchify`'s
    raster order, each patch row-major (16, 16, 3): what ``patchify`` makes patch values of, without the floats.
    An image of another size is resized first, as the tokenizer does."""
    img = check_image(image, key)
    if height % vocab.PATCH_SIZE or width % vocab.PATCH_SIZE:
        raise ValueError(f"{key}: spec image size {height}x{width} is not a multiple of {vocab.PATCH_SIZE}")
    if img.shape[:2] != (height, width):
        img = resize_image(img, height, width)
    p = vocab.PATCH_SIZE
    grid = img.reshape(height // p, p, width // p, p, 3).swapaxes(1, 2)
    return grid.reshape(-1, vocab.PATCH_PIXELS)  # one copy (the swap makes it non-contiguous)


def patch_values(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (any shape) to patch values, float32: ``(pixel / 255 * 2 - 1) / sqrt(patch_size)``.

    The one formula: :func:`patchify` uses it, and a consumer that receives the pixels (the ROS observation
    carries uint8 patches) rebuilds bit-identical patch values with it.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"patch pixels must be uint8, got {pixels.dtype}")
    values = pixels.astype(np.float32)  # in place from here: float32 operations, no temporaries
    values *= 2.0 / 255.0
    values -= 1.0
    values /= vocab.PATCH_SCALE
    return values


def _intervals(n: int, size: int) -> np.ndarray:
    """[lo, hi) bin intervals of n consecutive 16-pixel spans of an axis of ``size`` pixels."""
    start = np.arange(n) * vocab.PATCH_SIZE
    bins = vocab.PATCH_POSITION_BINS
    lo = np.floor(start * bins / size).astype(np.int64)
    hi = np.ceil((start + vocab.PATCH_SIZE) * bins / size).astype(np.int64)
    return np.stack([lo, np.maximum(hi, lo + 1)], axis=1)


# ----------------------------------------------------------------------------------------------------------
# Text: SentencePiece
# ----------------------------------------------------------------------------------------------------------
MISTRAL_DIST = "mistral-common"
DEFAULT_TEXT_MODEL = "mistral-common:v1"  # how settings name the default model
MISTRAL_MODEL_FILE = "mistral_common/data/tokenizer.model.v1"


def default_text_model_path() -> Path:
    """The 32000-piece SentencePiece model shipped in the ``mistral-common`` package, found without importing it."""
    try:
        files = importlib.metadata.files(MISTRAL_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).replace("\\", "/").endswith(MISTRAL_MODEL_FILE):
            return Path(str(f.locate()))
    raise FileNotFoundError(
        f"the default text tokenizer model ships in the '{MISTRAL_DIST}' package, which is not installed: "
        "run `pip install --no-deps -r requirements/assets.txt`, or pass a SentencePiece .model path"
    )


class TextTokenizer:
    """SentencePiece text tokens, ids in [0, 32000)."""

    def __init__(self, model_path: str | os.PathLike | None = None):
        import sentencepiece as spm  # lazily: robot specs without text never need it

        self.model_path = Path(model_path) if model_path is not None else default_text_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"SentencePiece model {self.model_path} does not exist")
        self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
        if self._sp.vocab_size() > vocab.TEXT_VOCAB_SIZE:
            raise ValueError(
                f"{self.model_path}: {self._sp.vocab_size()} pieces; the vocabulary reserves {vocab.TEXT_VOCAB_SIZE}"
            )

    @property
    def vocab_size(self) -> int:
        return int(self._sp.vocab_size())

    def encode(self, text: str, key: str = "text") -> np.ndarray:
        if not isinstance(text, str):
            raise ValueError(f"{key}: expected a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{key}: empty text cannot be tokenized")
        return np.asarray(self._sp.encode(text), dtype=np.int64)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        ids = [int(i) for i in np.asarray(ids).ravel()]
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise ValueError(f"text ids must be in [0, {self.vocab_size})")
        return self._sp.decode(ids)


# ----------------------------------------------------------------------------------------------------------
# The spec-driven tokenizer
# ----------------------------------------------------------------------------------------------------------
class Tokenizer:
    """Turns observations and actions of one :class:`RobotSpec` into tokens, and action tokens back.

    ``text_model``: a SentencePiece ``.model`` path; default: the model in ``mistral-common``. It is only
    loaded when the spec has text or :meth:`text` is used.
    """

    def __init__(self, spec: RobotSpec, text_model: str | os.PathLike | None = None):
        self.spec = spec
        self._text_model = text_model
        self._text: TextTokenizer | None = None
        self._linear = {
            s.name: (np.asarray(s.low, np.float64), np.asarray(s.high, np.float64))
            for s in (*spec.observations, *spec.actions)
            if s.kind is Kind.CONTINUOUS and s.encoding is Encoding.LINEAR
        }
        if spec.has_text:
            self.text  # noqa: B018 - load now so a missing model fails at construction, not mid-episode

    @property
    def text(self) -> TextTokenizer:
        if self._text is None:
            self._text = TextTokenizer(self._text_model)
        return self._text

    @property
    def settings(self) -> dict[str, Any]:
        """What a checkpoint records so the same tokenizer can be rebuilt (:meth:`from_settings`)."""
        return {
            "vocab_size": vocab.VOCAB_SIZE,
            "text_model": str(self._text_model) if self._text_model is not None else DEFAULT_TEXT_MODEL,
            "mu": vocab.MU, "mu_law_m": vocab.MU_LAW_M, "num_bins": vocab.NUM_BINS,
            "separator": vocab.SEPARATOR, "patch_size": vocab.PATCH_SIZE,
        }

    @classmethod
    def from_settings(cls, spec: RobotSpec, settings: Mapping[str, Any] | None) -> Tokenizer:
        """The tokenizer a checkpoint or manifest recorded; refuses another vocabulary layout."""
        settings = dict(settings or {})
        for key, ours in (("vocab_size", vocab.VOCAB_SIZE), ("num_bins", vocab.NUM_BINS),
                          ("separator", vocab.SEPARATOR), ("mu", vocab.MU), ("mu_law_m", vocab.MU_LAW_M)):
            if key in settings and settings[key] != ours:
                raise ValueError(f"the model was trained with tokenizer {key}={settings[key]}, this code has {ours}")
        text_model = settings.get("text_model", DEFAULT_TEXT_MODEL)
        return cls(spec, text_model=None if text_model == DEFAULT_TEXT_MODEL else text_model)

    # -- observations ------------------------------------------------------------------------------------
    def tokenize_observation(self, observation: Mapping[str, Any], *, text_targets: bool = True) -> TokenBlock:
        """One observation as tokens in the paper's order, followed by the separator '|'.

        Extra keys are ignored (privileged data never leaks in); missing keys raise.
        ``text_targets``: whether text tokens are loss targets (the paper: yes; control datasets may not).
        """
        if not isinstance(observation, Mapping):
            raise ValueError(f"an observation is a mapping of key -> value, got {type(observation).__name__}")
        missing = [s.name for s in self.spec.observations if s.name not in observation]
        if missing:
            raise ValueError(f"observation lacks keys {missing} required by spec {self.spec.name!r}")
        parts: list[TokenBlock] = []
        for s in self.spec.observations:
            parts.append(self._tokenize_entry(s, observation[s.name], text_targets))
        parts.append(TokenBlock.single(vocab.SEPARATOR, vocab.TokenKind.SEPARATOR))
        block = TokenBlock.concatenate(parts)
        block.local_pos = np.arange(len(block), dtype=np.int64)  # position inside the timestep
        return block

    def _tokenize_entry(self, s: TensorSpec, value: Any, text_targets: bool) -> TokenBlock:
        key = s.name
        if s.kind is Kind.TEXT:
            ids = self.text.encode(value, key)[: s.max_tokens]  # longer text is truncated (documented)
            return TokenBlock.of_tokens(ids, vocab.TokenKind.TEXT, loss=text_targets)
        if s.kind is Kind.IMAGE:
            h, w, _ = s.shape
            img = check_image(value, key)
            if img.shape[:2] != (h, w):
                img = resize_image(img, h, w)  # any size is resized to the spec (documented policy)
            patches, rows, cols = patchify(img, key)
            return TokenBlock.of_patches(patches, rows, cols)
        arr = np.asarray(value)
        if arr.shape != s.shape:
            raise ValueError(f"{key}: expected shape {s.shape}, got {arr.shape}")
        if s.kind is Kind.DISCRETE:
            return TokenBlock.of_tokens(self._discrete(s, arr), vocab.TokenKind.DISCRETE)
        return TokenBlock.of_tokens(self._continuous(s, arr), vocab.TokenKind.CONTINUOUS)

    def value_tokens(self, name: str, value: Any) -> np.ndarray:
        """The vocabulary ids of one discrete or continuous observation entry (what ``tokenize_observation`` puts
        in its place), validated the same way."""
        s = self.spec.observation(name)
        if s.kind in (Kind.TEXT, Kind.IMAGE):
            raise ValueError(f"{name}: value_tokens takes discrete or continuous entries, not {s.kind.value}")
        return self._tokenize_entry(s, value, True).tokens

    def _discrete(self, s: TensorSpec, arr: np.ndarray) -> np.ndarray:
        if arr.dtype.kind not in "iub":
            raise ValueError(f"{s.name}: discrete values must be integers, got dtype {arr.dtype}")
        flat = arr.astype(np.int64).ravel()
        if np.any((flat < 0) | (flat >= s.num_values)):  # type: ignore[operator]
            raise ValueError(f"{s.name}: discrete values must be in [0, {s.num_values}), got {flat.min()}..{flat.max()}")
        return flat + vocab.DISCRETE_OFFSET

    def _continuous(self, s: TensorSpec, arr: np.ndarray) -> np.ndarray:
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"{s.name}: continuous values must be numeric, got dtype {arr.dtype}")
        flat = arr.astype(np.float64).ravel()  # row-major flattening (paper)
        if not np.all(np.isfinite(flat)):
            raise ValueError(f"{s.name}: non-finite values (NaN or Inf) cannot be tokenized")
        if s.encoding is Encoding.LINEAR:
            low, high = self._linear[s.name]
            return encode_linear(flat, low, high) + vocab.BIN_OFFSET
        return encode_mu_law(flat) + vocab.BIN_OFFSET

    # -- actions -----------------------------------------------------------------------------------------
    def _action_mapping(self, action: Any) -> Mapping[str, Any]:
        if isinstance(action, Mapping):
            return action
        if len(self.spec.actions) == 1:
            return {self.spec.actions[0].name: action}
        raise ValueError(f"spec {self.spec.name!r} has several action keys; pass a mapping of them")

    def tokenize_action(self, action: Any) -> np.ndarray:
        """An action (array for single-key specs, or mapping) to vocabulary ids, in spec order."""
        mapping = self._action_mapping(action)
        out = []
        for s in self.spec.actions:
            if s.name not in mapping:
                raise ValueError(f"action lacks key {s.name!r}")
            arr = np.asarray(mapping[s.name])
            if arr.shape != s.shape:
                raise ValueError(f"{s.name}: expected action shape {s.shape}, got {arr.shape}")
            out.append(self._discrete(s, arr) if s.kind is Kind.DISCRETE else self._continuous(s, arr))
        return np.concatenate(out).astype(np.int64)

    def action_token_ranges(self) -> list[tuple[int, int]]:
        """The [lo, hi) vocabulary ids each action dimension may take, in token order."""
        ranges: list[tuple[int, int]] = []
        for s in self.spec.actions:
            if s.kind is Kind.DISCRETE:
                r = (vocab.DISCRETE_OFFSET, vocab.DISCRETE_OFFSET + int(s.num_values))  # type: ignore[arg-type]
            else:
                r = (vocab.BIN_OFFSET, vocab.BIN_OFFSET + vocab.NUM_BINS)
            ranges += [r] * s.size
        return ranges

    def detokenize_action(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Action tokens back to a flat float32 action in physical units (the inverse of the spec's scaling)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ranges = self.action_token_ranges()
        if ids.shape[0] != len(ranges):
            raise ValueError(f"expected {len(ranges)} action tokens, got {ids.shape[0]}")
        lo = np.array([r[0] for r in ranges])
        hi = np.array([r[1] for r in ranges])
        bad = np.flatnonzero((ids < lo) | (ids >= hi))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"action token {i} is {ids[i]}, outside its allowed range [{lo[i]}, {hi[i]})")
        out, i = [], 0
        for s in self.spec.actions:
            part = ids[i : i + s.size]
            i += s.size
            if s.kind is Kind.DISCRETE:
                out.append((part - vocab.DISCRETE_OFFSET).astype(np.float64))
            elif s.encoding is Encoding.LINEAR:
                low, high = self._linear[s.name]
                out.append(decode_linear(part - vocab.BIN_OFFSET, low, high))
            else:
                out.append(decode_mu_law(part - vocab.BIN_OFFSET))
        return np.concatenate(out).astype(np.float32)
