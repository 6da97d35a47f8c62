"""Text corpora: plain-text (``.txt``, ``.md``: one document per file) and JSON Lines (``.jsonl``: one document per
line, its ``text`` field) files or folders a user points at, tokenized with the project's SentencePiece model
(``gato_robot.core.tokenizer.TextTokenizer``); loss on every token.

Sample i: a document drawn with probability proportional to its token count, then a uniformly placed window of
``context`` tokens (documents shorter than the context are used whole, padded), cut into pseudo-timesteps of
<= 512 tokens (``samples.text_block``). A pure function of ``(seed, stream, i)``.
Unreadable files and JSON lines that do not parse are reported with their path and skipped, up to
``max_damaged``; beyond that the dataset refuses to load (``DomainDataError``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gato_robot.core.tokenizer import TextTokenizer
from gato_robot.domains.damage import DamageLog, DomainDataError
from gato_robot.domains.samples import split_keys, text_block, to_sample

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)


def corpus_files(paths: Sequence[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in TEXT_SUFFIXES + JSONL_SUFFIXES and f.is_file())
        else:
            out.append(p)  # a missing file is reported when read
    return out


def read_documents(path: Path, field: str = "text") -> list[str]:
    """Documents of one file; raises OSError / ValueError (with the line) on damage."""
    raw = path.read_bytes().decode("utf-8")
    if path.suffix in JSONL_SUFFIXES:
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"line {n} is not JSON ({e})") from e
            if not isinstance(item, dict) or not isinstance(item.get(field), str):
                raise ValueError(f"line {n} has no string field {field!r}")
            docs.append(item[field])
        return docs
    return [raw]


class TextDataset:
    def __init__(self, paths: Sequence[str | Path], *, context: int, seed: int, stream: int = 0, domain_id: int = 0,
                 max_damaged: int = 10, field: str = "text", text_model: str | None = None, name: str = "text",
                 split: str = "all", eval_fraction: float = 0.05) -> None:
        self.context, self.seed, self.stream, self.domain_id = context, seed, stream, domain_id
        self.damage = DamageLog(name, max_damaged)
        tok = TextTokenizer(text_model)
        docs: list[np.ndarray] = []
        for f in corpus_files(paths):
            try:
                texts = read_documents(f, field)
            except (OSError, ValueError) as e:
                self.damage.report(str(f), f"{type(e).__name__}: {e}")
                continue
            docs += [tok.encode(t).astype(np.int32) for t in texts if t.strip()]
        keep = split_keys(list(range(len(docs))), split, eval_fraction)
        docs = [d for i, d in enumerate(docs) if i in keep]
        if not docs:
            raise DomainDataError(f"{name}: no documents in {list(map(str, paths))} (.txt/.md files or .jsonl lines)")
        self.docs = docs
        sizes = np.array([len(d) for d in docs], np.float64)
        self._cum = np.cumsum(sizes / sizes.sum())
        self.num_tokens = int(sizes.sum())

    def __len__(self) -> int:
        return len(self.docs)

    def block(self, rng: np.random.Generator):
        d = self.docs[int(np.searchsorted(self._cum, rng.random(), side="right").clip(0, len(self.docs) - 1))]
        start = int(rng.integers(max(1, len(d) - self.context + 1)))
        return text_block(d[start: start + self.context])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.stream, int(i)])
        return to_sample(self.block(rng), self.context, rng, self.domain_id)
