"""LeRobotDataset v3 in and out (issue 32 parts 3, 4, 6): the field's shared dataset format <-> our episodes.

Layout (LeRobot ``codebase_version`` "v3.0", as lerobot 0.4's ``lerobot/datasets/utils.py`` writes it)::

    meta/info.json                           fps, features {name: {dtype, shape, names[, info]}}, path templates,
                                             totals, chunks_size; ours adds a "gato_robot" block (below)
    meta/stats.json                          {feature: {min, max, mean, std, count}} over the whole dataset
    meta/tasks.parquet                       task_index + task string (pandas index "task")
    meta/episodes/chunk-000/file-000.parquet one row per episode: episode_index, tasks, length,
                                             dataset_from_index/to_index, data/chunk_index, data/file_index,
                                             videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp},
                                             stats/<feature>/<stat>
    data/chunk-XXX/file-XXX.parquet          one row per frame: index, episode_index, frame_index, timestamp,
                                             task_index, observation.state, action, next.reward, next.done
    videos/<key>/chunk-XXX/file-XXX.mp4      several episodes concatenated; an episode is the frames with
                                             from_timestamp <= pts < to_timestamp

Import (``LeRobotSource``, ``gato-import-lerobot``) turns the features into a RobotSpec: video features
``observation.images.<n>`` -> images ``camera/<n>``; numeric ``observation.<x>`` -> continuous ``proprio/<x>``
(bounds from the dataset's stats min/max, else from one pass over the Parquet); ``action`` -> a linear-encoded
action with the same bounds; ``next.reward`` -> rewards; ``next.success`` -> the episode's ``success``; the
episode's task string -> metadata ``task`` and, where the dataset holds several tasks, a text observation
``text/task`` (Gato's prompt). A dataset written by ``gato-export-lerobot`` carries our spec in info.json's
"gato_robot" block, so it comes back with the same keys, shapes and bounds. Episodes stream: one episode's
frames are decoded at a time (PyAV, sequentially through each concatenated video file), never the dataset.

Export (``export_dataset``, ``gato-export-lerobot``): images -> H.264 (libx264, yuv420p, the codec browsers and
LeRobot's visualiser play) or AV1 (libsvtav1, LeRobot's default) videos; the other observations concatenated in
spec order -> ``observation.state`` (float32, element names ``<key>.<name>``); actions -> ``action``; rewards ->
``next.reward``; the last frame -> ``next.done``; metadata ``success`` -> ``next.success`` on the last frame.

Bad input (part 6) raises ``LeRobotError`` naming the file and the episode, and nothing is left half-written:
both directions write into a temporary sibling folder that is renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot.core.specs import CAMERA_PREFIX, Encoding, Kind, RobotSpec, TensorSpec
from gato_robot.data.episodes import Episode, EpisodeError, EpisodeReader, list_episodes, write_episode

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's DEFAULT_CHUNK_SIZE)
DATA_FILE_MB = 100  # LeRobot's DEFAULT_DATA_FILE_SIZE_IN_MB
VIDEO_FILE_MB = 200  # LeRobot's DEFAULT_VIDEO_FILE_SIZE_IN_MB
DEFAULT_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
IMAGE_PREFIX = "observation.images."
STATE = "observation.state"
ACTION = "action"
REWARD, DONE, SUCCESS = "next.reward", "next.done", "next.success"
GATO_BLOCK = "gato_robot"  # our key in info.json: the RobotSpec and how its keys map onto the features
GATO_METADATA = "gato/metadata"  # our column in meta/episodes: each episode's metadata as JSON
TASK_KEY = "text/task"
TASK_MAX_TOKENS = 32
NUMERIC = {"float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
           "bool"}
CODECS = {"h264": ("libx264", "yuv420p", {"crf": "18", "g": "2", "preset": "veryfast"}),
          "av1": ("libsvtav1", "yuv420p", {"crf": "30", "g": "2", "preset": "12"})}


class LeRobotError(ValueError):
    """A LeRobot dataset (or an export) that cannot be converted; the message names the file and the episode."""


# -- reading --------------------------------------------------------------------------------------------------


def _pyarrow() -> tuple[Any, Any, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return pa, pc, pq


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise LeRobotError(f"{path}: missing (not a LeRobotDataset v3 folder?)") from e
    except (OSError, ValueError) as e:
        raise LeRobotError(f"{path}: unreadable JSON ({e})") from e


def _read_parquet(path: Path, what: str) -> Any:
    _, _, pq = _pyarrow()
    if not path.is_file():
        raise LeRobotError(f"{path}: missing ({what})")
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for damaged files
        raise LeRobotError(f"{path}: unreadable Parquet ({what}: {e})") from e


def _column(table: Any, name: str, rows: int, shape: Sequence[int], where: str) -> np.ndarray:
    """A (rows, *shape) array from a scalar or (nested) list column."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    while pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        col = col.flatten()
    arr = col.to_numpy(zero_copy_only=False)
    want = (rows, *[int(s) for s in shape if int(s) != 1 or len(shape) > 1])
    try:
        return arr.reshape(want)
    except ValueError as e:
        raise LeRobotError(f"{where}: column {name!r} holds {arr.size} values, expected {rows} rows of shape "
                           f"{tuple(shape)}") from e


@dataclasses.dataclass
class _Field:
    """How one of our spec keys is read from a LeRobot feature."""
    key: str  # our key
    feature: str  # LeRobot feature
    start: int = 0  # slice of the feature's elements (observation.state concatenates several of our keys)
    stop: int | None = None


class _VideoCursor:
    """Sequential frame access to one video key: keeps its file open across the episodes stored in it, so a
    dataset decodes each file once, front to back; seeks only when an episode starts before the last one read."""

    def __init__(self, key: str, size: tuple[int, int] | None):
        self.key, self.size = key, size  # size: (H, W) to resize to, None = as stored
        self.path: Path | None = None
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._pending: Any = None
        self._last = -math.inf

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._frames = self._pending = None
        self.path = None

    def _open(self, path: Path, where: str) -> None:
        import av

        self.close()
        if not path.is_file():
            raise LeRobotError(f"{path}: missing video ({where})")
        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
        except Exception as e:
            raise LeRobotError(f"{path}: unreadable video ({where}: {e})") from e
        stream.thread_type = "AUTO"
        self._stream = stream
        self._frames = iter(self._container.decode(stream))
        self.path, self._pending, self._last = path, None, -math.inf

    def _next(self) -> Any:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        return next(self._frames, None)  # type: ignore[arg-type]

    def read(self, path: Path, t0: float, t1: float, n: int, fps: float, where: str) -> np.ndarray:
        """The n frames with t0 <= pts time < t1 as (n, H, W, 3) uint8; LeRobotError if the file holds another count."""
        half = 0.5 / fps  # frame times are k / fps; half a frame either side absorbs rounding
        if path != self.path or t0 < self._last:
            self._open(path, where)
            if t0 > half:
                self._container.seek(max(0, int((t0 - half) / self._stream.time_base)), stream=self._stream,
                                     backward=True)
                self._frames = iter(self._container.decode(self._stream))
        out = np.empty((n, *(self.size or (self._stream.height, self._stream.width)), 3), np.uint8)
        got = 0
        try:
            while True:
                frame = self._next()
                if frame is None:
                    break
                t = float(frame.pts * frame.time_base) if frame.pts is not None else float(frame.time)
                if t < t0 - half:
                    continue
                if t >= t1 - half:
                    self._pending = frame
                    break
                if got < n:
                    h, w = out.shape[1:3]
                    out[got] = frame.to_ndarray(format="rgb24", width=w, height=h)
                got += 1
        except LeRobotError:
            raise
        except Exception as e:  # av raises InvalidDataError and friends for damaged streams
            raise LeRobotError(f"{path}: damaged video ({where}: {type(e).__name__}: {e})") from e
        self._last = t0
        if got != n:
            raise LeRobotError(f"{path}: {where}: the video holds {got} frames in [{t0:.4f}, {t1:.4f}) s, the "
                               f"episode has {n} (mismatched frame counts)")
        return out


class LeRobotSource:
    """A local LeRobotDataset v3 folder as a stream of our Episodes (``iter_episodes``), with its RobotSpec.

    ``image_size`` (H, W): resize every camera to it (needed when the stored size is not a multiple of 16 or
    its patches overflow a timestep); ``task_text``: "auto" (a ``text/task`` observation when the dataset holds
    several tasks), "always" or "never"."""

    def __init__(self, root: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                 task_text: str = "auto", name: str | None = None):
        self.root = Path(root)
        if task_text not in ("auto", "always", "never"):
            raise ValueError(f"task_text must be auto, always or never, got {task_text!r}")
        info_path = self.root / INFO_PATH
        self.info: dict[str, Any] = _load_json(info_path)
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith("v3"):
            raise LeRobotError(f"{info_path}: codebase_version {version!r}; this reads v3.x (convert v2.1 "
                               "datasets with lerobot's convert_dataset_v21_to_v30 first)")
        try:
            self.fps = float(self.info["fps"])
            self.features: dict[str, dict[str, Any]] = dict(self.info["features"])
            self.data_path = str(self.info.get("data_path") or DATA_PATH)
            self.video_path = str(self.info.get("video_path") or VIDEO_PATH)
        except (KeyError, TypeError, ValueError) as e:
            raise LeRobotError(f"{info_path}: lacks {e} (fps, features)") from e
        self.stats: dict[str, dict[str, Any]] = (_load_json(self.root / STATS_PATH)
                                                  if (self.root / STATS_PATH).is_file() else {})
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()
        self._image_size = image_size
        self.spec, self._fields, self._video_keys = self._build_spec(task_text, name)
        self._table_path: Path | None = None
        self._table: Any = None

    # -- metadata -----------------------------------------------------------------------------------------
    def _read_tasks(self) -> dict[int, str]:
        path = self.root / TASKS_PATH
        if not path.is_file():
            return {}
        table = _read_parquet(path, "the task strings")
        names = table.column_names
        text = next((c for c in ("task", "__index_level_0__") if c in names), None)
        if text is None:
            meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
            text = next((c for c in meta.get("index_columns", []) if isinstance(c, str)), None)
        if text is None or "task_index" not in names:
            raise LeRobotError(f"{path}: expected columns task_index and the task string, found {names}")
        return dict(zip(table.column("task_index").to_pylist(), map(str, table.column(text).to_pylist())))

    def _read_episodes(self) -> list[dict[str, Any]]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotError(f"{self.root / 'meta' / 'episodes'}: no episode metadata files (chunk-*/file-*.parquet)")
        rows: list[dict[str, Any]] = []
        for f in files:
            table = _read_parquet(f, "episode metadata")
            keep = [c for c in table.column_names if not c.startswith("stats/")]
            rows += table.select(keep).to_pylist()
        rows.sort(key=lambda r: int(r["episode_index"]))
        for r in rows:
            for k in ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                      "dataset_to_index"):
                if r.get(k) is None:
                    raise LeRobotError(f"{files[0].parent}: episode {r.get('episode_index')} lacks {k!r}")
        return rows

    def _bounds(self, feature: str, size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(low, high) per element: the dataset's stats min/max, else one pass over the Parquet files."""
        s = self.stats.get(feature, {})
        if "min" in s and "max" in s:
            lo, hi = np.asarray(s["min"], np.float64).reshape(-1), np.asarray(s["max"], np.float64).reshape(-1)
        else:
            lo, hi = np.full(size, np.inf), np.full(size, -np.inf)
            for path in sorted({self._data_file(e) for e in self.episodes}):
                table = _read_parquet(path, "frame data")
                v = _column(table, feature, table.num_rows, (size,), str(path)).reshape(table.num_rows, -1)
                lo, hi = np.minimum(lo, v.min(0)), np.maximum(hi, v.max(0))
        if lo.size != size or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise LeRobotError(f"{self.root / STATS_PATH}: {feature!r} min/max are not {size} finite values")
        hi = np.where(hi > lo, hi, lo + np.maximum(1e-3, 1e-3 * np.abs(lo)))  # a constant element: widen
        return tuple(map(float, lo)), tuple(map(float, hi))

    def _build_spec(self, task_text: str, name: str | None) -> tuple[RobotSpec, list[_Field], dict[str, str]]:
        info_path = self.root / INFO_PATH
        for feat, ft in self.features.items():
            dtype = str(ft.get("dtype"))
            if dtype not in NUMERIC | {"video", "image"} and feat not in DEFAULT_FEATURES:
                raise LeRobotError(f"{info_path}: feature {feat!r} has dtype {dtype!r}, which this importer does "
                                   f"not support (supported: video, {', '.join(sorted(NUMERIC))})")
            if dtype == "image":
                raise LeRobotError(f"{info_path}: feature {feat!r} stores images in the Parquet files (dtype "
                                   "'image'); this importer reads video features only (re-encode with lerobot, "
                                   "or drop the feature)")
        block = self.info.get(GATO_BLOCK)
        if block:
            return self._gato_spec(block, info_path)
        obs: list[TensorSpec] = []
        acts: list[TensorSpec] = []
        fields: list[_Field] = []
        videos: dict[str, str] = {}
        for feat, ft in sorted(self.features.items()):
            dtype, shape = str(ft["dtype"]), tuple(int(s) for s in ft.get("shape") or (1,))
            names = ft.get("names")
            if feat in DEFAULT_FEATURES or feat in (REWARD, DONE, SUCCESS):
                continue
            if dtype == "video":
                if len(shape) != 3 or 3 not in (shape[0], shape[2]):
                    raise LeRobotError(f"{info_path}: video feature {feat!r} has shape {shape}; expected (H, W, 3)")
                h, w = (shape[0], shape[1]) if shape[2] == 3 else (shape[1], shape[2])
                h, w = self._image_size or (h, w)
                key = CAMERA_PREFIX + (feat[len(IMAGE_PREFIX):] if feat.startswith(IMAGE_PREFIX) else feat)
                try:
                    obs.append(TensorSpec(key, Kind.IMAGE, (h, w, 3), description=f"LeRobot {feat}"))
                except ValueError as e:
                    raise LeRobotError(f"{info_path}: {e}; pass --image-size HxW (multiples of 16) to "
                                       "resize") from e
                videos[key] = feat
                continue
            size = math.prod(shape)
            flat = [str(n) for n in (names if isinstance(names, list) else [])]
            labels = tuple(flat) if len(flat) == size and len(set(flat)) == size else None
            is_action = feat == ACTION or feat.startswith(ACTION + ".")
            if is_action:
                key = ACTION if feat == ACTION else ACTION + "/" + feat[len(ACTION) + 1:]
            else:
                key = "proprio/" + (feat[len("observation."):] if feat.startswith("observation.") else feat)
            if dtype == "bool" or (dtype.startswith(("int", "uint")) and self._discrete(feat)):
                n = 2 if dtype == "bool" else int(np.max(self.stats[feat]["max"])) + 1
                spec = TensorSpec(key, Kind.DISCRETE, (size,), num_values=n, names=labels,
                                  description=f"LeRobot {feat}")
            else:
                lo, hi = self._bounds(feat, size)
                spec = TensorSpec(key, Kind.CONTINUOUS, (size,), encoding=Encoding.LINEAR if is_action else
                                  Encoding.MU_LAW, low=lo, high=hi, names=labels, description=f"LeRobot {feat}")
            (acts if is_action else obs).append(spec)
            fields.append(_Field(key, feat))
        if task_text == "always" or (task_text == "auto" and len(set(self.tasks.values())) > 1):
            obs.append(TensorSpec(TASK_KEY, Kind.TEXT, max_tokens=TASK_MAX_TOKENS,
                                  description="the LeRobot episode's task string (Gato's prompt)"))
        robot = name or f"lerobot_{self.info.get('robot_type') or self.root.name}"
        try:
            spec = RobotSpec(robot, tuple(obs), tuple(acts), control_hz=self.fps)
        except ValueError as e:
            raise LeRobotError(f"{info_path}: {e}") from e
        return spec, fields, videos

    def _discrete(self, feat: str) -> bool:
        s = self.stats.get(feat, {})
        return "min" in s and "max" in s and np.min(s["min"]) >= 0 and np.max(s["max"]) < 1024

    def _gato_spec(self, block: dict[str, Any], info_path: Path) -> tuple[RobotSpec, list[_Field], dict[str, str]]:
        try:
            spec = RobotSpec.from_json(json.dumps(block["spec"]))
            fields = [_Field(k, f, int(a), int(b)) for k, f, a, b in block["fields"]]
            videos = dict(block["videos"])
        except (KeyError, TypeError, ValueError) as e:
            raise LeRobotError(f"{info_path}: damaged {GATO_BLOCK!r} block ({e})") from e
        if self._image_size:
            spec = dataclasses.replace(spec, observations=tuple(
                dataclasses.replace(s, shape=(*self._image_size, 3)) if s.kind is Kind.IMAGE else s
                for s in spec.observations))
        return spec, fields, videos

    # -- frames ---------------------------------------------------------------------------------------------
    def _data_file(self, ep: dict[str, Any]) -> Path:
        return self.root / self.data_path.format(chunk_index=int(ep["data/chunk_index"]),
                                                 file_index=int(ep["data/file_index"]))

    def _frames(self, ep: dict[str, Any]) -> Any:
        """The episode's rows of its data file (one data file is held at a time: its numeric columns only)."""
        _, pc, _ = _pyarrow()
        path = self._data_file(ep)
        if path != self._table_path:
            self._table, self._table_path = _read_parquet(path, f"frame data of episode {ep['episode_index']}"), path
        table = self._table
        if "episode_index" not in table.column_names:
            raise LeRobotError(f"{path}: no episode_index column")
        rows = table.filter(pc.equal(table.column("episode_index"), int(ep["episode_index"])))
        if "frame_index" in rows.column_names:
            rows = rows.sort_by("frame_index")
        return rows

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def total_frames(self) -> int:
        return sum(int(e["length"]) for e in self.episodes)

    def read_episode(self, ep: dict[str, Any], cursors: dict[str, _VideoCursor] | None = None) -> Episode:
        e = int(ep["episode_index"])
        n = int(ep["length"])
        path = self._data_file(ep)
        where = f"episode {e}"
        rows = self._frames(ep)
        if rows.num_rows != n:
            raise LeRobotError(f"{path}: {where} has {rows.num_rows} frame rows, meta/episodes says length {n} "
                               "(mismatched frame counts)")
        specs = {s.name: s for s in (*self.spec.observations, *self.spec.actions)}
        obs: dict[str, np.ndarray] = {}
        acts: dict[str, np.ndarray] = {}
        cache: dict[str, np.ndarray] = {}
        for f in self._fields:
            if f.feature not in rows.column_names:
                raise LeRobotError(f"{path}: {where}: no column {f.feature!r} (declared in {INFO_PATH})")
            if f.feature not in cache:
                shape = self.features[f.feature].get("shape") or (1,)
                cache[f.feature] = _column(rows, f.feature, n, shape, f"{path}: {where}").reshape(n, -1)
            arr = cache[f.feature][:, f.start:f.stop]
            spec = specs[f.key]
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                frame = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise LeRobotError(f"{path}: {where}: {f.feature!r} holds non-finite values (NaN or Inf), first "
                                   f"at frame {frame}")
            arr = arr.reshape(n, *spec.shape)
            arr = arr.astype(np.int64) if spec.kind is Kind.DISCRETE else arr.astype(np.float32)
            (acts if f.key in {s.name for s in self.spec.actions} else obs)[f.key] = arr
        rewards = np.zeros(n, np.float32)
        if REWARD in rows.column_names:
            rewards = _column(rows, REWARD, n, (1,), f"{path}: {where}").reshape(n).astype(np.float32)
            if not np.isfinite(rewards).all():
                raise LeRobotError(f"{path}: {where}: {REWARD!r} holds non-finite values (NaN or Inf), first at "
                                   f"frame {int(np.argwhere(~np.isfinite(rewards))[0][0])}")
        meta = json.loads(ep[GATO_METADATA]) if ep.get(GATO_METADATA) else {}
        tasks = [str(t) for t in (ep.get("tasks") or [])]
        if not tasks and "task_index" in rows.column_names and rows.num_rows:
            tasks = [self.tasks.get(int(rows.column("task_index")[0].as_py()), "")]
        if not meta:
            meta = {"task": tasks[0] if tasks else self.root.name, "tasks": tasks, "return": float(rewards.sum()),
                    "policy": "lerobot", "seed": e, "source": str(self.root), "lerobot_episode_index": e}
            if SUCCESS in rows.column_names:
                meta["success"] = bool(np.asarray(rows.column(SUCCESS).to_pylist(), bool).any())
        if TASK_KEY in specs and TASK_KEY not in obs:
            obs[TASK_KEY] = np.asarray([tasks[0] if tasks else ""] * n, dtype=object)
        for key, feat in self._video_keys.items():
            cursors = cursors if cursors is not None else {}
            cur = cursors.setdefault(key, _VideoCursor(key, specs[key].shape[:2]))
            try:
                vpath = self.root / self.video_path.format(video_key=feat,
                                                           chunk_index=int(ep[f"videos/{feat}/chunk_index"]),
                                                           file_index=int(ep[f"videos/{feat}/file_index"]))
                t0 = float(ep[f"videos/{feat}/from_timestamp"])
                t1 = float(ep[f"videos/{feat}/to_timestamp"])
            except (KeyError, TypeError) as err:
                raise LeRobotError(f"{self.root / 'meta' / 'episodes'}: {where} lacks the video columns of "
                                   f"{feat!r} ({err})") from err
            obs[key] = cur.read(vpath, t0, t1, n, self.fps, f"{where}, {feat}")
        episode = Episode(self.spec, obs, acts, rewards, meta)
        try:
            episode.validate()
        except EpisodeError as err:
            raise LeRobotError(f"{path}: {where}: {err}") from err
        return episode

    def iter_episodes(self, *, progress: bool = False) -> Iterator[Episode]:
        """Every episode in order, one decoded at a time (the stream a trainer or the importer consumes)."""
        cursors: dict[str, _VideoCursor] = {}
        try:
            for ep in _progress(self.episodes, progress, "import", "episode"):
                yield self.read_episode(ep, cursors)
        finally:
            for c in cursors.values():
                c.close()


def _progress(items: Sequence[Any], on: bool, desc: str, unit: str) -> Any:
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit, file=sys.stderr)


@dataclasses.dataclass
class Report:
    out: Path
    episodes: int
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def _staging(out: Path, overwrite: bool) -> Path:
    if out.exists() and not overwrite:
        raise LeRobotError(f"{out}: already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _publish(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def import_dataset(root: str | os.PathLike, out: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                   task_text: str = "auto", max_episodes: int | None = None, overwrite: bool = False,
                   progress: bool = False) -> Report:
    """Convert a LeRobotDataset v3 folder into our episode files ``out/episode_XXXXXX.h5`` (all or nothing)."""
    start = time.perf_counter()
    source = LeRobotSource(root, image_size=image_size, task_text=task_text)
    if max_episodes is not None:
        source.episodes = source.episodes[:max_episodes]
    out = Path(out)
    tmp = _staging(out, overwrite)
    frames = 0
    try:
        for ep in source.iter_episodes(progress=progress):
            index = int(ep.metadata.get("lerobot_episode_index", frames))
            try:
                write_episode(tmp / f"episode_{index:06d}", ep)
            except EpisodeError as e:
                raise LeRobotError(f"{source.root}: episode {index}: {e}") from e
            frames += len(ep)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Report(out, len(source.episodes), frames, time.perf_counter() - start)


LEROBOT_SOURCE = "lerobot:"  # a trainer data path "lerobot:DIR" (training/data.py) reads DIR through the cache below


def cache_root() -> Path:
    """Where ``imported_episodes`` keeps its conversions: $XDG_CACHE_HOME/gato_robot/lerobot (~/.cache/...)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gato_robot" / "lerobot"


def imported_episodes(root: str | os.PathLike, cache: str | os.PathLike | None = None) -> list[Path]:
    """The episode files of a LeRobot v3 folder, imported once into ``cache`` (default ``cache_root()``) under a
    fingerprint of the folder's files (path, size, mtime): the trainer's ``lerobot:DIR`` data source. The
    trainer samples random windows from HDF5 files; decoding a window from the middle of a concatenated mp4 for
    every sample would cost a seek and a GOP of decoding each time, so the dataset is converted (streaming, one
    episode at a time) the first time it is used and read from the cache after."""
    import hashlib

    root = Path(root)
    if not (root / INFO_PATH).is_file():
        raise LeRobotError(f"{root / INFO_PATH}: missing (not a LeRobotDataset v3 folder?)")
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            st = p.stat()
            digest.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    out = Path(cache or cache_root()) / f"{root.resolve().name}-{digest.hexdigest()[:16]}"
    if not out.is_dir():
        log.info("importing LeRobot dataset %s into %s (once)", root, out)
        staged = out.with_name(f"{out.name}.{os.getpid()}.incoming")
        import_dataset(root, staged, overwrite=True)
        try:
            os.rename(staged, out)
        except OSError:  # another process (a torchrun rank) finished first: keep its copy
            shutil.rmtree(staged, ignore_errors=True)
    return list_episodes(out)


# -- writing --------------------------------------------------------------------------------------------------


class _Stats:
    """Running min/max/mean/std/count of one feature over frames. Images: per channel in [0, 1], as LeRobot's
    (3, 1, 1), from 256-bin histograms of the uint8 pixels (exact, and a tenth of the float64 arithmetic's time,
    which was most of the export's); ``count`` is frames, as LeRobot's."""

    def __init__(self) -> None:
        self.frames, self.n, self.sum, self.sq, self.lo, self.hi = 0, 0, 0.0, 0.0, None, None

    def add(self, x: np.ndarray, image: bool) -> dict[str, Any]:
        frames = len(x)
        if image:  # (T, H, W, 3) uint8
            levels = np.arange(256, dtype=np.float64) / 255.0
            hist = np.stack([np.bincount(np.ascontiguousarray(x[..., c]).reshape(-1), minlength=256)
                             for c in range(3)]).astype(np.float64)
            n = float(hist[0].sum())
            s, sq = hist @ levels, hist @ (levels * levels)
            lo = np.array([levels[np.flatnonzero(h)[0]] for h in hist])
            hi = np.array([levels[np.flatnonzero(h)[-1]] for h in hist])
        else:
            v = x.astype(np.float64).reshape(frames, -1)
            n, s, sq, lo, hi = float(frames), v.sum(0), (v * v).sum(0), v.min(0), v.max(0)
        mean = s / n
        ep = {"min": lo, "max": hi, "mean": mean, "std": np.sqrt(np.maximum(sq / n - mean * mean, 0.0)),
              "count": np.array([frames])}
        self.frames += frames
        self.n += n
        self.sum = self.sum + s
        self.sq = self.sq + sq
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        return {k: _shaped(v, image) for k, v in ep.items()}

    def total(self, image: bool) -> dict[str, Any]:
        mean = self.sum / max(self.n, 1)
        std = np.sqrt(np.maximum(self.sq / max(self.n, 1) - mean * mean, 0.0))
        return {k: _shaped(v, image) for k, v in
                {"min": self.lo, "max": self.hi, "mean": mean, "std": std, "count": np.array([self.frames])}.items()}


def _shaped(v: np.ndarray, image: bool) -> list[Any]:
    v = np.asarray(v)
    return (v.reshape(3, 1, 1) if image and v.size == 3 else v).tolist()


class _VideoWriter:
    """One video key's current mp4 (several episodes concatenated); a new file when the size limit is reached."""

    def __init__(self, root: Path, feature: str, fps: int, codec: str, size: tuple[int, int], max_mb: float):
        self.root, self.feature, self.fps, self.size, self.max_mb = root, feature, fps, size, max_mb
        self.codec, self.pix_fmt, self.options = CODECS[codec]
        self.chunk, self.file, self.frames = 0, -1, 0
        self._container: Any = None
        self._stream: Any = None

    def path(self) -> Path:
        return self.root / VIDEO_PATH.format(video_key=self.feature, chunk_index=self.chunk, file_index=self.file)

    def _roll(self) -> None:
        import av

        self.close()
        self.file += 1
        if self.file >= CHUNKS_SIZE:
            self.chunk, self.file = self.chunk + 1, 0
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w")
        self._stream = self._container.add_stream(self.codec, rate=self.fps, options=dict(self.options))
        self._stream.height, self._stream.width = self.size
        self._stream.pix_fmt = self.pix_fmt
        self._stream.time_base = Fraction(1, self.fps)
        self._stream.thread_count = 1
        self.frames = 0

    def write(self, images: np.ndarray) -> dict[str, Any]:
        import av

        if self._container is None or self.path().stat().st_size / 2**20 >= self.max_mb:
            self._roll()
        start = self.frames
        for img in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames
            frame.time_base = Fraction(1, self.fps)
            self._container.mux(self._stream.encode(frame))
            self.frames += 1
        key = f"videos/{self.feature}"
        return {f"{key}/chunk_index": self.chunk, f"{key}/file_index": self.file,
                f"{key}/from_timestamp": start / self.fps, f"{key}/to_timestamp": self.frames / self.fps}

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None


def _task_string(meta: dict[str, Any], spec: RobotSpec) -> str:
    if meta.get("instruction"):
        return str(meta["instruction"])
    task = str(meta.get("task") or spec.name)
    if task == "rgb_stacking":  # DeepMind's RGB stacking: red on blue (Lee et al. 2021)
        triplet = meta.get("triplet")
        where = "" if triplet is None else f" ({triplet})" if isinstance(triplet, str) else f" (triplet {triplet})"
        return "stack the red object on the blue object" + where
    return task


def _features(spec: RobotSpec, fps: int, codec: str) -> tuple[dict[str, Any], list[_Field], dict[str, str]]:
    features: dict[str, Any] = {}
    videos: dict[str, str] = {}
    fields: list[_Field] = []
    state_names: list[str] = []
    for s in spec.observations:
        if s.kind is Kind.TEXT:
            raise LeRobotError(f"spec {spec.name!r}: text observation {s.name!r} cannot be exported (LeRobot "
                               "carries one task string per episode, from the metadata)")
        if s.kind is Kind.IMAGE:
            name = s.name[len(CAMERA_PREFIX):] if s.name.startswith(CAMERA_PREFIX) else s.name
            feat = IMAGE_PREFIX + name.replace("/", "_")
            h, w, c = s.shape
            features[feat] = {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
                              "info": {"video.height": h, "video.width": w, "video.codec": CODECS[codec][0].replace(
                                  "libx264", "h264").replace("libsvtav1", "av1"), "video.pix_fmt": CODECS[codec][1],
                                  "video.is_depth_map": False, "video.fps": fps, "video.channels": c,
                                  "has_audio": False}}
            videos[s.name] = feat
            continue
        start = len(state_names)
        state_names += [f"{s.name}.{n}" for n in (s.names or range(s.size))]
        fields.append(_Field(s.name, STATE, start, len(state_names)))
    if state_names:
        features[STATE] = {"dtype": "float32", "shape": [len(state_names)], "names": state_names}
    action_names: list[str] = []
    for s in spec.actions:
        start = len(action_names)
        action_names += [str(n) if len(spec.actions) == 1 else f"{s.name}.{n}" for n in (s.names or range(s.size))]
        fields.append(_Field(s.name, ACTION, start, len(action_names)))
    features[ACTION] = {"dtype": "float32", "shape": [len(action_names)], "names": action_names}
    features[REWARD] = {"dtype": "float32", "shape": [1], "names": None}
    features[DONE] = {"dtype": "bool", "shape": [1], "names": None}
    features[SUCCESS] = {"dtype": "bool", "shape": [1], "names": None}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        features[k] = {"dtype": "int64", "shape": [1], "names": None}
    return features, fields, videos


def export_dataset(sources: Sequence[str | os.PathLike], out: str | os.PathLike, *, fps: int | None = None,
                   codec: str = "h264", robot_type: str | None = None, overwrite: bool = False,
                   max_episodes: int | None = None, data_file_mb: float = DATA_FILE_MB,
                   video_file_mb: float = VIDEO_FILE_MB, progress: bool = False) -> Report:
    """Write our episode files (under ``sources``) as one LeRobotDataset v3 folder ``out`` (all or nothing)."""
    pa, _, pq = _pyarrow()
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    start = time.perf_counter()
    paths = [p for s in sources for p in list_episodes(s)] if sources else []
    for s in sources:
        if not Path(s).exists():
            raise LeRobotError(f"{s}: does not exist")
    paths = paths[:max_episodes] if max_episodes is not None else paths
    if not paths:
        raise LeRobotError(f"no episode files (*.h5) under {[str(s) for s in sources]}")
    with EpisodeReader(paths[0]) as r:
        spec = r.spec
    fps = int(fps or round(spec.control_hz))
    features, fields, videos = _features(spec, fps, codec)
    out = Path(out)
    tmp = _staging(out, overwrite)
    writers: dict[str, _VideoWriter] = {}
    parquet: Any = None
    try:
        writers = {k: _VideoWriter(tmp, f, fps, codec, tuple(features[f]["shape"][:2]), video_file_mb)
                   for k, f in videos.items()}
        stats = {f: _Stats() for f in features if f not in ("timestamp", *DEFAULT_FEATURES[1:])}
        tasks: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        frames = 0
        data_chunk, data_file, data_bytes = 0, 0, 0.0
        schema = pa.schema(
            [(STATE, pa.list_(pa.float32(), features[STATE]["shape"][0]))] * (STATE in features)
            + [(ACTION, pa.list_(pa.float32(), features[ACTION]["shape"][0])), (REWARD, pa.float32()),
               (DONE, pa.bool_()), (SUCCESS, pa.bool_()), ("timestamp", pa.float32()), ("frame_index", pa.int64()),
               ("episode_index", pa.int64()), ("index", pa.int64()), ("task_index", pa.int64())])
        for e, path in enumerate(_progress(paths, progress, "export", "episode")):
            try:
                with EpisodeReader(path) as r:
                    if r.spec != spec:
                        raise LeRobotError(f"{path}: episode {e}: spec {r.spec.name!r} differs from the first "
                                           f"file's ({paths[0]}: {spec.name!r}); export one embodiment at a time")
                    ep = r.read()
            except EpisodeError as err:
                raise LeRobotError(f"{path}: episode {e}: {err}") from err
            n = len(ep)
            if n == 0:
                raise LeRobotError(f"{path}: episode {e}: no timesteps")
            task = _task_string(ep.metadata, spec)
            ti = tasks.setdefault(task, len(tasks))
            cols: dict[str, np.ndarray] = {}
            for group, data in ((STATE, ep.observations), (ACTION, ep.actions)):
                parts = [np.asarray(data[f.key], np.float64).reshape(n, -1) for f in fields if f.feature == group]
                if parts:
                    cols[group] = np.concatenate(parts, 1).astype(np.float32)
            done = np.zeros(n, bool)
            done[-1] = True
            success = done & bool(ep.metadata.get("success", False))
            cols[REWARD] = np.asarray(ep.rewards, np.float32)
            cols[DONE], cols[SUCCESS] = done, success
            ep_stats = {f: stats[f].add(v, False) for f, v in cols.items()}
            row: dict[str, Any] = {"episode_index": e, "tasks": [task], "length": n}
            for key, w in writers.items():
                images = ep.observations[key]
                ep_stats[videos[key]] = stats[videos[key]].add(images, True)
                row.update(w.write(images))
            if parquet is None or data_bytes / 2**20 >= data_file_mb:
                if parquet is not None:
                    parquet.close()
                    data_file += 1
                    if data_file >= CHUNKS_SIZE:
                        data_chunk, data_file = data_chunk + 1, 0
                dpath = tmp / DATA_PATH.format(chunk_index=data_chunk, file_index=data_file)
                dpath.parent.mkdir(parents=True, exist_ok=True)
                parquet, data_bytes = pq.ParquetWriter(dpath, schema, compression="snappy"), 0.0
            table = pa.table({
                **{g: pa.FixedSizeListArray.from_arrays(pa.array(cols[g].reshape(-1)), cols[g].shape[1])
                   for g in (STATE, ACTION) if g in cols},
                REWARD: cols[REWARD], DONE: cols[DONE], SUCCESS: cols[SUCCESS],
                "timestamp": (np.arange(n) / fps).astype(np.float32), "frame_index": np.arange(n, dtype=np.int64),
                "episode_index": np.full(n, e, np.int64), "index": np.arange(frames, frames + n, dtype=np.int64),
                "task_index": np.full(n, ti, np.int64)}, schema=schema)
            parquet.write_table(table)
            data_bytes += table.nbytes
            row.update({"data/chunk_index": data_chunk, "data/file_index": data_file, "dataset_from_index": frames,
                        "dataset_to_index": frames + n, "meta/episodes/chunk_index": 0,
                        "meta/episodes/file_index": 0, GATO_METADATA: json.dumps(ep.metadata, sort_keys=True)})
            row.update({f"stats/{f}/{k}": v for f, s in ep_stats.items() for k, v in s.items()})
            rows.append(row)
            frames += n
        if parquet is not None:
            parquet.close()
        for w in writers.values():
            w.close()
        _write_meta(tmp, rows, tasks, features, stats, videos, fields, spec, fps, frames, robot_type)
        _publish(tmp, out)
    finally:
        if parquet is not None:
            parquet.close()
        for w in writers.values():
            with contextlib.suppress(Exception):  # already failing: the staging folder is removed below
                w.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return Report(out, len(rows), frames, time.perf_counter() - start)


def _write_meta(root: Path, rows: list[dict[str, Any]], tasks: dict[str, int], features: dict[str, Any],
                stats: dict[str, _Stats], videos: dict[str, str], fields: list[_Field], spec: RobotSpec, fps: int,
                frames: int, robot_type: str | None) -> None:
    pa, _, pq = _pyarrow()
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / EPISODES_PATH.format(chunk_index=0, file_index=0))
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()), "task": list(tasks)})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), root / TASKS_PATH)
    image_feats = set(videos.values())
    total = {f: s.total(f in image_feats) for f, s in stats.items() if s.n}
    (root / STATS_PATH).write_text(json.dumps(total, indent=2))
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type or spec.name, "total_episodes": len(rows),
        "total_frames": frames, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB, "fps": fps,
        "splits": {"train": f"0:{len(rows)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH if videos else None,
        "features": features,
        GATO_BLOCK: {"spec": json.loads(spec.to_json()), "videos": videos,
                     "fields": [[f.key, f.feature, f.start, f.stop] for f in fields]},
    }
    (root / INFO_PATH).write_text(json.dumps(info, indent=4))


# -- the v3 layout check (what lerobot's reader relies on, for machines without lerobot) ---------------------


def check_layout(root: str | os.PathLike) -> list[str]:
    """Problems with ``root`` as a LeRobotDataset v3 folder (empty: none): files, totals, indices, timestamps."""
    root = Path(root)
    problems: list[str] = []
    try:
        src = LeRobotSource(root, task_text="never")
    except LeRobotError as e:
        return [str(e)]
    info = src.info
    for k in ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames", "chunks_size"):
        if k not in info:
            problems.append(f"{INFO_PATH}: no {k!r}")
    if info.get("total_episodes") != len(src.episodes):
        problems.append(f"{INFO_PATH}: total_episodes {info.get('total_episodes')} != {len(src.episodes)} rows")
    if info.get("total_frames") != src.total_frames:
        problems.append(f"{INFO_PATH}: total_frames {info.get('total_frames')} != {src.total_frames}")
    expect = 0
    for ep in src.episodes:
        e = int(ep["episode_index"])
        if (ep["dataset_from_index"], ep["dataset_to_index"]) != (expect, expect + int(ep["length"])):
            problems.append(f"episode {e}: dataset_from/to_index {ep['dataset_from_index']}..{ep['dataset_to_index']}"
                            f" do not follow the previous episode ({expect}..{expect + int(ep['length'])})")
        rows = src._frames(ep)
        idx = rows.column("index").to_numpy() if "index" in rows.column_names else None
        if idx is None or not np.array_equal(idx, np.arange(expect, expect + int(ep["length"]))):
            problems.append(f"{src._data_file(ep)}: episode {e}: index column is not {expect}..")
        ts = rows.column("timestamp").to_numpy() if "timestamp" in rows.column_names else None
        if ts is None or not np.allclose(ts, np.arange(len(ts)) / src.fps, atol=1e-4):
            problems.append(f"{src._data_file(ep)}: episode {e}: timestamps are not frame_index / fps")
        for feat in src._video_keys.values():
            t0, t1 = ep.get(f"videos/{feat}/from_timestamp"), ep.get(f"videos/{feat}/to_timestamp")
            if t0 is None or t1 is None or abs((t1 - t0) * src.fps - int(ep["length"])) > 1e-3:
                problems.append(f"episode {e}: videos/{feat} from/to_timestamp do not span its {ep['length']} frames")
        expect += int(ep["length"])
    if not (root / STATS_PATH).is_file():
        problems.append(f"{STATS_PATH}: missing")
    if not (root / TASKS_PATH).is_file():
        problems.append(f"{TASKS_PATH}: missing")
    try:
        for _ in src.iter_episodes():
            pass
    except LeRobotError as e:
        problems.append(str(e))
    return problems


# -- entry points ---------------------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    try:
        return int(h), int(w or h)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 128x128), got {text!r}") from e


def import_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gato-import-lerobot", description="Convert a local LeRobotDataset v3 folder "
                                "into gato_robot episode files (HDF5), one episode decoded at a time.")
    p.add_argument("dataset", help="the LeRobotDataset v3 folder (meta/info.json, data/, videos/)")
    p.add_argument("--out", help="folder for the episode files (written whole or not at all); not with --check")
    p.add_argument("--image-size", type=_size, help="resize every camera to HxW (multiples of 16)")
    p.add_argument("--task-text", choices=("auto", "always", "never"), default="auto",
                   help="add the task string as a text observation (auto: when the dataset has several tasks)")
    p.add_argument("--max-episodes", type=int, help="only the first N episodes")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--check", action="store_true", help="only check the v3 layout and decode every episode")
    args = p.parse_args(argv)
    if not args.check and not args.out:
        p.error("--out is required (or --check)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.check:
            problems = check_layout(args.dataset)
            for line in problems:
                print(f"gato-import-lerobot: {line}", file=sys.stderr)
            print(f"{args.dataset}: {'OK' if not problems else f'{len(problems)} problems'}")
            return 1 if problems else 0
        r = import_dataset(args.dataset, args.out, image_size=args.image_size, task_text=args.task_text,
                           max_episodes=args.max_episodes, overwrite=args.overwrite, progress=True)
    except (LeRobotError, OSError) as e:
        print(f"gato-import-lerobot: {e}", file=sys.stderr)
        return 2
    print(f"{r.out}: {r.episodes} episodes, {r.frames} frames in {r.seconds:.1f} s ({r.fps:.0f} frames/s)")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gato-export-lerobot", description="Write gato_robot episode files (sim "
                                "demonstrations, converted robot logs) as one LeRobotDataset v3 folder.")
    p.add_argument("episodes", nargs="+", help="episode files or folders of them (*.h5), one embodiment")
    p.add_argument("--out", required=True, help="the dataset folder to write (written whole or not at all)")
    p.add_argument("--fps", type=int, help="frames per second (default: the spec's control_hz)")
    p.add_argument("--codec", choices=sorted(CODECS), default="h264",
                   help="h264 (libx264; plays in browsers) or av1 (libsvtav1; LeRobot's default)")
    p.add_argument("--robot-type", help="info.json robot_type (default: the spec's name)")
    p.add_argument("--max-episodes", type=int, help="only the first N episode files")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    try:
        r = export_dataset(args.episodes, args.out, fps=args.fps, codec=args.codec, robot_type=args.robot_type,
                           overwrite=args.overwrite, max_episodes=args.max_episodes, progress=True)
    except (LeRobotError, OSError) as e:
        print(f"gato-export-lerobot: {e}", file=sys.stderr)
        return 2
    print(f"{r.out}: {r.episodes} episodes, {r.frames} frames in {r.seconds:.1f} s ({r.fps:.0f} frames/s)")
    return 0


if __name__ == "__main__":
    sys.exit(import_main())
