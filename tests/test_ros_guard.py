"""The controller's dead man's switch (gato_robot/ros/guard.py) as a real process on real DDS: it reports the arm
command readers it has matched, so the controller can refuse to command a reader it could not stop, and it
commands zero when its owner goes away without saying ``clean``."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from std_msgs.msg import Float64MultiArray

from gato_robot import wire
from gato_robot.ros import common, testing
from gato_robot.ros.guard import GuardProcess

pytestmark = pytest.mark.ros


@pytest.fixture
def domain(request, monkeypatch):
    domain = testing.domain_for(request.node.nodeid)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))  # the guard process inherits it
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain


def test_15_guard_reports_the_readers_it_reaches_and_stops_them_when_its_owner_dies(domain):
    guard = GuardProcess("forward_command", common.FORWARD_TOPIC, "", [], owner_pid=0)
    probe = None
    try:
        assert guard.covers(0) and not guard.covers(1)  # nobody reads the arm topic yet: it reaches no one
        probe = testing.Probe(domain)
        received = probe.record(common.FORWARD_TOPIC, Float64MultiArray)
        probe.wait_for(lambda: guard.covers(1), 60.0, "the guard reporting the probe's reader as matched")
        assert guard.matched == 1 and not guard.covers(2)
        guard.proc.stdin.close()  # the owner's end of the pipe closes without "clean": as when it is SIGKILLed
        assert guard.proc.wait(timeout=30) == 0
        probe.wait_for(lambda: len(received) >= 1, 10.0, "the guard's zero command")
        zeros = [wire.forward_command_to_velocity(m.data) for _, m in received]
        assert all(not np.any(v) for v in zeros)
        assert len(zeros) >= 2  # repeated for its settle time (a dead writer's last sample may land after the first)
    finally:
        if guard.proc.poll() is None:
            guard.proc.kill()
            guard.proc.wait()
        if probe is not None:
            probe.close()


def test_15_a_clean_release_commands_nothing(domain):
    probe = testing.Probe(domain)
    try:
        received = probe.record(common.FORWARD_TOPIC, Float64MultiArray)
        guard = GuardProcess("forward_command", common.FORWARD_TOPIC, "", [], owner_pid=0)
        probe.wait_for(lambda: guard.covers(1), 60.0, "the guard reporting the probe's reader as matched")
        assert guard.release() == 0
        assert received == []  # the controller sent its own zero: the guard stays silent
    finally:
        probe.close()
