"""``gato-record-demos``: record operator-labelled demonstrations in simulation, through ROS only, unattended.

The simulator stands in for a robot without an episode status (``demos`` in :func:`gato_robot.ros.stack.node_plan`:
the sim node as a robot, the controller, the recorder in operator mode) and the scripted operator
(:mod:`gato_robot.ros.scripted_operator`) stands in for the person: it resets the scene, starts each episode on the
recorder, drives the arm through /gato/action and the controller, and ends the episode with its own label. The
bags convert with ``gato-log-convert`` like a real robot's. Stops the stack when the operator is done.

    gato-record-demos --out runs/demos/logs --episodes 50 --triplet rgb_test_triplet2 --image-size 64
    gato-log-convert runs/demos/logs --out runs/demos/episodes --image-size 64
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from gato_robot.ros.launcher import POLL_S, Stack, _log
from gato_robot.ros.stack import node_plan, ros_arguments


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gato-record-demos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the episode bags (one per labelled episode)")
    ap.add_argument("--episodes", type=int, default=10, help="episodes to record (default 10)")
    ap.add_argument("--triplet", default="rgb_test_triplet1", help="RGB-objects triplet (default rgb_test_triplet1)")
    ap.add_argument("--seed", type=int, default=300_000, help="scene seed of the first episode; the k-th uses seed + k "
                                                              "(default 300000: outside the evaluation ranges)")
    ap.add_argument("--robot", default="", help="robot name or file (default: the parameter file's, panda)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="rendered camera image size (default: the parameter file's, 128); a policy's own size "
                         "(the shipped model's is 64) keeps the demonstrations as it sees the scene")
    ap.add_argument("--max-steps", type=int, default=400, help="the operator gives up after this many steps")
    ap.add_argument("--teacher", choices=("feedback", "scripted"), default="feedback",
                    help="the operator's expert: feedback (default; a function of what it sees, the shipped model's "
                         "teacher) or scripted (a state machine: its hidden phase makes its labels ambiguous for a "
                         "Markov policy; docs/logs.md)")
    ap.add_argument("--grace", type=float, default=5.0, help="seconds between SIGINT, SIGTERM and SIGKILL")
    args = ap.parse_args(argv)
    if args.episodes < 1 or args.max_steps < 1:
        ap.error("--episodes and --max-steps must be positive")
    out = Path(args.out).expanduser()
    try:
        plan = node_plan(sim=True, demos=True, record=str(out), robot=args.robot)
    except ValueError as e:
        _log(f"error: {e}")
        return 2
    # the sim's settings in its own section of a copy of the parameter file (a node's section wins over -p
    # overrides); its own episode length above the operator's: the operator ends every episode
    out.mkdir(parents=True, exist_ok=True)
    params_file = out / "demos_params.yaml"
    data = yaml.safe_load(plan[0][1].read_text())
    data.setdefault("gato_sim", {}).setdefault("ros__parameters", {}).update(
        triplet=args.triplet, seed=args.seed, episode_steps=args.max_steps + 100)
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    commands = []
    for node, _, overrides in plan:
        if node.name == "gato_sim" and args.image_size is not None:
            overrides["image_size"] = args.image_size
        params = params_file
        commands.append((node.name, [sys.executable, "-m", node.module, *ros_arguments(node, params, overrides)]))
    operator = ["--episodes", str(args.episodes), "--ros-args", "-p", f"max_steps:={args.max_steps}",
                "-p", f"teacher:={args.teacher}"]
    if args.robot:
        operator += ["-p", f"robot:={args.robot}"]
    commands.append(("gato_scripted_operator", [sys.executable, "-m", "gato_robot.ros.scripted_operator", *operator]))
    stack = Stack(commands, args.grace, [node.name for node, _, _ in plan if node.required])
    signal.signal(signal.SIGINT, stack.request_stop)
    signal.signal(signal.SIGTERM, stack.request_stop)
    start = time.monotonic()
    try:
        stack.start()
        op = stack.procs["gato_scripted_operator"]
        while not stack.stopping and op.poll() is None:
            dead = [n for n, p in stack.procs.items() if p.poll() is not None]
            if dead:
                _log(f"{dead} exited before the operator was done: stopping")
                break
            time.sleep(POLL_S)
        code = op.poll()
        _log(f"operator finished with {code} after {time.monotonic() - start:.0f} s; stopping the stack")
        stopped = stack.stop()
        return 0 if code == 0 and stopped == 0 else 1
    finally:
        if any(p.poll() is None for p in stack.procs.values()):
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
