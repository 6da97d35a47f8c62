"""Logs without ROS: the CRC-on rosbag2/MCAP writer is readable by rosbags and mcap; the linear reader survives
truncation at 25/50/75/99% and bit flips (safety.md scenario 11): never raises, reports the damage with path and
offset, and returns only messages identical to the intact log's; the converter never feeds damaged data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags")
pytest.importorskip("mcap")

from gato_robot.logs import bag
from gato_robot.logs.convert import log_to_episodes
from gato_robot.logs.synthetic import write_synthetic_log

STEPS = 12


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    (path,) = write_synthetic_log(tmp_path_factory.mktemp("logs"), episodes=1, steps=STEPS, observation_rows=False)
    return path


def mcap_of(path):
    (f,) = bag.mcap_files(path)
    return f


def test_written_bag_is_read_by_rosbags_and_mcap_with_crcs(log):
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader

    messages, report = bag.read_log(log)
    assert report.ok and report.chunks > 1 and report.unverified_chunks == 0 and messages
    with Reader(log) as r:
        assert r.message_count == len(messages)
        rosbags_data = [bytes(d) for _, _, d in r.messages()]
    meta = yaml.safe_load((log / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert json.loads(meta["custom_data"]["gato_episode"])["episode"] == 0  # what `ros2 bag info` reads
    with open(mcap_of(log), "rb") as f:
        reader = make_reader(f, validate_crcs=True)
        mcap_data = [bytes(m.data) for _, _, m in reader.iter_messages(log_time_order=False)]
        assert {m.name for m in reader.iter_metadata()} >= {"gato_episode", "rosbag2"}
    assert sorted(rosbags_data) == sorted(mcap_data) == sorted(m.data for m in messages)
    # every chunk carries a CRC
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader

    chunks = [r for r in StreamReader(str(mcap_of(log)), emit_chunks=True).records if isinstance(r, Chunk)]
    assert chunks and all(c.uncompressed_crc != 0 for c in chunks)
    assert bag.read_sidecar(log)["episode"] == 0


@pytest.mark.parametrize("fraction", [0.25, 0.50, 0.75, 0.99])
def test_truncated_log_is_read_up_to_the_damage(log, tmp_path, fraction):
    intact, _ = bag.read_log(log)
    cut = tmp_path / "cut"
    shutil.copytree(log, cut)
    data = mcap_of(log).read_bytes()
    size = int(len(data) * fraction)
    mcap_of(cut).write_bytes(data[:size])
    messages, report = bag.read_log(cut)
    assert not report.ok and report.damage
    assert str(mcap_of(cut)) in str(report.damage[0]) and 0 < report.damage[0].offset <= size
    assert 0 < len(messages) < len(intact) if fraction < 0.99 else len(messages) <= len(intact)
    assert messages == intact[: len(messages)]  # a prefix, byte for byte
    print(f"truncated at {fraction:.0%}: {len(messages)}/{len(intact)} messages recovered; {report.damage[0]}")
    # the converter: what it keeps equals the intact conversion's prefix; the incomplete episode is not written
    episodes, conv = log_to_episodes(cut)
    if len(messages) < len(intact):
        assert episodes == [] and conv.episodes and not conv.episodes[0]["written"]
    partial, _ = log_to_episodes(cut, keep_incomplete=True)
    (full,), _ = log_to_episodes(log)
    for e in partial:
        n = len(e)
        for k in e.observations:
            np.testing.assert_array_equal(e.observations[k], full.observations[k][:n])
        np.testing.assert_array_equal(e.actions["action"], full.actions["action"][:n])


def test_bit_flips_are_detected_and_never_reach_training(log, tmp_path):
    intact, _ = bag.read_log(log)
    data = bytearray(mcap_of(log).read_bytes())
    rng = np.random.default_rng(0)
    (full,), _ = log_to_episodes(log)
    detected = silent_identical = 0
    positions = rng.integers(8, len(data) - 8, 40)
    for i, pos in enumerate(positions):
        flipped = tmp_path / f"flip{i}"
        flipped.mkdir()
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        (flipped / mcap_of(log).name).write_bytes(bytes(bad))
        messages, report = bag.read_log(flipped)  # never raises
        # whatever is returned is byte-identical to the intact log's messages
        intact_set = {(m.topic, m.log_time, m.data) for m in intact}
        assert all((m.topic, m.log_time, m.data) in intact_set for m in messages)
        if report.damage:
            detected += 1
            assert str(flipped) in str(report.damage[0])
        else:
            silent_identical += 1  # the flip hit bytes no message depends on (e.g. the summary section)
        for e in log_to_episodes(flipped, keep_incomplete=True)[0]:
            n = len(e)
            steps = np.searchsorted(full.extras["stamp"], e.extras["stamp"])
            for k in e.observations:
                np.testing.assert_array_equal(e.observations[k], full.observations[k][steps])
            assert n <= len(full)
    print(f"bit flips: {detected}/{len(positions)} detected as damage, {silent_identical} harmless (outside data)")
    assert detected >= len(positions) // 2


def test_garbage_and_missing_files_are_reported(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "junk_0.mcap").write_bytes(b"not an mcap file at all")
    messages, report = bag.read_log(junk)
    assert messages == [] and "bad magic" in str(report.damage[0])
    (junk / "junk_0.mcap").write_bytes(b"")
    messages, report = bag.read_log(junk)
    assert messages == [] and report.damage
    with pytest.raises(FileNotFoundError):
        bag.read_log(tmp_path / "nothing")


def test_logs_package_never_imports_ros():
    """gato_robot.logs reads and writes bags with rosbags/mcap only: no rclpy, no message packages."""
    import subprocess
    import sys

    code = ("import sys, gato_robot.logs.bag, gato_robot.logs.convert, gato_robot.logs.offline, "
            "gato_robot.logs.synthetic, gato_robot.logs.video, gato_robot.logs.sim_replay\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'pybullet', 'torch') "
            "or m.split('.')[0].endswith('_msgs')]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
