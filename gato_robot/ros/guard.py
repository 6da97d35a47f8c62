"""The controller's dead man's switch: a small process that commands zero velocity when the controller dies.

A ros2_control forward_command_controller has no timeout: it applies the last velocity it received forever
(shared/reference/safety.md). The controller node stops the arm on every stop it gets to see (SIGINT, SIGTERM,
its parent dying), but a SIGKILL, an abort or the OOM killer leaves no time for a last message. So the controller
starts this process at start-up, with a pipe to it, and the guard creates a publisher on the same arm command
topic (matched with the arm long before it is needed). The kernel closes the pipe the moment the controller dies,
however it dies; the guard then publishes one zero command (velocities only: the gripper keeps its last command,
so a grasped object is not dropped), logs one line, repeats the zero every ``REPEAT_S`` until it is acknowledged
and at least ``SETTLE_S`` passed (or ``--ack-timeout`` passes) and exits. The repeats cover a reader that matched
late and a last command of the dead controller still in flight: DDS orders the samples of one writer, not those of
two. When the controller stops cleanly it writes ``clean`` first (it has sent its own zero) and the guard exits
silently.

A guard can only stop the readers it has matched. After its ``ready`` line it writes ``matched N`` on its stdout
whenever the number of arm command subscribers its publisher has matched changes, and the controller commands zero
while its own publisher has matched more (``GuardProcess.covers``): a reader the guard has not discovered yet (a
lost discovery packet on a loaded machine, an arm driver that just restarted) never receives a non-zero command.

The guard ignores SIGINT, SIGTERM and SIGHUP: a terminal's Ctrl-C reaches the whole process group, and the guard
must outlive the controller to be of use. It ends with the pipe, never on its own. Sending SIGKILL to the
controller *and* the guard (``kill -9`` of the process group) leaves nothing to stop the arm: that is what the
arm-side command timeout is for (docs/ros.md, "What the stack guarantees when it is killed").

Run by the controller as ``python -m gato_robot.ros.guard --interface twist --topic T --frame F --ros-args ...``;
not a launch file node.
"""

from __future__ import annotations

import argparse
import os
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
SETTLE_S = 0.3  # s the zero is repeated for at least (a dead writer's in-flight sample may land after the first)
READY = b"ready\n"  # the guard's first line on its stdout: its publisher exists
MATCHED = b"matched "  # then "matched N" whenever its publisher's matched subscriber count changes
POLL_S = 0.05  # s between looks at the matched subscriber count
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
        if line != READY:
            self.proc.stdout.close()
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the controller's guard did not start within {ready_timeout:.0f} s "
                               f"(exit {self.proc.returncode})")
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.matched = 0  # the arm command subscribers the guard's publisher has matched (its newest report)
        self._partial = b""

    def covers(self, subscribers: int) -> bool:
        """Whether the guard has matched at least ``subscribers`` readers of the arm topic (the controller's own
        publisher's count): reads the reports the guard wrote since the last call, without blocking."""
        try:
            while chunk := os.read(self.proc.stdout.fileno(), 4096):
                self._partial += chunk
        except BlockingIOError:
            pass
        except OSError:  # closed: the guard is gone (it never ends on its own while the controller lives)
            return False
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            if line.startswith(MATCHED):
                self.matched = int(line[len(MATCHED):])
        return self.matched >= subscribers

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
        finally:
            self.proc.stdout.close()


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

    def report(matched: int) -> bool:
        """Tell the controller how many readers the guard reaches; False once nobody reads (it is gone)."""
        try:
            sys.stdout.buffer.write(MATCHED + b"%d\n" % matched)
            sys.stdout.buffer.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def spin() -> None:
        reported, reporting, next_look = 0, True, 0.0
        while spinning.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=POLL_S)
            if reporting and time.monotonic() >= next_look:
                next_look = time.monotonic() + POLL_S
                matched = pub.get_subscription_count()
                if matched != reported:
                    reporting, reported = report(matched), matched

    sys.stdout.buffer.write(READY)  # before the spinner's first report
    sys.stdout.buffer.flush()
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    last_words = sys.stdin.buffer.read()  # blocks until the controller closes the pipe, or dies
    if not last_words.startswith(CLEAN):
        pub.publish(zero_command(args.interface, node.get_clock().now().to_msg(), args.frame))
        # the line first: a launcher that is stopping the stack reads the dead controller's output only briefly
        node.get_logger().error(f"gato_controller (pid {args.owner_pid}) died: commanded zero velocity on "
                                f"{args.topic} ({pub.get_subscription_count()} subscriber(s))")
        # then stay until it is acknowledged (bounded), repeating it every REPEAT_S for a reader that matched late
        # (a volatile reader never gets a sample published before it matched) and, for SETTLE_S at least, for a
        # reader that receives the dead controller's last sample after the first zero; a repeated zero is harmless
        start = time.monotonic()
        while time.monotonic() < start + args.ack_timeout:
            acked = pub.wait_for_all_acked(Duration(seconds=REPEAT_S))
            if acked and time.monotonic() >= start + SETTLE_S:
                break
            if acked:
                time.sleep(max(0.0, min(REPEAT_S, start + SETTLE_S - time.monotonic())))
            pub.publish(zero_command(args.interface, node.get_clock().now().to_msg(), args.frame))
    spinning.clear()
    spinner.join(timeout=1.0)
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
