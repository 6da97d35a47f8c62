"""Logged episodes: record (write) and convert throughput, and replay timing accuracy at 1x.

    python benchmarks/logs_throughput.py [--steps 200] [--episodes 2] [--replay-steps 200] [--json outputs/logs.json]

- record: the messages of a simulated-stack episode (2 cameras 128x128 rgb8, joint states, tool pose, the 505 KB
  tokenized observation rows, action tokens, commands, status, /clock: what the recorder logs) written through
  the recorder's writer (CRC-on MCAP, zstd chunks, flushes) in this process: MB/s of CDR payload, episodes/min
  for 400-step (20 s) episodes. The DDS transport to the recorder is measured by ros_latency.py, not here.
- convert: :func:`gato_robot.logs.convert.log_to_episodes` + ``write_episode`` (HDF5, gzip, CRCs): MB/s of log
  file, episodes/min (scaled to 400 steps).
- replay: ``gato-replay`` at 1x as a separate process on a private ROS domain, this process subscribed to every
  topic: publish-time error (actual - scheduled, in the replayer) and receive-time error (arrival here minus
  the log's schedule, offset by the median) p50/p99.

Images are random (incompressible): the worst case for size and the best for zstd's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gato_robot.data.episodes import write_episode
from gato_robot.logs import bag, convert
from gato_robot.logs.synthetic import write_synthetic_log


def percentiles(x: np.ndarray) -> dict[str, float]:
    x = np.abs(np.asarray(x)) * 1e3
    return {"p50_ms": float(np.percentile(x, 50)), "p99_ms": float(np.percentile(x, 99)), "max_ms": float(x.max())}


def bench_record(tmp: Path, steps: int, episodes: int) -> tuple[dict, list[Path]]:
    (src,) = write_synthetic_log(tmp / "src", episodes=1, steps=steps)
    messages, _ = bag.read_log(src)
    payload = sum(len(m.data) for m in messages)
    types = {m.topic: m.msgtype for m in messages}
    t0 = time.perf_counter()
    paths = []
    for e in range(episodes):
        path = tmp / "rec" / f"episode_{e:06d}"
        with bag.BagWriter(path) as w:
            conns = {t: w.add_topic(t, ty) for t, ty in types.items()}
            w.episode = {"episode": e}
            for m in messages:
                w.write(conns[m.topic], m.log_time, m.data)
        paths.append(path)
    dt = time.perf_counter() - t0
    file_mb = sum(f.stat().st_size for p in paths for f in p.glob("*.mcap")) / 1e6
    return {"messages_per_episode": len(messages), "payload_mb": episodes * payload / 1e6, "file_mb": file_mb,
            "seconds": dt, "mb_per_s": episodes * payload / 1e6 / dt,
            "episodes_per_min_400_steps": 60 * episodes * steps / 400 / dt}, paths


def bench_convert(tmp: Path, logs: list[Path], steps: int) -> dict:
    size = sum(f.stat().st_size for p in logs for f in p.glob("*.mcap")) / 1e6
    t0 = time.perf_counter()
    n = 0
    for log in logs:
        episodes, _ = convert.log_to_episodes(log)
        for e in episodes:
            write_episode(tmp / "eps" / f"{log.name}", e)
            n += 1
    dt = time.perf_counter() - t0
    return {"log_mb": size, "episodes": n, "seconds": dt, "mb_per_s": size / dt,
            "episodes_per_min_400_steps": 60 * n * steps / 400 / dt}


def bench_replay(tmp: Path, steps: int) -> dict:
    import rclpy  # noqa: F401 - fail early without ROS

    from gato_robot.ros import common, testing
    from gato_robot.ros.recorder import message_class

    (log,) = write_synthetic_log(tmp / "replay", episodes=1, steps=steps)
    messages, _ = bag.read_log(log)
    domain = testing.domain_for("logs_replay_bench")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    probe = testing.Probe(domain)
    deep = common.QoSProfile(depth=500, reliability=common.ReliabilityPolicy.BEST_EFFORT)
    for topic, msgtype in {m.topic: m.msgtype for m in messages}.items():
        probe.record(topic, message_class(msgtype), deep)
    report = tmp / "replay.json"
    cmd = [sys.executable, "-m", "gato_robot.ros.replayer", str(log), "--rate", "1", "--wait-subscribers", "20",
           "--report", str(report)]
    try:
        subprocess.run(cmd, env=testing.ros_env(domain), check=True, timeout=120 + steps * 0.1,
                       stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        arrivals = {t: [a for a, _ in probe.received(t)] for t in probe.messages}
    finally:
        probe.close()
    stats = json.loads(report.read_text())
    # receive-time error: arrival minus schedule, per topic in order (best effort: compare what arrived by count)
    by_topic: dict[str, list[int]] = {}
    for m in sorted(messages, key=lambda m: m.log_time):
        by_topic.setdefault(m.topic, []).append(m.log_time)
    t0 = min(m.log_time for m in messages)
    errs, received, total = [], 0, len(messages)
    for topic, times in by_topic.items():
        got = arrivals.get(topic, [])
        received += len(got)
        if len(got) == len(times):
            errs += [a - (lt - t0) * 1e-9 for a, lt in zip(got, times)]
    errs = np.asarray(errs)
    errs -= np.median(errs)
    return {"messages": stats["messages"], "received": received, "expected": total,
            "publish_error": {k + "_ms": v for k, v in stats["publish_error_ms"].items()},
            "receive_error": percentiles(errs) if errs.size else None, "duration_s": stats["duration_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--replay-steps", type=int, default=200, help="0 skips the replay benchmark")
    ap.add_argument("--json", default="outputs/logs_throughput.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        record, logs = bench_record(tmp, args.steps, args.episodes)
        print("record:", json.dumps(record))
        conv = bench_convert(tmp, logs, args.steps)
        print("convert:", json.dumps(conv))
        replay = bench_replay(tmp, args.replay_steps) if args.replay_steps else None
        print("replay 1x:", json.dumps(replay))
    result = {"record": record, "convert": conv, "replay_1x": replay, "steps": args.steps,
              "load_1min": os.getloadavg()[0], "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
