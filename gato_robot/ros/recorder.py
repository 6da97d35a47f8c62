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

Operator-labelled episodes (``episodes: operator``; ``gato-record --operator``), for a robot without an episode
status: nothing is written until the operator starts an episode; the operator ends it as a success or a failure
(the bag closes with the label) or discards it (the bag is deleted). Services /gato/recorder/start_episode
(std_srvs/Trigger), /gato/recorder/end_episode (std_srvs/SetBool, data = success), /gato/recorder/discard_episode
(std_srvs/Trigger), or keys in the terminal console (``console: true``): s / space start, y success, n failure,
d discard, q quit. Each start and end is written into the bag as a /gato/episode_event message (std_msgs/String,
JSON) stamped on this node's clock, and published there (a teleoperator engages on it); the converter cuts the
episode at these stamps and takes its label. A camera or /joint_states silent for more than ``silence_s`` during an
episode is logged, shown in the console, and listed in the episode's metadata (``silences``).

Receive times (log_time) are the system clock in ns, as ``ros2 bag record`` stamps them; sim time is in the
messages' headers and on /clock, which is recorded too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from gato_robot.logs import bag
from gato_robot.ros import common
from gato_robot.ros.stack import parameter_args
from gato_robot.ros.terminal import Terminal

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
        self.mode = d("episodes", "status", "status: episodes from /gato/episode_status (a simulator) | operator: "
                                            "the operator starts, ends, labels and discards them (a robot)")
        self.silence_s = float(d("silence_s", 1.0, "operator mode: warn when a camera or /joint_states is silent "
                                                   "this long during an episode (s)"))
        console = bool(d("console", False, "operator mode: the terminal console (keys, status line)"))
        if self.mode not in ("status", "operator"):
            raise ValueError(f"episodes must be status or operator, got {self.mode!r}")
        self.operator = self.mode == "operator"
        self.topics = parse_topics([e for e in entries if e], cameras)
        if self.operator:  # this node writes the events itself (and publishes them for teleoperators)
            self.topics.pop(common.EPISODE_EVENT_TOPIC, None)
            self.split = True
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
        # operator mode
        self.recording = False
        self.episode_started = 0.0
        self.episode_no = 0  # the next episode's number (a discarded one's number is used again)
        self.kept = {"success": 0, "failure": 0}
        self.discarded = 0
        self.between = 0  # messages received between episodes (not written)
        self.watched = [t for t in self.topics if t.startswith("/camera/") or t == common.JOINT_STATES_TOPIC]
        self.last_rx: dict[str, float] = {}
        self.silent: dict[str, float] = {}  # topic -> when its current silence began (monotonic)
        self.console: Terminal | None = None
        if self.operator:
            self.event_pub = self.create_publisher(String, common.EPISODE_EVENT_TOPIC, common.COMMAND_QOS)
            self.create_service(Trigger, common.RECORDER_START_SERVICE, self.on_start_service)
            self.create_service(SetBool, common.RECORDER_END_SERVICE, self.on_end_service)
            self.create_service(Trigger, common.RECORDER_DISCARD_SERVICE, self.on_discard_service)
            self.create_timer(0.1, self.on_operator_timer, clock=Clock(clock_type=ClockType.STEADY_TIME))
            if console:
                try:
                    self.console = Terminal(sys.stdin.fileno(), "console: stdin is not a terminal; use the services")
                except RuntimeError as e:  # not a terminal: the services still work
                    self.get_logger().warning(str(e))
                else:
                    self.console.say(f"keys: {KEYS}")
        how = ("operator-labelled episodes (" + ("keys in this terminal, or " if self.console else "")
               + f"{common.RECORDER_START_SERVICE}, {common.RECORDER_END_SERVICE}, {common.RECORDER_DISCARD_SERVICE})"
               if self.operator else "one bag per episode" if self.split else "one bag")
        self.get_logger().info(f"recording {len(self.topics)} topics to {self.output_dir} ({how})")

    # -- bags --------------------------------------------------------------------------------------------
    def open_bag(self) -> bag.BagWriter:
        path = self.output_dir / f"{self.session}_{self.index:03d}"
        self.index += 1
        w = bag.BagWriter(path, chunk_size=self.chunk_size, flush_period_s=self.flush_period, zstd=self.zstd)
        w.open()
        w.episode = {**self.meta, "start_wall_ns": time.time_ns(), "recorder": "gato_recorder"}
        topics = dict(self.topics)
        if self.operator:
            topics[common.EPISODE_EVENT_TOPIC] = ("std_msgs/msg/String", bag.RELIABLE)
        self.connections = {t: w.add_topic(t, msgtype) for t, (msgtype, _) in topics.items()}
        self.counts = dict.fromkeys(topics, 0)
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
        if self.operator:
            self.last_rx[topic] = time.monotonic()
            if not self.recording:
                self.between += 1
                return
            w = self.writer
            w.write(self.connections[topic], time.time_ns(), data)
            self.counts[topic] += 1
            self.written += 1
            return
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

    # -- operator-labelled episodes ---------------------------------------------------------------------
    def _event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Publish an episode event and write it into the bag in progress (if any); returns it."""
        e = {"event": event, "episode": self.episode_no, "stamp": round(common.now_sec(self), 9), **fields}
        msg = String(data=json.dumps(e))
        if self.writer is not None and event != "discard":
            self.writer.write(self.connections[common.EPISODE_EVENT_TOPIC], time.time_ns(), serialize_message(msg))
            self.counts[common.EPISODE_EVENT_TOPIC] += 1
        self.event_pub.publish(msg)
        return e

    def start_episode(self) -> tuple[bool, str]:
        if self.recording:
            return False, f"episode {self.episode_no} is being recorded: end or discard it first"
        if common.now_sec(self) <= 0.0:  # on sim time before the first /clock: the stamps would cut nothing
            return False, "no clock yet (use_sim_time and no /clock received): start the robot or simulator first"
        w = self.open_bag()
        w.episode.update(episode=self.episode_no, labelled_by="operator", done=False, silences=[])
        w.episode.pop("recorder", None)
        self.recording = True
        self.episode_started = time.monotonic()
        self.silent.clear()
        self.last_rx = {t: self.episode_started for t in self.watched}  # silent from the start counts too
        e = self._event("start", task=self.meta["task"])
        w.episode["start_stamp"] = e["stamp"]
        bag.write_sidecar(w.path, w.episode)
        text = f"episode {self.episode_no} started ({w.path.name})"
        self.get_logger().info(text)
        return True, text

    def end_episode(self, success: bool) -> tuple[bool, str]:
        if not self.recording:
            return False, "no episode is being recorded"
        label = "success" if success else "failure"
        w = self.writer
        e = self._event("end", success=success, label=label)
        w.episode.update(success=success, label=label, done=True, end_stamp=e["stamp"],
                         duration_s=round(time.monotonic() - self.episode_started, 3))
        self.close_silences()
        self.recording = False
        self.close_bag(f"operator: {label}")
        self.kept[label] += 1
        self.episode_no += 1
        return True, f"episode {e['episode']} saved as a {label} ({w.path.name})"

    def discard_episode(self) -> tuple[bool, str]:
        if not self.recording:
            return False, "no episode is being recorded"
        w, self.writer = self.writer, None
        self.recording = False
        self._event("discard")
        with contextlib.suppress(Exception):
            w.close()
        shutil.rmtree(w.path, ignore_errors=True)
        self.discarded += 1
        text = f"episode {self.episode_no} discarded (deleted {w.path.name})"
        self.get_logger().info(text)
        return True, text

    def on_start_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.start_episode()
        return response

    def on_end_service(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        response.success, response.message = self.end_episode(bool(request.data))
        return response

    def on_discard_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.discard_episode()
        return response

    def silences_now(self) -> dict[str, float]:
        """Watched topics silent for more than ``silence_s`` in the episode in progress -> for how long (s)."""
        now = time.monotonic()
        return {t: now - self.last_rx.get(t, now) for t in self.watched
                if now - self.last_rx.get(t, now) > self.silence_s}

    def close_silences(self) -> None:
        """The silences still going on when the episode ends."""
        for t in list(self.silent):
            self.end_silence(t, ended=False)

    def end_silence(self, topic: str, ended: bool) -> float:
        """Record the silence of ``topic`` in the episode's metadata; returns how long it lasted (s)."""
        silent_s = time.monotonic() - self.silent.pop(topic)
        self.writer.episode["silences"].append({"topic": topic, "silent_s": round(silent_s, 3), "ended": ended})
        return silent_s

    def on_operator_timer(self) -> None:
        if self.console is not None:
            data = self.console.read()
            if data is None:  # the terminal is gone (hang-up): the services still work
                self.get_logger().warning("console: the terminal closed; use the services")
                self.console = None
            for key in (data or b"").decode(errors="ignore").lower():
                self.on_key(key)
        if self.recording:
            now = time.monotonic()
            silent = self.silences_now()
            for t, for_s in silent.items():
                if t not in self.silent:
                    self.silent[t] = now - for_s
                    self.get_logger().warning(f"{t} is silent: no message for {for_s:.1f} s in episode "
                                              f"{self.episode_no} (camera or joint state driver down?)")
            for t in [t for t in self.silent if t not in silent]:
                self.get_logger().info(f"{t} is back after {self.end_silence(t, ended=True):.1f} s")
        if self.console is not None:
            self.console.status(status_line(self))

    def on_key(self, key: str) -> None:
        actions = {"s": self.start_episode, " ": self.start_episode, "y": lambda: self.end_episode(True),
                   "n": lambda: self.end_episode(False), "d": self.discard_episode}
        if key == "q":
            common.STOP(signal.SIGINT, None)
            return
        if key in actions:
            ok, text = actions[key]()
            self.console.say(text if ok else f"refused: {text}")

    def on_exit(self) -> None:
        if self.operator and self.recording:  # unlabelled: kept, but the converter skips it (no end event)
            self.writer.episode["closed_unlabelled"] = True
        if self.console is not None:
            self.console.restore()
        self.close_bag("recorder stopped")


KEYS = "[s]tart  [y] success  [n] failure  [d]iscard  [q]uit"


def status_line(rec: RecorderNode) -> str:
    """``REC episode 3  00:12.4  1234 msgs | kept 2 (1 ok, 1 failed), 1 discarded | SILENT /joint_states 1.4 s``."""
    kept = f"kept {sum(rec.kept.values())} ({rec.kept['success']} success, {rec.kept['failure']} failure)"
    if rec.discarded:
        kept += f", {rec.discarded} discarded"
    if not rec.recording:
        return f"idle, next episode {rec.episode_no} | {kept} | {KEYS}"
    elapsed = time.monotonic() - rec.episode_started
    line = (f"\x1b[31m● REC\x1b[0m episode {rec.episode_no}  {int(elapsed // 60):02d}:{elapsed % 60:04.1f}  "
            f"{sum(rec.counts.values())} msgs on {sum(1 for c in rec.counts.values() if c)}/{len(rec.topics)} "
            f"topics | {kept}")
    silent = rec.silences_now()
    if silent:
        line += " | \x1b[33mSILENT " + ", ".join(f"{t} {s:.1f} s" for t, s in silent.items()) + "\x1b[0m"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """``gato-record --out DIR [--operator] [--task T] [--topics a,b] [--policy NAME] [--no-split]`` or plain
    ``--ros-args``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    ap = argparse.ArgumentParser(prog="gato-record", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output folder (parameter output_dir)")
    ap.add_argument("--topics", default="", help="comma-separated topics (default: the contract's)")
    ap.add_argument("--policy", default=None, help="policy name for the episode metadata")
    ap.add_argument("--no-split", action="store_true", help="one bag for the whole session")
    ap.add_argument("--operator", action="store_true",
                    help="operator-labelled episodes with the terminal console (a robot without an episode status): "
                         "s/space start, y success, n failure, d discard, q quit; or the services")
    ap.add_argument("--task", default=None, help="task name for the episode metadata (default rgb_stacking)")
    ap.add_argument("--silence", type=float, default=None, help="operator mode: warn after a camera or the joint "
                                                                "states are silent this long (s, default 1)")
    ap.add_argument("--use-sim-time", action="store_true")
    args = ap.parse_args(argv[: len(argv) - len(ros_args)])
    params = parameter_args({
        "output_dir": args.out, "policy": args.policy, "task": args.task, "silence_s": args.silence,
        "topics": args.topics.split(",") if args.topics else None,
        "split_by_episode": False if args.no_split else None,
        "episodes": "operator" if args.operator else None, "console": True if args.operator else None,
        "use_sim_time": True if args.use_sim_time else None})
    ros = (ros_args or ["--ros-args"]) + params
    return common.run(RecorderNode, ["gato-record", *ros])


if __name__ == "__main__":
    sys.exit(main())
