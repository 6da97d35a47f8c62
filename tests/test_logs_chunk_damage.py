"""safety.md scenario 18: a damaged chunk inside a log (one flipped byte) loses only that chunk's messages;
everything after it is read, and the damage is reported with its byte offset (reader, converter and its CLI).

The bag is written by the project's writer (``BagWriter`` via ``write_synthetic_log``) with small chunks, so it
has many; which messages each chunk holds is taken from the intact file with the ``mcap`` library itself (its
summary's chunk indexes and its chunk parser), independently of the reader under test.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("mcap")

from mcap.data_stream import ReadDataStream
from mcap.reader import make_reader
from mcap.records import Chunk, Message
from mcap.stream_reader import breakup_chunk

from gato_robot.logs import bag
from gato_robot.logs.convert import log_to_episodes
from gato_robot.logs.synthetic import write_synthetic_log

STEPS = 160


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    (path,) = write_synthetic_log(tmp_path_factory.mktemp("logs"), steps=STEPS, image_size=32,
                                  observation_rows=False, chunk_size=8 * 1024)
    return path


@pytest.fixture(scope="module")
def chunks(log) -> list[tuple[int, int, list[tuple[int, bytes]]]]:
    """(offset, record length incl. opcode and length field, [(log time, data) of its messages]) per chunk."""
    f = bag.mcap_files(log)[0]
    raw = f.read_bytes()
    with open(f, "rb") as fh:
        indexes = make_reader(fh).get_summary().chunk_indexes
    out = []
    for ci in sorted(indexes, key=lambda c: c.chunk_start_offset):
        start, length = ci.chunk_start_offset, ci.chunk_length
        assert raw[start] == 0x06 and struct.unpack_from("<Q", raw, start + 1)[0] == length - 9
        chunk = Chunk.read(ReadDataStream(io.BytesIO(raw[start + 9 : start + length])))
        out.append((start, length, [(r.log_time, bytes(r.data)) for r in breakup_chunk(chunk, validate_crc=True)
                                    if isinstance(r, Message)]))
    return out


def damaged_copy(log: Path, dst: Path, pos: int, *, cut: int | None = None) -> Path:
    shutil.copytree(log, dst)
    f = bag.mcap_files(log)[0]
    raw = bytearray(f.read_bytes())
    raw[pos] ^= 0x10
    (dst / f.name).write_bytes(bytes(raw[:cut]))
    return dst


def key(m: bag.LogMessage) -> tuple[int, bytes]:
    return m.log_time, m.data


@pytest.mark.parametrize("which,where", [("first", "byte 473"), ("middle", "body"), ("middle", "length field"),
                                         ("middle", "opcode"), ("last", "body")])
def test_scenario_18_a_flipped_byte_loses_only_its_chunk_and_is_reported_with_its_offset(log, chunks, tmp_path,
                                                                                          which, where):
    intact, report = bag.read_log(log)
    assert report.ok and report.chunks == len(chunks) >= 50
    assert sum(len(m) for _, _, m in chunks) == len(intact)
    k = {"first": 0, "middle": len(chunks) // 2, "last": len(chunks) - 1}[which]
    start, length, lost = chunks[k]
    pos = {"byte 473": 473, "body": start + length // 2, "length field": start + 2, "opcode": start}[where]
    assert start <= pos < start + length  # the flip is inside this chunk's record
    messages, report = bag.read_log(damaged_copy(log, tmp_path / "bag", pos))
    want = [m for m in intact if key(m) not in set(lost)]
    assert [key(m) for m in messages] == [key(m) for m in want]  # only that chunk's messages are lost, in order
    assert [m.topic for m in messages] == [m.topic for m in want]  # channels of a damaged first chunk: from summary
    assert len(messages) == len(intact) - len(lost)
    (d,) = report.damage
    assert d.offset == start and d.skipped >= length and str(d.path).endswith(".mcap")
    assert f"at byte {start}" in str(d)
    if where in ("body", "byte 473"):
        assert d.skipped == length and d.lost_messages == len(lost)  # counted from the chunk's message index
    assert report.complete and report.chunks == len(chunks) - 1 and report.damaged_chunks == 1
    print(f"{which} chunk, {where}: flipped byte {pos} in chunk {k} of {len(chunks)} at byte {start}: "
          f"{len(messages)}/{len(intact)} messages read, {len(lost)} lost; {d}")


def test_scenario_18_damage_then_truncation_reads_between_and_reports_both(log, chunks, tmp_path):
    intact, _ = bag.read_log(log)
    start, length, lost = chunks[len(chunks) // 4]
    cut_chunk = chunks[3 * len(chunks) // 4]
    cut = cut_chunk[0] + cut_chunk[1] // 2  # the file ends inside a later chunk
    messages, report = bag.read_log(damaged_copy(log, tmp_path / "bag", start + length // 2, cut=cut))
    after = {m for _, _, ms in chunks[len(chunks) // 4 + 1 : 3 * len(chunks) // 4] for m in ms}
    assert after and after <= {key(m) for m in messages}  # every intact chunk after the damage, up to the cut
    assert not ({key(m) for m in messages} & set(lost))
    before_cut = sum(len(ms) for _, _, ms in chunks[: 3 * len(chunks) // 4])
    assert [key(m) for m in messages] == [key(m) for m in intact[:before_cut] if key(m) not in set(lost)]
    assert [d.offset for d in report.damage] == [start, cut_chunk[0]] and not report.complete


def test_scenario_18_without_a_summary_lost_channel_definitions_are_reported_not_silent(log, chunks, tmp_path):
    """A killed recorder's bag (no summary) whose first chunk, holding every channel definition, is damaged: the
    later messages cannot be given a topic; they are dropped and the drop is reported, never mislabelled."""
    start, length, _ = chunks[0]
    messages, report = bag.read_log(damaged_copy(log, tmp_path / "bag", start + length // 2, cut=chunks[-1][0] + 20))
    assert messages == []
    assert report.damage[0].offset == start
    assert any("definitions were in damaged data" in d.reason for d in report.damage)


def test_scenario_18_the_converter_keeps_what_is_intact_and_its_cli_prints_the_offset(log, chunks, tmp_path):
    (full,), _ = log_to_episodes(log)
    start, length, lost = chunks[len(chunks) // 2]
    bad = damaged_copy(log, tmp_path / "bag", start + length // 2)
    (episode,), report = log_to_episodes(bad)  # complete (its done status is intact): written
    assert report.episodes[0]["written"] and episode.metadata["success"] == full.metadata["success"]
    assert episode.metadata["log_damage"] == 1
    lost_steps = len({t for t, _ in lost}) // 8 + 2  # control steps whose messages were in the chunk, at most
    assert len(full) - 4 * 2 - lost_steps <= len(episode) < len(full)  # two control periods either side dropped
    steps = np.searchsorted(full.extras["stamp"], episode.extras["stamp"])
    np.testing.assert_array_equal(full.extras["stamp"][steps], episode.extras["stamp"])
    assert steps[-1] == len(full) - 1  # the steps after the damage are kept, to the end
    for k in episode.observations:  # every kept step identical to the intact conversion (grasp flag included)
        np.testing.assert_array_equal(episode.observations[k], full.observations[k][steps])
    np.testing.assert_array_equal(episode.actions["action"], full.actions["action"][steps])
    out = tmp_path / "episodes"
    p = subprocess.run([str(Path(sys.executable).parent / "gato-log-convert"), str(bad), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"at byte {start}" in p.stdout and "1/1 episodes" in p.stdout and "Traceback" not in p.stdout + p.stderr
