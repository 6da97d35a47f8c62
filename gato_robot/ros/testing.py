"""Test and benchmark harness for the ROS stack: real node processes on a private ROS domain, and a probe node.

Nothing here is a mock: nodes run as separate processes (the stack's own command lines), talk over real DDS,
and the probe is an ordinary rclpy node in the test process, in its own context on the same domain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from gato_robot.ros import common
from gato_robot.ros.stack import NODES, NodeSpec, default_params_file, ros_arguments

DOMAINS = range(1, 101)


def domain_for(name: str) -> int:
    """A ROS_DOMAIN_ID in 1..100 from a test's name and this process id (parallel runs rarely collide)."""
    return DOMAINS[(zlib.crc32(name.encode()) + os.getpid()) % len(DOMAINS)]


def ros_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               RCUTILS_LOGGING_BUFFERED_STREAM="0", OMP_NUM_THREADS="1")
    return env


def node_spec(name: str) -> NodeSpec:
    return next(n for n in NODES if n.name == name)


def write_params(path: Path, changes: Mapping[str, Mapping[str, Any]]) -> Path:
    """The stack's parameter file with ``{section: {name: value}}`` changed (sections: node names or '/**')."""
    data = yaml.safe_load(default_params_file().read_text())
    for section, values in changes.items():
        data.setdefault(section, {}).setdefault("ros__parameters", {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class NodeProcess:
    """One node as a subprocess (``python -m module --ros-args ...``), output to a log file."""

    def __init__(self, name: str, domain: int, log_dir: Path, params_file: Path,
                 overrides: Mapping[str, Any] | None = None) -> None:
        spec = node_spec(name)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.cmd = [sys.executable, "-m", spec.module, *ros_arguments(spec, params_file, dict(overrides or {}))]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=ros_env(domain),
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGINT, then SIGKILL after ``timeout``; always reaped."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode


class Probe:
    """An rclpy node in its own context on ``domain``, spun by a background thread.

    ``record(topic, type, qos)`` keeps (receipt time, message) pairs; ``wait_for`` polls a predicate.
    """

    def __init__(self, domain: int, name: str = "gato_test_probe") -> None:
        # discovery range comes from this process's environment (tests set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.messages: dict[str, list[tuple[float, Any]]] = {}
        self.subscriptions: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            with contextlib.suppress(Exception):
                self.executor.spin_once(timeout_sec=0.02)

    def record(self, topic: str, msg_type: Any, qos: Any = common.COMMAND_QOS) -> list[tuple[float, Any]]:
        store = self.messages.setdefault(topic, [])

        def keep(msg: Any) -> None:
            with self.lock:
                store.append((time.monotonic(), msg))

        self.subscriptions[topic] = self.node.create_subscription(msg_type, topic, keep, qos)
        return store

    def wait_matched(self, topics: list[str], timeout: float = 60.0, at_least: int = 1) -> None:
        """Until each recorded topic's subscription is matched with ``at_least`` publishers and with every publisher
        the graph shows (graph discovery alone is not enough: a reliable reader that is not matched yet misses the
        first messages). An arm command topic has two writers: the controller and its guard."""
        def matched(t: str) -> bool:
            return self.subscriptions[t].get_publisher_count() >= max(at_least, self.node.count_publishers(t))

        self.wait_for(lambda: all(matched(t) for t in topics), timeout, f"matched publishers on {topics}")

    def wait_guarded(self, timeout: float = 60.0) -> None:
        """Until the controller's diagnostics say its guard reaches every arm command subscriber (``guarded``):
        before that, its actions go out as zeros (discovery can match the guard seconds after the controller)."""
        if "/diagnostics" not in self.subscriptions:
            self.record("/diagnostics", DiagnosticArray, common.COMMAND_QOS)

        def guarded() -> bool:
            for _, msg in reversed(self.received("/diagnostics")):
                for status in msg.status:
                    if status.name == "gato_controller":
                        return {kv.key: kv.value for kv in status.values}.get("guarded") == "true"
            return False

        self.wait_for(guarded, timeout, "the controller's guard to reach every arm command subscriber")

    def received(self, topic: str) -> list[tuple[float, Any]]:
        with self.lock:
            return list(self.messages.get(topic, []))

    def publisher(self, topic: str, msg_type: Any, qos: Any = common.COMMAND_QOS) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, service: str, srv_type: Any, timeout: float = 10.0) -> Any:
        client = self.node.create_client(srv_type, service)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {service} not available within {timeout} s")
        future = client.call_async(srv_type.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {service} did not answer within {timeout} s")
            time.sleep(0.01)
        return future.result()

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    def wait_subscribers(self, publisher: Any, count: int = 1, timeout: float = 20.0) -> None:
        self.wait_for(lambda: publisher.get_subscription_count() >= count, timeout,
                      f"{count} subscriber(s) on {publisher.topic_name}")

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@contextlib.contextmanager
def running(nodes: list[NodeProcess]) -> Iterator[list[NodeProcess]]:
    try:
        yield nodes
    finally:
        for n in nodes:
            n.stop()


# -- fake sensors for the tokenizer -------------------------------------------------------------------------
class FakeRobotSensors:
    """Publishes what a robot's drivers publish (cameras, joint states, tool pose) with one stamp per set."""

    def __init__(self, probe: Probe, cameras: list[str], size: int = 128, seed: int = 0) -> None:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import Image, JointState

        self.probe = probe
        self.Image, self.JointState, self.PoseStamped = Image, JointState, PoseStamped
        self.cameras = {c: probe.publisher(common.camera_topic(c), Image, common.SENSOR_QOS) for c in cameras}
        self.joints = probe.publisher(common.JOINT_STATES_TOPIC, JointState, common.SENSOR_QOS)
        self.pose = probe.publisher(common.TOOL_POSE_TOPIC, PoseStamped, common.SENSOR_QOS)
        rng = np.random.default_rng(seed)
        self.images = {c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in cameras}

    def publish(self, stamp: float, cameras: list[str] | None = None, joints: bool = True) -> None:
        from gato_robot.core.specs import PANDA_ARM_JOINTS

        t = common.sec_to_stamp(stamp)
        if joints:
            js = self.JointState()
            js.header.stamp = t
            js.name = [*PANDA_ARM_JOINTS, *common.FINGER_JOINTS]
            js.position = [0.1 * i for i in range(7)] + [0.02, 0.02]
            js.velocity = [0.0] * 9
            self.joints.publish(js)
            pose = self.PoseStamped()
            pose.header.stamp = t
            pose.pose.position.x, pose.pose.position.z, pose.pose.orientation.w = 0.6, 0.3, 1.0
            self.pose.publish(pose)
        for c in (self.cameras if cameras is None else cameras):
            self.cameras[c].publish(common.rgb_image(self.images[c], t, c))


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
    """Signal a child started with ``start_new_session`` and its process group, SIGKILL the group after
    ``timeout``; always reaped. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def stop_launcher(proc: subprocess.Popen, timeout: float = 40.0) -> int:
    """SIGTERM a ``gato-stack`` launcher (it stops and reaps its nodes); SIGKILL its process group if it hangs.
    Returns its exit code (0 after a clean stop)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


# -- a tiny exported policy ---------------------------------------------------------------------------------
def export_tiny_policy(root: Path, context: int = 512, seed: int = 0, robot: str = "panda") -> Path:
    """A random-weight ``tiny`` Gato for the RGB-stacking spec of ``robot``, exported to ONNX (reused when already
    there)."""
    from gato_robot.model.export import export_random_policy  # lazily: only the export needs torch

    return export_random_policy(root, context=context, seed=seed, robot=robot)


# -- whole stacks under a launcher, for the stop and kill scenarios (13-16) -----------------------------------
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
LAUNCHERS = ("ros2_launch", "gato_stack")


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """Make this process the child subreaper (Linux): nodes orphaned by a killed launcher become its children, so a
    test can read their exit status (:func:`wait_pids`) instead of guessing it from their absence."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        reap_zombie_children()


def reap_zombie_children() -> None:
    """Reap exited children this process adopted (e.g. a killed controller's guard) and never waited for."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == me:
                os.waitpid(int(stat.parent.name), os.WNOHANG)


def wait_pids(pids: Mapping[str, int], since: float, timeout: float) -> dict[str, tuple[int | None, float | None]]:
    """name -> (exit code, seconds after ``since`` (monotonic) it was seen gone) for processes that are this
    process's children (adopted by :func:`subreaper`) or not (then the code is None: only the time is known)."""
    out: dict[str, tuple[int | None, float | None]] = {}
    deadline = time.monotonic() + timeout
    while len(out) < len(pids) and time.monotonic() < deadline:
        for name, pid in pids.items():
            if name in out:
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    out[name] = (os.waitstatus_to_exitcode(status), time.monotonic() - since)
            except ChildProcessError:  # not our child: reaped by its own parent once it is gone
                if not Path(f"/proc/{pid}").exists():
                    out[name] = (None, time.monotonic() - since)
        time.sleep(0.02)
    return {**out, **{n: (None, None) for n in pids if n not in out}}


# Runs the launcher with SIGINT at its default action, as a terminal starts it. A test run started in the background
# by a shell without job control (``cmd &`` in a script, ``nohup``) has SIGINT ignored, and an ignored SIGINT is
# inherited through exec: Python, so ``ros2 launch``, then never sees one (our nodes install their own handlers;
# launch relies on Python's default one). An exec wrapper rather than ``preexec_fn``, which is unsafe with threads.
DEFAULT_SIGINT = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execvp(sys.argv[1], sys.argv[1:])"]


class LaunchedStack:
    """The whole stack under ``ros2 launch gato_robot stack.launch.py`` (``launcher="ros2_launch"``, needs the
    package built into ``install`` and the upstream launch packages) or ``gato-stack`` (``"gato_stack"``), in its
    own session (process group): ``terminal_ctrl_c()`` is what a terminal's Ctrl-C does."""

    def __init__(self, launcher: str, domain: int, log_path: Path, *, params_file: Path, model: Path,
                 record: Path | None = None, command_interface: str = "twist", install: Path | None = None) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
        self.launcher, self.log_path = launcher, log_path
        if launcher == "ros2_launch":
            if install is None:
                raise ValueError("ros2 launch needs the colcon install space of the package (install=)")
            args = ["sim:=true", f"model:={model}", f"params_file:={params_file}",
                    f"command_interface:={command_interface}", *([f"record:={record}"] if record else [])]
            cmd = ["bash", "-c", f'source "{install}/setup.bash" && exec ros2 launch gato_robot stack.launch.py '
                   + " ".join(args)]
        else:
            cmd = [sys.executable, "-m", "gato_robot.ros.launcher", "--sim", "--model", str(model), "--params-file",
                   str(params_file), "--command-interface", command_interface,
                   *(["--record", str(record)] if record else [])]
        env = ros_env(domain)
        env.setdefault("AMENT_PREFIX_PATH", sys.prefix)  # the pip wheels keep their ament index in <venv>/share
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # ros2 (the kit's)
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([*DEFAULT_SIGINT, *cmd], stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def node_pids(self) -> dict[str, int]:
        """Node name -> pid, from the launcher's own log lines."""
        import re

        text = self.log()
        if self.launcher == "ros2_launch":  # "[INFO] [gato_controller_node-4]: process started with pid [6934]"
            found = re.findall(r"\[(gato_\w+?)_node-\d+\]: process started with pid \[(\d+)\]", text)
            return {name: int(pid) for name, pid in found}
        return {name: int(pid) for name, pid in re.findall(r"started (gato_\w+) \(pid (\d+)\)", text)}

    def node_exit_codes(self) -> dict[str, int]:
        """Node name -> exit code as the launcher reported it (only for nodes it reaped itself)."""
        import re

        text = self.log()
        if self.launcher == "ros2_launch":
            codes = {n: 0 for n in re.findall(r"\[(gato_\w+?)_node-\d+\]: process has finished cleanly", text)}
            codes |= {n: int(c) for n, c in re.findall(r"\[(gato_\w+?)_node-\d+\]: process has died \[pid \d+, "
                                                       r"exit code (-?\d+)", text)}
            return codes
        return {n: int(c) for n, c in re.findall(r"(gato_\w+) \(pid \d+\) ended with (-?\d+)", text)}

    def terminal_ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def signal_launcher(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def close(self) -> None:
        """Make sure nothing is left: SIGKILL the launcher's group and every node it started."""
        for pid in self.node_pids().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()
