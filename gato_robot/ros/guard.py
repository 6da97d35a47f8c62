"""The controller's dead man's switch: a small process that commands zero velocity when the controller dies.

A ros2_control forward_command_controller has no timeout: it applies the last velocity it received forever
(shared/reference/safety.md). The controller node stops the arm on every stop it gets to see (SIGINT, SIGTERM,
its parent dying), but a SIGKILL, an abort or the OOM killer leaves no time for a last message. So the controller
starts this process at start-up, with a pipe to it, and the guard creates a publisher on the same arm command
topic (matched with the arm long before it is needed). The kernel closes the pipe the moment the controller dies,
however it dies; the guard then publishes one zero command (velocities only: the gripper keeps its last command,
so a grasped object is not dropped), waits until it is acknowledged (or ``--ack-timeout`` passes), logs one line
and exits. When the controller stops cleanly it writes ``clean`` first (it has sent its own zero) and the guard
exits silently.

The guard ignores SIGINT, SIGTERM and SIGHUP: a terminal's Ctrl-C reaches the whole process group, and the guard
must outlive the controller to be of use. It ends with the pipe, never on its own. Sending SIGKILL to the
controller *and* the guard (``kill -9`` of the process group) leaves nothing to stop the arm: that is what the
arm-side command timeout is for (docs/ros.md, "What the stack guarantees when it is killed").

Run by the controller as ``python -m gato_robot.ros.guard --interface twist --topic T --frame F --ros-args ...``;
not a launch file node.
"""

from __future__ import annotations

import argparse
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Float64MultiArray

from gato_robot.ros import common

CLEAN = b"clean"  # the controller's last words on the pipe: it stopped the arm itself
REPEAT_S = 0.1  # s between repeats of the zero while it is not acknowledged
READY = b"ready\n"  # the guard's one line on its stdout: its publisher exists
INTERFACES = ("twist", "forward_command")


def zero_command(interface: str, stamp: object, frame: str) -> TwistStamped | Float64MultiArray:
    """A zero-velocity arm command of ``interface``, as the controller would send it."""
    return common.arm_command(interface, np.zeros(5), stamp, frame)


class GuardProcess:
    """The controller's handle on its guard: start it, tell it the stop was clean, reap it."""

    def __init__(self, interface: str, topic: str, frame: str, ros_args: Sequence[str], owner_pid: int,
                 ready_timeout: float = 60.0) -> None:
        """Start the guard and wait until its publisher exists (a controller must not command an arm that its guard
        could not stop yet). Raises RuntimeError when it does not come up within ``ready_timeout`` seconds."""
        cmd = [sys.executable, "-m", __name__, "--interface", interface, "--topic", topic, "--frame", frame,
               "--owner-pid", str(owner_pid), "--ros-args", *ros_args]
        # not a new session: a kill of the controller's process group takes both (the documented limit); the
        # guard's log (stderr) is the controller's, so its one line lands in the same log
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], ready_timeout)
        line = self.proc.stdout.readline() if ready else b""
        self.proc.stdout.close()
        if line != READY:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the controller's guard did not start within {ready_timeout:.0f} s "
                               f"(exit {self.proc.returncode})")

    def release(self, timeout: float = 3.0) -> int | None:
        """The controller has commanded zero itself: the guard may go. Returns its exit code (None: still running
        after ``timeout``, then killed)."""
        try:
            self.proc.stdin.write(CLEAN)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):  # the guard is already gone
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gato_robot.ros.guard", description=__doc__.split("\n\n")[0])
    ap.add_argument("--interface", choices=INTERFACES, required=True)
    ap.add_argument("--topic", required=True, help="the arm command topic")
    ap.add_argument("--frame", default="", help="frame_id of a zero twist")
    ap.add_argument("--owner-pid", type=int, default=0, help="the controller's pid, for the log line")
    ap.add_argument("--ack-timeout", type=float, default=1.0, help="wait this long for the zero to be acknowledged")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = parse_args(argv[: len(argv) - len(ros_args)])
    for sig in common.StopRequest.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    rclpy.init(args=["gato_guard", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    node = Node("gato_controller_guard")
    msg_type = TwistStamped if args.interface == "twist" else Float64MultiArray
    pub = node.create_publisher(msg_type, args.topic, common.COMMAND_QOS)
    executor = SingleThreadedExecutor()  # keeps the node's clock on /clock under sim time
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    last_words = sys.stdin.buffer.read()  # blocks until the controller closes the pipe, or dies
    if not last_words.startswith(CLEAN):
        pub.publish(zero_command(args.interface, node.get_clock().now().to_msg(), args.frame))
        # the line first: a launcher that is stopping the stack reads the dead controller's output only briefly
        node.get_logger().error(f"gato_controller (pid {args.owner_pid}) died: commanded zero velocity on "
                                f"{args.topic} ({pub.get_subscription_count()} subscriber(s))")
        # then stay until it is acknowledged (bounded), repeating it every REPEAT_S for a reader that matched late
        # (a volatile reader never gets a sample published before it matched); a repeated zero is harmless
        deadline = time.monotonic() + args.ack_timeout
        while time.monotonic() < deadline and not pub.wait_for_all_acked(Duration(seconds=REPEAT_S)):
            pub.publish(zero_command(args.interface, node.get_clock().now().to_msg(), args.frame))
    spinning.clear()
    spinner.join(timeout=1.0)
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
