"""rosbag2 + MCAP logs: the topic table, a CRC-on writer, and a linear reader that survives damage.

Writing: ``rosbags``' rosbag2 ``Writer`` (metadata.yaml, message definitions, type hashes: what ``ros2 bag`` and
Foxglove read) with its MCAP storage swapped for :class:`CrcMcapStorage`, built on the ``mcap`` library's writer,
because rosbags' own MCAP storage writes chunk CRCs as 0 ("not computed") and flushes only at close. Ours writes
chunk CRCs and the data-section CRC, and flushes every finished chunk and at least every ``flush_period_s``, so a
SIGKILLed recorder loses at most the chunk in progress.

Reading: :func:`read_log` walks the records linearly (the seeking reader needs the summary, which a killed
recorder never wrote) and validates every chunk's CRC. A damaged record (a CRC mismatch, an unknown opcode, an
implausible length) is reported with the file and byte offset and skipped, by its own length or up to the next
chunk that verifies, and reading goes on: a flipped byte costs only its chunk's messages (safety.md scenario 18).
A truncated file is read up to the cut. Only verified messages are returned: from chunks whose CRC matched, or
from a file whose data-section CRC matched.
Works for ``ros2 bag record`` logs too (rosbag2's MCAP plugin; several ``_N.mcap`` files per bag).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Attachment, Channel, Chunk, DataEnd, Message, MessageIndex, Metadata, Schema
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
        "/gato/episode_event": ("std_msgs/msg/String", RELIABLE),  # operator-labelled episodes (the recorder's)
        "/gato/teleop/intervention": ("std_msgs/msg/Bool", RELIABLE),  # teleoperation: the operator's steps
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


@dataclasses.dataclass
class Damage:
    """One damaged place in a log file. ``skipped`` > 0: the reader passed over that many bytes (a damaged chunk,
    or up to the next intact chunk) and kept reading; 0: the file ended there (truncated) or the damage lost
    nothing (outside the data)."""

    path: str
    offset: int  # byte offset of the damaged record in the file
    reason: str
    skipped: int = 0  # bytes passed over from ``offset``
    lost_messages: int | None = None  # messages in what was skipped (from the chunk's message index; None: unknown)
    # log times (ns) the lost messages lie between: the last message read before the damage and the first after
    # (None: none before / none after); the converter drops the ticks whose inputs or commands fall in between
    lost_after_ns: int | None = None
    lost_before_ns: int | None = None

    def __str__(self) -> str:
        text = f"{self.path} at byte {self.offset}: {self.reason}"
        if self.skipped:
            lost = f"{self.lost_messages} messages" if self.lost_messages is not None else "its messages"
            text += f"; {self.skipped} bytes skipped ({lost} lost), reading went on after it"
        return text


@dataclasses.dataclass
class ReadReport:
    files: list[str] = dataclasses.field(default_factory=list)
    messages: int = 0  # verified messages returned
    chunks: int = 0  # chunks read intact
    damaged_chunks: int = 0  # damaged chunks (or damaged stretches) skipped, reading went on after each
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
        d["damage_at"] = [dataclasses.asdict(x) for x in self.damage]
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


def log_path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a log, in one line for a command's ``error:`` (None: it is a rosbag2 folder or .mcap)."""
    try:
        files = mcap_files(path)
    except FileNotFoundError:
        return f"{path}: no such file or folder (expected a rosbag2 folder or an .mcap file)"
    if not files:
        return f"{path}: no .mcap files in this folder (expected a rosbag2 folder or an .mcap file)"
    return None


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


# records that may stand between the header and the data end (the others belong to the summary section)
_DATA_OPCODES = {int(o) for o in (Opcode.SCHEMA, Opcode.CHANNEL, Opcode.MESSAGE, Opcode.CHUNK, Opcode.MESSAGE_INDEX,
                                  Opcode.ATTACHMENT, Opcode.METADATA, Opcode.DATA_END)}
_CHUNK_FIXED = 8 + 8 + 8 + 4 + 4 + 8  # a chunk record's body without its compression name and records
_COMPRESSIONS = ("", "zstd", "lz4")
_FOOTER_SIZE = 9 + 20  # opcode, length, summary start, summary offset start, summary CRC


class _Damaged(Exception):
    """A record that does not parse or verify (internal: the reader reports it and skips the record)."""


def _parse(opcode: int, body: bytes | memoryview) -> Any:
    """The record of ``opcode`` in ``body``, checked: a chunk's CRC verified and its records parsed (a list of
    them), a message index exactly filling its record. Raises _Damaged."""
    stream = ReadDataStream(io.BytesIO(body))
    try:
        if opcode == Opcode.CHUNK:
            chunk = Chunk.read(stream)
            if chunk.compression not in _COMPRESSIONS:
                raise _Damaged(f"unknown compression {chunk.compression[:16]!r}")
            return chunk, breakup_chunk(chunk, validate_crc=True)  # raises on a CRC mismatch
        if opcode == Opcode.SCHEMA:
            return Schema.read(stream)
        if opcode == Opcode.CHANNEL:
            return Channel.read(stream)
        if opcode == Opcode.MESSAGE:
            return Message.read(stream, len(body))
        if opcode == Opcode.MESSAGE_INDEX:
            index = MessageIndex.read(stream)
            if stream.count != len(body):
                raise _Damaged(f"message index fills {stream.count} of its {len(body)} bytes")
            return index
        if opcode == Opcode.DATA_END:
            return DataEnd.read(stream)
        if opcode == Opcode.ATTACHMENT:
            return Attachment.read(stream)
        if opcode == Opcode.METADATA:
            return Metadata.read(stream)
    except _Damaged:
        raise
    except Exception as e:  # truncated fields, CRC mismatch, decompression errors, bad UTF-8...
        raise _Damaged(f"{type(e).__name__}: {e}") from e
    raise _Damaged(f"record 0x{opcode:02x} does not belong in the data section")


class _FileReader:
    """One MCAP file, walked record by record. A damaged record is reported with its byte offset and skipped: by its
    own length when an intact record follows there, else up to the next chunk that verifies (every chunk has its own
    length and CRC), so one damaged chunk costs only its own messages. Channels whose definition was in a damaged
    chunk are taken from the summary section when it verifies (the writer repeats every schema and channel there).

    The ``mcap`` library's readers stop at the first error (``StreamReader``) or need an intact summary
    (``SeekingReader``) and have no per-chunk recovery (mcap 1.6), so the walk is here; the records themselves are
    parsed and verified by the library (``Chunk.read``, ``breakup_chunk(validate_crc=True)``...)."""

    def __init__(self, path: Path, buf: Any, wanted: set[str] | None, report: ReadReport) -> None:
        self.path, self.buf, self.size, self.wanted, self.report = path, buf, len(buf), wanted, report
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, int]] = {}  # id -> (topic, schema id)
        # (channel id, log time, data, covered by a chunk CRC): resolved to topics at the end
        self.found: list[tuple[int, int, bytes, bool]] = []
        self.damage: list[Damage] = []
        self.last_time: int | None = None
        self._open_gaps: list[Damage] = []  # damage still waiting for the first message after it
        self._counting: Damage | None = None  # a skipped chunk whose message index records follow it

    def damaged(self, offset: int, reason: str, skipped: int = 0) -> Damage:
        d = Damage(str(self.path), offset, reason, skipped, lost_after_ns=self.last_time)
        self.damage.append(d)
        if skipped:
            self._open_gaps.append(d)
            self.report.damaged_chunks += 1
        return d

    def header(self, pos: int) -> tuple[int, int] | None:
        """(opcode, length) of a record that fits in the file at ``pos``, else None."""
        if pos + 9 > self.size:
            return None
        opcode, length = struct.unpack_from("<BQ", self.buf, pos)
        return (opcode, length) if length <= self.size - pos - 9 else None

    def intact_at(self, pos: int) -> bool:
        """Whether an intact data-section record starts at ``pos`` (a chunk: only if it verifies)."""
        h = self.header(pos)
        if h is None or h[0] not in _DATA_OPCODES:
            return False
        try:
            _parse(h[0], self.buf[pos + 9 : pos + 9 + h[1]])
        except _Damaged:
            return False
        return True

    def next_chunk(self, start: int) -> int | None:
        """The offset of the next chunk that verifies (or of the data end) after ``start``; None: none."""
        end_at = self.buf.find(bytes([Opcode.DATA_END]) + struct.pack("<Q", 4), start)
        pos = start
        while True:
            chunk_at = self.buf.find(bytes([Opcode.CHUNK]), pos)
            if chunk_at < 0 or 0 <= end_at < chunk_at:
                return end_at if end_at >= 0 else None
            pos = chunk_at + 1
            h = self.header(chunk_at)
            if h is None or h[1] < _CHUNK_FIXED:
                continue
            (name_len,) = struct.unpack_from("<I", self.buf, chunk_at + 9 + 28)
            if name_len > 4 or _CHUNK_FIXED + name_len > h[1]:
                continue
            (records_len,) = struct.unpack_from("<Q", self.buf, chunk_at + 9 + 32 + name_len)
            if records_len == h[1] - _CHUNK_FIXED - name_len and self.intact_at(chunk_at):
                return chunk_at

    def skip(self, offset: int, reason: str, length: int | None) -> int | None:
        """Report the damaged record at ``offset`` and return where reading goes on (None: nowhere: truncated)."""
        after = offset + 9 + length if length is not None else None
        if after is not None and (after == self.size or self.intact_at(after)):
            self._counting = self.damaged(offset, reason, after - offset)
            return after
        resume = self.next_chunk(offset + 1)
        if resume is None:
            return None
        self.damaged(offset, f"{reason}; no intact record follows it: resumed at the next intact chunk (byte "
                             f"{resume})", resume - offset)
        self._counting = None
        return resume

    def take(self, records: Iterable[Any], checked: bool) -> None:
        for r in records:
            if isinstance(r, Schema):
                self.schemas.setdefault(r.id, r.name)
            elif isinstance(r, Channel):
                self.channels.setdefault(r.id, (r.topic, r.schema_id))
            elif isinstance(r, Message):
                self.found.append((r.channel_id, r.log_time, bytes(r.data), checked))
                self.last_time = r.log_time
                for gap in self._open_gaps:
                    gap.lost_before_ns = r.log_time
                self._open_gaps = []

    def read(self) -> list[LogMessage]:
        report, buf = self.report, self.buf
        if buf[: len(MCAP_MAGIC)] != MCAP_MAGIC:
            self.damaged(0, "not an MCAP file (bad magic)" if self.size >= len(MCAP_MAGIC) else "truncated: no header")
            report.complete = False
            report.damage += self.damage
            return []
        crc = zlib.crc32(buf[: len(MCAP_MAGIC)])
        contiguous = True  # every byte so far read in order (the data-section CRC can be checked)
        data_crc_ok = False
        offset = len(MCAP_MAGIC)
        while True:
            if offset + 9 > self.size:
                self.damaged(offset, "truncated: the file ends before its data end (recorder killed or copy cut short)")
                report.complete = False
                break
            opcode, length = struct.unpack_from("<BQ", buf, offset)
            if length > self.size - offset - 9:
                reason = (f"record 0x{opcode:02x} claims {length} bytes, {self.size - offset - 9} remain "
                          "(truncated or a damaged length)")
                resume = self.skip(offset, reason, None)
                if resume is None:
                    self.damaged(offset, reason)
                    report.complete = False
                    break
                offset, contiguous = resume, False
                continue
            body = buf[offset + 9 : offset + 9 + length]
            if offset == len(MCAP_MAGIC) and opcode == Opcode.HEADER:
                crc = zlib.crc32(body, zlib.crc32(buf[offset : offset + 9], crc))
                offset += 9 + length
                continue
            if opcode not in _DATA_OPCODES:
                reason = (f"unknown record opcode 0x{opcode:02x} (damaged record header)" if opcode not in _KNOWN_OPCODES
                          else f"record 0x{opcode:02x} does not belong in the data section (damaged record header)")
                if opcode == Opcode.FOOTER and offset + _FOOTER_SIZE + len(MCAP_MAGIC) == self.size:
                    break  # a file without a data end record: nothing more to read
                resume = self.skip(offset, reason, length)
                if resume is None:
                    report.complete = False
                    break
                offset, contiguous = resume, False
                continue
            try:
                record = _parse(opcode, body)
            except _Damaged as e:
                what = "chunk" if opcode == Opcode.CHUNK else f"record 0x{opcode:02x}"
                resume = self.skip(offset, f"damaged {what} ({length} bytes): {e}", length)
                if resume is None:
                    report.complete = False
                    break
                offset, contiguous = resume, False
                continue
            crc_before, crc = crc, zlib.crc32(body, zlib.crc32(buf[offset : offset + 9], crc))
            if opcode == Opcode.DATA_END:
                if record.data_section_crc and contiguous and not self.damage and record.data_section_crc != crc_before:
                    self.damaged(offset, "data-section CRC mismatch (damage outside the chunks' own CRCs)")
                else:
                    data_crc_ok = bool(record.data_section_crc) and contiguous and not self.damage
                self.summary(offset + 9 + length)
                break
            if opcode == Opcode.CHUNK:
                chunk, records = record
                report.chunks += 1
                self._counting = None
                if chunk.uncompressed_crc == 0:
                    report.unverified_chunks += 1
                self.take(records, chunk.uncompressed_crc != 0)
            elif opcode == Opcode.MESSAGE_INDEX:
                if self._counting is not None:  # the index records of a skipped chunk: how many messages it held
                    self._counting.lost_messages = (self._counting.lost_messages or 0) + len(record.records)
            elif opcode in (Opcode.SCHEMA, Opcode.CHANNEL, Opcode.MESSAGE):
                self._counting = None
                self.take([record], False)
            offset += 9 + length
        return self.resolve(data_crc_ok)

    def summary(self, start: int) -> None:
        """Schemas and channels from the summary section, for those whose definition was in a damaged chunk (taken
        only when the footer's summary CRC verifies); reports a missing or damaged summary (the data is intact)."""
        footer_at = self.size - len(MCAP_MAGIC) - _FOOTER_SIZE
        if self.buf[self.size - len(MCAP_MAGIC) :] != MCAP_MAGIC or footer_at < start or \
                self.buf[footer_at] != Opcode.FOOTER:
            self.damaged(self.size, "summary section truncated or damaged (no closing magic): the data is intact, "
                                    "seeking readers fail, linear reads work")
            return
        if not self.damage:
            return  # every definition was read in the data section
        summary_start, _, summary_crc = struct.unpack_from("<QQI", self.buf, footer_at + 9)
        if not (start <= summary_start <= footer_at) or summary_crc == 0 or \
                zlib.crc32(self.buf[summary_start : footer_at + 9 + 16]) != summary_crc:
            return  # no trustworthy summary: channels defined only in damaged chunks stay unknown
        pos = summary_start
        while pos < footer_at:
            h = self.header(pos)
            if h is None:
                return
            opcode, length = h
            if opcode in (Opcode.SCHEMA, Opcode.CHANNEL):
                try:
                    self.take([_parse(opcode, self.buf[pos + 9 : pos + 9 + length])], False)
                except _Damaged:
                    return
            pos += 9 + length

    def resolve(self, data_crc_ok: bool) -> list[LogMessage]:
        """The verified messages with their topics; those on channels nobody defined are dropped and reported."""
        kept: list[LogMessage] = []
        unknown: dict[int, int] = {}
        unverified = 0
        for channel_id, log_time, data, checked in self.found:
            if not (checked or data_crc_ok):
                unverified += 1
                continue
            if channel_id not in self.channels:
                unknown[channel_id] = unknown.get(channel_id, 0) + 1
                continue
            topic, schema_id = self.channels[channel_id]
            if self.wanted is None or topic in self.wanted:
                kept.append(LogMessage(topic, self.schemas.get(schema_id, ""), log_time, data))
        self.report.dropped_unverified += unverified
        if unknown:
            first = next(d for d in self.damage if d.skipped) if any(d.skipped for d in self.damage) else None
            self.damaged(first.offset if first else 0,
                         f"{sum(unknown.values())} intact messages on channels {sorted(unknown)} dropped: their "
                         "definitions were in damaged data and the file has no intact summary to recover them from")
        self.report.damage += self.damage
        return kept


def _read_file(path: Path, wanted: set[str] | None, report: ReadReport) -> list[LogMessage]:
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return _FileReader(path, b"", wanted, report).read()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:  # no copy of a large bag in memory
            return _FileReader(path, buf, wanted, report).read()


_KNOWN_OPCODES = {int(o) for o in Opcode}
