"""Hugging Face ``datasets`` files (Parquet and Arrow shards), read one chunk at a time: a Parquet row group or an
Arrow record batch, never a whole corpus. pyarrow is imported lazily (the ``domains`` extra installs it).

What ``datasets`` writes (checked against datasets 5.2.0; tests/data/domains_hf holds files it wrote):
- Parquet: the Hub's ``data/<split>-00000-of-00001.parquet`` (``push_to_hub``; older pushes end ``-<hash>``), the
  Hub's ``refs/convert/parquet`` branch (``<config>/<split>/0000.parquet``), ``Dataset.to_parquet``. The schema's
  ``huggingface`` metadata holds the features.
- Arrow: a ``save_to_disk`` folder: ``data-00000-of-0000N.arrow`` (Arrow IPC *streaming* format: no footer, so the
  batches are found by walking the memory-mapped stream; nothing is decoded), ``state.json`` (``_data_files``),
  ``dataset_info.json``; a ``DatasetDict`` adds ``dataset_dict.json`` (``{"splits": [...]}``) and one such folder
  per split. The cache's ``*.arrow`` files are the same format; the IPC *file* format is read too.
- An ``Image`` feature is a struct ``{bytes: binary, path: string}``: the encoded file (PNG, JPEG) in ``bytes``, or
  only a ``path`` (absolute, or relative to the shard's folder).

Paths name a file, a folder (searched recursively, files in sorted order: the shards' zero-padded order) or a glob
pattern. A folder holding shards of several splits (``train-*`` and ``test-*``, a ``DatasetDict``) is refused: a
run that silently trained on its test split would be worse than one that stops.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gato_robot.domains.damage import DomainDataError
from gato_robot.domains.samples import SPLITS, held_out

SHARD_SUFFIXES = (".parquet", ".arrow")
HF_IMAGE = "Image"  # the ``_type`` of datasets' Image feature
_SPLIT_OF_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.(?:parquet|arrow)$")
_KNOWN_SPLITS = {"train", "test", "validation", "valid", "val", "dev", "eval"}
_OPEN_FILES = 16  # shard files kept open per process
_CHUNKS = 8  # decoded Parquet row groups kept per process


# ----------------------------------------------------------------------------------------------------------
# Which files
# ----------------------------------------------------------------------------------------------------------
def source_files(paths: Sequence[str | Path], suffixes: Sequence[str]) -> list[Path]:
    """The files of ``paths`` with one of ``suffixes``: a file as given (a missing one is reported when read), a
    folder's files (recursively, sorted), a glob pattern's matches (sorted). Raises DomainDataError for a folder that
    mixes splits (``dataset_dict.json``, or shards named ``train-*`` and ``test-*``)."""
    out: list[Path] = []
    for raw in map(str, paths):
        p = Path(raw)
        if p.is_dir():
            if (p / "dataset_dict.json").is_file():
                splits = _json_splits(p / "dataset_dict.json")
                raise DomainDataError(f"{p} is a DatasetDict (save_to_disk) with splits {splits}: point at one split "
                                      f"folder, e.g. {p / (splits[0] if splits else 'train')}")
            files = sorted(f for f in p.rglob("*") if f.suffix in suffixes and f.is_file())
            _refuse_mixed_splits(p, files)
            out += files
        elif not p.exists() and any(ch in raw for ch in "*?["):
            out += sorted(Path(f) for f in glob.glob(raw, recursive=True) if Path(f).suffix in suffixes)
        else:
            out.append(p)
    return out


def _json_splits(path: Path) -> list[str]:
    try:
        return [str(s) for s in json.loads(path.read_text()).get("splits", [])]
    except (OSError, ValueError, AttributeError):
        return []


def _refuse_mixed_splits(root: Path, files: Sequence[Path]) -> None:
    splits: dict[str, Path] = {}
    for f in files:
        if f.suffix not in SHARD_SUFFIXES:
            continue
        m = _SPLIT_OF_SHARD.match(f.name)
        split = m.group("split") if m and m.group("split") != "data" else None  # save_to_disk names shards data-*
        if split is None and f.parent != root and f.parent.name in _KNOWN_SPLITS:
            split = f.parent.name
        if split is not None:
            splits.setdefault(split, f)
    if len(splits) > 1:
        example = next(iter(splits.values()))
        raise DomainDataError(
            f"{root} holds shards of several splits ({', '.join(sorted(splits))}): point at one split's files, e.g. "
            f"'{example.parent}/{next(iter(splits))}-*{example.suffix}' (a glob), and put a held-out split in eval_paths")


# ----------------------------------------------------------------------------------------------------------
# Chunks
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` of one part of a file: a Parquet row group, an Arrow record batch, or (text files)
    ``length`` bytes from ``offset``. ``nbytes``: the size of its text (or of the whole part), a sampling weight."""

    path: str
    part: int
    start: int
    stop: int
    nbytes: float
    offset: int = 0
    length: int = -1

    @property
    def rows(self) -> int:
        return self.stop - self.start


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - the domains extra installs it
        raise DomainDataError("reading Parquet/Arrow shards needs pyarrow: pip install -e '.[domains]'") from e
    return pa, pq


def hf_features(schema: Any) -> dict[str, Any]:
    """The ``datasets`` features recorded in a schema's ``huggingface`` metadata ({} when absent)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        info = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    features = (info.get("info") or {}).get("features") if isinstance(info, dict) else None
    return features if isinstance(features, dict) else {}


def schema_of(path: Path) -> Any:
    """A shard's Arrow schema (Parquet footer, or the Arrow stream's first message)."""
    pa, pq = _pa()
    if path.suffix == ".parquet":
        return pq.read_schema(path)
    with pa.memory_map(str(path)) as mm:
        return _arrow_reader(pa, mm).schema


def _arrow_reader(pa: Any, source: Any) -> Any:
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:  # datasets writes the streaming format
        source.seek(0)
        return pa.ipc.open_stream(source)


def _arrow_batches(path: str) -> list[Any]:
    """The record batches of an Arrow IPC file, memory-mapped: zero-copy views, the data stays in the page cache."""
    pa, _ = _pa()
    reader = _arrow_reader(pa, pa.memory_map(path))
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
    return list(reader)


def scan(path: Path, column: str) -> list[Chunk]:
    """One Chunk per row group / record batch of a shard, weighted by ``column``'s bytes; reads the Parquet footer
    or walks the memory-mapped Arrow stream, decoding no data. Raises OSError / ValueError for a damaged shard or a
    missing column (naming the columns there are)."""
    _, pq = _pa()
    path = Path(path)
    if path.suffix == ".parquet":
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.to_arrow_schema().names
        _need(column, names)
        out = []
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            size = sum(rg.column(j).total_uncompressed_size for j in range(rg.num_columns)
                       if rg.column(j).path_in_schema.split(".")[0] == column)
            out.append(Chunk(str(path), g, 0, rg.num_rows, float(size)))
        return out
    out = []
    for b, batch in enumerate(_arrow_batches(str(path))):
        _need(column, batch.schema.names)
        out.append(Chunk(str(path), b, 0, batch.num_rows, float(batch.column(column).nbytes)))
    return out


def _need(column: str, names: Sequence[str]) -> None:
    if column not in names:
        raise ValueError(f"no column {column!r}; its columns: {list(names)} (set the domain's text_field)")


def split_chunks(chunks: Sequence[Chunk], split: str, fraction: float) -> list[Chunk]:
    """The chunks (clipped) holding ``split``'s rows: rows are numbered across the chunks in order, and the last
    ``held_out(rows, fraction)`` form "eval" (as ``samples.split_keys``: tiny sets are whole in both)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = sum(c.rows for c in chunks)
    k = held_out(n, fraction)
    if split == "all" or k == 0:
        return [c for c in chunks if c.rows]
    lo, hi = (n - k, n) if split == "eval" else (0, n - k)
    out, first = [], 0
    for c in chunks:
        a, b = max(lo, first), min(hi, first + c.rows)
        if a < b:
            part = (b - a) / c.rows
            out.append(dataclasses.replace(c, start=c.start + a - first, stop=c.start + b - first,
                                           nbytes=c.nbytes * part))
        first += c.rows
    return out


class ShardReader:
    """Reads chunks on demand; keeps ``open_files`` shards open and the last ``chunks`` decoded Parquet row groups
    (Arrow batches are memory-mapped views, not copies). Per process: a forked DataLoader worker starts empty."""

    def __init__(self, open_files: int = _OPEN_FILES, chunks: int = _CHUNKS) -> None:
        self.open_files, self.keep = open_files, chunks
        self.reads = 0  # row groups / record batches read (decoded or mapped) since construction
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[str, Any] = OrderedDict()
        self._chunks: OrderedDict[tuple[str, int, tuple[str, ...]], Any] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"], state["_chunks"] = OrderedDict(), OrderedDict()
        return state

    def _file(self, path: str) -> Any:
        if path in self._files:
            self._files.move_to_end(path)
            return self._files[path]
        _, pq = _pa()
        f = pq.ParquetFile(path, memory_map=True) if path.endswith(".parquet") else _arrow_batches(path)
        self._files[path] = f
        if len(self._files) > self.open_files:
            self._files.popitem(last=False)
        return f

    def read(self, chunk: Chunk, columns: Sequence[str]) -> Any:
        """The chunk's rows ``[start, stop)`` of ``columns`` as a pyarrow Table / RecordBatch."""
        if self._pid != os.getpid():
            self._reset()
        key = (chunk.path, chunk.part, tuple(columns))
        if key in self._chunks:
            self._chunks.move_to_end(key)
            data = self._chunks[key]
        else:
            f = self._file(chunk.path)
            self.reads += 1
            if isinstance(f, list):
                data = f[chunk.part].select(list(columns))
            else:
                data = f.read_row_group(chunk.part, columns=list(columns))
            self._chunks[key] = data
            if len(self._chunks) > self.keep:
                self._chunks.popitem(last=False)
        return data.slice(chunk.start, chunk.rows)

    @property
    def cached_chunks(self) -> int:
        return len(self._chunks)
