"""The project's episode format: one HDF5 file per episode (h5py).

Why HDF5: it is the robot-learning convention (robomimic, LIBERO, ALOHA), h5py is well kept, datasets are
chunked one timestep per chunk so a training window reads only its timesteps, images are gzip-compressed
losslessly, every chunk carries a Fletcher-32 checksum (a flipped bit is an error, never silent data), and
nothing is pickled: only numeric arrays, UTF-8 strings and JSON attributes.

Layout (``format_version`` 1)::

    /                      attrs: format="gato_robot.episode", format_version=1,
                                  spec=<RobotSpec JSON>, metadata=<JSON object>,
                                  header_sha256=<sha256 of spec + "\n" + metadata> (attributes have no
                                  HDF5 checksum of their own)
    /observations/<key>    (T, *shape) per observation key of the spec (images uint8; text UTF-8 strings)
    /actions/<key>         (T, *shape) per action key of the spec, physical units
    /rewards               (T,) float32
    /extras/<name>         (T, ...) optional privileged data (object poses, ...), never a policy input
    /checksums/<path>      (T,) uint32 CRC-32 of each row of the dataset at <path>, checked on every read:
                           HDF5's Fletcher-32 covers the chunks it reads, but a damaged chunk index makes a
                           chunk read back as zeros with no error; the per-row CRC catches that too.

Non-finite values (NaN, Inf) are never written: ``write_episode`` refuses an episode holding one in any float
array, naming the field and the row, and readers refuse a file that holds one (written by another tool), so a
trainer skips it by name instead of tokenizing NaN.

Metadata is free-form JSON; the writers in this project set at least ``task``, ``success`` (bool),
``return`` (float), ``policy`` and ``seed``. Files are written to a temporary name and renamed, so a
crash mid-write never leaves a half-written episode under the final name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gato_robot.core.specs import Kind, RobotSpec

FORMAT = "gato_robot.episode"
FORMAT_VERSION = 1
SUFFIX = ".h5"


class EpisodeError(ValueError):
    """An episode file that is missing, corrupt, or does not match its spec. The message names the file."""


@dataclasses.dataclass
class Episode:
    spec: RobotSpec
    observations: dict[str, np.ndarray]
    actions: dict[str, np.ndarray]
    rewards: np.ndarray
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def observation(self, t: int) -> dict[str, Any]:
        return {k: v[t] for k, v in self.observations.items()}

    def action(self, t: int) -> dict[str, np.ndarray]:
        return {k: v[t] for k, v in self.actions.items()}

    def validate(self) -> None:
        """Raise EpisodeError unless every key of the spec is present with T rows of the right shape."""
        n = len(self)
        for group, specs, data in (
            ("observations", self.spec.observations, self.observations),
            ("actions", self.spec.actions, self.actions),
        ):
            missing = sorted({s.name for s in specs} - set(data))
            if missing:
                raise EpisodeError(f"episode {group} lack keys {missing}")
            for s in specs:
                arr = data[s.name]
                want = (n,) if s.kind is Kind.TEXT else (n, *s.shape)
                if tuple(np.shape(arr)) != want:
                    raise EpisodeError(f"episode {group}[{s.name!r}] has shape {np.shape(arr)}, expected {want}")
        for name, arr in self.extras.items():
            if np.shape(arr)[0] != n:
                raise EpisodeError(f"episode extras[{name!r}] has {np.shape(arr)[0]} rows, expected {n}")
        json.dumps(self.metadata)  # raises TypeError early for non-JSON metadata

    def check_finite(self, where: str = "episode", first_row: int = 0) -> None:
        """Raise EpisodeError naming the first float array (and row, counted from ``first_row``) holding NaN/Inf."""
        for field, arr in self.float_arrays():
            bad = ~np.isfinite(arr)
            if bad.any():
                row = first_row + (int(np.argwhere(bad)[0][0]) if arr.ndim else 0)
                raise EpisodeError(f"{where}: {field} holds non-finite values (NaN or Inf), first at row {row}")

    def float_arrays(self) -> list[tuple[str, np.ndarray]]:
        """(field, array) for every floating-point array: observations, actions, rewards, extras."""
        out = []
        for group, data in (("observations", self.observations), ("actions", self.actions),
                            ("extras", self.extras)):
            for name, arr in data.items():
                a = np.asarray(arr)
                if a.dtype != object and np.issubdtype(a.dtype, np.inexact):
                    out.append((f"{group}[{name!r}]", a))
        rewards = np.asarray(self.rewards)
        if np.issubdtype(rewards.dtype, np.inexact):
            out.append(("rewards", rewards))
        return out


def write_episode(path: str | os.PathLike, episode: Episode, *, compression_level: int = 4) -> Path:
    """Write ``episode`` atomically to ``path`` (``.h5`` appended if missing). Returns the final path.

    Raises EpisodeError (a ValueError) before creating any file if the episode does not match its spec or holds
    a non-finite value (NaN, Inf) in any float array."""
    episode.validate()
    episode.check_finite("refusing to write the episode")
    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_name(path.name + SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            spec_json = episode.spec.to_json()
            meta_json = json.dumps(episode.metadata, sort_keys=True)
            f.attrs["spec"] = spec_json
            f.attrs["metadata"] = meta_json
            f.attrs["header_sha256"] = _header_hash(spec_json, meta_json)
            for group, specs, data in (
                ("observations", episode.spec.observations, episode.observations),
                ("actions", episode.spec.actions, episode.actions),
            ):
                for s in specs:
                    _write(f, f"{group}/{s.name}", data[s.name], s.kind, compression_level)
            _write(f, "rewards", np.asarray(episode.rewards, np.float32), None, compression_level)
            for name, arr in episode.extras.items():
                _write(f, f"extras/{name}", np.asarray(arr), None, compression_level)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _header_hash(spec_json: str, meta_json: str) -> str:
    return hashlib.sha256(f"{spec_json}\n{meta_json}".encode()).hexdigest()


def _row_crcs(rows: Any, kind: Kind | None) -> np.ndarray:
    if kind is Kind.TEXT:
        return np.array([zlib.crc32(str(r).encode()) for r in rows], np.uint32)
    return np.array([zlib.crc32(np.ascontiguousarray(r).tobytes()) for r in rows], np.uint32)


def _write(f: h5py.File, name: str, data: Any, kind: Kind | None, level: int) -> None:
    f.create_dataset(f"checksums/{name}", data=_row_crcs(data, kind), fletcher32=True)
    if kind is Kind.TEXT:
        f.create_dataset(name, data=np.asarray([str(s) for s in data], dtype=object), dtype=h5py.string_dtype())
        return
    arr = np.asarray(data)
    if arr.dtype == object:
        raise EpisodeError(f"{name}: object arrays are not stored (no pickles)")
    chunks = (1, *arr.shape[1:]) if arr.ndim > 1 and arr.shape[0] > 0 else None
    f.create_dataset(
        name, data=arr, chunks=chunks if chunks else True, compression="gzip", compression_opts=level,
        shuffle=arr.ndim > 1, fletcher32=True,
    )


READ_CHUNK_CACHE = 256 * 1024  # bytes of decompressed chunks cached per dataset (h5py's default: 1 MiB)


class EpisodeReader:
    """Random access to one episode file; use as a context manager.

    >>> with EpisodeReader(path) as r:
    ...     window = r.read(10, 16)  # an Episode holding timesteps 10..15
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            # a small chunk cache: a reader reads a window once, and a trainer keeps thousands of readers open
            self._f = h5py.File(self.path, "r", rdcc_nbytes=READ_CHUNK_CACHE)
        except (OSError, ValueError) as e:
            raise EpisodeError(f"{self.path}: cannot open as an episode file ({e})") from e
        try:
            if self._f.attrs.get("format") != FORMAT:
                raise EpisodeError(f"{self.path}: not a {FORMAT} file")
            version = int(self._f.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise EpisodeError(f"{self.path}: format_version {version}, this code reads {FORMAT_VERSION}")
            spec_json, meta_json = str(self._f.attrs["spec"]), str(self._f.attrs["metadata"])
            if _header_hash(spec_json, meta_json) != self._f.attrs.get("header_sha256"):
                raise EpisodeError(f"{self.path}: header checksum mismatch (spec or metadata damaged)")
            self.spec = RobotSpec.from_json(spec_json)
            self.metadata: dict[str, Any] = json.loads(meta_json)
            self.length = int(self._f["rewards"].shape[0])
            self._datasets: dict[str, h5py.Dataset] = {}
            self._extras: list[str] | None = None
        except EpisodeError:
            self._f.close()
            raise
        except Exception as e:  # corrupt attributes or layout: report with the path, never crash the caller
            self._f.close()
            raise EpisodeError(f"{self.path}: corrupt episode header ({type(e).__name__}: {e})") from e

    def __len__(self) -> int:
        return self.length

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def read(self, start: int = 0, stop: int | None = None, *, keys: Mapping[str, bool] | None = None) -> Episode:
        """Timesteps [start, stop) as an Episode. Raises EpisodeError on checksum or layout errors."""
        stop = self.length if stop is None else stop
        if not 0 <= start <= stop <= self.length:
            raise EpisodeError(f"{self.path}: window [{start}, {stop}) outside episode of length {self.length}")
        try:
            obs = {s.name: self._slice(f"observations/{s.name}", start, stop, s.kind) for s in self.spec.observations}
            act = {s.name: self._slice(f"actions/{s.name}", start, stop, s.kind) for s in self.spec.actions}
            rewards = self._slice("rewards", start, stop, None)
            if self._extras is None:
                self._extras = _dataset_names(self._f["extras"]) if "extras" in self._f else []
            extras = {k: self._slice(f"extras/{k}", start, stop, None) for k in self._extras}
        except EpisodeError:
            raise
        except Exception as e:  # h5py raises OSError for Fletcher-32 mismatches and damaged chunks
            raise EpisodeError(f"{self.path}: damaged data in [{start}, {stop}) ({type(e).__name__}: {e})") from e
        ep = Episode(self.spec, obs, act, rewards, dict(self.metadata), extras)
        ep.validate()
        ep.check_finite(str(self.path), first_row=start)
        return ep

    def verify(self, *, images: bool = False) -> None:
        """Read every dataset whole (CRC-checked) and check float data for NaN/Inf; raises EpisodeError naming the
        file. Image datasets (the bulk of a file, uint8: never NaN) only with ``images=True``."""
        kinds = {f"observations/{s.name}": s.kind for s in self.spec.observations}
        kinds.update({f"actions/{s.name}": s.kind for s in self.spec.actions})
        extras = _dataset_names(self._f["extras"]) if "extras" in self._f else []
        names = [*kinds, "rewards", *(f"extras/{k}" for k in extras)]
        for name in names:
            kind = kinds.get(name)
            if kind is Kind.IMAGE and not images:
                continue
            try:
                data = self._slice(name, 0, self.length, kind)
            except EpisodeError:
                raise
            except Exception as e:  # h5py raises OSError for Fletcher-32 mismatches and damaged chunks
                raise EpisodeError(f"{self.path}: damaged data in {name!r} ({type(e).__name__}: {e})") from e
            if data.dtype != object and np.issubdtype(data.dtype, np.inexact):
                bad = ~np.isfinite(data)
                if bad.any():
                    raise EpisodeError(f"{self.path}: {name!r} holds non-finite values (NaN or Inf), first at row "
                                       f"{int(np.argwhere(bad)[0][0])}")

    def read_observation(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """One observation key's rows [start, stop) (CRC-checked), without reading the others (images)."""
        spec = {s.name: s for s in self.spec.observations}.get(name)
        if spec is None:
            raise EpisodeError(f"{self.path}: no observation {name!r}")
        stop = self.length if stop is None else stop
        try:
            return self._slice(f"observations/{name}", start, stop, spec.kind)
        except EpisodeError:
            raise
        except Exception as e:
            raise EpisodeError(f"{self.path}: damaged data in {name!r} ({type(e).__name__}: {e})") from e

    def _dataset(self, name: str, what: str) -> h5py.Dataset:
        """The named dataset, looked up once per reader: a training window reads ~20 small datasets per sample,
        and h5py's group lookups were a third of a data worker's time."""
        ds = self._datasets.get(name)
        if ds is None:
            if name not in self._f:
                raise EpisodeError(f"{self.path}: missing {what}")
            ds = self._datasets[name] = self._f[name]
        return ds

    def _slice(self, name: str, start: int, stop: int, kind: Kind | None) -> np.ndarray:
        ds = self._dataset(name, f"dataset {name!r}")
        if kind is Kind.TEXT:
            data = np.asarray([s.decode() if isinstance(s, bytes) else str(s) for s in ds[start:stop]], dtype=object)
        else:
            data = ds[start:stop]
        crcs = self._dataset(f"checksums/{name}", f"checksums for {name!r}")
        bad = np.flatnonzero(_row_crcs(data, kind) != crcs[start:stop])
        if bad.size:
            raise EpisodeError(f"{self.path}: {name!r} row {start + int(bad[0])} fails its CRC-32 (damaged file)")
        return data


def _dataset_names(group: h5py.Group, prefix: str = "") -> list[str]:
    names: list[str] = []
    for k, v in group.items():
        if isinstance(v, h5py.Group):
            names += _dataset_names(v, f"{prefix}{k}/")
        else:
            names.append(f"{prefix}{k}")
    return sorted(names)


def read_episode(path: str | os.PathLike) -> Episode:
    with EpisodeReader(path) as r:
        return r.read()


def list_episodes(root: str | os.PathLike) -> list[Path]:
    """Episode files under ``root`` (recursively), sorted, temporary files excluded."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob(f"*{SUFFIX}") if not p.name.startswith("."))
