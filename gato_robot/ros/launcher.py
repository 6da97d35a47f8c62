"""``gato-stack``: start the stack's nodes as separate processes, as ``ros2 launch gato_robot stack.launch.py``
would, on machines without ``ros2 launch`` (pip-installed ROS wheels). Same node list and parameter file
(:func:`gato_robot.ros.stack.node_plan`).

Ctrl-C / SIGTERM: every node gets SIGINT (a clean rclpy shutdown), then SIGTERM after ``--grace`` seconds,
then SIGKILL; every child is reaped before the launcher exits. A node that exits on its own is reported and the
others keep running (a dead policy must leave the controller's watchdog running), as ``ros2 launch`` does, except
a required node (the controller): when it exits, for any reason, the launcher stops the whole stack.
Each node asks the kernel to stop it when its parent dies (``common.die_with_parent``): a SIGKILLed launcher leaves
no node running. Exit status: 0 after a requested shutdown in which every node ended cleanly, else 1; 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gato_robot.core.manifest import MANIFEST
from gato_robot.ros.stack import (
    COMMAND_INTERFACES,
    LAUNCH_ARGUMENTS,
    REQUIRED_EXIT_GRACE_S,
    node_plan,
    ros_arguments,
)

POLL_S = 0.1


def _log(text: str) -> None:
    print(f"[gato-stack] {text}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gato-stack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", action="store_true", help=LAUNCH_ARGUMENTS["sim"][1])
    ap.add_argument("--params-file", default="", help=LAUNCH_ARGUMENTS["params_file"][1])
    ap.add_argument("--model", default="", help=LAUNCH_ARGUMENTS["model"][1])
    ap.add_argument("--robot", default="", help=LAUNCH_ARGUMENTS["robot"][1])
    ap.add_argument("--camera-topics", default="", help=LAUNCH_ARGUMENTS["camera_topics"][1])
    ap.add_argument("--command-interface", default="", choices=("", *COMMAND_INTERFACES),
                    help=LAUNCH_ARGUMENTS["command_interface"][1])
    ap.add_argument("--record", default="", metavar="DIR", help=LAUNCH_ARGUMENTS["record"][1])
    ap.add_argument("--demos", action="store_true", help=LAUNCH_ARGUMENTS["demos"][1])
    ap.add_argument("--temperature", default="", help=LAUNCH_ARGUMENTS["temperature"][1])
    ap.add_argument("--trusted-key", default="", metavar="PUBLIC_KEY_PEM", help=LAUNCH_ARGUMENTS["trusted_key"][1])
    ap.add_argument("--grace", type=float, default=5.0, help="seconds between SIGINT, SIGTERM and SIGKILL")
    ap.add_argument("--dry-run", action="store_true", help="print the node command lines and exit")
    return ap.parse_args(argv)


class Stack:
    def __init__(self, commands: list[tuple[str, list[str]]], grace: float, required: Sequence[str] = ()) -> None:
        self.commands, self.grace, self.required = commands, grace, set(required)
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def start(self) -> None:
        for name, cmd in self.commands:
            # own session: a terminal's Ctrl-C reaches only the launcher, which then stops the nodes in order
            self.procs[name] = subprocess.Popen(cmd, start_new_session=True)
            _log(f"started {name} (pid {self.procs[name].pid})")

    def request_stop(self, signum: int, frame: object) -> None:
        if not self.stopping:
            _log(f"{signal.Signals(signum).name}: stopping the nodes")
        self.stopping = True

    def run(self) -> int:
        reported: set[str] = set()
        while not self.stopping:
            for name, p in self.procs.items():
                if name not in reported and p.poll() is not None:
                    reported.add(name)
                    if name in self.required:
                        _log(f"{name} (pid {p.pid}) exited with {p.returncode}: stopping the stack without it")
                        time.sleep(REQUIRED_EXIT_GRACE_S)
                        self.stop()
                        return 1
                    _log(f"{name} (pid {p.pid}) exited with {p.returncode}; the other nodes keep running")
            if len(reported) == len(self.procs):
                _log("every node has exited")
                return 1
            time.sleep(POLL_S)
        return self.stop()

    def stop(self) -> int:
        clean = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = [(n, p) for n, p in self.procs.items() if p.poll() is None]
            if not alive:
                break
            if sig is not signal.SIGINT:
                clean = False
                _log(f"{[n for n, _ in alive]} still running: sending {sig.name}")
            for _, p in alive:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline and any(p.poll() is None for _, p in alive):
                time.sleep(POLL_S)
        for name, p in self.procs.items():
            code = p.wait()  # reap every child
            if code not in (0, -signal.SIGINT):
                clean = False
            _log(f"{name} (pid {p.pid}) ended with {code}")
        return 0 if clean else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = node_plan(sim=args.sim, params_file=args.params_file, model=args.model,
                         camera_topics=args.camera_topics, command_interface=args.command_interface,
                         record=args.record, temperature=args.temperature, trusted_key=args.trusted_key,
                         robot=args.robot, demos=args.demos)
    except ValueError as e:
        _log(f"error: {e}")
        return 2
    model = Path(args.model).expanduser() if args.model else None
    if model is not None and not args.dry_run and not (model / MANIFEST).is_file():
        _log(f"error: --model {args.model}: " + ("no such folder" if not model.is_dir() else
                                                 f"not an exported policy (no {MANIFEST}; gato-export-onnx writes one)"))
        return 2
    if args.trusted_key and not args.dry_run and not Path(args.trusted_key).expanduser().is_file():
        _log(f"error: --trusted-key {args.trusted_key}: no such file (a PEM public key)")
        return 2
    commands = [(node.name, [sys.executable, "-m", node.module, *ros_arguments(node, params, overrides)])
                for node, params, overrides in plan]
    if args.dry_run:
        for name, cmd in commands:
            print(f"{name}: {subprocess.list2cmdline(cmd)}")
        return 0
    stack = Stack(commands, args.grace, [node.name for node, _, _ in plan if node.required])
    signal.signal(signal.SIGINT, stack.request_stop)
    signal.signal(signal.SIGTERM, stack.request_stop)
    try:
        stack.start()
        return stack.run()
    finally:
        if any(p.poll() is None for p in stack.procs.values()):
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
