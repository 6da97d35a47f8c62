"""Image captions (COCO-style) and visual question answering (VQA-style): readers for users' data and a scene
generator that writes the same formats with true captions and answers.

Formats (what COCO 2014/2017 and VQA v2 ship; only these fields are read):
- ``captions.json``: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``
- ``questions.json``: ``{"questions": [{"question_id", "image_id", "question"}]}`` and ``annotations.json``:
  ``{"annotations": [{"question_id", "multiple_choice_answer" | "answers": [{"answer"}]}]}``; the images are those
  of ``captions.json``'s ``images`` list when present, else files named by ``image_id`` via ``image_pattern``.
- images: a folder (default ``<json folder>/images``), any format imageio reads (PNG, JPEG); grey and RGBA are
  made RGB; every image is resized to ``image_size`` x ``image_size`` (the tokenizer's resize policy).

Samples (``samples.image_text_block``): caption = image patches then caption tokens (targets); VQA = patches, the
question as context ("question: ... answer:", not a target), then the answer (targets). A missing or undecodable
image is reported with its path and the sample redrawn (deterministically), up to ``max_damaged`` files.

Generator: ``render_scene`` draws 2-3 coloured shapes (square, circle, triangle) in up to three columns on a
plain floor, possibly one stacked on another, in pure numpy (fast, bit-exact for a seed); the caption and the
question/answer pairs are computed from the scene state (colours, shapes, which is on top, left/right, count).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core import vocab
from gato_robot.core.tokenizer import TextTokenizer, resize_image
from gato_robot.domains.damage import DamageLog, DomainDataError
from gato_robot.domains.samples import image_text_block, split_keys, to_sample

CAPTIONS, QUESTIONS, ANSWERS, IMAGES = "captions.json", "questions.json", "annotations.json", "images"
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (140, 60, 180)}
SHAPES = ("square", "circle", "triangle")
NUMBERS = {1: "one", 2: "two", 3: "three"}
_RETRIES = 8
_CACHE = 256  # decoded images kept per process


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
def load_image(path: str | Path) -> np.ndarray:
    """An (H, W, 3) uint8 image; grey is repeated, alpha dropped. Raises OSError/ValueError if unreadable."""
    import imageio.v3 as iio

    img = np.asarray(iio.imread(path))
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


def _files(source: Path, name: str) -> tuple[Path, Path]:
    """(json file, image folder) for a dataset folder or a json file."""
    js = source / name if source.is_dir() else source
    return js, js.parent / IMAGES


class _ImageTextDataset:
    """Shared sampling: entries of (image path, context text or None, target text)."""

    def __init__(self, entries: list[tuple[str, str | None, str]], *, context: int, seed: int, stream: int,
                 domain_id: int, max_damaged: int, image_size: int, text_model: str | None, name: str,
                 split: str = "all", eval_fraction: float = 0.05) -> None:
        keep = split_keys([e[0] for e in entries], split, eval_fraction)  # held out by image, never by caption
        entries = [e for e in entries if e[0] in keep]
        if not entries:
            raise DomainDataError(f"{name}: no entries")
        if image_size % vocab.PATCH_SIZE:
            raise ValueError(f"{name}: image_size {image_size} must be a multiple of {vocab.PATCH_SIZE}")
        self.entries, self.context, self.seed, self.stream = entries, context, seed, stream
        self.domain_id, self.image_size, self.name = domain_id, image_size, name
        self.max_tokens = min(context, vocab.MAX_TOKENS_PER_TIMESTEP)
        self.damage = DamageLog(name, max_damaged)
        self.tok = TextTokenizer(text_model)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def _image(self, path: str) -> np.ndarray:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        img = resize_image(load_image(path), self.image_size, self.image_size)
        self._cache[path] = img
        if len(self._cache) > _CACHE:
            self._cache.popitem(last=False)
        return img

    def block(self, rng: np.random.Generator):
        for _ in range(_RETRIES):
            path, ctx, target = self.entries[int(rng.integers(len(self.entries)))]
            if path in self.damage:
                continue
            try:
                img = self._image(path)
            except (OSError, ValueError) as e:
                self.damage.report(path, f"{type(e).__name__}: {e}")
                continue
            ctx_ids = self.tok.encode(ctx) if ctx else None
            return image_text_block(img, ctx_ids, self.tok.encode(target), self.max_tokens)
        raise DomainDataError(f"{self.name}: {_RETRIES} draws in a row hit damaged images; see the warnings above")

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.stream, int(i)])
        return to_sample(self.block(rng), self.context, rng, self.domain_id)


def _image_paths(data: dict[str, Any], folder: Path) -> dict[Any, str]:
    return {im["id"]: str(folder / im["file_name"]) for im in data.get("images", []) if "id" in im and "file_name" in im}


class CaptionDataset(_ImageTextDataset):
    def __init__(self, sources: Sequence[str | Path], *, images: str | None = None, **kw: Any) -> None:
        entries: list[tuple[str, str | None, str]] = []
        for src in map(Path, sources):
            js, folder = _files(src, CAPTIONS)
            data = _json(js)
            paths = _image_paths(data, Path(images) if images else folder)
            for a in data.get("annotations", []):
                if a.get("image_id") in paths and isinstance(a.get("caption"), str) and a["caption"].strip():
                    entries.append((paths[a["image_id"]], None, a["caption"].strip()))
        kw.setdefault("name", "caption")
        super().__init__(entries, **kw)


def _answer(a: dict[str, Any]) -> str | None:
    if isinstance(a.get("multiple_choice_answer"), str):
        return a["multiple_choice_answer"]
    answers = [x.get("answer") for x in a.get("answers", []) if isinstance(x.get("answer"), str)]
    return Counter(answers).most_common(1)[0][0] if answers else None


class VQADataset(_ImageTextDataset):
    def __init__(self, sources: Sequence[str | Path], *, images: str | None = None,
                 image_pattern: str = "{image_id}.png", **kw: Any) -> None:
        entries: list[tuple[str, str | None, str]] = []
        for src in map(Path, sources):
            qjs, folder = _files(src, QUESTIONS)
            folder = Path(images) if images else folder
            qdata, adata = _json(qjs), _json(qjs.parent / ANSWERS)
            paths = _image_paths(qdata, folder)
            answers = {a.get("question_id"): _answer(a) for a in adata.get("annotations", [])}
            for q in qdata.get("questions", []):
                ans = answers.get(q.get("question_id"))
                if ans and isinstance(q.get("question"), str):
                    path = paths.get(q["image_id"]) or str(folder / image_pattern.format(image_id=q["image_id"]))
                    entries.append((path, f"question: {q['question']} answer:", ans))
        kw.setdefault("name", "vqa")
        super().__init__(entries, **kw)
