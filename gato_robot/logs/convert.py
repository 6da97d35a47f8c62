"""Logs -> training episodes (``gato_robot.data.episodes``): synchronise onto the control rate, map commands back
to the action spec, carry success and return, and report every tick that was dropped and why.

Ticks: one per reference-camera image (the spec's first camera), at most one per 0.9 / control_hz of header stamp
(faster cameras are decimated); every other camera, the joint states and the tool pose contribute their message
whose header stamp is closest, within ``slop_s`` (25 ms, as the tokenizer node), or the tick is dropped. Episode,
step, ``stacked`` and ``success`` come from the /gato/episode_status message whose ``sim_time`` matches the tick
(logs without episode status are one episode). Operator-labelled logs (a robot without an episode status, recorded
with ``gato-record --operator``) carry /gato/episode_event instead: an episode is the ticks stamped between its
``start`` and ``end`` events, its success the operator's label, its reward 1.0 on the last step of a success (the
label is all that is known), and its metadata has no simulator field (no triplet, seed or ``stacked``); ticks
outside every labelled episode are dropped, as are episodes without an ``end`` (discarded or cut off).

Actions: the action of a tick is the first arm command (by receive time) issued for it: for TwistStamped, whose
header stamp is the controller's issue time on the stack's clock (sim time in simulation), the first with a stamp in
[tick, next tick); for forward commands (no stamp), the first received after the tick's last input and before the
next tick's. The gripper command (no stamp) is the one received closest to that arm command (the controller
publishes the pair back to back; an executor may deliver them in either order), else the newest before it, else
open (-255, the simulator's reset state). The lockstep simulator applies exactly that first command; on a robot
the controller issues one per observation. The previous action of a tick is the newest arm and gripper command
before it within the episode (zeros at the start), as the tokenizer node builds it. Observations are assembled by
the robot's observation builder (``core.embodiment``, ``robot``: default panda, whose joint names are read from
/joint_states), the tokenizer node's and the simulator's.

Reward: 1.0 where ``stacked`` (the simulator's reward), return = their sum, success = the last status's flag.
Only CRC-verified messages are used (:func:`gato_robot.logs.bag.read_log`); an episode cut short by damage or a
killed recorder (no ``done`` status) is not written unless ``keep_incomplete``: its success label is unknown.
A damaged chunk in the middle of a log is skipped by the reader and the rest is kept (safety.md scenario 18): the
ticks within two control periods of the lost stretch (their inputs, command or previous command may have been in
it) are dropped, and after it the grasp flag (which depends on history) is kept only from the first tick where it
no longer depends on the lost steps; every tick kept is then identical to the intact log's conversion.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot import wire
from gato_robot.core import specs
from gato_robot.core.embodiment import Embodiment, ObservationBuilder, RawObservation
from gato_robot.core.tokenizer import fit_image
from gato_robot.data.episodes import Episode, EpisodeError, write_episode
from gato_robot.logs import bag
from gato_robot.robots import load_embodiment

JOINTS_TOPIC, POSE_TOPIC, STATUS_TOPIC = "/joint_states", "/gato/tool_pose", "/gato/episode_status"
EVENT_TOPIC, INTERVENTION_TOPIC = "/gato/episode_event", "/gato/teleop/intervention"
ACTION_TOPIC = "/gato/action"  # a teleoperator's (or tool's) continuous action, before the controller's filter
TWIST_TOPIC, FORWARD_TOPIC, GRIPPER_TOPIC = "/servo_node/delta_twist_cmds", "/forward_velocity_controller/commands", \
    "/gripper/command"


@dataclasses.dataclass
class ConvertReport:
    log: str
    read: dict[str, Any] = dataclasses.field(default_factory=dict)
    episodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # written or not, with why
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> ticks or messages
    ticks: int = 0
    kept: int = 0

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Tick:
    stamp: float
    log_time: int
    obs: dict[str, np.ndarray]
    status: dict[str, Any]


def _stamp(h: Any) -> float:
    return h.stamp.sec + h.stamp.nanosec * 1e-9


def _nearest(stamps: list[float], t: float) -> int | None:
    if not stamps:
        return None
    i = bisect.bisect_left(stamps, t)
    best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - t))
    return best


def _before(cmd: tuple[int, float | None, np.ndarray], tick: _Tick) -> bool:
    """Whether an arm command was issued before ``tick``'s observation (stamp if it has one, else receive time)."""
    return cmd[1] < tick.stamp if cmd[1] is not None else cmd[0] < tick.log_time


def _command_for(arm: list[tuple[int, float | None, np.ndarray]], arm_times: list[int], tick: _Tick,
                 nxt: _Tick | None) -> tuple[int, float | None, np.ndarray] | None:
    end_stamp = nxt.stamp if nxt is not None else np.inf
    end_time = nxt.log_time if nxt is not None else np.iinfo(np.int64).max
    for cmd in arm[bisect.bisect_left(arm_times, tick.log_time - 10**9):]:  # receive order; stamps lag <= 1 s
        log_time, stamp, _ = cmd
        if stamp is not None and tick.stamp - 1e-6 <= stamp < end_stamp - 1e-6:
            return cmd
        if stamp is None and tick.log_time < log_time < end_time:
            return cmd
        if log_time >= end_time and (stamp is None or stamp >= end_stamp):
            return None
    return None


def _gripper_at(gripper: list[tuple[int, float]], times: list[int], t: int, default: float,
                pair_ns: int = 20_000_000) -> float:
    i = bisect.bisect_left(times, t)
    near = [j for j in (i - 1, i) if 0 <= j < len(times) and abs(times[j] - t) <= pair_ns]
    if near:
        return gripper[min(near, key=lambda j: abs(times[j] - t))][1]
    return gripper[i - 1][1] if i > 0 else default


def log_to_episodes(path: str | os.PathLike, spec: specs.RobotSpec | None = None, *, slop_s: float = 0.025,
                    keep_incomplete: bool = False, robot: str | Embodiment = "panda"
                    ) -> tuple[list[Episode], ConvertReport]:
    """The episodes of one log (a rosbag2 folder or .mcap) and the report of what was dropped."""
    embodiment = robot if isinstance(robot, Embodiment) else load_embodiment(robot)
    spec = spec or embodiment.spec(list(bag.CAMERAS))
    cameras = [s.name for s in spec.observations if s.kind is specs.Kind.IMAGE]
    cam_topics = {bag.camera_topic(k[len(specs.CAMERA_PREFIX):]): k for k in cameras}
    topics = [*cam_topics, JOINTS_TOPIC, POSE_TOPIC, STATUS_TOPIC, EVENT_TOPIC, ACTION_TOPIC, TWIST_TOPIC,
              FORWARD_TOPIC, GRIPPER_TOPIC]
    messages, read = bag.read_log(path, topics)
    report = ConvertReport(str(path), read=read.to_dict())
    if read.damage:  # details (file, byte offset, reason) in report.read["damage"]
        report.drop("log damage (see read.damage)", len(read.damage))
    margin = round(2e9 / spec.control_hz)
    gaps = [(-np.inf if d.lost_after_ns is None else d.lost_after_ns - margin,
             np.inf if d.lost_before_ns is None else d.lost_before_ns + margin) for d in read.damage if d.skipped]

    streams: dict[str, list[tuple[float, int, Any]]] = collections.defaultdict(list)  # key -> (stamp, log, value)
    arm: list[tuple[int, float | None, np.ndarray]] = []  # (receive time, issue stamp if stamped, velocity)
    gripper: list[tuple[int, float]] = []
    statuses: list[tuple[float, int, dict[str, Any]]] = []
    events: list[dict[str, Any]] = []
    requested: dict[float, np.ndarray] = {}  # /gato/action by header stamp: what the operator asked for
    for m in messages:
        try:
            msg = m.decode()
            if m.topic in cam_topics:
                h, w = spec.observation(cam_topics[m.topic]).shape[:2]
                img = wire.decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)
                streams[cam_topics[m.topic]].append((_stamp(msg.header), m.log_time, fit_image(img, h, w)))
            elif m.topic == JOINTS_TOPIC:
                q = wire.joint_vector(msg.name, msg.position, embodiment.arm_joints, "position")
                dq = wire.joint_vector(msg.name, msg.velocity, embodiment.arm_joints, "velocity")
                fq = wire.joint_vector(msg.name, msg.position, embodiment.finger_joints, "position")
                fdq = wire.joint_vector(msg.name, msg.velocity, embodiment.finger_joints, "velocity")
                streams["joints"].append((_stamp(msg.header), m.log_time, (q, dq, fq, fdq)))
            elif m.topic == POSE_TOPIC:
                p, o = msg.pose.position, msg.pose.orientation
                pose = np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w])
                if not np.all(np.isfinite(pose)):
                    raise ValueError("non-finite tool pose")
                streams["pose"].append((_stamp(msg.header), m.log_time, pose))
            elif m.topic == STATUS_TOPIC:
                s = json.loads(msg.data)
                statuses.append((float(s["sim_time"]), m.log_time, s))
            elif m.topic == EVENT_TOPIC:
                e = json.loads(msg.data)
                if e.get("event") not in ("start", "end", "discard") or not isinstance(e.get("episode"), int) \
                        or not math.isfinite(float(e["stamp"])):
                    raise ValueError(f"not an episode event: {msg.data[:80]!r}")
                events.append(e)
            elif m.topic == ACTION_TOPIC:
                a = wire.action_array(msg.encoding, msg.height, msg.width, msg.step, msg.data, spec.action_tokens)
                if np.all(np.isfinite(a)):
                    requested.setdefault(round(_stamp(msg.header), 6), a)  # the first for a stamp, as applied
            elif m.topic == TWIST_TOPIC:
                t = msg.twist
                arm.append((m.log_time, _stamp(msg.header),
                            embodiment.velocity_from_twist((t.linear.x, t.linear.y, t.linear.z),
                                                           (t.angular.x, t.angular.y, t.angular.z))))
            elif m.topic == FORWARD_TOPIC:
                arm.append((m.log_time, None, wire.forward_command_to_velocity(msg.data, embodiment)))
            elif m.topic == GRIPPER_TOPIC:
                gripper.append((m.log_time, float(msg.data)))
        except Exception as e:  # a malformed message is dropped and counted, never fatal
            report.drop(f"undecodable message on {m.topic} ({type(e).__name__})")
    for s in streams.values():
        s.sort(key=lambda x: x[0])
    statuses.sort(key=lambda x: x[0])
    arm.sort(key=lambda x: x[0])
    operator = bool(events) and not statuses
    windows = _operator_windows(events) if operator else []
    gripper.sort(key=lambda x: x[0])

    # -- ticks: reference camera images, decimated to the control rate, with partners within the slop --------
    ref = cameras[0]
    stamps = {k: [x[0] for x in v] for k, v in streams.items()}
    status_stamps = [s[0] for s in statuses]
    ticks: list[_Tick] = []
    last = -np.inf
    for t, log_time, image in streams.get(ref, []):
        report.ticks += 1
        if t - last < 0.9 / spec.control_hz:
            report.drop("camera above the control rate (decimated)")
            continue
        obs = {ref: image}
        latest = log_time
        missing = None
        for key in [*cameras[1:], "joints", "pose"]:
            i = _nearest(stamps.get(key, []), t)
            if i is None or abs(stamps[key][i] - t) > slop_s:
                missing = key
                break
            _, lt, value = streams[key][i]
            latest = max(latest, lt)
            if key == "joints":
                obs["joints"] = value
            else:
                obs[key] = value
        if missing:
            report.drop(f"no {missing} within {slop_s * 1e3:.0f} ms of the camera stamp")
            continue
        status: dict[str, Any] = {"episode": 0, "step": len(ticks), "stacked": False, "success": False, "done": False}
        if operator:
            w = next((w for w in windows if w["start"] <= t <= w["end"]), None)
            if w is None:
                report.drop("outside every operator-labelled episode")
                continue
            status = {"episode": w["episode"], "done": False, "success": w["success"]}
        elif statuses:
            i = _nearest(status_stamps, t)
            if i is None or abs(status_stamps[i] - t) > slop_s:
                report.drop("no episode status for the tick")
                continue
            status = statuses[i][2]
        last = t
        ticks.append(_Tick(t, latest, obs, status))

    # -- actions and episodes ---------------------------------------------------------------------------------
    arm_times = [a[0] for a in arm]
    grip_times = [g[0] for g in gripper]
    by_episode: dict[int, list[tuple[_Tick, np.ndarray, np.ndarray]]] = collections.defaultdict(list)
    from_request: dict[int, int] = {}  # episode -> steps labelled with the operator's /gato/action
    episode_start: dict[int, _Tick] = {}
    for n, tick in enumerate(ticks):
        ep = int(tick.status.get("episode", 0))
        first = episode_start.setdefault(ep, tick)
        if any(lo <= tick.log_time <= hi for lo, hi in gaps):  # kept in `ticks`: its neighbours' windows need it
            report.drop("tick next to skipped log damage (its inputs or commands may be lost)")
            continue
        if tick.status.get("done"):
            report.drop("final observation of an episode (no action follows)")
            by_episode.setdefault(ep, [])
            continue
        nxt = ticks[n + 1] if n + 1 < len(ticks) else None
        cmd = _command_for(arm, arm_times, tick, nxt)
        if cmd is None:
            report.drop("no arm command before the next observation")
            continue
        cmd_time, _, velocity = cmd
        action = np.array([*velocity, _gripper_at(gripper, grip_times, cmd_time, default=-255.0)])
        if operator and requested and round(tick.stamp, 6) not in requested:
            report.drop("no operator action for the observation (/gato/action; it was not acted on)")
            continue
        if operator and round(tick.stamp, 6) in requested:
            # the label is what the operator asked for at this state, before the controller's rate limit: a policy
            # trained on it takes the operator's place upstream of the same filter (the executed command, ramped
            # by the filter, would teach it to ramp its own actions and then be ramped again)
            action = np.clip(requested[round(tick.stamp, 6)], *(np.asarray(b) for b in spec.action_bounds()))
            from_request[ep] = from_request.get(ep, 0) + 1
        prev = [a for a in arm if _before(a, tick) and not _before(a, first)]
        prev_v = prev[-1][2] if prev else np.zeros(4)
        pg = bisect.bisect_left(grip_times, tick.log_time) - 1
        prev_g = gripper[pg][1] if pg >= 0 and grip_times[pg] >= first.log_time else 0.0
        by_episode[ep].append((tick, action, np.array([*prev_v, prev_g])))

    low, high = (np.asarray(b) for b in spec.action_bounds())
    # float64: the tokenizer node's builder, which sees the values as received (stacked as float32 below)
    new_builder = functools.partial(embodiment.observation_builder, [k[len(specs.CAMERA_PREFIX):] for k in cameras],
                                    np.float64)
    episodes = []
    sidecar = bag.read_sidecar(path) if Path(path).is_dir() else {}
    labelled = {w["episode"]: w for w in windows}
    for ep, rows in sorted(by_episode.items()):
        ep_statuses = [s for _, _, s in statuses if int(s.get("episode", 0)) == ep]
        complete = (not statuses) or any(s.get("done") for s in ep_statuses)
        if operator:
            complete = labelled[ep]["success"] is not None
        info = {"episode": ep, "steps": len(rows), "complete": bool(complete), "written": False}
        if not rows:
            info["why"] = "no step with an action"
            report.episodes.append(info)
            continue
        if not complete and not keep_incomplete:
            info["why"] = "incomplete (no done status: damage or the recorder stopped): success unknown"
            report.drop("tick of an incomplete episode", len(rows))
            report.episodes.append(info)
            continue
        rows, built = _observations(rows, gaps, report, new_builder)
        info["steps"] = len(rows)
        if not rows:
            info["why"] = "no step left after log damage"
            report.episodes.append(info)
            continue
        actions = np.stack([a for _, a, _ in rows]).astype(np.float32)
        # against the bounds as float32, as the actions are stored (0.07 in float32 is above 0.07 in float64)
        lo32, hi32 = low.astype(np.float32), high.astype(np.float32)
        outside = int(np.count_nonzero(np.any((actions < lo32) | (actions > hi32), axis=1)))
        obs: dict[str, list[Any]] = collections.defaultdict(list)
        for step in built:
            for k, v in step.items():
                obs[k].append(v)
        observations = {k: np.stack(v).astype(np.uint8 if k in cameras else np.float32) for k, v in obs.items()}
        rewards = np.array([1.0 if t.status.get("stacked") else 0.0 for t, _, _ in rows], np.float32)
        last_status = ep_statuses[-1] if ep_statuses else rows[-1][0].status
        if operator:
            rewards[-1] = float(bool(labelled[ep]["success"]))
        meta = {
            "task": sidecar.get("task", "rgb_stacking"), "triplet": last_status.get("triplet", sidecar.get("triplet")),
            "success": bool(last_status.get("success", False)), "return": float(rewards.sum()),
            "policy": sidecar.get("policy", ""), "seed": sidecar.get("seed"), "episode": ep,
            "source_log": str(path), "start_stamp": rows[0][0].stamp, "end_stamp": rows[-1][0].stamp,
            "complete": bool(complete), "actions_outside_spec": outside,
            "log_damage": len(read.damage),  # damaged places in the log (ticks near them were dropped)
        }
        if operator:  # a robot's episode: the operator's label, no simulator field
            for key in ("triplet", "seed"):
                meta.pop(key)
            meta.update(success=bool(labelled[ep]["success"]), labelled_by="operator",
                        operator_action_steps=from_request.get(ep, 0))  # the rest: the executed arm command
        episode = Episode(spec, observations, {specs.ACTION_KEY: actions}, rewards, meta,
                          {"stamp": np.array([t.stamp for t, _, _ in rows]),
                           "log_time_ns": np.array([t.log_time for t, _, _ in rows], np.int64)})
        episode.validate()
        info.update(written=True, success=meta["success"], **{"return": meta["return"]})
        report.episodes.append(info)
        report.kept += len(rows)
        episodes.append(episode)
    return episodes, report


def _operator_windows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start / end / discard events -> ``{"episode", "start", "end", "success"}`` per started episode: ``end`` is the
    stamp of its end event (success: the label) or of a discard / the next start (success None: not written), or
    infinity when the log stops first (cut off: not written either)."""
    events = sorted(events, key=lambda e: float(e["stamp"]))
    windows: list[dict[str, Any]] = []
    for e in events:
        if windows and windows[-1]["end"] == math.inf:
            if e["event"] == "end" and e["episode"] == windows[-1]["episode"]:
                windows[-1].update(end=float(e["stamp"]), success=bool(e.get("success")))
            elif e["event"] in ("discard", "start"):
                windows[-1]["end"] = float(e["stamp"])
        if e["event"] == "start":
            windows.append({"episode": e["episode"], "start": float(e["stamp"]), "end": math.inf, "success": None})
    # an episode number used again after a discard: the later (labelled) one wins
    latest = {w["episode"]: w for w in windows}
    return [w for w in windows if latest[w["episode"]] is w or w["success"] is not None]


def _observations(rows: list[tuple[_Tick, np.ndarray, np.ndarray]], gaps: list[tuple[float, float]],
                  report: ConvertReport, new_builder: Callable[[], ObservationBuilder]
                  ) -> tuple[list[tuple[_Tick, np.ndarray, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The rows whose observation is exactly what the tokenizer built, with it: one observation builder runs
    through the episode (its grasp flag depends on history; the previous action of each row comes from the log);
    after skipped log damage the grasp state is unknown, so two builders (grasp held, not held) run until they
    agree, and the rows before that are dropped."""
    kept, built = [], []
    builder: ObservationBuilder | None = new_builder()
    hypotheses: list[ObservationBuilder] = []
    previous = -np.inf
    for row in rows:
        tick, _, prev = row
        if any(hi > previous and lo < tick.log_time for lo, hi in gaps):  # damage since the previous row
            builder, hypotheses = None, [new_builder(), new_builder()]
            hypotheses[1].grasp.detected = True
        previous = tick.log_time
        q, dq, fq, fdq = tick.obs["joints"]
        raw = RawObservation(images={k[len(specs.CAMERA_PREFIX):]: v for k, v in tick.obs.items()
                                     if k.startswith(specs.CAMERA_PREFIX)},
                             joint_positions=q, joint_velocities=dq, tool_pose=tick.obs["pose"],
                             finger_positions=fq, finger_velocities=fdq)
        if builder is None:
            for b in hypotheses:
                b.command(prev)
            released, held = (b.build(raw) for b in hypotheses)
            if not np.array_equal(released[specs.GRIPPER_KEY], held[specs.GRIPPER_KEY]):
                report.drop("grasp flag unknown after skipped log damage (depends on lost steps)")
                continue
            builder, obs = hypotheses[0], released  # they agree: the state no longer depends on the lost steps
        else:
            builder.command(prev)
            obs = builder.build(raw)
        kept.append(row)
        built.append(obs)
    return kept, built


def convert_logs(logs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, **kw: Any) -> list[ConvertReport]:
    """Convert each log; write ``<log name>_ep<k>.h5`` and ``<log name>.report.json`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for log in logs:
        episodes, report = log_to_episodes(log, **kw)
        name = Path(log).name.removesuffix(".mcap")
        for e in episodes:
            info = next(i for i in report.episodes if i["episode"] == e.metadata["episode"])
            try:
                info["file"] = str(write_episode(out / f"{name}_ep{e.metadata['episode']:06d}", e))
            except EpisodeError as err:  # e.g. a non-finite value logged by the robot: refused, named, counted
                info.update(written=False, why=str(err))
                report.kept -= len(e)
                report.drop(f"episode refused by the writer ({err})", len(e))
        (out / f"{name}.report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
        reports.append(report)
    return reports


def find_logs(root: str | os.PathLike) -> list[Path]:
    """rosbag2 folders (with .mcap files) under ``root``, or ``root`` itself."""
    root = Path(root)
    if root.is_file() or any(root.glob("*.mcap")):
        return [root]
    return sorted(p.parent for p in root.rglob("*.mcap") if p.parent != root) if root.is_dir() else []


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="gato-log-convert", description="rosbag2/MCAP logs -> HDF5 training episodes")
    ap.add_argument("logs", nargs="+", help="rosbag2 folders, .mcap files, or folders holding them")
    ap.add_argument("--out", required=True, help="output folder for episodes and reports")
    ap.add_argument("--slop", type=float, default=0.025, help="stamp tolerance between inputs (s)")
    ap.add_argument("--keep-incomplete", action="store_true", help="also write episodes without a done status")
    ap.add_argument("--image-size", type=int, default=128, help="camera images of the episodes (square; resized "
                                                                "when the log's differ; default 128)")
    ap.add_argument("--robot", default="panda", help="robot name or file the log was recorded on (default panda)")
    args = ap.parse_args(argv)
    if args.image_size < 16 or args.image_size % 16:
        ap.error(f"argument --image-size: a multiple of 16 (the patch size), got {args.image_size}")
    if not (math.isfinite(args.slop) and args.slop > 0):
        ap.error(f"argument --slop: must be a positive number of seconds, got {args.slop}")
    missing = [root for root in args.logs if not Path(root).exists()]
    if missing:
        return cli_error(f"{missing[0]}: no such file or folder (expected rosbag2 folders or .mcap files)", 2)
    logs = [p for root in args.logs for p in find_logs(root)]
    if not logs:
        return cli_error(f"no rosbag2/MCAP logs (.mcap files) found in {', '.join(args.logs)}", 2)
    try:
        embodiment = load_embodiment(args.robot)
        reports = convert_logs(logs, args.out, slop_s=args.slop, keep_incomplete=args.keep_incomplete,
                               robot=embodiment, spec=embodiment.spec(list(bag.CAMERAS), args.image_size))
    except OSError as e:  # the output folder cannot be written
        return cli_error(str(e), 1)
    for r in reports:
        written = sum(e["written"] for e in r.episodes)
        print(f"{r.log}: {written}/{len(r.episodes)} episodes, {r.kept}/{r.ticks} ticks kept; dropped {r.dropped}")
        for d in r.read.get("damage", []):
            print(f"  damage: {d}")
    return 0


def cli_error(message: str, code: int) -> int:
    """One line on stderr, as argparse reports usage errors; returns the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
