"""Replayer: publish a log's topics with their original timing, at 1x or faster, as ``ros2 bag play`` would.

``gato-replay LOG [--rate 2] [--topics a,b] [--clock-hz 100] [--report out.json] [--wait-subscribers 5]``

The log is read with :func:`gato_robot.logs.bag.read_log` (linear, CRC-checked: a damaged log plays up to the
damage, which is reported). Message i is published, serialized as recorded (``publish(raw_bytes)``), at
``start + (log_time_i - log_time_0) / rate`` on the monotonic clock; the loop sleeps until 1 ms before and then
spins, so the publish-time error is dominated by the scheduler. Sim time: the recorded /clock is replayed with
the rest (the stack's nodes with ``use_sim_time`` follow it); ``--clock-hz`` also publishes /clock from the
log's receive times, as ``ros2 bag play --clock`` does, for logs recorded without /clock.

Publish-time error (actual - scheduled) p50/p99/max goes to stdout and ``--report``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from gato_robot.logs import bag
from gato_robot.ros import common
from gato_robot.ros.recorder import message_class

SPIN_BEFORE_S = 0.001


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gato-replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("log", help="rosbag2 folder or .mcap file")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed (1 = recorded timing)")
    ap.add_argument("--topics", default="", help="comma-separated topics to publish (default: all)")
    ap.add_argument("--clock-hz", type=float, default=0.0, help="also publish /clock from log time at this rate")
    ap.add_argument("--wait-subscribers", type=float, default=0.0,
                    help="wait up to this many seconds for a subscriber on every published topic")
    ap.add_argument("--report", default="", help="write timing statistics (JSON) here")
    args = ap.parse_args(argv)
    if not args.rate > 0:
        ap.error("--rate must be positive")
    return args


def play(node: Node, messages: list[bag.LogMessage], rate: float, clock_hz: float = 0.0) -> np.ndarray:
    """Publish ``messages`` on their schedule; returns the publish-time errors (s)."""
    kinds = bag.contract_topics()
    pubs = {}
    for m in messages:
        if m.topic not in pubs:
            qos = common.SENSOR_QOS if kinds.get(m.topic, ("", bag.RELIABLE))[1] == bag.SENSOR else common.COMMAND_QOS
            pubs[m.topic] = node.create_publisher(message_class(m.msgtype), m.topic, qos)
    clock_pub = node.create_publisher(Clock, "/clock", common.SENSOR_QOS) if clock_hz > 0 else None
    errors = np.zeros(len(messages))
    if not messages:
        return errors
    t0_log = messages[0].log_time
    start = time.monotonic() + 0.05
    next_clock = 0.0
    for i, m in enumerate(messages):
        due = start + (m.log_time - t0_log) * 1e-9 / rate
        while True:
            now = time.monotonic()
            if clock_pub is not None and now >= start + next_clock / rate:
                stamp = t0_log * 1e-9 + next_clock
                clock_pub.publish(Clock(clock=common.sec_to_stamp(stamp)))
                next_clock += 1.0 / clock_hz
            if now >= due or common.STOP.requested:
                break
            if due - now > SPIN_BEFORE_S:
                time.sleep(min(due - now - SPIN_BEFORE_S, 0.01))
        if common.STOP.requested:
            return errors[:i]
        pubs[m.topic].publish(m.data)
        errors[i] = time.monotonic() - due
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = parse_args(argv[: len(argv) - len(ros_args)])
    topics = [t for t in args.topics.split(",") if t] or None
    problem = bag.log_path_problem(args.log)
    if problem is not None:
        print(f"[gato-replay] error: {problem}", file=sys.stderr)
        return 2
    messages, report = bag.read_log(args.log, topics)
    for d in report.damage:
        print(f"[gato-replay] damage: {d} (playing what precedes it)", file=sys.stderr)
    messages.sort(key=lambda m: m.log_time)  # ros2 bag play order: receive time
    stop = common.STOP.install()  # Ctrl-C ends the replay between two messages, never inside a publish
    rclpy.init(args=["gato-replay", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    node = Node("gato_replayer")
    code = 0
    try:
        if args.wait_subscribers > 0:
            names = {m.topic for m in messages}
            deadline = time.monotonic() + args.wait_subscribers
            while time.monotonic() < deadline and any(node.count_subscribers(t) == 0 for t in names):
                time.sleep(0.05)
        errors = play(node, messages, args.rate, args.clock_hz)
        if stop.requested:
            code = 130
        ms = np.abs(errors) * 1e3 if errors.size else np.zeros(1)
        stats = {"log": str(args.log), "messages": len(messages), "rate": args.rate,
                 "duration_s": (messages[-1].log_time - messages[0].log_time) * 1e-9 / args.rate if messages else 0,
                 "publish_error_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                                      "max": float(ms.max())},
                 "damage": [str(d) for d in report.damage]}
        print(json.dumps(stats), flush=True)
        if args.report:
            Path(args.report).write_text(json.dumps(stats, indent=1))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
