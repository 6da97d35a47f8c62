"""The recorder node with real rclpy between processes (own ROS_DOMAIN_ID each test): SIGKILLed, it loses no
flushed message (safety.md scenario 11); with the simulator it writes one bag per episode with its metadata."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("rosbags")
pytest.importorskip("mcap")

from sensor_msgs.msg import Image
from std_msgs.msg import Float64

from gato_robot.logs import bag, convert
from gato_robot.ros import common, testing
from gato_robot.ros.recorder import RELIABLE_QOS

pytestmark = pytest.mark.ros


class Recorder:
    def __init__(self, domain: int, out, log_path, *params: str) -> None:
        cmd = [sys.executable, "-m", "gato_robot.ros.recorder", "--ros-args", "-p", f"output_dir:={out}", *params]
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=testing.ros_env(domain),
                                     start_new_session=True)

    def stop(self, sig: int = signal.SIGINT) -> int:
        code = testing.stop_group(self.proc, sig)
        self._log.close()
        return code


def test_sigkilled_recorder_keeps_every_flushed_message(tmp_path, request, monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = testing.domain_for(request.node.nodeid)
    out = tmp_path / "logs"
    cam = common.camera_topic("basket_front_left")
    rec = Recorder(domain, out, tmp_path / "recorder.log", "-p", f"topics:=['{common.GRIPPER_TOPIC}', '{cam}']",
                   "-p", "chunk_size:=65536", "-p", "flush_period_s:=0.3")
    probe = testing.Probe(domain)
    published = 0
    try:
        # the recorder's own 1000-deep reliable profile for the writer too: with the stack's depth 10, a recorder
        # slowed by a loaded CPU for 0.1 s would see DDS overwrite unacknowledged samples (the publisher's gap)
        seq = probe.publisher(common.GRIPPER_TOPIC, Float64, RELIABLE_QOS)
        img = probe.publisher(cam, Image, common.SENSOR_QOS)
        probe.wait_subscribers(seq, timeout=60)
        probe.wait_subscribers(img, timeout=30)
        image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
        deadline = time.monotonic() + 60
        files: list = []
        while time.monotonic() < deadline:
            seq.publish(Float64(data=float(published)))
            img.publish(common.rgb_image(image, common.sec_to_stamp(1.0 + published * 0.01), "cam"))
            published += 1
            time.sleep(0.01)
            files = list(out.glob("*/*.mcap"))
            if published >= 150 and files and files[0].stat().st_size > 300_000:
                break
        assert files, "the recorder wrote nothing"
        snapshot = tmp_path / "snapshot"
        snapshot.mkdir()
        shutil.copy(files[0], snapshot / files[0].name)  # what was flushed just before the kill
        rec.stop(signal.SIGKILL)
    finally:
        rec.stop(signal.SIGKILL)
        probe.close()
    flushed, _ = bag.read_log(snapshot, [common.GRIPPER_TOPIC])
    messages, report = bag.read_log(files[0].parent, [common.GRIPPER_TOPIC])  # never raises
    values = [m.decode().data for m in messages]
    print(f"published {published}, flushed before the kill {len(flushed)}, recovered {len(values)}, "
          f"lost {published - len(values)}; {report.damage[0] if report.damage else 'no damage'}")
    assert len(flushed) > 0
    assert len(values) >= len(flushed)  # every message flushed before the kill is recovered
    assert [m.data for m in messages[: len(flushed)]] == [m.data for m in flushed]
    # reliable: gap-free and in order from the first message the new subscription matched
    assert values == [values[0] + i for i in range(len(values))] and values[0] < 20
    assert not report.complete and report.damage and str(files[0]) in str(report.damage[0])
    assert not (files[0].parent / "metadata.yaml").exists()  # killed: never closed


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_recorder_splits_the_simulators_episodes(tmp_path, request, monkeypatch):
    pytest.importorskip("pybullet")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = testing.domain_for(request.node.nodeid)
    out = tmp_path / "logs"
    params = testing.write_params(tmp_path / "stack.yaml", {
        "gato_sim": {"episode_steps": 6, "max_episodes": 2, "start_paused": True, "lockstep": False}})
    rec = Recorder(domain, out, tmp_path / "recorder.log", "-p", "policy:=none")
    probe = testing.Probe(domain)
    sim = testing.NodeProcess("gato_sim", domain, tmp_path, params)
    try:
        probe.wait_for(lambda: probe.node.count_subscribers(common.EPISODE_STATUS_TOPIC) >= 1
                       and probe.node.count_publishers(common.EPISODE_STATUS_TOPIC) >= 1, 60, "recorder and sim")
        time.sleep(1.0)  # let the recorder's subscriptions match the sim's publishers
        from std_srvs.srv import Trigger

        probe.call(common.SIM_RESET_SERVICE, Trigger, timeout=60)

        def closed() -> int:
            return len(list(out.glob("*/metadata.yaml")))

        probe.wait_for(lambda: closed() >= 2, 90, "two episode bags")
    finally:
        sim.stop()
        code = rec.stop()
        probe.close()
    assert code == 0, rec.log_path.read_text()[-2000:]
    # a message of the final step delivered after the done status (the executor's order) may open a last bag
    # with no status in it: kept (nothing is discarded), not an episode
    bags = sorted(p.parent for p in out.glob("*/metadata.yaml") if "episode" in bag.read_sidecar(p.parent))
    episodes = []
    for b in bags:
        meta = yaml.safe_load((b / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        info = json.loads(meta["custom_data"]["gato_episode"])
        episodes.append(info)
        assert info == bag.read_sidecar(b)
        messages, report = bag.read_log(b)
        assert report.ok and report.unverified_chunks == 0
        topics = {m.topic for m in messages}
        assert {"/clock", "/joint_states", common.EPISODE_STATUS_TOPIC, common.camera_topic("basket_front_left")} <= topics
        # no controller ran: the converter drops every tick, and says why
        eps, conv = convert.log_to_episodes(b)
        assert eps == [] and conv.dropped.get("no arm command before the next observation", 0) >= 5
    assert [e["episode"] for e in episodes[:2]] == [0, 1]
    for e in episodes[:2]:
        assert e["done"] and e["steps"] == 6 and e["triplet"] and e["seed"] == e["episode"] and "success" in e
        assert e["policy"] == "none" and e["start_sim_time"] < e["end_sim_time"]


def test_replayer_publishes_the_log_with_its_timing_and_clock(tmp_path, request, monkeypatch):
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String

    from gato_robot.logs.synthetic import write_synthetic_log

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = testing.domain_for(request.node.nodeid)
    (log,) = write_synthetic_log(tmp_path / "logs", episodes=1, steps=20, observation_rows=False)
    probe = testing.Probe(domain)
    deep = common.QoSProfile(depth=200, reliability=common.ReliabilityPolicy.RELIABLE)
    probe.record(common.EPISODE_STATUS_TOPIC, String, deep)
    probe.record(common.GRIPPER_TOPIC, Float64, deep)
    probe.record("/clock", Clock, common.QoSProfile(depth=200, reliability=common.ReliabilityPolicy.BEST_EFFORT))
    report = tmp_path / "replay.json"
    cmd = [sys.executable, "-m", "gato_robot.ros.replayer", str(log), "--rate", "2", "--wait-subscribers", "30",
           "--topics", f"{common.EPISODE_STATUS_TOPIC},{common.GRIPPER_TOPIC},/clock", "--report", str(report)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=testing.ros_env(domain),
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=90)
        probe.wait_for(lambda: len(probe.received(common.EPISODE_STATUS_TOPIC)) >= 21, 10, "every status")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        probe.close()
    assert proc.returncode == 0, out.decode()[-2000:]
    messages, _ = bag.read_log(log, [common.EPISODE_STATUS_TOPIC, common.GRIPPER_TOPIC])
    logged = [m.decode().data for m in messages if m.topic == common.EPISODE_STATUS_TOPIC]
    assert [m.data for _, m in probe.received(common.EPISODE_STATUS_TOPIC)] == logged
    assert [m.data for _, m in probe.received(common.GRIPPER_TOPIC)] == \
        [m.decode().data for m in messages if m.topic == common.GRIPPER_TOPIC]
    clocks = [common.stamp_to_sec(m.clock) for _, m in probe.received("/clock")]
    assert clocks and clocks == sorted(clocks) and 1.5 <= clocks[-1] <= 2.0  # the recorded sim time
    stats = json.loads(report.read_text())
    assert stats["messages"] >= len(messages) + len(clocks) and stats["rate"] == 2  # /clock is best effort
    print(f"replay at 2x: publish-time error {stats['publish_error_ms']}")


def test_launcher_record_logs_a_simulated_episode_that_converts_to_training_data(tmp_path, request, monkeypatch):
    """`gato-stack --sim --model M --record DIR`: one bag per episode, convertible: the episode's actions are the
    commands the controller sent, its success the simulator's; the token stream is the same three times. Nothing
    starts the episode but the sim itself, once the stack and the recorder are there: the bag holds it from its
    first observation and the policy's answer to it (not an episode begun while the recorder was discovering)."""
    pytest.importorskip("pybullet")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from gato_robot.logs.offline import token_stream_sha256
    from gato_robot.ros.sim_node import SIM_START

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    steps = 12
    model = testing.export_tiny_policy(tmp_path.parent / "tiny_policy_logs")
    domain = testing.domain_for(request.node.nodeid)
    params = testing.write_params(tmp_path / "stack.yaml", {
        "gato_policy": {"providers": "cpu", "intra_op_threads": 1},
        "gato_sim": {"episode_steps": steps, "max_episodes": 1}})
    out = tmp_path / "logs"
    probe = testing.Probe(domain)
    log = tmp_path / "launcher.log"
    with open(log, "w") as err:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "gato_robot.ros.launcher", "--sim", "--model", str(model), "--params-file",
             str(params), "--record", str(out)], stdout=subprocess.DEVNULL, stderr=err,
            env=testing.ros_env(domain), start_new_session=True)
    try:
        probe.wait_for(lambda: any(out.glob("*/metadata.yaml")), 240, "the episode bag to be closed")
    finally:
        code = testing.stop_launcher(launcher)
        probe.close()
    assert code == 0, log.read_text()[-3000:]
    first = sorted(p.parent for p in out.glob("*/metadata.yaml"))[0]
    meta = bag.read_sidecar(first)
    assert meta["episode"] == 0 and meta["done"] and meta["steps"] == steps and meta["policy"] == str(model)
    messages, report = bag.read_log(first)
    assert report.ok, report
    # the sim started the episode once the recorder was there: the bag holds all of it from its first step
    statuses = [json.loads(m.decode().data) for m in messages if m.topic == common.EPISODE_STATUS_TOPIC]
    assert [s["step"] for s in statuses] == list(range(steps + 1)) and statuses[0]["sim_time"] == SIM_START
    camera = [round(common.stamp_to_sec(m.decode().header.stamp), 6) for m in messages
              if m.topic == "/camera/basket_front_left/image_raw"]
    assert camera[0] == SIM_START and len(camera) == steps + 1
    twists = [m.decode().twist for m in messages if m.topic == common.TWIST_TOPIC]
    (episode,), conv = convert.log_to_episodes(first)
    print(f"recorded {len(messages)} messages; converted {len(episode)} steps; dropped {conv.dropped}")
    # ticks the lockstep sim stepped with a command issued before them (watchdog zeros while the policy warms up,
    # or an observation the busy policy skipped) have no command of their own: dropped, and counted
    assert len(episode) >= 3 and episode.metadata["success"] == meta["success"]
    assert set(conv.dropped) <= {"no arm command before the next observation",
                                 "final observation of an episode (no action follows)"}
    assert conv.kept + sum(conv.dropped.values()) == steps + 1
    logged = {(round(t.linear.x, 9), round(t.linear.z, 9), round(t.angular.z, 9)) for t in twists}
    for a in episode.actions["action"]:
        assert (round(float(a[0]), 9), round(float(a[2]), 9), round(float(a[3]), 9)) in {
            (round(float(np.float32(x)), 9), round(float(np.float32(z)), 9), round(float(np.float32(w)), 9))
            for x, z, w in logged}
    hashes = {token_stream_sha256(first) for _ in range(3)}
    assert len(hashes) == 1
