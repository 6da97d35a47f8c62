"""Recorder node: the stack's topics into rosbag2 + MCAP logs, one bag per episode, CRCs on, without rosbag2_py.

Raw subscriptions (``raw=True``: the serialized CDR bytes, never deserialized) written through
:class:`gato_robot.logs.bag.BagWriter` (rosbags' rosbag2 writer over a CRC-on MCAP storage that flushes every
finished chunk and at least every ``flush_period_s``: a SIGKILLed recorder loses at most that much).

Splitting (``split_by_episode``): the bag in progress is closed right after a /gato/episode_status message with
``done: true`` (the commands answering the final observation go to the next bag; the converter ignores them), and
before a status whose ``episode`` differs from the bag's (a reset mid-episode). Bags are
``<output_dir>/<session>_<NNN>/`` (metadata.yaml + ``<name>_0.mcap`` + ``gato_episode.json``).

Episode metadata (task, triplet, episode, seed, policy, success, steps, sim and wall stamps, message counts) goes to
metadata.yaml's ``custom_data["gato_episode"]`` (rosbag2's key/value store), an MCAP metadata record of the same
name (Foxglove shows it), and ``gato_episode.json`` next to it, which is written when the episode's first status
arrives and rewritten at close, so it survives a killed recorder.

Receive times (log_time) are the system clock in ns, as ``ros2 bag record`` stamps them; sim time is in the
messages' headers and on /clock, which is recorded too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from std_msgs.msg import String

from gato_robot.logs import bag
from gato_robot.ros import common

SENSOR_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
# Reliable topics: a deep reader history, so a recorder slowed by image writes under CPU load (10 s at 100 Hz)
# takes every sample before its cache overwrites one; the publisher's own depth still bounds what it resends.
RELIABLE_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def message_class(msgtype: str) -> Any:
    """``pkg/msg/Type`` -> the rclpy message class (rosidl_runtime_py is not on PyPI)."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise ValueError(f"message type {msgtype!r} is not of the form pkg/msg/Type")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError):
        raise ValueError(f"message type {msgtype!r} is not installed here") from None


def parse_topics(entries: Sequence[str], cameras: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``topic`` (a contract topic) or ``topic:pkg/msg/Type[:sensor|reliable]`` -> (type, QoS kind)."""
    contract = bag.contract_topics(cameras)
    if not entries:
        return contract
    out = {}
    for e in entries:
        parts = e.split(":")
        if len(parts) == 1:
            if parts[0] not in contract:
                raise ValueError(f"topic {parts[0]!r} is not in the contract; give its type as topic:pkg/msg/Type")
            out[parts[0]] = contract[parts[0]]
        else:
            kind = parts[2] if len(parts) > 2 else bag.RELIABLE
            if len(parts) > 3 or not parts[0].startswith("/") or kind not in (bag.SENSOR, bag.RELIABLE):
                raise ValueError(f"topic entry {e!r}: expected /topic or /topic:pkg/msg/Type[:{bag.SENSOR}|"
                                 f"{bag.RELIABLE}]")
            message_class(parts[1])  # refused here, not at the first message
            out[parts[0]] = (parts[1], kind)
    return out


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("gato_recorder")
        d = lambda *a: common.declare(self, *a)  # noqa: E731
        self.output_dir = Path(d("output_dir", "logs", "folder the episode bags are written under"))
        cameras = d("cameras", list(bag.CAMERAS), "camera names (their /camera/<name>/image_raw are recorded)")
        entries = d("topics", [""], "topics to record (empty: the contract's); topic or topic:pkg/msg/Type[:qos]")
        self.split = bool(d("split_by_episode", True, "one bag per episode (on /gato/episode_status)"))
        self.chunk_size = int(d("chunk_size", 256 * 1024, "MCAP chunk size (bytes, uncompressed)"))
        self.flush_period = float(d("flush_period_s", 0.5, "flush at least this often (s): the most a kill loses"))
        self.zstd = bool(d("zstd", True, "zstd-compress chunks"))
        self.meta = {"task": d("task", "rgb_stacking", "task name for the episode metadata"),
                     "policy": d("policy", "", "policy name or model directory, for the episode metadata")}
        self.sim_seed = int(d("sim_seed", 0, "the simulator's seed parameter: episode k was reset with seed + k "
                                             "(-1: not a simulation)"))
        self.topics = parse_topics([e for e in entries if e], cameras)
        self.session = time.strftime("gato_%Y_%m_%d-%H_%M_%S")
        self.index = 0
        self.writer: bag.BagWriter | None = None
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.written = 0
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise ValueError(f"output_dir {self.output_dir} exists and is not a folder")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create output_dir {self.output_dir}: {e}") from None
        for topic, (msgtype, kind) in self.topics.items():
            qos = SENSOR_QOS if kind == bag.SENSOR else RELIABLE_QOS
            self.create_subscription(message_class(msgtype), topic, lambda data, t=topic: self.on_message(t, data),
                                     qos, raw=True)
        self.get_logger().info(f"recording {len(self.topics)} topics to {self.output_dir} "
                               f"({'one bag per episode' if self.split else 'one bag'})")

    # -- bags --------------------------------------------------------------------------------------------
    def open_bag(self) -> bag.BagWriter:
        path = self.output_dir / f"{self.session}_{self.index:03d}"
        self.index += 1
        w = bag.BagWriter(path, chunk_size=self.chunk_size, flush_period_s=self.flush_period, zstd=self.zstd)
        w.open()
        w.episode = {**self.meta, "start_wall_ns": time.time_ns(), "recorder": "gato_recorder"}
        self.connections = {t: w.add_topic(t, msgtype) for t, (msgtype, _) in self.topics.items()}
        self.counts = dict.fromkeys(self.topics, 0)
        self.writer = w
        return w

    def close_bag(self, why: str) -> None:
        w, self.writer = self.writer, None
        if w is None:
            return
        w.episode.update(end_wall_ns=time.time_ns(), message_counts=dict(self.counts), closed_because=why)
        w.close()
        self.get_logger().info(f"closed {w.path.name} ({why}): {sum(self.counts.values())} messages, "
                               f"episode {w.episode.get('episode')}, success {w.episode.get('success')}")

    # -- messages ----------------------------------------------------------------------------------------
    def on_message(self, topic: str, data: bytes) -> None:
        status = None
        if topic == common.EPISODE_STATUS_TOPIC:
            try:
                status = json.loads(deserialize_message(data, String).data)
            except Exception as e:  # still recorded; only the splitting ignores it
                self.get_logger().warning(f"unreadable episode status ({e}); recorded, not used to split",
                                          throttle_duration_sec=5.0)
        w = self.writer
        if status is not None and self.split and w is not None and "episode" in w.episode \
                and status.get("episode") != w.episode["episode"]:
            self.close_bag(f"episode changed to {status.get('episode')}")
            w = None
        if w is None:
            w = self.open_bag()
        w.write(self.connections[topic], time.time_ns(), data)
        self.counts[topic] += 1
        self.written += 1
        if status is not None:
            self.on_status(w, status)

    def on_status(self, w: bag.BagWriter, s: dict[str, Any]) -> None:
        first = "episode" not in w.episode
        ep = s.get("episode")
        w.episode.update(episode=ep, triplet=s.get("triplet"), steps=s.get("step"), success=bool(s.get("success")),
                         done=bool(s.get("done")), end_sim_time=s.get("sim_time"))
        if first:
            seed = s.get("seed")  # a simulator that reports its reset seed is believed first
            if seed is None and self.sim_seed >= 0 and isinstance(ep, int):
                seed = self.sim_seed + ep
            w.episode.update(start_sim_time=s.get("sim_time"), seed=seed)
            bag.write_sidecar(w.path, w.episode)  # there from the first status on, even if the recorder is killed
        if s.get("done") and self.split:
            self.close_bag("episode done")

    def on_exit(self) -> None:
        self.close_bag("recorder stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """``gato-record --out DIR [--topics a,b] [--policy NAME] [--no-split]`` or plain ``--ros-args``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    ap = argparse.ArgumentParser(prog="gato-record", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output folder (parameter output_dir)")
    ap.add_argument("--topics", default="", help="comma-separated topics (default: the contract's)")
    ap.add_argument("--policy", default=None, help="policy name for the episode metadata")
    ap.add_argument("--no-split", action="store_true", help="one bag for the whole session")
    ap.add_argument("--use-sim-time", action="store_true")
    args = ap.parse_args(argv[: len(argv) - len(ros_args)])
    params = []
    if args.out:
        params += ["-p", f"output_dir:={args.out}"]
    if args.topics:
        params += ["-p", f"topics:=[{','.join(repr(t) for t in args.topics.split(','))}]"]
    if args.policy is not None:
        params += ["-p", f"policy:={args.policy!r}"]
    if args.no_split:
        params += ["-p", "split_by_episode:=false"]
    if args.use_sim_time:
        params += ["-p", "use_sim_time:=true"]
    ros = (ros_args or ["--ros-args"]) + params
    return common.run(RecorderNode, ["gato-record", *ros])


if __name__ == "__main__":
    sys.exit(main())
