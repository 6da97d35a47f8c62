"""Text corpora, streamed: files or folders a user points at, tokenized on demand with the project's SentencePiece
model (``gato_robot.core.tokenizer.TextTokenizer``); loss on every token.

Sources (a file, a folder searched recursively, or a glob pattern such as ``data/train-*.parquet``):
- ``.txt`` / ``.md``: one document per file;
- ``.jsonl``: one document per line, its ``field`` (default ``text``);
- Hugging Face ``datasets`` shards (``gato_robot.domains.shards``): ``.parquet`` (the Hub's
  ``data/train-00000-of-00001.parquet``) and ``.arrow`` (``save_to_disk``'s ``data-00000-of-00001.arrow``), the
  string column ``field``.

Streaming: loading lists the corpus's chunks and nothing more: a Parquet row group or an Arrow record batch (from
the footer / the memory-mapped stream, no data decoded), ~1 MiB of JSONL lines (one pass that checks every line
parses, keeping only byte offsets), a text file. Nothing is tokenized at load. Sample i draws a chunk with
probability proportional to its size in bytes (a proxy for its token count), reads it (documents of at most
``cache_chars`` characters of chunks kept), draws one of its documents proportional to its length, tokenizes it (at most
``cache_tokens`` tokens of tokenized documents are kept, least recently used dropped) and places a uniformly drawn
window of ``context`` tokens in it (a shorter document is used whole, padded), cut into pseudo-timesteps of <= 512
tokens (``samples.text_block``). A document longer than ``PIECE_CHARS`` characters is tokenized one piece of that
many characters at a time (a piece drawn uniformly; a window never crosses pieces). Memory is bounded by the caches,
not by the corpus. A pure function of ``(seed, stream, i)``: the caches only save work.

Held out: the last ``held_out(n, eval_fraction)`` documents in file order (empty ones included in n).
Unreadable files, JSON lines that do not parse, shards without the column are reported with their path at load and
skipped, up to ``max_damaged``; a chunk that fails to decode when drawn is reported then and the sample redrawn.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gato_robot.core.tokenizer import TextTokenizer
from gato_robot.domains import shards
from gato_robot.domains.damage import DamageLog, DomainDataError
from gato_robot.domains.samples import text_block, to_sample

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + shards.SHARD_SUFFIXES
JSONL_CHUNK_BYTES = 1 << 20  # JSONL lines per chunk: about this many bytes
PIECE_CHARS = 1 << 16  # longer documents are tokenized a piece of this many characters at a time
CACHE_TOKENS = 1 << 20  # tokenized documents kept (int32: 4 MiB)
CACHE_CHARS = 1 << 25  # decoded chunks' documents kept (characters; the last chunk read is kept whatever its size)
_RETRIES = 8


def scan_jsonl(path: Path, field: str) -> list[shards.Chunk]:
    """Chunks of ~``JSONL_CHUNK_BYTES`` of a JSONL file, each line checked (raises ValueError naming the line)."""
    out: list[shards.Chunk] = []
    offset = start = rows = 0
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    item = json.loads(line)
                except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                    raise ValueError(f"line {n} is not JSON ({e})") from e
                if not isinstance(item, dict) or not isinstance(item.get(field), str):
                    raise ValueError(f"line {n} has no string field {field!r}")
                rows += 1
            offset += len(line)
            if offset - start >= JSONL_CHUNK_BYTES:
                out.append(shards.Chunk(str(path), len(out), 0, rows, float(offset - start), start, offset - start))
                start, rows = offset, 0
    if rows:
        out.append(shards.Chunk(str(path), len(out), 0, rows, float(offset - start), start, offset - start))
    return out


def scan(path: Path, field: str) -> list[shards.Chunk]:
    """A corpus file's chunks (see the module docstring); raises OSError / ValueError for a damaged file."""
    if path.suffix in shards.SHARD_SUFFIXES:
        return shards.scan(path, field)
    if path.suffix in JSONL_SUFFIXES:
        return scan_jsonl(path, field)
    size = path.stat().st_size  # raises for a missing file
    return [shards.Chunk(str(path), 0, 0, 1, float(size))] if size else []


class TextDataset:
    def __init__(self, paths: Sequence[str | Path], *, context: int, seed: int, stream: int = 0, domain_id: int = 0,
                 max_damaged: int = 10, field: str | None = "text", text_model: str | None = None, name: str = "text",
                 split: str = "all", eval_fraction: float = 0.05, cache_tokens: int = CACHE_TOKENS,
                 cache_chars: int = CACHE_CHARS) -> None:
        self.context, self.seed, self.stream, self.domain_id = context, seed, stream, domain_id
        self.field, self.name, self.cache_tokens, self.cache_chars = field or "text", name, cache_tokens, cache_chars
        self.damage = DamageLog(name, max_damaged)
        self.tok = TextTokenizer(text_model)
        chunks: list[shards.Chunk] = []
        for f in shards.source_files(paths, SUFFIXES):
            try:
                chunks += scan(f, self.field)
            except (OSError, ValueError) as e:
                self.damage.report(str(f), f"{type(e).__name__}: {e}")
        self.chunks = [c for c in shards.split_chunks(chunks, split, eval_fraction) if c.nbytes > 0]
        if not self.chunks:
            raise DomainDataError(f"{name}: no documents in {list(map(str, paths))} (.txt/.md files, .jsonl lines, "
                                  f".parquet/.arrow shards with a {self.field!r} column)")
        sizes = np.array([c.nbytes for c in self.chunks], np.float64)
        self._cum = np.cumsum(sizes / sizes.sum())
        self.num_documents = sum(c.rows for c in self.chunks)
        self.num_bytes = int(sizes.sum())
        self.reader = shards.ShardReader(chunks=1)  # decoded documents are cached here, not the Arrow data
        self._docs: OrderedDict[tuple[str, int], list[str | None]] = OrderedDict()
        self.cached_chars = 0
        self._tokens: OrderedDict[tuple[str, int, int, int], np.ndarray] = OrderedDict()
        self.cached_tokens = 0
        self.tokenized = 0  # documents (pieces) tokenized since construction

    def __len__(self) -> int:
        return self.num_documents

    def __getstate__(self) -> dict:  # a DataLoader worker starts with empty caches
        state = self.__dict__.copy()
        state["_tokens"], state["cached_tokens"], state["_docs"], state["cached_chars"] = OrderedDict(), 0, OrderedDict(), 0
        return state

    # -- reading -------------------------------------------------------------------------------------------
    def _documents(self, c: shards.Chunk) -> list[str | None]:
        if c.path.endswith(shards.SHARD_SUFFIXES):
            return self.reader.read(c, [self.field]).column(0).to_pylist()
        with open(c.path, "rb") as fh:
            fh.seek(c.offset)
            raw = fh.read(c.length) if c.length >= 0 else fh.read()
        if c.path.endswith(JSONL_SUFFIXES):
            docs = [json.loads(line)[self.field] for line in raw.splitlines() if line.strip()]
            return docs[c.start: c.stop]
        return [raw.decode("utf-8")]

    def _chunk(self, c: shards.Chunk) -> list[str | None]:
        key = (c.path, c.part)
        if key in self._docs:
            self._docs.move_to_end(key)
            return self._docs[key]
        docs = self._documents(c)
        self._docs[key] = docs
        self.cached_chars += sum(len(d) for d in docs if isinstance(d, str))
        while self.cached_chars > self.cache_chars and len(self._docs) > 1:
            self.cached_chars -= sum(len(d) for d in self._docs.popitem(last=False)[1] if isinstance(d, str))
        return docs

    def _encode(self, key: tuple[str, int, int, int], text: str) -> np.ndarray:
        if key in self._tokens:
            self._tokens.move_to_end(key)
            return self._tokens[key]
        ids = self.tok.encode(text).astype(np.int32)
        self.tokenized += 1
        self._tokens[key] = ids
        self.cached_tokens += len(ids)
        while self.cached_tokens > self.cache_tokens and len(self._tokens) > 1:
            self.cached_tokens -= len(self._tokens.popitem(last=False)[1])
        return ids

    # -- one sample ----------------------------------------------------------------------------------------
    def block(self, rng: np.random.Generator):
        for _ in range(_RETRIES):
            c = self.chunks[int(np.searchsorted(self._cum, rng.random(), side="right").clip(0, len(self.chunks) - 1))]
            if c.path in self.damage:
                continue
            try:
                docs = self._chunk(c)
            except (OSError, ValueError, KeyError) as e:
                self.damage.report(c.path, f"{type(e).__name__}: {e} (part {c.part})")
                continue
            lengths = np.array([len(d) if isinstance(d, str) and d.strip() else 0 for d in docs], np.float64)
            if not lengths.sum():
                continue  # only empty documents here
            j = int(np.searchsorted(np.cumsum(lengths / lengths.sum()), rng.random(), side="right").clip(
                0, len(docs) - 1))
            text = docs[j]
            p = int(rng.integers(math.ceil(len(text) / PIECE_CHARS)))
            piece = text[p * PIECE_CHARS: (p + 1) * PIECE_CHARS]
            if not piece.strip():
                continue
            ids = self._encode((c.path, c.part, c.start + j, p), piece)
            start = int(rng.integers(max(1, len(ids) - self.context + 1)))
            return text_block(ids[start: start + self.context])
        raise DomainDataError(f"{self.name}: {_RETRIES} draws in a row found only empty documents or damaged chunks; "
                              "see the warnings above")

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.stream, int(i)])
        return to_sample(self.block(rng), self.context, rng, self.domain_id)
