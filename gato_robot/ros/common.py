"""What every node shares: QoS profiles, stamps, parameter declaration, message builders, and ``run``.

The array layouts live in :mod:`gato_robot.wire` (pure numpy); this module only moves them in and out of
ROS messages (bytes, never per-element lists: ``msg.data = arr.tobytes()``, read with ``np.frombuffer``).
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import math
import os
import signal
import sys
import threading
import time
from array import array as byte_array
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
    ParameterUninitializedException,
)
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Float64MultiArray, MultiArrayDimension

from gato_robot import wire
from gato_robot.core.embodiment import Embodiment

# Sensor topics: best effort, keep last 5 (the ROS default sensor-data profile).
SENSOR_QOS = qos_profile_sensor_data
# Commands and status: reliable (a best-effort publisher never reaches a reliable subscriber).
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.VOLATILE)
# The tokenized observation and the action tokens: reliable. The stack's subscribers keep the last 1 (only the
# newest step matters); the publishers keep the last 10, so a slower reliable reader (a recorder, a test probe)
# still receives every step: a depth-1 reliable writer drops a sample that a busy reader has not yet acknowledged.
PIPELINE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                          durability=DurabilityPolicy.VOLATILE)
PIPELINE_PUB_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                              durability=DurabilityPolicy.VOLATILE)

# Topic and service names of the contract (docs/ros.md); parameters override the configurable ones.
OBSERVATION_TOPIC = "/gato/observation"
ACTION_TOKENS_TOPIC = "/gato/action_tokens"
ACTION_TOPIC = "/gato/action"
HOLD_TOPIC = "/gato/hold"
EPISODE_STATUS_TOPIC = "/gato/episode_status"
TOOL_POSE_TOPIC = "/gato/tool_pose"
JOINT_STATES_TOPIC = "/joint_states"
TWIST_TOPIC = "/servo_node/delta_twist_cmds"
FORWARD_TOPIC = "/forward_velocity_controller/commands"
GRIPPER_TOPIC = "/gripper/command"
HOLD_SERVICE = "/gato/controller/hold"
REARM_SERVICE = "/gato/controller/rearm"
POLICY_RESET_SERVICE = "/gato/policy/reset"
SIM_RESET_SERVICE = "/sim/reset"
# Operator-labelled episodes (robots without an episode status; docs/logs.md, "Recording demonstrations"): the
# recorder's services, and the events it publishes and logs (std_msgs/String, JSON: event start | end | discard,
# episode, stamp on the recorder's clock, success for end)
EPISODE_EVENT_TOPIC = "/gato/episode_event"
RECORDER_START_SERVICE = "/gato/recorder/start_episode"  # std_srvs/Trigger
RECORDER_END_SERVICE = "/gato/recorder/end_episode"  # std_srvs/SetBool: data = success
RECORDER_DISCARD_SERVICE = "/gato/recorder/discard_episode"  # std_srvs/Trigger
# The simulator's "motion capture" (sim only, off by default): the objects' poses and mesh vertices, what a
# scripted teleoperator needs to see the scene (std_msgs/Float32MultiArray, 3 x (7 + 3 * MAX_VERTICES))
OBJECT_STATE_TOPIC = "/sim/object_state"
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")


def camera_topic(name: str) -> str:
    return f"/camera/{name}/image_raw"


# -- time ---------------------------------------------------------------------------------------------------
def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    if not math.isfinite(t):
        raise ValueError(f"time {t} is not finite")
    ns = round(t * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def now_sec(node: Node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


# -- parameters ---------------------------------------------------------------------------------------------
def declare(node: Node, name: str, default: Any, description: str, read_only: bool = True) -> Any:
    """Declare a parameter with a descriptor; return its value (from the parameter file if given there), of the
    default's type. A value of another type (``-p image_size:=abc``) is a ValueError naming the parameter (one
    line and exit 2 from :func:`run`, where rclpy would raise its own exception with a traceback); an integer
    where a float is expected (``-p control_hz:=20``) is taken as the float."""
    try:
        value = node.declare_parameter(name, default, ParameterDescriptor(
            description=description, read_only=read_only, dynamic_typing=True)).value
    except (ParameterException, ParameterUninitializedException, InvalidParameterTypeException,
            InvalidParameterValueException) as e:
        raise ValueError(f"parameter {name!r}: {e}") from None
    return typed_parameter(name, value, default)


def _kind(default: Any) -> tuple[tuple[type, ...], str]:
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "an integer"
    if isinstance(default, float):
        return (int, float), "a number"
    return (str,), "a string"


def typed_parameter(name: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default`` (scalars, or lists of the default's element type)."""
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"parameter {name!r} must be a list, got {value!r}")
        if not default:
            return list(value)
        return [typed_parameter(f"{name}[{i}]", v, default[0]) for i, v in enumerate(value)]
    types, what = _kind(default)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ValueError(f"parameter {name!r} must be {what}, got {value!r}")
    return float(value) if isinstance(default, float) else value


# -- messages -----------------------------------------------------------------------------------------------
def array_image(array: np.ndarray, encoding: str, stamp: Time, frame_id: str = "") -> Image:
    """A 2-D array (8UC1 / 32SC1 / 32FC1) as a sensor_msgs/Image (little endian, rows contiguous)."""
    arr = np.ascontiguousarray(array)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * arr.itemsize)
    data = byte_array("B")
    data.frombytes(arr.reshape(-1).view(np.uint8))  # one copy (bytes() and then array.array would be two)
    msg.data = data
    return msg


def observation_rows(msg: Image) -> np.ndarray:
    """The (N, 796) uint8 rows of a /gato/observation message (validated by wire.decode_observation_rows).
    A message of the former float32 layout (32FC1, N x 775, e.g. from an older log) is converted exactly."""
    if msg.is_bigendian:
        raise ValueError("observation must be little endian")
    if msg.encoding == wire.OBSERVATION_ENCODING:
        width, itemsize, dtype = wire.ROW_BYTES, 1, np.uint8
    elif msg.encoding == wire.FLOAT_OBSERVATION_ENCODING:
        width, itemsize, dtype = wire.FLOAT_ROW_WIDTH, 4, np.float32
    else:
        raise ValueError(f"observation must be {wire.OBSERVATION_ENCODING} (or the former "
                         f"{wire.FLOAT_OBSERVATION_ENCODING}), got {msg.encoding!r}")
    if msg.width != width or msg.step != itemsize * width:
        raise ValueError(f"{msg.encoding} observation rows must be {width} wide (step {itemsize * width}), "
                         f"got width {msg.width} step {msg.step}")
    if len(msg.data) != msg.height * msg.step:
        raise ValueError(f"observation carries {len(msg.data)} bytes, expected {msg.height * msg.step}")
    rows = np.frombuffer(msg.data, dtype).reshape(msg.height, width)
    return rows if dtype is np.uint8 else wire.observation_from_float_rows(rows)


def arm_command(interface: str, action: np.ndarray, stamp: Time, frame_id: str,
                embodiment: Embodiment | None = None) -> TwistStamped | Float64MultiArray:
    """The arm command message of ``interface`` (``twist``: TwistStamped, MoveIt Servo; ``forward_command``:
    Float64MultiArray ``[vx, vy, vz, wx, wy, wz]``) for an action's velocity part (the controller's commands, the
    guard's zero), split into twist parts as the robot file says (``embodiment``; default: the Panda's)."""
    if interface == "twist":
        msg = TwistStamped()
        msg.header.stamp, msg.header.frame_id = stamp, frame_id
        (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z), (
            msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z), _ = wire.action_to_twist(action, embodiment)
        return msg
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=",".join(wire.FORWARD_COMMAND_LABELS), size=6, stride=6)]
    msg.data = wire.action_to_forward_command(action, embodiment)
    return msg


def float32_array(array: np.ndarray) -> Float32MultiArray:
    """A 2-D array as std_msgs/Float32MultiArray (layout rows, cols)."""
    a = np.ascontiguousarray(array, np.float32)
    rows, cols = a.shape
    msg = Float32MultiArray(data=a.ravel().tolist())
    msg.layout.dim = [MultiArrayDimension(label="rows", size=rows, stride=rows * cols),
                      MultiArrayDimension(label="cols", size=cols, stride=cols)]
    return msg


def array_from_float32(msg: Float32MultiArray) -> np.ndarray:
    """The 2-D array of :func:`float32_array`; ValueError when the layout does not match the data."""
    dims = [d.size for d in msg.layout.dim]
    data = np.asarray(msg.data, np.float32)
    if len(dims) != 2 or dims[0] * dims[1] != data.size:
        raise ValueError(f"Float32MultiArray layout {dims} does not hold {data.size} values")
    return data.reshape(dims)


def rgb_image(image: np.ndarray, stamp: Time, frame_id: str) -> Image:
    h, w, step, data = wire.encode_image_rgb8(image)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.step, msg.encoding, msg.is_bigendian = h, w, step, "rgb8", 0
    msg.data = data
    return msg


def image_rgb(msg: Image) -> np.ndarray:
    return wire.decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)


# -- logging ----------------------------------------------------------------------------------------------
class RejectLog:
    """One log line per distinct rejection at most once per ``period`` s (rclpy throttles per call site, which
    would hide a second kind of bad message behind the first), with counts per kind for diagnostics."""

    def __init__(self, node: Node, period: float = 1.0) -> None:
        self.node, self.period = node, period
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def __call__(self, what: str, error: Exception | str, verb: str = "rejected") -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        text = str(error)
        key = f"{what}: {text[:48]}"
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) >= self.period:
            self._last[key] = now
            self.node.get_logger().warning(f"{verb} {what}: {text} (x{self.counts[what]})")


class EpisodeWatch:
    """The episode number on /gato/episode_status, for nodes that reset when a new episode starts (policy history
    and seed, tokenizer previous action and grasp flag, controller rate-limit ramp). :meth:`update` returns the
    status when it names another episode than the last one seen, else None; ``first`` is then whether no episode
    was seen before (the node may have joined mid-episode: nothing to reset). An unreadable status is logged
    (throttled) and ignored."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.episode: Any = None
        self.previous: Any = None  # the episode before this one
        self.first = True

    def update(self, msg: Any) -> dict[str, Any] | None:
        try:
            status = json.loads(msg.data)
            episode = status.get("episode")
        except (ValueError, AttributeError):
            self.node.get_logger().warning(f"unreadable episode status {str(msg.data)[:80]!r}",
                                           throttle_duration_sec=5.0)
            return None
        if episode == self.episode:
            return None
        self.first = self.episode is None
        self.previous, self.episode = self.episode, episode
        return status


# -- the process --------------------------------------------------------------------------------------------
EXECUTOR_ENV = "GATO_ROS_EXECUTOR"
SPIN_PERIOD_S = 0.05  # s: the longest a stop request waits for the spin loop


def make_executor(context: rclpy.context.Context | None = None) -> Executor:
    """The executor a node process spins: rclpy's EventsExecutor (C++, an event queue instead of rebuilding a
    wait set per callback; rclpy >= 9, Kilted) where rclpy has it, else the SingleThreadedExecutor.
    ``GATO_ROS_EXECUTOR=single`` forces the latter (e.g. to compare, or if the experimental one misbehaves)."""
    choice = os.environ.get(EXECUTOR_ENV, "events").strip().lower()
    if choice not in ("events", "single"):
        raise ValueError(f"{EXECUTOR_ENV} must be 'events' or 'single', got {choice!r}")
    if choice == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:  # older rclpy (e.g. a Humble or Jazzy system install)
            pass
        else:
            return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


class StopRequest:
    """The process's own SIGINT / SIGTERM / SIGHUP handling: a flag, never an exception.

    rclpy's default handler shuts the context down from inside the signal (so the node's last publish fails) and
    Python's raises KeyboardInterrupt wherever the main thread happens to be: inside a C++ executor callback that
    aborts the process (``pybind11::error_already_set``), inside ``destroy_node()``. A terminal's Ctrl-C reaches
    every process of the group and ``ros2 launch`` then sends each node a second SIGINT, so the handler must be
    safe to receive any number of times: it only records the first signal and counts the rest."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> StopRequest:
        for sig in self.SIGNALS:
            signal.signal(sig, self)
        return self


# The process's stop request: ``run`` installs it; callbacks that command the arm check it, so nothing new goes out
# between the signal and the end of the spin loop.
STOP = StopRequest()
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (the launcher, ``ros2 launch``) dies, even by
    SIGKILL: a node must not go on driving an arm that nobody supervises. The signal goes through
    :class:`StopRequest`, so the controller still commands its last zero. Linux only; returns whether it is set."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True


def run(make_node: Callable[[], Node], args: Sequence[str] | None = None) -> int:
    """init / build / spin / finally on_exit + destroy_node + try_shutdown.

    Stopping (SIGINT, SIGTERM, SIGHUP, any number of them, or the parent process dying): the spin loop ends, the
    node's ``on_exit()`` runs while the context is still up (the controller publishes a zero arm command and
    waits for it to be acknowledged), then the node is destroyed and the context shut down; exit 0, no traceback.
    A configuration error (ValueError, FileNotFoundError) or a part that cannot start (RuntimeError) exits 2 with one
    clear line."""
    stop = STOP.install()
    die_with_parent()
    rclpy.init(args=list(args) if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        while rclpy.ok() and not stop.requested:  # not executor.spin(): rclpy 9.1's EventsExecutor.spin() never
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)  # runs a callback; the period bounds the stop latency
    except ExternalShutdownException:
        pass
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"[FATAL] {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if node is not None:
            _exit_node(node, stop, code)
        else:
            exit_deadline("node", code)
        rclpy.try_shutdown()
    return leave(code)


def leave(code: int) -> int:
    """End the process now, with ``code``, after flushing stdout and stderr: skip the interpreter's finalization.
    There, rclpy and DDS objects left to the garbage collector are destroyed while daemon threads are frozen (so
    :func:`exit_deadline`'s timer cannot fire); a CI run once saw a tokenizer that had logged 'stopped' and been
    destroyed still alive 10 s later (SIGTERM, then SIGKILL from the launcher). Everything that matters was done in
    the node's ``on_exit`` and its destruction."""
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    os._exit(code)


TEARDOWN_S = 2.0  # s: node destruction, rclpy shutdown and interpreter exit, after the node's last words


def exit_deadline(name: str, code: int, seconds: float = TEARDOWN_S) -> threading.Timer:
    """End the process with ``code`` if its teardown (destroying the node, shutting rclpy down, the interpreter's
    own exit) has not finished within ``seconds``: what matters for safety (the zero command, a closed bag) is
    done by then, and a stop must end the process in bounded time. Once in a CI run a node that had logged
    'stopped' was still running 30 s later (its parent, ``ros2 launch``, killed by SIGTERM); this bounds it."""
    def force() -> None:
        with contextlib.suppress(Exception):
            print(f"[WARN] {name}: teardown did not finish within {seconds:.0f} s; exiting now", file=sys.stderr,
                  flush=True)
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
    # the backstop needs no Python thread and no GIL (a C watchdog thread): if teardown holds the GIL in C (a DDS
    # destructor waiting for a thread that waits for the GIL), the timer above cannot run; this one prints where
    # every thread is and exits with 1
    faulthandler.dump_traceback_later(seconds + 2.0, exit=True)
    return timer


def _exit_node(node: Node, stop: StopRequest, code: int) -> None:
    """The node's last words and its destruction; an error here is one log line, never a traceback."""
    why = signal.Signals(stop.signum).name if stop.signum is not None else "context shut down"
    try:
        on_exit = getattr(node, "on_exit", None)
        if on_exit is not None:
            on_exit()
        node.get_logger().info(f"stopped ({why})")
    except Exception as e:  # the exit path must finish: destroy and shut down whatever happened
        print(f"[ERROR] {node.get_name()}: while stopping: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    exit_deadline(node.get_name(), code)  # from here on, teardown only
    with contextlib.suppress(Exception):
        node.destroy_node()
