"""Safety scenarios 13-16 of shared/reference/safety.md: the whole simulated stack under the real launchers
(``ros2 launch`` from ../shared/ros2-launch-kit, and ``gato-stack``), stopped and killed as users and faults do,
each with the number that proves it. A probe node records the arm command topic over real DDS.

Timing figures are printed; the bounds asserted are the safety requirements (5 s to exit; no non-zero arm command
later than the watchdog period + one control cycle after a kill), not performance targets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import Log
from std_msgs.msg import Float64MultiArray

from gato_robot import wire
from gato_robot.logs import bag
from gato_robot.ros import common, testing

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
WATCHDOG_S, CYCLE_S = 0.1, 0.05  # config/stack.yaml: watchdog_period_s, 1 / control_hz
EXIT_WITHIN_S = 5.0
RUNNING_COMMANDS = 40  # arm commands seen before a stop or kill (2 s at 20 Hz)
DEEP = common.QoSProfile(depth=5000, reliability=common.ReliabilityPolicy.RELIABLE)
NO_KIT = "the upstream launch packages are not installed (make setup installs ../shared/ros2-launch-kit when present)"


def have_launch_kit() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("launch", "launch_ros", "ros2launch"))


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    pytest.importorskip("torch")
    return testing.export_tiny_policy(tmp_path_factory.getbasetemp() / "tiny_policy")


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """The package built with colcon (what `ros2 launch gato_robot ...` runs), or a skip where the kit is absent."""
    if not have_launch_kit():
        pytest.skip(NO_KIT)
    colcon = shutil.which("colcon") or str(Path(sys.executable).parent / "colcon")
    ws = tmp_path_factory.mktemp("colcon_ws")
    out = subprocess.run([colcon, "--log-base", str(ws / "log"), "build", "--base-paths", str(ROOT),
                          "--build-base", str(ws / "build"), "--install-base", str(ws / "install")],
                         capture_output=True, text=True, timeout=300, cwd=ws)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return ws / "install"


def arm_velocity(msg) -> np.ndarray:
    if isinstance(msg, TwistStamped):
        t = msg.twist
        return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.z])
    return wire.forward_command_to_velocity(msg.data)


@pytest.fixture
def stack(request, tmp_path, monkeypatch, tiny_policy):
    """``stack.start(launcher, interface, record=..., sim={...}, controller={...})`` -> a running stack whose arm
    commands the probe records; everything is killed and reaped at the end."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = testing.domain_for(request.node.nodeid)
    probe = testing.Probe(domain)
    started: list[testing.LaunchedStack] = []
    ns = types.SimpleNamespace(probe=probe, tmp=tmp_path)

    def start(launcher: str, interface: str = "twist", record: bool = False, sim: dict | None = None,
              controller: dict | None = None, install: Path | None = None) -> testing.LaunchedStack:
        params = testing.write_params(tmp_path / "stack.yaml", {
            "gato_policy": {"providers": "cpu", "intra_op_threads": 1},
            "gato_sim": {"image_size": 64, **(sim or {})}, "gato_controller": controller or {}})
        ns.topic = common.TWIST_TOPIC if interface == "twist" else common.FORWARD_TOPIC
        probe.record(ns.topic, TwistStamped if interface == "twist" else Float64MultiArray, DEEP)
        probe.record("/rosout", Log, DEEP)
        s = testing.LaunchedStack(launcher, domain, tmp_path / f"{launcher}.log", params_file=params,
                                  model=tiny_policy, record=tmp_path / "bags" if record else None,
                                  command_interface=interface, install=install)
        started.append(s)
        return s

    def commands(after: float = -np.inf) -> list[tuple[float, np.ndarray]]:
        return [(t, arm_velocity(m)) for t, m in probe.received(ns.topic) if t > after]

    def wait_moving(s: testing.LaunchedStack, timeout: float = 120.0) -> None:
        """Until the arm's last command is non-zero (the policy drives it) and every node is up."""
        def ready() -> bool:
            if s.proc.poll() is not None:
                raise AssertionError(f"the launcher exited with {s.proc.returncode}:\n{s.log()[-3000:]}")
            c = commands()  # a few seconds of driving: the recorder has an episode's worth to close
            return len(c) >= RUNNING_COMMANDS and bool(np.any(c[-1][1] != 0)) and len(s.node_pids()) >= 4
        probe.wait_for(ready, timeout, "a moving arm")

    ns.start, ns.commands, ns.wait_moving = start, commands, wait_moving
    with testing.subreaper():
        try:
            yield ns
        finally:
            for s in started:
                s.close()
            probe.close()


def assert_clean_stop(ns, s: testing.LaunchedStack, t_stop: float, pids: dict[str, int]) -> None:
    """Every node exited 0 within EXIT_WITHIN_S of ``t_stop``, no traceback, the last arm command is zero."""
    gone = testing.wait_pids(pids, t_stop, timeout=30)
    s.proc.wait(timeout=30)
    log = s.log()
    reported = s.node_exit_codes()
    print({name: f"exit {reported.get(name, code)} after {t:.2f} s" if t is not None else "still running"
           for name, (code, t) in gone.items()})
    for name, (code, t) in gone.items():
        assert t is not None and t <= EXIT_WITHIN_S, f"{name} did not exit within {EXIT_WITHIN_S} s:\n{log[-3000:]}"
        code = reported.get(name, code)  # the launcher's report, else ours (adopted orphans)
        assert code == 0, f"{name} exited with {code}:\n{log[-3000:]}"
    for bad in ("Traceback", "terminate called", "Aborted", "KeyboardInterrupt", "Exception in"):
        assert bad not in log, f"{bad!r} in the output:\n{log[-3000:]}"
    after = ns.commands(t_stop)
    assert after, "no arm command after the stop: the last zero never arrived"
    assert not np.any(after[-1][1]), f"the last arm command is not zero: {after[-1][1]}"
    late = [t - t_stop for t, v in after if np.any(v) and t - t_stop > WATCHDOG_S + CYCLE_S]
    assert not late, f"non-zero arm commands {late} s after the stop"


def assert_bags_complete(folder: Path) -> int:
    """Every bag the recorder wrote has metadata.yaml and an MCAP summary, and reads back undamaged."""
    from mcap.reader import make_reader

    bags = sorted(p for p in folder.iterdir() if p.is_dir())
    assert bags, f"no bag under {folder}"
    total = 0
    for b in bags:
        assert (b / "metadata.yaml").is_file(), f"{b}: no metadata.yaml"
        for f in bag.mcap_files(b):
            with open(f, "rb") as fh:
                summary = make_reader(fh).get_summary()
            assert summary is not None and summary.statistics is not None, f"{f}: no MCAP summary"
        messages, report = bag.read_log(b)
        assert report.ok, f"{b}: {report.to_dict()}"
        total += len(messages)
    return total


# -- scenario 13: a terminal's Ctrl-C ------------------------------------------------------------------------
@pytest.mark.parametrize("launcher", testing.LAUNCHERS)
def test_13_terminal_ctrl_c_stops_every_node_cleanly_with_a_zero_command_and_a_complete_bag(stack, launcher, request):
    install = request.getfixturevalue("install") if launcher == "ros2_launch" else None
    s = stack.start(launcher, record=True, install=install)
    stack.wait_moving(s)
    pids = s.node_pids()
    assert set(pids) == {"gato_sim", "gato_tokenizer", "gato_policy", "gato_controller", "gato_recorder"}, pids
    t_stop = time.monotonic()
    s.terminal_ctrl_c()  # SIGINT to the whole process group: under ros2 launch each node gets two
    assert_clean_stop(stack, s, t_stop, pids)
    assert s.proc.returncode == 0, s.log()[-3000:]
    print(f"{launcher}: {assert_bags_complete(stack.tmp / 'bags')} messages read back from the bags")


# -- scenario 14: a signal to the launcher only ----------------------------------------------------------------
@pytest.mark.parametrize(("launcher", "sig"), [("ros2_launch", signal.SIGINT), ("ros2_launch", signal.SIGTERM),
                                               ("gato_stack", signal.SIGTERM)])
def test_14_signal_to_the_launcher_only_stops_every_node_cleanly(stack, launcher, sig, request):
    install = request.getfixturevalue("install") if launcher == "ros2_launch" else None
    s = stack.start(launcher, record=launcher == "ros2_launch" and sig == signal.SIGTERM, install=install)
    stack.wait_moving(s)
    pids = s.node_pids()
    t_stop = time.monotonic()
    s.signal_launcher(sig)  # ros2 launch 3.7 dies of SIGTERM at once: its nodes stop because their parent died
    assert_clean_stop(stack, s, t_stop, pids)
    if (stack.tmp / "bags").exists():
        assert_bags_complete(stack.tmp / "bags")


# -- scenario 15: the controller SIGKILLed -------------------------------------------------------------------
FORWARD_CONTROLLER = {"lockstep": False, "hold_last_command": True}  # the sim arm keeps the last velocity forever


def kill_controller(stack, s: testing.LaunchedStack) -> tuple[float, list[tuple[float, np.ndarray]]]:
    """SIGKILL the controller alone (not its guard) of a moving stack; (the time of the kill, the arm commands
    received from 1 s before it)."""
    stack.wait_moving(s)
    pids = s.node_pids()
    t_kill = time.monotonic()
    os.kill(pids["gato_controller"], signal.SIGKILL)
    time.sleep(2.0)
    return t_kill, stack.commands(t_kill - 1.0)


def velocity_at_exit(log: str) -> np.ndarray:
    """The arm velocity the simulated forward controller was applying when the stack stopped (the sim node's last
    words): what a real forward_command_controller would go on applying."""
    found = re.findall(r"arm velocity command at exit: (\[.*?\])", log)
    assert found, f"the sim node did not report its last arm command:\n{log[-3000:]}"
    return np.array(json.loads(found[-1]))


@pytest.mark.parametrize(("launcher", "interface"), [("ros2_launch", "twist"), ("gato_stack", "forward_command")])
def test_15_killed_controller_leaves_a_zero_command_within_the_watchdog(stack, launcher, interface, request):
    install = request.getfixturevalue("install") if launcher == "ros2_launch" else None
    s = stack.start(launcher, interface, sim=FORWARD_CONTROLLER, install=install)
    t_kill, seen = kill_controller(stack, s)
    after = [(t - t_kill, v) for t, v in seen if t > t_kill]
    assert after, "no arm command after the kill: the guard did not command zero"
    late = [dt for dt, v in after if np.any(v)]
    received = next(dt for dt, v in after if not np.any(v))
    said = [m for _, m in stack.probe.received("/rosout") if "died: commanded zero velocity" in m.msg]
    assert len(said) == 1, said  # one line says so, on /rosout (rqt_console); gato-stack shows it on the terminal too
    # the delay is printed, not asserted (as scenario 4's): on a loaded 2-core machine the probe's receipt time
    # carries its own thread's scheduling (in one CI run 232 ms, against 13-20 ms on an idle machine)
    print(f"{launcher} {interface}: zero received {received * 1e3:.1f} ms after the kill; "
          + (f"last non-zero command {max(late) * 1e3:.1f} ms after it" if late else "no non-zero command after it"))
    assert not [dt for dt in late if dt > WATCHDOG_S + CYCLE_S] and not np.any(after[-1][1])
    s.proc.wait(timeout=30)  # the launcher stopped the stack without its controller
    log = s.log()
    assert ("was required: shutting down" if launcher == "ros2_launch" else "stopping the stack without it") in log
    # the simulated forward controller was left at zero (on failure: the guard's and the sim's last words)
    assert not np.any(velocity_at_exit(log)), "\n".join(
        line for line in log.splitlines() if "at exit" in line or "died:" in line or "subscriber(s)" in line)
    if launcher == "gato_stack":
        assert log.count("died: commanded zero velocity") == 1, log[-3000:]
    assert "Traceback" not in log


def test_15_without_the_guard_the_arm_keeps_moving(stack):
    """The control for scenario 15: the same kill with the guard off leaves the forward controller moving. It
    proves the measurement above can fail."""
    s = stack.start("gato_stack", "forward_command", sim=FORWARD_CONTROLLER, controller={"guard": False})
    _, seen = kill_controller(stack, s)
    assert np.any(seen[-1][1]), "the last command before the kill was zero: nothing to see"
    s.proc.wait(timeout=30)
    assert np.any(velocity_at_exit(s.log()))  # the forward controller was left moving


# -- scenario 16: the launcher SIGKILLed ---------------------------------------------------------------------
@pytest.mark.parametrize("launcher", testing.LAUNCHERS)
def test_16_killed_launcher_leaves_no_node_commanding_the_arm(stack, launcher, request):
    install = request.getfixturevalue("install") if launcher == "ros2_launch" else None
    s = stack.start(launcher, "forward_command", sim=FORWARD_CONTROLLER, install=install)
    stack.wait_moving(s)
    pids = s.node_pids()
    t_kill = time.monotonic()
    s.signal_launcher(signal.SIGKILL)  # the nodes are orphaned; their parent-death signal stops them
    assert_clean_stop(stack, s, t_kill, pids)
    nonzero = [t - t_kill for t, v in stack.commands(t_kill) if np.any(v)]
    print(f"{launcher}: " + (f"last non-zero command {max(nonzero) * 1e3:.1f} ms after the kill" if nonzero else
                             "no non-zero command after the kill"))
    assert max(nonzero, default=0.0) <= WATCHDOG_S
