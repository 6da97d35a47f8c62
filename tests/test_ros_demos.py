"""Recording operator-labelled demonstrations on a robot without an episode status (issue 32 part 1), with real
rclpy and DDS between processes (own ROS_DOMAIN_ID each test): the simulator with its episode status off stands in
for the robot, the scripted operator drives it through /gato/action and the controller and labels each episode
through the recorder's services; the console takes keys from a pseudo-terminal; the converter turns the bags into
training episodes with the operator's label and no simulator field."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("rosbags")
pytest.importorskip("mcap")

from gato_robot.data.episodes import read_episode
from gato_robot.logs import bag, convert
from gato_robot.ros import common, testing

pytestmark = pytest.mark.ros

SIM_ONLY = {"triplet", "seed", "stacked", "object_poses"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_scripted_operator_records_labelled_episodes_that_convert_without_sim_fields(tmp_path, request):
    pytest.importorskip("pybullet")
    domain = testing.domain_for(request.node.nodeid)
    logs = tmp_path / "logs"
    proc = subprocess.run(
        [sys.executable, "-m", "gato_robot.ros.record_demos", "--out", str(logs), "--episodes", "2",
         "--triplet", "rgb_test_triplet2", "--seed", "300000", "--image-size", "64"],
        env=testing.ros_env(domain), capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    bags = sorted(p.parent for p in logs.glob("*/metadata.yaml"))
    assert len(bags) == 2, out[-3000:]
    labels = []
    for b in bags:
        meta = bag.read_sidecar(b)
        assert meta["labelled_by"] == "operator" and meta["done"] and meta["label"] in ("success", "failure")
        assert not SIM_ONLY & set(meta), meta  # the recorder knows no triplet or seed of a robot
        messages, report = bag.read_log(b)
        assert report.ok
        topics = {m.topic for m in messages}
        assert common.EPISODE_STATUS_TOPIC not in topics and common.OBJECT_STATE_TOPIC not in topics
        events = [json.loads(m.decode().data) for m in messages if m.topic == common.EPISODE_EVENT_TOPIC]
        assert [e["event"] for e in events] == ["start", "end"] and events[1]["success"] == (meta["label"] == "success")
        assert events[0]["stamp"] > 0 and events[0]["stamp"] < events[1]["stamp"]
        labels.append(meta["success"])
    assert sum(labels) >= 1, "the scripted expert stacks in most episodes"  # 91% on the Panda (docs/sim.md)

    embodiment = convert.load_embodiment("panda")
    reports = convert.convert_logs(bags, tmp_path / "episodes", robot=embodiment,
                                   spec=embodiment.spec(list(bag.CAMERAS), 64))
    for r, success in zip(reports, labels):
        assert [e["written"] for e in r.episodes] == [True], r.to_dict()
        assert r.kept >= 100 and r.kept >= r.ticks - 3, r.dropped  # every step the operator answered
        (info,) = r.episodes
        ep = read_episode(info["file"])
        assert not SIM_ONLY & set(ep.metadata), ep.metadata
        assert ep.metadata["success"] is success and ep.metadata["labelled_by"] == "operator"
        # the labels are the operator's /gato/action (before the controller's rate limit), one per step
        assert ep.metadata["operator_action_steps"] == len(ep)
        assert ep.rewards[-1] == float(success) and ep.rewards[:-1].sum() == 0
        assert ep.observations["camera/basket_front_left"].shape[1:] == (64, 64, 3)
        a = ep.actions["action"]
        assert np.all(np.isfinite(a)) and np.abs(a[:, :3]).max() > 0.01  # the operator moved the arm
        assert set(ep.extras) == {"stamp", "log_time_ns"}  # no object poses: nothing the robot did not record
    # shared with the field's tools: the operator's episodes as a LeRobotDataset v3 (issue 32 part 4), layout-checked
    from gato_robot.data import lerobot

    lerobot.export_dataset([tmp_path / "episodes"], tmp_path / "lerobot", progress=False)
    assert lerobot.check_layout(tmp_path / "lerobot") == []


class _Stack:
    """The sim node as a robot (no episode status) and a recorder in operator mode."""

    def __init__(self, tmp_path, domain: int, *recorder_args: str, console: bool = False) -> None:
        params = testing.write_params(tmp_path / "stack.yaml", {"gato_sim": {
            "episode_status": False, "start_paused": True, "auto_reset": False, "lockstep": False,
            "image_size": 32}})
        self.sim = testing.NodeProcess("gato_sim", domain, tmp_path, params)
        self.out = tmp_path / "logs"
        cmd = [sys.executable, "-m", "gato_robot.ros.recorder", "--out", str(self.out),
               *(["--operator"] if console else []), *recorder_args, "--ros-args", "-p", "episodes:=operator",
               "-p", "silence_s:=0.5"]
        self.log = b""
        if console:  # the console reads keys from its terminal: a pseudo-terminal here
            self.master, slave = pty.openpty()
            self.rec = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=testing.ros_env(domain),
                                        start_new_session=True)
            os.close(slave)
        else:
            self.master = None
            self.rec = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=testing.ros_env(domain), start_new_session=True)

    def wait(self, done, timeout: float = 30.0) -> bool:
        """Read the console's terminal until ``done(everything read)`` or the timeout."""
        deadline = time.monotonic() + timeout
        while not done(self.log) and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.log += os.read(self.master, 4096)
                except OSError:
                    break
        return done(self.log)

    def stop(self) -> int:
        self.sim.stop()
        if self.rec.poll() is None:
            self.rec.send_signal(2)
        code = self.rec.wait(timeout=20)
        if self.master is not None:
            os.close(self.master)
        return code


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_recorder_services_refuse_out_of_order_calls_discard_deletes_and_silence_is_listed(tmp_path, request):
    pytest.importorskip("pybullet")
    from std_srvs.srv import SetBool, Trigger

    domain = testing.domain_for(request.node.nodeid)
    stack = _Stack(tmp_path, domain)
    probe = testing.Probe(domain)
    try:
        probe.wait_for(lambda: probe.node.count_subscribers(common.JOINT_STATES_TOPIC) >= 1
                       and probe.node.count_publishers(common.JOINT_STATES_TOPIC) >= 1, 60, "recorder and sim")
        time.sleep(1.0)
        assert probe.call(common.SIM_RESET_SERVICE, Trigger, timeout=60).success  # the scene; /clock from here on
        end = probe.node.create_client(SetBool, common.RECORDER_END_SERVICE)
        assert end.wait_for_service(timeout_sec=30)

        def call(client, req):
            fut = client.call_async(req)
            probe.wait_for(fut.done, 30, "service answer")
            return fut.result()

        assert not call(end, SetBool.Request(data=True)).success  # no episode yet
        start = probe.node.create_client(Trigger, common.RECORDER_START_SERVICE)
        discard = probe.node.create_client(Trigger, common.RECORDER_DISCARD_SERVICE)
        deadline = time.monotonic() + 30
        while not (r := call(start, Trigger.Request())).success and "no clock" in r.message \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.success, r.message
        assert not call(start, Trigger.Request()).success  # one episode at a time
        time.sleep(1.0)
        assert call(discard, Trigger.Request()).success
        assert not list(stack.out.glob("*/*.mcap")), "a discarded episode leaves no bag"
        assert call(start, Trigger.Request()).success
        stack.sim.stop()  # the robot's drivers go down mid-episode: the recorder says so
        time.sleep(1.5)
        assert call(end, SetBool.Request(data=False)).success
    finally:
        code = stack.stop()
        probe.close()
    out = stack.rec.stdout.read().decode(errors="replace")
    assert code == 0, out[-3000:]
    assert "is silent" in out and "discarded" in out, out[-3000:]
    (b,) = [p.parent for p in stack.out.glob("*/metadata.yaml")]
    meta = bag.read_sidecar(b)
    assert meta["episode"] == 0 and meta["label"] == "failure" and meta["success"] is False  # the number is reused
    silent = {s["topic"] for s in meta["silences"]}
    assert common.JOINT_STATES_TOPIC in silent and common.camera_topic("basket_front_left") in silent


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_console_keys_start_label_discard_and_quit(tmp_path, request):
    pytest.importorskip("pybullet")
    from std_srvs.srv import Trigger

    domain = testing.domain_for(request.node.nodeid)
    stack = _Stack(tmp_path, domain, console=True)
    probe = testing.Probe(domain)
    try:
        assert stack.wait(lambda log: b"keys: [s]tart" in log), stack.log
        probe.wait_for(lambda: probe.node.count_subscribers(common.JOINT_STATES_TOPIC) >= 1
                       and probe.node.count_publishers(common.JOINT_STATES_TOPIC) >= 1, 60, "recorder and sim")
        time.sleep(1.0)
        assert probe.call(common.SIM_RESET_SERVICE, Trigger, timeout=60).success
        time.sleep(0.5)
        for _ in range(50):  # until the recorder has the sim's clock (refused before: "no clock yet")
            os.write(stack.master, b"s")
            if stack.wait(lambda log: b"episode 0 started" in log, 1.0):
                break
        assert stack.wait(lambda log: b"REC" in log)  # the status line while recording
        os.write(stack.master, b"d")
        assert stack.wait(lambda log: b"discarded" in log)
        n = stack.log.count(b"episode 0 started")
        os.write(stack.master, b" ")
        assert stack.wait(lambda log: log.count(b"episode 0 started") > n)  # the discarded number again
        time.sleep(0.5)
        os.write(stack.master, b"y")
        assert stack.wait(lambda log: b"saved as a success" in log)
        os.write(stack.master, b"q")
        code = stack.rec.wait(timeout=20)
    finally:
        stack.stop()
        probe.close()
    assert code == 0, stack.log[-2000:].decode(errors="replace")
    bags = [p.parent for p in stack.out.glob("*/metadata.yaml")]
    assert len(bags) == 1 and bag.read_sidecar(bags[0])["label"] == "success"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_gamepad_teleoperation_through_gato_stack_demos_records_what_the_operator_did(tmp_path, request):
    """The bring-up a user runs (docs/logs.md): ``gato-stack --sim --demos --record DIR`` (the simulator as a robot,
    the controller, the recorder in operator mode) and ``gato-teleop --source joy --follow-episodes``; a probe plays
    the gamepad and the operator's service calls. The converted episode's actions are the stick's velocity (through
    the controller's rate limit) and every recorded step is flagged as the operator's."""
    pytest.importorskip("pybullet")
    from sensor_msgs.msg import Joy
    from std_srvs.srv import SetBool, Trigger

    domain = testing.domain_for(request.node.nodeid)
    logs = tmp_path / "logs"
    env = testing.ros_env(domain)
    stack = subprocess.Popen([sys.executable, "-m", "gato_robot.ros.launcher", "--sim", "--demos", "--record",
                              str(logs)], stdout=open(tmp_path / "stack.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                             env=env, start_new_session=True)
    teleop = subprocess.Popen([sys.executable, "-m", "gato_robot.ros.teleop", "--source", "joy", "--follow-episodes"],
                              stdout=open(tmp_path / "teleop.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                              env=env, start_new_session=True)
    probe = testing.Probe(domain)
    try:
        joy = probe.publisher("/joy", Joy, common.SENSOR_QOS)
        start = probe.node.create_client(Trigger, common.RECORDER_START_SERVICE)
        end = probe.node.create_client(SetBool, common.RECORDER_END_SERVICE)
        assert start.wait_for_service(timeout_sec=60) and end.wait_for_service(timeout_sec=30)
        probe.wait_subscribers(joy, timeout=60)  # matched with the teleop's subscription, not only in the graph
        probe.wait_for(lambda: probe.node.count_subscribers(common.JOINT_STATES_TOPIC) >= 2, 60, "teleop, recorder")
        time.sleep(1.0)
        assert probe.call(common.SIM_RESET_SERVICE, Trigger, timeout=60).success

        def call(client, req):
            fut = client.call_async(req)
            probe.wait_for(fut.done, 30, "service answer")
            return fut.result()

        deadline = time.monotonic() + 30
        while not (r := call(start, Trigger.Request())).success and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.success, r.message
        stick = Joy(axes=[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], buttons=[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
        t_end = time.monotonic() + 4.0
        while time.monotonic() < t_end:  # full stick forward, deadman held: +x at the teleop's linear speed
            joy.publish(stick)
            time.sleep(0.05)
        assert call(end, SetBool.Request(data=False)).success
    finally:
        for p in (teleop, stack):
            if p.poll() is None:
                p.send_signal(2)
        codes = [p.wait(timeout=40) for p in (teleop, stack)]
        probe.close()
    assert codes == [0, 0], (tmp_path / "stack.log").read_text()[-3000:] + (tmp_path / "teleop.log").read_text()[-2000:]
    (b,) = [p.parent for p in logs.glob("*/metadata.yaml")]
    assert bag.read_sidecar(b)["label"] == "failure"
    messages, _ = bag.read_log(b, ["/gato/teleop/intervention"])
    flags = [m.decode().data for m in messages]
    assert len(flags) >= 20 and all(flags)  # the DAgger label of every step: the operator's
    episodes, report = convert.log_to_episodes(b)
    (ep,) = episodes
    a = ep.actions["action"]
    assert len(ep) >= 20, report.dropped
    # the label is the stick's +x at 0.05 m/s from the first step (the operator's action, not the controller's
    # ramp of 0.02 m/s per command, which the executed commands show); nothing else moves
    assert np.allclose(a[:, 0], 0.05, atol=1e-6) and np.abs(a[:, 1:4]).max() < 1e-6, a[:10]
    assert ep.metadata["operator_action_steps"] == len(ep)
    assert ep.metadata["success"] is False and not SIM_ONLY & set(ep.metadata)
