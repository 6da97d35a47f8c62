"""Image captions (COCO) and visual question answering (VQA v1/v2): readers for the files these datasets ship as,
and a scene generator that writes the same formats with true captions and answers.

Formats (only these fields are read):
- captions: COCO's ``annotations/captions_<split>.json`` (or ``captions.json``): ``{"images": [{"id",
  "file_name"}], "annotations": [{"image_id", "caption"}]}``; images by ``file_name``.
- VQA: the official ``v2_OpenEnded_mscoco_<split>_questions.json`` (``{"data_subtype", "questions": [{"question_id",
  "image_id", "question"}]}``) and ``v2_mscoco_<split>_annotations.json`` (``{"annotations": [{"question_id",
  "multiple_choice_answer", "answers": [10 x {"answer", ...}]}]}``; v1 without ``v2_``), or ``questions.json`` +
  ``annotations.json``. The answer is ``multiple_choice_answer`` (the most common of the ten), else the most common
  of ``answers``. Images: a questions file's ``images`` list when present, else ``image_pattern`` (fields
  ``{image_id}``, ``{split}``), else the first of ``AUTO_PATTERNS`` that finds them: COCO 2014's
  ``COCO_val2014_000000000042.jpg``, COCO 2017's ``000000000042.jpg``.
- image folder: ``images`` when given, else the first that exists of ``<json folder>/images``, ``<json
  folder>/<split>``, ``<json folder>/../<split>`` (COCO: ``annotations/`` beside ``val2017/``) and
  ``<json folder>/../Images/mscoco/<split>`` (the VQA API's layout); any format imageio reads; grey and RGBA are
  made RGB; every image is resized to ``image_size`` x ``image_size`` (the tokenizer's resize policy).
- image-text shards of Hugging Face ``datasets`` (captions): ``.parquet`` / ``.arrow`` files with an ``Image``
  column (``{bytes, path}``) and a caption column (``text_field``; default ``caption``, else ``text``; a list of
  strings gives one drawn per sample), read a row group at a time (``gato_robot.domains.shards``).

A missing image file (a partial download, a wrong folder) is found at load: its captions/questions are skipped,
counted and logged; none found stops with the first expected path. An image that exists but does not decode is
reported with its path when drawn and the sample redrawn (deterministically), up to ``max_damaged`` files.

Samples (``samples.image_text_block``): caption = image patches then caption tokens (targets); VQA = patches, the
question as context ("question: ... answer:", not a target), then the answer (targets). Patch positions: drawn
inside their intervals for training samples, the rounded means for held-out ones (``train=False``; Gato's
evaluation positions).

Generator: ``render_scene`` draws 2-3 coloured shapes (square, circle, triangle) in up to three columns on a
plain floor, possibly one stacked on another, in pure numpy (fast, bit-exact for a seed); the caption and the
question/answer pairs are computed from the scene state (colours, shapes, which is on top, left/right, count).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core import vocab
from gato_robot.core.tokenizer import TextTokenizer, resize_image
from gato_robot.domains import shards
from gato_robot.domains.damage import DamageLog, DomainDataError
from gato_robot.domains.samples import image_text_block, split_keys, to_sample

CAPTIONS, QUESTIONS, ANSWERS, IMAGES = "captions.json", "questions.json", "annotations.json", "images"
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (140, 60, 180)}
SHAPES = ("square", "circle", "triangle")
NUMBERS = {1: "one", 2: "two", 3: "three"}
_RETRIES = 8
_CACHE = 256  # decoded images kept per process

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Shape:
    colour: str
    shape: str
    column: int  # 0 = leftmost used column
    level: int  # 0 on the floor, 1 on top of the column's level-0 object

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def sample_scene(rng: np.random.Generator) -> list[Shape]:
    """2-3 shapes of distinct colours in 1-3 columns; at most one column holds a stack of two."""
    n = int(rng.integers(2, 4))
    colours = rng.choice(list(COLOURS), size=n, replace=False)
    shapes = rng.choice(SHAPES, size=n)
    stacked = bool(rng.random() < 0.5)
    columns = n - 1 if stacked else n
    stack_column = int(rng.integers(columns)) if stacked else -1
    out, k = [], 0
    for c in range(columns):
        out.append(Shape(str(colours[k]), str(shapes[k]), c, 0))
        k += 1
        if c == stack_column:
            out.append(Shape(str(colours[k]), str(shapes[k]), c, 1))
            k += 1
    return out


def render_scene(scene: Sequence[Shape], size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """(size, size, 3) uint8: grey wall, darker floor, shapes of side ~size/5 resting on the floor or on each other."""
    img = np.full((size, size, 3), 200, np.uint8)
    floor = size - size // 8
    img[floor:] = 120
    side = max(6, size // 5)
    columns = max(s.column for s in scene) + 1
    jitter = (rng.integers(-size // 32, size // 32 + 1, size=columns) if rng is not None
              else np.zeros(columns, np.int64))
    yy, xx = np.mgrid[0:size, 0:size]
    for s in sorted(scene, key=lambda s: s.level):
        cx = int((s.column + 0.5) * size / columns + jitter[s.column])
        bottom = floor - s.level * side
        x0, y0 = cx - side // 2, bottom - side
        if s.shape == "square":
            mask = (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < bottom)
        elif s.shape == "circle":
            r = side / 2
            mask = (xx - (x0 + r - 0.5)) ** 2 + (yy - (y0 + r - 0.5)) ** 2 <= r * r
        else:  # triangle, apex up
            rel = (yy - y0 + 0.5) / side  # 0 at apex row, 1 at base
            mask = (yy >= y0) & (yy < bottom) & (np.abs(xx - (x0 + side / 2 - 0.5)) <= rel * side / 2)
        img[mask] = COLOURS[s.colour]
    return img


def describe(scene: Sequence[Shape]) -> str:
    cols = []
    for c in range(max(s.column for s in scene) + 1):
        here = sorted((s for s in scene if s.column == c), key=lambda s: -s.level)
        cols.append(" on top of ".join(f"a {s.name}" for s in here))
    if len(cols) == 1:
        return cols[0]
    return "from left to right: " + ", ".join(cols[:-1]) + " and " + cols[-1]


def questions(scene: Sequence[Shape], rng: np.random.Generator) -> list[tuple[str, str]]:
    """True (question, answer) pairs about a scene."""
    qa = [(f"what colour is the {s.shape}?", s.colour) for s in scene
          if sum(t.shape == s.shape for t in scene) == 1]
    qa += [(f"what shape is the {s.colour} object?", s.shape) for s in scene]
    top = [s for s in scene if s.level == 1]
    qa.append(("which object is on top of another?", f"the {top[0].name}" if top else "none"))
    qa.append(("how many objects are there?", NUMBERS[len(scene)]))
    pairs = [(a, b) for a in scene for b in scene if a.column != b.column]
    if pairs:
        a, b = pairs[int(rng.integers(len(pairs)))]
        qa.append((f"is the {a.name} left of the {b.name}?", "yes" if a.column < b.column else "no"))
    return qa


def generate(out: str | Path, images: int = 100, seed: int = 0, size: int = 64,
             progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """``images`` rendered scenes with one true caption each and their question/answer pairs, in COCO/VQA style:
    ``out/images/*.png``, ``out/captions.json``, ``out/questions.json``, ``out/annotations.json``."""
    import imageio.v3 as iio

    out = Path(out)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    imgs, caps, qs, anns = [], [], [], []
    for i in range(images):
        rng = np.random.default_rng([seed, i])
        scene = sample_scene(rng)
        name = f"scene_{seed:04d}_{i:06d}.png"
        iio.imwrite(out / IMAGES / name, render_scene(scene, size, rng))
        imgs.append({"id": i, "file_name": name, "height": size, "width": size})
        caps.append({"id": i, "image_id": i, "caption": describe(scene)})
        for q, a in questions(scene, rng):
            qid = len(qs)
            qs.append({"question_id": qid, "image_id": i, "question": q})
            anns.append({"question_id": qid, "image_id": i, "multiple_choice_answer": a, "answers": [{"answer": a}]})
    info = {"description": "gato_robot rendered scenes", "seed": seed}
    paths = {CAPTIONS: out / CAPTIONS, QUESTIONS: out / QUESTIONS, ANSWERS: out / ANSWERS}
    paths[CAPTIONS].write_text(json.dumps({"info": info, "images": imgs, "annotations": caps}))
    paths[QUESTIONS].write_text(json.dumps({"info": info, "images": imgs, "questions": qs}))
    paths[ANSWERS].write_text(json.dumps({"info": info, "annotations": anns}))
    if progress:
        progress(f"scenes: {images} images, {len(qs)} questions")
    return paths


# ----------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------
# VQA's official names (visualqa.org; v1 without the v2_ prefix): v2_OpenEnded_mscoco_<subtype>_questions.json and
# v2_mscoco_<subtype>_annotations.json, subtype train2014 / val2014 / test2015 / test-dev2015 (no annotations).
_VQA_QUESTIONS = re.compile(r"^(?P<v>v2_)?OpenEnded_mscoco_(?P<subtype>.+)_questions\.json$")
_COCO_CAPTIONS = re.compile(r"^captions_(?P<subtype>.+)\.json$")  # COCO's annotations/captions_val2017.json
# Image names tried, in order, for a VQA domain without an image_pattern ({split}: the file's subtype): COCO 2014
# (COCO_val2014_000000000042.jpg), COCO 2017 and later (000000000042.jpg), each also in a <subtype> folder; then the
# generator's. The one that finds most of the first _PROBE questions' images is used for all.
AUTO_PATTERNS = ("COCO_{split}_{image_id:012d}.jpg", "{split}/COCO_{split}_{image_id:012d}.jpg",
                 "{image_id:012d}.jpg", "{split}/{image_id:012d}.jpg", "{image_id}.png", "{image_id}.jpg")
_PROBE = 50
CAPTION_FIELDS = ("caption", "text")  # image-text shards: the caption column when text_field is not set


def load_image(source: str | Path | bytes) -> np.ndarray:
    """An (H, W, 3) uint8 image from a file or its encoded bytes; grey is repeated, alpha dropped. Raises
    OSError/ValueError if unreadable."""
    import imageio.v3 as iio

    img = np.asarray(iio.imread(source))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"not an RGB image: shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float64) * (255.0 / max(np.iinfo(img.dtype).max, 1)), 0, 255).astype(np.uint8)
    return img[..., :3]


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DomainDataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise DomainDataError(f"{path}: expected a JSON object")
    return data


def _one(src: Path, found: list[Path], what: str, expected: str) -> Path:
    if not found:
        raise DomainDataError(f"{src}: no {what}: expected {expected}")
    if len(found) > 1:
        raise DomainDataError(f"{src} holds {what} of several splits ({', '.join(f.name for f in found)}): point the "
                              "domain's paths at one file and its eval_paths at another")
    return found[0]


def caption_file(src: Path) -> tuple[Path, str | None]:
    """(captions JSON, its subtype) of a source: a file, or a folder holding ``captions.json`` or one COCO
    ``captions_<subtype>.json`` (searched recursively: COCO's ``annotations/`` folder)."""
    js = src
    if src.is_dir():
        js = src / CAPTIONS if (src / CAPTIONS).is_file() else _one(
            src, sorted(f for f in src.rglob("captions_*.json") if _COCO_CAPTIONS.match(f.name)), "captions",
            f"{CAPTIONS} or COCO's annotations/captions_<split>.json")
    m = _COCO_CAPTIONS.match(js.name)
    return js, m.group("subtype") if m else None


def _vqa_annotations(questions: Path) -> Path | None:
    m = _VQA_QUESTIONS.match(questions.name)
    if not m:
        return questions.parent / ANSWERS
    name = f"{m.group('v') or ''}mscoco_{m.group('subtype')}_annotations.json"
    # beside the questions, or the VQA API's layout: <root>/Questions/..., <root>/Annotations/...
    for folder in (questions.parent, questions.parent.parent / "Annotations", questions.parent.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def vqa_files(src: Path) -> tuple[Path, Path, str | None]:
    """(questions, annotations, subtype) of a source: a questions file (an official name finds its annotations
    beside it or in ``../Annotations``; another name, ``annotations.json`` beside it), or a folder holding
    ``questions.json`` + ``annotations.json`` or one official pair (searched recursively; test-dev questions, which
    have no annotations, are passed over)."""
    q = src
    if src.is_dir():
        q = src / QUESTIONS if (src / QUESTIONS).is_file() else _one(
            src, sorted(f for f in src.rglob("*.json") if _VQA_QUESTIONS.match(f.name) and _vqa_annotations(f)),
            "VQA questions with annotations", "v2_OpenEnded_mscoco_<split>_questions.json and "
            "v2_mscoco_<split>_annotations.json (VQAv2's names), or questions.json and annotations.json")
    a = _vqa_annotations(q)
    m = _VQA_QUESTIONS.match(q.name)
    if a is None:
        raise DomainDataError(f"{q}: no annotations (answers) file: expected "
                              f"{q.parent / ((m.group('v') or '') + 'mscoco_' + m.group('subtype') + '_annotations.json')}")
    return q, a, m.group("subtype") if m else None


def image_folder(js: Path, subtype: str | None, images: str | None) -> Path:
    """``images`` when set (``{split}`` in it becomes the file's subtype: ``coco/{split}`` serves the train2014 and
    the val2014 files), else the first folder that exists of: ``<json folder>/images``, then for an official file
    ``<json folder>/<subtype>``, ``<json folder>/../<subtype>`` (COCO: annotations/ beside val2017/) and
    ``<json folder>/../Images/mscoco/<subtype>`` (the VQA API's layout)."""
    if images:
        return Path(images.replace("{split}", subtype or ""))
    options = [js.parent / IMAGES]
    if subtype:
        up = js.parent.parent
        options += [js.parent / subtype, up / subtype, up / "Images" / "mscoco" / subtype, up / "Images" / subtype]
    return next((o for o in options if o.is_dir()), options[0])


class _Listing:
    """Which files exist: one directory listing per folder (fast for COCO's 100k-image folders)."""

    def __init__(self) -> None:
        self._names: dict[str, set[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in self._names:
            try:
                self._names[folder] = set(os.listdir(folder or "."))
            except OSError:
                self._names[folder] = set()
        return name in self._names[folder]


def format_pattern(pattern: str, image_id: Any, split: str | None) -> str:
    """An image file name from ``pattern`` (fields ``{image_id}``, e.g. ``{image_id:012d}``, and ``{split}``)."""
    return pattern.format(image_id=image_id, split=split or "")


def choose_pattern(folder: Path, image_ids: Sequence[Any], split: str | None, listing: _Listing,
                   where: Path) -> str:
    """The ``AUTO_PATTERNS`` entry that finds most of the first ``_PROBE`` image ids' files in ``folder``."""
    probe = list(dict.fromkeys(image_ids))[:_PROBE]
    best, hits = None, 0
    for pattern in AUTO_PATTERNS:
        if "{split}" in pattern and not split:
            continue
        try:
            n = sum(listing.exists(str(folder / format_pattern(pattern, i, split))) for i in probe)
        except (ValueError, TypeError):  # e.g. {image_id:012d} for string ids
            continue
        if n > hits:
            best, hits = pattern, n
    if best is None:
        tried = ", ".join(format_pattern(p, probe[0], split) for p in AUTO_PATTERNS
                          if split or "{split}" not in p) if probe else "-"
        raise DomainDataError(
            f"{where}: none of the first {len(probe)} questions' images is in {folder} (tried {tried}): set the "
            "domain's images (the folder; {split} in it: the file's split, e.g. coco/{split}) and image_pattern "
            "(e.g. 'COCO_{split}_{image_id:012d}.jpg')")
    return best


def _image_paths(data: dict[str, Any], folder: Path) -> dict[Any, str]:
    return {im["id"]: str(folder / im["file_name"]) for im in data.get("images", []) if "id" in im and "file_name" in im}


def _present(entries: list[tuple[str, str | None, str]], name: str,
             listing: _Listing) -> list[tuple[str, str | None, str]]:
    """The entries whose image file exists; the others are skipped, counted and logged (a partial download)."""
    missing = sorted({e[0] for e in entries if not listing.exists(e[0])})
    if not missing:
        return entries
    kept = [e for e in entries if listing.exists(e[0])]
    if not kept:
        raise DomainDataError(f"{name}: none of the {len({e[0] for e in entries})} image files exists, e.g. "
                              f"{missing[0]}: set the domain's images (the folder) or image_pattern")
    log.warning("%s: %d missing image files: their %d entries skipped (e.g. %s)", name, len(missing),
                len(entries) - len(kept), missing[0])
    return kept


def hf_image(value: Any, shard: str) -> np.ndarray:
    """A ``datasets`` Image value ({bytes, path}, raw bytes, or a path relative to the shard's folder) decoded."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return load_image(bytes(value["bytes"]))
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return load_image(bytes(value))
    if isinstance(value, str) and value:
        p = Path(value)
        return load_image(p if p.is_absolute() else Path(shard).parent / p)
    raise ValueError("an image value with neither bytes nor a path")


def image_column(schema: Any) -> str:
    """The column of a shard holding images: a ``datasets`` Image feature, else a struct with ``bytes``, else
    ``image``."""
    for name, f in shards.hf_features(schema).items():
        if isinstance(f, dict) and f.get("_type") == shards.HF_IMAGE and name in schema.names:
            return name
    for field in schema:
        t = field.type
        if hasattr(t, "num_fields") and "bytes" in [t.field(i).name for i in range(t.num_fields)]:
            return field.name
    if "image" in schema.names:
        return "image"
    raise ValueError(f"no image column (a datasets Image feature or a struct {{bytes, path}}); columns: {schema.names}")


class ShardError(Exception):
    """A shard's row group / record batch that does not decode: ``path`` and why."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path, self.why = path, why


class ShardPairs:
    """Image-text pairs stored as Hugging Face shards (``gato_robot.domains.shards``), one row each: an image column
    and a caption column (a string, or a list of strings of which one is drawn). Read a row group at a time."""

    def __init__(self, files: Sequence[Path], *, text_field: str | None, split: str, eval_fraction: float,
                 damage: DamageLog) -> None:
        chunks: list[shards.Chunk] = []
        self.columns: dict[str, tuple[str, str]] = {}
        for f in files:
            try:
                schema = shards.schema_of(f)
                text = text_field or next((c for c in CAPTION_FIELDS if c in schema.names), CAPTION_FIELDS[0])
                self.columns[str(f)] = (image_column(schema), text)
                chunks += shards.scan(f, text)
            except (OSError, ValueError) as e:
                damage.report(str(f), f"{type(e).__name__}: {e}")
        self.chunks = shards.split_chunks(chunks, split, eval_fraction)
        self._ends = np.cumsum([c.rows for c in self.chunks])
        self.reader = shards.ShardReader(chunks=4)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def pair(self, k: int, rng: np.random.Generator) -> tuple[str, Callable[[], np.ndarray], str | None]:
        """(cache key naming the file and row, image loader, caption or None)."""
        ci = int(np.searchsorted(self._ends, k, side="right"))
        c = self.chunks[ci]
        r = k - (int(self._ends[ci - 1]) if ci else 0)
        image_col, text_col = self.columns[c.path]
        try:
            table = self.reader.read(c, [image_col, text_col])
        except (OSError, ValueError) as e:
            raise ShardError(c.path, f"{type(e).__name__}: {e} (part {c.part})") from e
        image, text = table.column(0)[r].as_py(), table.column(1)[r].as_py()
        if isinstance(text, list):
            texts = [t for t in text if isinstance(t, str) and t.strip()]
            text = texts[int(rng.integers(len(texts)))] if texts else None
        key = f"{c.path} (part {c.part}, row {c.start + r})"
        caption = text.strip() if isinstance(text, str) and text.strip() else None
        return key, lambda: hf_image(image, c.path), caption


class _ImageTextDataset:
    """Shared sampling over entries of (image path, context text or None, target text) from JSON files, and rows of
    image-text shards. ``train``: patch positions drawn inside their intervals; held out (False): their rounded
    means (Gato's evaluation positions, ``core.sequence.collate``)."""

    def __init__(self, entries: list[tuple[str, str | None, str]], *, context: int, seed: int, stream: int,
                 domain_id: int, max_damaged: int, image_size: int, text_model: str | None, name: str,
                 split: str = "all", eval_fraction: float = 0.05, train: bool = True,
                 pairs: ShardPairs | None = None, damage: DamageLog | None = None) -> None:
        if entries:
            entries = _present(entries, name, _Listing())
        keep = split_keys([e[0] for e in entries], split, eval_fraction)  # held out by image, never by caption
        entries = [e for e in entries if e[0] in keep]
        self.pairs = pairs if pairs is not None and len(pairs) else None
        if not entries and self.pairs is None:
            raise DomainDataError(f"{name}: no entries")
        if image_size % vocab.PATCH_SIZE:
            raise ValueError(f"{name}: image_size {image_size} must be a multiple of {vocab.PATCH_SIZE}")
        self.entries, self.context, self.seed, self.stream = entries, context, seed, stream
        self.domain_id, self.image_size, self.name, self.train = domain_id, image_size, name, train
        self.max_tokens = min(context, vocab.MAX_TOKENS_PER_TIMESTEP)
        self.damage = damage or DamageLog(name, max_damaged)
        self.tok = TextTokenizer(text_model)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries) + (len(self.pairs) if self.pairs else 0)

    def _image(self, key: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        img = resize_image(load(), self.image_size, self.image_size)
        self._cache[key] = img
        if len(self._cache) > _CACHE:
            self._cache.popitem(last=False)
        return img

    def _draw(self, rng: np.random.Generator) -> tuple[str, Callable[[], np.ndarray], str | None, str | None]:
        k = int(rng.integers(len(self)))
        if k < len(self.entries):
            path, ctx, target = self.entries[k]
            return path, lambda: load_image(path), ctx, target
        key, load, caption = self.pairs.pair(k - len(self.entries), rng)
        return key, load, None, caption

    def block(self, rng: np.random.Generator):
        for _ in range(_RETRIES):
            try:
                key, load, ctx, target = self._draw(rng)
            except ShardError as e:
                self.damage.report(e.path, e.why)
                continue
            if key in self.damage or target is None:
                continue
            try:
                img = self._image(key, load)
            except (OSError, ValueError) as e:
                self.damage.report(key, f"{type(e).__name__}: {e}")
                continue
            ctx_ids = self.tok.encode(ctx) if ctx else None
            return image_text_block(img, ctx_ids, self.tok.encode(target), self.max_tokens)
        raise DomainDataError(f"{self.name}: {_RETRIES} draws in a row hit damaged images or empty captions; see the "
                              "warnings above")

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.stream, int(i)])
        return to_sample(self.block(rng), self.context, rng if self.train else None, self.domain_id)


def _is_shards(src: Path) -> bool:
    if src.is_dir():
        return not (src / CAPTIONS).is_file() and not any(src.rglob("captions_*.json")) and any(
            f.suffix in shards.SHARD_SUFFIXES for f in src.rglob("*"))
    return src.suffix in shards.SHARD_SUFFIXES or (not src.exists() and any(ch in str(src) for ch in "*?["))


class CaptionDataset(_ImageTextDataset):
    """COCO captions (``captions.json`` or COCO's ``captions_<split>.json``, images by their ``file_name``) and
    image-text shards of Hugging Face ``datasets`` (.parquet / .arrow: an Image column and ``text_field``, default
    ``caption`` else ``text``)."""

    def __init__(self, sources: Sequence[str | Path], *, images: str | None = None, text_field: str | None = None,
                 **kw: Any) -> None:
        kw.setdefault("name", "caption")
        entries: list[tuple[str, str | None, str]] = []
        shard_sources = []
        for src in map(Path, sources):
            if _is_shards(src):
                shard_sources.append(src)
                continue
            js, subtype = caption_file(src)
            data = _json(js)
            paths = _image_paths(data, image_folder(js, subtype, images))
            for a in data.get("annotations", []):
                if a.get("image_id") in paths and isinstance(a.get("caption"), str) and a["caption"].strip():
                    entries.append((paths[a["image_id"]], None, a["caption"].strip()))
        damage = DamageLog(kw["name"], kw.get("max_damaged", 10))
        pairs = None
        if shard_sources:
            pairs = ShardPairs(shards.source_files(shard_sources, shards.SHARD_SUFFIXES), text_field=text_field,
                               split=kw.get("split", "all"), eval_fraction=kw.get("eval_fraction", 0.05),
                               damage=damage)
        super().__init__(entries, pairs=pairs, damage=damage, **kw)


def _answer(a: dict[str, Any]) -> str | None:
    """VQA's ``multiple_choice_answer`` (the most frequent of the ten annotators' answers), else the most frequent
    of ``answers``."""
    if isinstance(a.get("multiple_choice_answer"), str) and a["multiple_choice_answer"].strip():
        return a["multiple_choice_answer"]
    answers = [x.get("answer") for x in a.get("answers", []) if isinstance(x, dict) and isinstance(x.get("answer"), str)]
    return Counter(answers).most_common(1)[0][0] if answers else None


class VQADataset(_ImageTextDataset):
    """VQA v1/v2 (official ``v2_OpenEnded_mscoco_<split>_questions.json`` + ``v2_mscoco_<split>_annotations.json``,
    or ``questions.json`` + ``annotations.json``); images named by ``image_pattern`` (None: chosen from
    ``AUTO_PATTERNS``) in ``images`` (None: ``image_folder``'s search), or by a questions file's ``images`` list."""

    def __init__(self, sources: Sequence[str | Path], *, images: str | None = None,
                 image_pattern: str | None = None, **kw: Any) -> None:
        kw.setdefault("name", "vqa")
        entries: list[tuple[str, str | None, str]] = []
        listing = _Listing()
        for src in map(Path, sources):
            qjs, ajs, subtype = vqa_files(src)
            qdata, adata = _json(qjs), _json(ajs)
            split = subtype or qdata.get("data_subtype")
            folder = image_folder(qjs, split, images)
            paths = _image_paths(qdata, folder)
            answers = {a.get("question_id"): _answer(a) for a in adata.get("annotations", []) if isinstance(a, dict)}
            qs = [q for q in qdata.get("questions", []) if isinstance(q, dict) and isinstance(q.get("question"), str)
                  and answers.get(q.get("question_id")) and "image_id" in q]
            unnamed = [q["image_id"] for q in qs if q["image_id"] not in paths]
            pattern = image_pattern or (choose_pattern(folder, unnamed, split, listing, qjs) if unnamed else "")
            for q in qs:
                path = paths.get(q["image_id"]) or str(folder / format_pattern(pattern, q["image_id"], split))
                entries.append((path, f"question: {q['question']} answer:", answers[q["question_id"]]))
        super().__init__(entries, **kw)
