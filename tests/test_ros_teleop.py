"""The teleoperation node (gato-teleop) as a real process on real DDS (own ROS_DOMAIN_ID per test): a probe feeds
/joint_states, /joy, policy action tokens and episode events, and reads /gato/action and /gato/teleop/intervention.
The keyboard source runs under a pseudo-terminal (``os.openpty``) the test types into."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import Image, JointState, Joy
from std_msgs.msg import Bool, String

from gato_robot import wire
from gato_robot.core import specs
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.ros import common, testing
from gato_robot.ros.teleop import INTERVENTION_TOPIC, POLICY_ACTION_TOKENS_TOPIC

pytestmark = pytest.mark.ros

OPEN = specs.RGB_STACKING_ACTION_LOW[4]
STEP_S = 0.05  # the stamps' control period (the node's default rate_hz: the robot file's 20 Hz)


class Teleop:
    """``python -m gato_robot.ros.teleop ...`` with stdin a pseudo-terminal (``tty=True``) or /dev/null."""

    def __init__(self, domain: int, log_path, *args: str, tty: bool = False) -> None:
        self.master = self.slave = None
        stdin = subprocess.DEVNULL
        if tty:
            self.master, self.slave = os.openpty()
            stdin = self.slave
        self.screen = bytearray()
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        cmd = [sys.executable, "-m", "gato_robot.ros.teleop", *args]
        self.proc = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=testing.ros_env(domain),
            start_new_session=True,
        )
        if tty:  # read what the node writes on its terminal (the status line), so its writes never block
            threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            self.screen += data

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def terminal_flags(self) -> int:
        return termios.tcgetattr(self.slave)[3]  # lflag: ICANON and ECHO are off in cbreak mode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT) -> int:
        code = testing.stop_group(self.proc, sig)
        self._log.close()
        return code

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        for fd in (self.master, self.slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


class Rig:
    """The probe's side: publishers of the node's inputs, recorders of its outputs, one control step at a time."""

    def __init__(self, probe: testing.Probe, node: Teleop) -> None:
        self.probe, self.node = probe, node
        self.actions = probe.record(common.ACTION_TOPIC, Image)
        self.flags = probe.record(INTERVENTION_TOPIC, Bool)
        self.states = probe.publisher(common.JOINT_STATES_TOPIC, JointState, common.SENSOR_QOS)
        self.joy = probe.publisher("/joy", Joy, common.SENSOR_QOS)
        self.tokens = probe.publisher(POLICY_ACTION_TOKENS_TOPIC, Image, common.PIPELINE_PUB_QOS)
        self.events = probe.publisher(common.EPISODE_EVENT_TOPIC, String, common.COMMAND_QOS)
        self.stamp = 100.0

    def wait_ready(self, inputs: list) -> None:
        try:
            self.probe.wait_matched([common.ACTION_TOPIC, INTERVENTION_TOPIC], timeout=60)
            for pub in inputs:
                self.probe.wait_subscribers(pub, timeout=30)
        except TimeoutError:
            raise AssertionError(f"the node never came up:\n{self.node.log()}") from None
        # the node's side of the input matches too: the probe's publisher seeing the node's reader does not mean the
        # reader has matched the publisher yet, and a state sent before that is lost (a CI run under load lost the
        # first one after 0.3 s)
        time.sleep(1.0)

    def received(self) -> list[tuple[float, np.ndarray, float]]:
        """(receipt time, action, stamp) of every /gato/action so far."""
        return [
            (
                t,
                wire.action_array(m.encoding, m.height, m.width, m.step, m.data, 5),
                common.stamp_to_sec(m.header.stamp),
            )
            for t, m in self.probe.received(common.ACTION_TOPIC)
        ]

    def flag_values(self) -> list[bool]:
        return [m.data for _, m in self.probe.received(INTERVENTION_TOPIC)]

    def step(self, expect: bool = True, timeout: float = 5.0) -> np.ndarray | None:
        """Publish the next joint state; the action that answers it (None when ``expect`` is false: then make sure
        none comes within 0.4 s)."""
        self.stamp += STEP_S
        n = len(self.probe.received(common.ACTION_TOPIC))
        msg = JointState(name=["panda_joint1"], position=[0.0], velocity=[0.0])
        msg.header.stamp = common.sec_to_stamp(self.stamp)
        self.states.publish(msg)
        if not expect:
            time.sleep(0.4)
            assert len(self.probe.received(common.ACTION_TOPIC)) == n, "an action was published"
            return None
        self.probe.wait_for(lambda: len(self.probe.received(common.ACTION_TOPIC)) > n, timeout, "an action")
        _, action, stamp = self.received()[n]
        assert stamp == pytest.approx(self.stamp, abs=1e-6)  # stamped with the state it answers
        return action

    def publish_joy(self, x: float = 0.0, deadman: bool = False) -> None:
        axes = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        axes[1] = x
        buttons = [0] * 11
        buttons[4] = int(deadman)
        self.joy.publish(Joy(axes=axes, buttons=buttons))

    def until(self, predicate, timeout: float = 10.0, before=None) -> np.ndarray:
        """Step (calling ``before`` first each time) until an action satisfies ``predicate``; that action."""
        deadline = time.monotonic() + timeout
        while True:
            if before is not None:
                before()
                time.sleep(0.05)
            action = self.step()
            if predicate(action):
                return action
            assert time.monotonic() < deadline, f"no matching action within {timeout} s; last {action}"


@pytest.fixture
def rig_for(request, tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = testing.domain_for(request.node.nodeid)
    made: list = []

    def make(*args: str, tty: bool = False) -> Rig:
        node = Teleop(domain, tmp_path / "teleop.log", *args, tty=tty)
        probe = testing.Probe(domain)
        made.extend([node, probe])
        return Rig(probe, node)

    yield make
    for thing in made:
        thing.close()


def zero(action: np.ndarray) -> bool:
    return bool(np.all(action[:4] == 0))


def test_keyboard_source_refuses_without_a_terminal(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gato_robot.ros.teleop", "--source", "keyboard"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=testing.ros_env(testing.domain_for("refuse")),
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "stdin is not a terminal" in lines[0], proc.stderr


def test_joy_deadman_and_a_silent_gamepad(rig_for):
    rig = rig_for("--source", "joy")
    rig.wait_ready([rig.states, rig.joy])
    # (i) the stick pushed without the deadman: zero velocity, gripper open
    a = rig.until(lambda a: True, before=lambda: rig.publish_joy(x=1.0, deadman=False))
    for _ in range(3):
        rig.publish_joy(x=1.0, deadman=False)
        time.sleep(0.05)
        a = rig.step()
        np.testing.assert_array_equal(a, np.float32([0, 0, 0, 0, OPEN]))
    # with the deadman: full stick forward is linear_speed (0.05 m/s) on x
    a = rig.until(lambda a: a[0] > 0, before=lambda: rig.publish_joy(x=1.0, deadman=True))
    np.testing.assert_allclose(a, np.float32([0.05, 0, 0, 0, OPEN]), rtol=1e-6)
    # (ii) the gamepad goes quiet: still moving just after its last message, zero once it is 0.5 s old
    rig.publish_joy(x=1.0, deadman=True)
    last_joy = time.monotonic()
    time.sleep(0.05)
    assert rig.step()[0] > 0
    time.sleep(max(0.0, last_joy + 0.65 - time.monotonic()))
    for _ in range(3):
        assert zero(rig.step())
    rig.probe.wait_for(lambda: len(rig.flag_values()) == len(rig.received()), 5, "one flag per action")
    assert all(rig.flag_values())  # the operator is the source: every action an intervention
    assert rig.node.stop() == 0


def test_keyboard_under_a_pty_moves_while_a_key_repeats_then_stops(rig_for):
    rig = rig_for("--source", "keyboard", tty=True)
    rig.wait_ready([rig.states])
    assert not rig.node.terminal_flags() & (termios.ICANON | termios.ECHO)  # cbreak while running
    assert zero(rig.step())
    # a single tap: held for first_hold_s (0.5 s), the terminal's delay before it repeats
    rig.node.type(b"w")
    tapped = time.monotonic()
    a = rig.until(lambda a: a[0] != 0, timeout=3)
    np.testing.assert_allclose(a, np.float32([0.05, 0, 0, 0, OPEN]), rtol=1e-6)
    while not zero(a := rig.step()):
        assert time.monotonic() - tapped < 1.5, "a tap kept the arm moving"
    assert time.monotonic() - tapped > 0.4
    # key repeats at 25 Hz for 1 s: moving throughout, zero about hold_s (0.25 s) after the last one
    stop = threading.Event()

    def repeat() -> None:
        for _ in range(25):
            rig.node.type(b"a")
            time.sleep(0.04)
        stop.set()

    threading.Thread(target=repeat, daemon=True).start()
    rig.until(lambda a: a[1] != 0, timeout=3)
    while not stop.is_set():
        a = rig.step()
        np.testing.assert_allclose(a[:4], np.float32([0, 0.05, 0, 0]), rtol=1e-6)
        time.sleep(0.03)
    last_key = time.monotonic()
    while not zero(a := rig.step()):
        assert time.monotonic() - last_key < 1.0, "the arm kept moving after the key repeats stopped"
    stopped_after = time.monotonic() - last_key
    # the gripper toggles, x stops everything at once
    rig.node.type(b" r")
    a = rig.until(lambda a: a[2] != 0, timeout=3)
    assert a[4] > 0  # closed
    rig.node.type(b"x")
    rig.until(zero, timeout=3)
    assert all(rig.flag_values())
    assert b"gato-teleop]" in rig.node.screen and b"ENGAGED" in rig.node.screen  # the status line
    assert rig.node.stop(signal.SIGINT) == 0
    assert rig.node.terminal_flags() & termios.ICANON and rig.node.terminal_flags() & termios.ECHO  # restored
    print(f"motion stopped {stopped_after:.2f} s after the last key repeat")
    assert stopped_after < 0.8


def tokens_message(ids: np.ndarray, stamp: float) -> Image:
    return common.array_image(
        np.asarray(ids, np.int32).reshape(1, -1), wire.ACTION_TOKENS_ENCODING, common.sec_to_stamp(stamp)
    )


def test_policy_relay_with_a_joy_override_flags_the_interventions(rig_for):
    rig = rig_for("--source", "policy", "--override", "joy")
    rig.wait_ready([rig.tokens, rig.joy])
    tokenizer = Tokenizer(specs.rgb_stacking_spec(2))
    policy = np.float32([0.02, -0.01, 0.03, 0.2, 255.0])
    ids = tokenizer.tokenize_action(policy)
    expected_policy = tokenizer.detokenize_action(ids)

    def relay(stamp: float) -> tuple[np.ndarray, bool]:
        n = len(rig.received())
        rig.tokens.publish(tokens_message(ids, stamp))
        rig.probe.wait_for(lambda: len(rig.received()) > n and len(rig.flag_values()) > n, 5, "a relayed action")
        _, action, got_stamp = rig.received()[n]
        assert got_stamp == pytest.approx(stamp, abs=1e-6)  # the policy's stamp: the observation it answers
        return action, rig.flag_values()[n]

    action, flag = relay(200.0)
    np.testing.assert_array_equal(action, expected_policy)
    assert flag is False
    deadline = time.monotonic() + 10
    stamp = 200.0
    while True:  # the operator holds the deadman and pulls back: their action replaces the policy's
        rig.publish_joy(x=-1.0, deadman=True)
        time.sleep(0.05)
        stamp += STEP_S
        action, flag = relay(stamp)
        if flag:
            break
        assert time.monotonic() < deadline, "the joy override never took over"
    np.testing.assert_allclose(action, np.float32([-0.05, 0, 0, 0, 255.0]), rtol=1e-6)  # keeps the policy's grasp
    rig.publish_joy(x=-1.0, deadman=False)  # deadman released: the policy again
    time.sleep(0.1)
    action, flag = relay(stamp + STEP_S)
    assert flag is False
    np.testing.assert_array_equal(action, expected_policy)
    rig.tokens.publish(tokens_message(np.zeros(5, np.int32), stamp + 2 * STEP_S))  # invalid ids: dropped
    time.sleep(0.3)
    rig.probe.wait_for(lambda: len(rig.flag_values()) == len(rig.received()), 5, "one flag per action")
    assert rig.node.stop() == 0
    assert "dropped policy action tokens" in rig.node.log()


def test_follow_episodes_moves_only_between_start_and_end(rig_for):
    rig = rig_for("--source", "keyboard", "--follow-episodes", tty=True)
    rig.wait_ready([rig.states, rig.events])
    rig.node.type(b"w")
    rig.step(expect=False)  # before any start: nothing
    rig.step(expect=False)
    rig.events.publish(String(data=json.dumps({"event": "start", "episode": 0, "stamp": 1.0})))
    a = rig.until(lambda a: True, timeout=5)
    rig.node.type(b"w ")
    a = rig.until(lambda a: a[0] != 0 and a[4] > 0, timeout=3)  # moving, gripper closed
    n = len(rig.received())
    rig.events.publish(String(data=json.dumps({"event": "end", "episode": 0, "stamp": 2.0, "success": True})))
    time.sleep(0.3)
    rig.node.type(b"w")
    rig.step(expect=False)  # after the end: nothing, though a key is held
    rig.step(expect=False)
    assert len(rig.received()) == n
    rig.events.publish(String(data=json.dumps({"event": "start", "episode": 1, "stamp": 3.0})))
    a = rig.until(lambda a: True, timeout=5)
    assert zero(a) and a[4] == OPEN  # a new episode starts at rest with the gripper open
    rig.events.publish(String(data=json.dumps({"event": "discard", "episode": 1, "stamp": 4.0})))
    time.sleep(0.3)
    rig.step(expect=False)
    assert rig.node.stop(signal.SIGTERM) == 0
    assert rig.node.terminal_flags() & termios.ICANON  # restored on SIGTERM too
    log = rig.node.log()
    assert "episode 0 end" in log and "episode 1 discard" in log
