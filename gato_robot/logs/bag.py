"""rosbag2 + MCAP logs: the topic table, a CRC-on writer, and a linear reader that survives damage.

Writing: ``rosbags``' rosbag2 ``Writer`` (metadata.yaml, message definitions, type hashes: what ``ros2 bag`` and
Foxglove read) with its MCAP storage swapped for :class:`CrcMcapStorage`, built on the ``mcap`` library's writer,
because rosbags' own MCAP storage writes chunk CRCs as 0 ("not computed") and flushes only at close. Ours writes
chunk CRCs and the data-section CRC, and flushes every finished chunk and at least every ``flush_period_s``, so a
SIGKILLed recorder loses at most the chunk in progress.

Reading: :func:`read_log` walks the records linearly (the seeking reader needs the summary, which a killed
recorder never wrote), validates every chunk's CRC, stops at the first damage (a truncated record, an
implausible length, an unknown opcode, a CRC mismatch) and reports it with the file and byte offset. Only
verified messages are returned: from chunks whose CRC matched, or from a file whose data-section CRC matched.
Works for ``ros2 bag record`` logs too (rosbag2's MCAP plugin; several ``_N.mcap`` files per bag).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, DataEnd, Message, Schema
from mcap.stream_reader import breakup_chunk
from mcap.writer import CompressionType
from mcap.writer import Writer as McapFileWriter
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Rosbag2Writer
from rosbags.typesys import Stores, get_typestore

MCAP_MAGIC = b"\x89MCAP0\r\n"
EPISODE_KEY = "gato_episode"  # metadata.yaml custom_data key and MCAP metadata record name
SIDECAR = "gato_episode.json"  # the same metadata next to the bag, written at start and at close

# -- the topic contract (docs/ros.md) -----------------------------------------------------------------------
CAMERAS = ("basket_front_left", "basket_front_right")
SENSOR, RELIABLE = "sensor", "reliable"


def camera_topic(name: str) -> str:
    return f"/camera/{name}/image_raw"


def contract_topics(cameras: Sequence[str] = CAMERAS) -> dict[str, tuple[str, str]]:
    """topic -> (ROS 2 message type, QoS kind) of what the recorder logs by default."""
    topics = {camera_topic(c): ("sensor_msgs/msg/Image", SENSOR) for c in cameras}
    topics.update({
        "/joint_states": ("sensor_msgs/msg/JointState", SENSOR),
        "/gato/tool_pose": ("geometry_msgs/msg/PoseStamped", SENSOR),
        "/gato/observation": ("sensor_msgs/msg/Image", RELIABLE),
        "/gato/action_tokens": ("sensor_msgs/msg/Image", RELIABLE),
        "/gato/action": ("sensor_msgs/msg/Image", RELIABLE),
        "/servo_node/delta_twist_cmds": ("geometry_msgs/msg/TwistStamped", RELIABLE),
        "/forward_velocity_controller/commands": ("std_msgs/msg/Float64MultiArray", RELIABLE),
        "/gripper/command": ("std_msgs/msg/Float64", RELIABLE),
        "/gato/episode_status": ("std_msgs/msg/String", RELIABLE),
        "/clock": ("rosgraph_msgs/msg/Clock", SENSOR),
    })
    return topics


@functools.cache
def typestore() -> Any:
    """rosbags' message definitions of ROS 2 Kilted (the distribution of the PyPI wheels)."""
    return get_typestore(Stores.ROS2_KILTED)


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    return typestore().deserialize_cdr(bytes(data), msgtype)


def serialize(msg: Any, msgtype: str) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msgtype))


# -- writing ------------------------------------------------------------------------------------------------
class _Flushing:
    """The file the mcap writer writes to: buffered, but pushed to the OS whenever the writer flushes (not a
    RawIOBase: the mcap writer would wrap that in a buffer of its own that nothing flushes)."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("xb")

    def write(self, data: Any) -> int:
        return self._f.write(data)

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class CrcMcapStorage:
    """rosbags ``StorageWriter`` protocol over the ``mcap`` library's writer, with CRCs and periodic flushes."""

    def __init__(self, path: Path, compression: Any, *, chunk_size: int = 256 * 1024, flush_period_s: float = 0.5,
                 zstd: bool = True) -> None:
        self.path = path / f"{path.name}_0.mcap"  # rosbag2's naming (ros2 bag record writes <bag>_0.mcap)
        self._file = _Flushing(self.path)
        self._mcap = McapFileWriter(self._file, chunk_size=chunk_size, enable_crcs=True, enable_data_crcs=True,
                                    compression=CompressionType.ZSTD if zstd else CompressionType.NONE)
        self._mcap.start(profile="ros2", library="gato_robot.logs (mcap)")
        self._file.flush()
        self._schemas: dict[str, int] = {}
        self._channels: dict[int, int] = {}
        self.flush_period_s = flush_period_s
        self._last_flush = time.monotonic()
        self._flushed_at = self._file.tell()
        self.flushed_messages = 0  # messages known to be in the OS's hands (survive a SIGKILL)
        self._written = 0

    def add_msgtype(self, connection: Any) -> None:
        self._schemas[connection.msgtype] = self._mcap.register_schema(
            connection.msgtype, "ros2msg", connection.msgdef.data.encode())

    def add_connection(self, connection: Any, offered_qos_profiles: str) -> None:
        self._channels[connection.id] = self._mcap.register_channel(
            connection.topic, "cdr", self._schemas[connection.msgtype],
            {"offered_qos_profiles": offered_qos_profiles})

    def write(self, connection: Any, timestamp: int, data: bytes | memoryview) -> None:
        self._mcap.add_message(self._channels[connection.id], log_time=timestamp, data=bytes(data),
                               publish_time=timestamp)
        self._written += 1
        now = time.monotonic()
        if now - self._last_flush >= self.flush_period_s:
            self.flush()
        elif self._file.tell() != self._flushed_at:  # the writer finished a chunk: hand it to the OS now
            self._file.flush()
            self._flushed_at = self._file.tell()

    def flush(self) -> None:
        self._mcap.flush()  # finishes the chunk in progress and flushes the file
        self._flushed_at = self._file.tell()
        self._last_flush = time.monotonic()
        self.flushed_messages = self._written

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        self._mcap.add_metadata(name, data)

    def close(self, version: int, metadata: str) -> None:
        self._mcap.add_metadata("rosbag2", {"serialized_metadata": metadata})
        self._mcap.finish()
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class BagWriter(Rosbag2Writer):
    """A rosbag2 folder (metadata.yaml + ``<name>_0.mcap``) written through :class:`CrcMcapStorage`.

    >>> with BagWriter(path) as w:
    ...     conn = w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    ...     w.write(conn, t_ns, cdr_bytes)
    """

    def __init__(self, path: str | os.PathLike, *, chunk_size: int = 256 * 1024, flush_period_s: float = 0.5,
                 zstd: bool = True) -> None:
        super().__init__(Path(path), version=9, storage_plugin=StoragePlugin.MCAP)
        self.STORAGE_PLUGINS = {StoragePlugin.MCAP: functools.partial(  # type: ignore[misc]
            CrcMcapStorage, chunk_size=chunk_size, flush_period_s=flush_period_s, zstd=zstd)}
        self.episode: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_topic(self, topic: str, msgtype: str) -> Any:
        return self.add_connection(topic, msgtype, typestore=typestore())

    @property
    def flushed_messages(self) -> int:
        return self.storage.flushed_messages if self.storage is not None else 0  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.episode:
            text = json.dumps(self.episode, sort_keys=True)
            self.set_custom_data(EPISODE_KEY, text)  # metadata.yaml custom_data (ros2 bag's key/value store)
            self.storage.add_metadata(EPISODE_KEY, {"json": text})  # type: ignore[union-attr] - for MCAP tools
            write_sidecar(self.path, self.episode)
        super().close()


def write_sidecar(bag: Path, episode: dict[str, Any]) -> None:
    """``gato_episode.json`` next to metadata.yaml, atomically (it is there even if the recorder is killed)."""
    tmp = bag / f".{SIDECAR}.tmp"
    tmp.write_text(json.dumps(episode, indent=1, sort_keys=True))
    os.replace(tmp, bag / SIDECAR)


def read_sidecar(bag: str | os.PathLike) -> dict[str, Any]:
    p = Path(bag) / SIDECAR
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return {}


# -- reading ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LogMessage:
    topic: str
    msgtype: str
    log_time: int  # ns, the recorder's receive time
    data: bytes  # CDR, as published

    def decode(self) -> Any:
        return deserialize(self.data, self.msgtype)


@dataclasses.dataclass(frozen=True)
class Damage:
    path: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}: {self.reason}"


@dataclasses.dataclass
class ReadReport:
    files: list[str] = dataclasses.field(default_factory=list)
    messages: int = 0  # verified messages returned
    chunks: int = 0
    unverified_chunks: int = 0  # chunks written without a CRC (trusted only if the data-section CRC matches)
    dropped_unverified: int = 0  # messages withheld: no CRC covered them
    complete: bool = True  # every file reached its data end
    damage: list[Damage] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.complete and not self.damage

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["damage"] = [str(x) for x in self.damage]
        return d


def mcap_files(path: str | os.PathLike) -> list[Path]:
    """The MCAP files of a rosbag2 folder (in metadata.yaml order when readable) or a single .mcap file."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such log (a rosbag2 folder or an .mcap file)")
    files = sorted(path.glob("*.mcap"), key=lambda p: (len(p.name), p.name))
    meta = path / "metadata.yaml"
    if meta.is_file():
        try:
            import yaml

            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            listed = [path / f for f in info.get("relative_file_paths", [])]
            if listed and all(p.is_file() for p in listed):
                files = listed
        except Exception:  # a damaged metadata.yaml must not stop the linear read
            pass
    return files


def read_log(path: str | os.PathLike, topics: Iterable[str] | None = None) -> tuple[list[LogMessage], ReadReport]:
    """Every verified message of a log (rosbag2 folder or .mcap), in file order, and what was damaged.

    ``topics``: keep only these (the others are still read and validated). Never raises for damaged data.
    """
    wanted = set(topics) if topics is not None else None
    report = ReadReport()
    out: list[LogMessage] = []
    for f in mcap_files(path):
        report.files.append(str(f))
        out += _read_file(f, wanted, report)
    report.messages = len(out)
    return out, report


def _read_file(path: Path, wanted: set[str] | None, report: ReadReport) -> list[LogMessage]:
    # (message, covered by a chunk CRC); the others are kept only if the data-section CRC matches
    found: list[tuple[LogMessage, bool]] = []
    data_crc_ok = False
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    size = path.stat().st_size

    def damage(offset: int, reason: str) -> None:
        report.damage.append(Damage(str(path), offset, reason))

    def take(records: Iterable[Any], checked: bool) -> None:
        for r in records:
            if isinstance(r, Schema):
                schemas[r.id] = r.name
            elif isinstance(r, Channel):
                channels[r.id] = (r.topic, schemas.get(r.schema_id, ""))
            elif isinstance(r, Message):
                topic, msgtype = channels.get(r.channel_id, ("", ""))
                if not topic:
                    raise ValueError(f"message on unknown channel {r.channel_id}")
                if wanted is None or topic in wanted:
                    found.append((LogMessage(topic, msgtype, r.log_time, bytes(r.data)), checked))

    with path.open("rb") as f:
        magic = f.read(len(MCAP_MAGIC))
        if magic != MCAP_MAGIC:
            damage(0, "not an MCAP file (bad magic)" if len(magic) == len(MCAP_MAGIC) else "truncated: no header")
            report.complete = False
            return []
        crc = zlib.crc32(magic)
        offset = len(MCAP_MAGIC)
        while True:
            head = f.read(9)
            if len(head) < 9:
                damage(offset, "truncated: the file ends before its data end (recorder killed or copy cut short)")
                report.complete = False
                break
            opcode, length = struct.unpack("<BQ", head)
            if length > size - offset - 9:
                damage(offset, f"record 0x{opcode:02x} claims {length} bytes, {size - offset - 9} remain "
                               "(truncated or a damaged length)")
                report.complete = False
                break
            body = f.read(length)
            crc_before, crc = crc, zlib.crc32(body, zlib.crc32(head, crc))
            try:
                if opcode == Opcode.DATA_END:
                    end = DataEnd.read(ReadDataStream(io.BytesIO(body)))
                    if end.data_section_crc and end.data_section_crc != crc_before:
                        damage(offset, "data-section CRC mismatch (damage outside the chunks' own CRCs)")
                    else:
                        data_crc_ok = bool(end.data_section_crc)
                    f.seek(max(size - len(MCAP_MAGIC), 0))
                    if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:  # every message is intact; only the index is lost
                        damage(size, "summary section truncated or damaged (no closing magic): the data is intact, "
                                     "seeking readers fail, linear reads work")
                    break
                if opcode == Opcode.FOOTER:
                    break
                if opcode == Opcode.CHUNK:
                    chunk = Chunk.read(ReadDataStream(io.BytesIO(body)))
                    report.chunks += 1
                    records = breakup_chunk(chunk, validate_crc=True)  # raises on a CRC mismatch
                    if chunk.uncompressed_crc == 0:
                        report.unverified_chunks += 1
                        take(records, False)
                    else:
                        take(records, True)
                elif opcode == Opcode.SCHEMA:
                    take([Schema.read(ReadDataStream(io.BytesIO(body)))], False)
                elif opcode == Opcode.CHANNEL:
                    take([Channel.read(ReadDataStream(io.BytesIO(body)))], False)
                elif opcode == Opcode.MESSAGE:
                    take([Message.read(ReadDataStream(io.BytesIO(body)), length)], False)
                elif opcode not in _KNOWN_OPCODES:
                    damage(offset, f"unknown record opcode 0x{opcode:02x} (damaged record header)")
                    report.complete = False
                    break
            except Exception as e:  # any parse error is damage: report, stop, never crash
                damage(offset, f"damaged record 0x{opcode:02x}: {type(e).__name__}: {e}")
                report.complete = False
                break
            offset += 9 + length
    kept = [m for m, checked in found if checked or data_crc_ok]
    report.dropped_unverified += len(found) - len(kept)
    return kept


_KNOWN_OPCODES = {int(o) for o in Opcode}
