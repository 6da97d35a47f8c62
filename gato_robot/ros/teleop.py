"""Teleoperation node (``gato-teleop``): keyboard, gamepad or a policy with an operator override -> /gato/action.

Sources (parameter ``source``):

- ``keyboard``: keys read from this process's terminal (cbreak mode, restored on every exit; see
  :class:`Terminal`), one status line; a refusal (exit 2) when stdin is not a terminal.
- ``joy``: sensor_msgs/Joy on ``joy_topic`` (``/joy``, from ``joy_linux``'s or ``joy``'s joy_node), with a deadman
  button; a gamepad whose messages stop for ``joy_timeout_s`` commands zero.
- ``policy``: the policy node's action tokens, remapped away from the controller (``ros2 run ... gato_policy_node
  --ros-args -r /gato/action_tokens:=/gato/policy/action_tokens``), detokenized and relayed with their stamp;
  ``override`` (``keyboard`` | ``joy`` | ``none``) lets an operator replace the policy's action while
  intervening (DAgger-style corrections).

Outputs: /gato/action (sensor_msgs/Image 32FC1, 1 x A, reliable; the controller safety-filters it exactly as the
policy's tokens: this node never publishes an arm command) and /gato/teleop/intervention (std_msgs/Bool, one per
action, published right after it: true when the operator's action is the action; always true for keyboard and
joy), so a recorded log carries the DAgger labels.

Pacing: keyboard and joy publish one action per new /joint_states message (its stamp: the controller judges the
action's age against the robot state it answers; in a lockstep simulation one per step), at most ``rate_hz``
(default the robot file's control rate, so a 500 Hz joint state stream does not multiply the controller's
per-command rate limit); policy publishes one per policy action. ``follow_episodes``: publish only between a
``start`` and the next ``end`` / ``discard`` on /gato/episode_event (the recorder's operator mode), so nothing
moves the arm between recorded episodes.

All decisions are ``gato_robot.core.teleop``'s; this node only moves messages and reads the terminal.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState, Joy
from std_msgs.msg import Bool, String

from gato_robot import wire
from gato_robot.core import specs
from gato_robot.core.teleop import (
    KEY_HELP,
    QUIT_KEYS,
    ActionLayout,
    Arbiter,
    JoyConfig,
    JoyTeleop,
    KeyboardConfig,
    KeyboardTeleop,
    parse_keys,
)
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.robots import load_embodiment
from gato_robot.ros import common
from gato_robot.ros.stack import parameter_args
from gato_robot.ros.terminal import Terminal

INTERVENTION_TOPIC = "/gato/teleop/intervention"
POLICY_ACTION_TOKENS_TOPIC = "/gato/policy/action_tokens"  # the policy node's /gato/action_tokens, remapped
SOURCES = ("keyboard", "joy", "policy")
OVERRIDES = ("none", "keyboard", "joy")
KEY_POLL_S = 0.02  # s: how often the terminal is read (a key's latency)
STATUS_PERIOD_S = 0.2  # s: the status line's refresh


class TeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("gato_teleop")
        self.terminal: Terminal | None = None
        d = lambda *a: common.declare(self, *a)  # noqa: E731
        self.source = d("source", "keyboard", "keyboard | joy | policy")
        override = d("override", "none", "policy source: the operator who may take over (none | keyboard | joy)")
        robot = d("robot", "panda", "robot name (config/robots/<name>.yaml) or robot file path: action layout, bounds")
        cameras = d("cameras", list(specs.RGB_STACKING_CAMERAS[:2]), "spec camera names (selects the spec)")
        image_size = d("image_size", 128, "spec image size (pixels, square)")
        linear_speed = d("linear_speed", 0.05, "operator tool speed per key / at full stick (m/s)")
        yaw_speed = d("yaw_speed", 0.5, "operator yaw rate per key / at full stick (rad/s)")
        hold_s = d("hold_s", 0.25, "keyboard: a key repeat holds its velocity this long (s)")
        first_hold_s = d("first_hold_s", 0.5, "keyboard: a first key press holds this long (s)")
        joy_topic = d("joy_topic", "/joy", "sensor_msgs/Joy topic")
        joy_axes = d("joy_axes", [1, 0, 4, 3], "Joy axis index for x, y, z, yaw (-1: none)")
        joy_signs = d("joy_axis_signs", [1.0, 1.0, 1.0, 1.0], "sign (and scale) per joy axis")
        deadzone = d("joy_deadzone", 0.1, "joy axis deadzone (0..1)")
        deadman = d("deadman_button", 4, "Joy button that must be held for any motion (LB / L1)")
        gripper_button = d("gripper_button", 0, "Joy button that toggles the gripper (A / cross; -1: none)")
        joy_timeout = d("joy_timeout_s", 0.5, "no Joy message for this long: zero velocity (s)")
        policy_topic = d("policy_topic", POLICY_ACTION_TOKENS_TOPIC, "policy source: action tokens topic")
        state_topic = d("state_topic", common.JOINT_STATES_TOPIC, "robot state: one action per new message")
        self.follow = d("follow_episodes", False, "publish only between an episode start and its end / discard")
        event_topic = d("episode_event_topic", common.EPISODE_EVENT_TOPIC, "the recorder's episode events")
        rate_hz = d(
            "rate_hz",
            -1.0,
            "at most this many actions per second of state stamps (0: every state "
            "message; < 0: the robot file's control_hz)",
        )
        self.show_status = d("status_line", True, "keyboard: show the status line on the terminal")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if override not in OVERRIDES:
            raise ValueError(f"override must be one of {OVERRIDES}, got {override!r}")
        if self.source != "policy" and override != "none":
            raise ValueError(f"override is for the policy source; source {self.source!r} is the operator itself")

        embodiment = load_embodiment(robot)
        self.spec = embodiment.spec(cameras, image_size)
        self.layout = ActionLayout.from_embodiment(embodiment)
        if self.spec.action_tokens != self.layout.size:
            raise ValueError(
                f"spec {self.spec.name} has {self.spec.action_tokens} action values, the robot file {self.layout.size}"
            )
        self.width = self.layout.size
        self.period = 0.0 if rate_hz == 0 else 1.0 / (embodiment.control_hz if rate_hz < 0 else rate_hz)
        operator_kind = override if self.source == "policy" else self.source
        self.keyboard: KeyboardTeleop | None = None
        self.joy: JoyTeleop | None = None
        if operator_kind == "keyboard":
            self.keyboard = KeyboardTeleop(
                self.layout,
                KeyboardConfig(
                    linear_speed=linear_speed, yaw_speed=yaw_speed, hold_s=hold_s, first_hold_s=first_hold_s
                ),
            )
            self.operator = self.keyboard
        elif operator_kind == "joy":
            self.joy = JoyTeleop(
                self.layout,
                JoyConfig(
                    axes=tuple(joy_axes),
                    signs=tuple(joy_signs),
                    deadzone=deadzone,
                    deadman_button=deadman,
                    gripper_button=gripper_button,
                    linear_speed=linear_speed,
                    yaw_speed=yaw_speed,
                    timeout_s=joy_timeout,
                ),
            )
            self.operator = self.joy
        else:
            self.operator = None
        self.arbiter = Arbiter(self.layout, self.operator or _NoOperator()) if self.source == "policy" else None

        self.engaged = not self.follow
        self.published = 0
        self.interventions = 0
        self.last_stamp: float | None = None
        self.last_action = np.zeros(self.width, np.float32)
        self.reject_log = common.RejectLog(self)
        self.action_pub = self.create_publisher(Image, common.ACTION_TOPIC, common.COMMAND_QOS)
        self.flag_pub = self.create_publisher(Bool, INTERVENTION_TOPIC, common.COMMAND_QOS)
        if self.source == "policy":
            self.tokenizer = Tokenizer(self.spec)
            self.create_subscription(Image, policy_topic, self.on_policy_tokens, common.PIPELINE_QOS)
        else:
            self.create_subscription(JointState, state_topic, self.on_state, common.SENSOR_QOS)
        if self.joy is not None:
            self.create_subscription(Joy, joy_topic, self.on_joy, common.SENSOR_QOS)
        if self.follow:
            self.create_subscription(String, event_topic, self.on_episode_event, common.COMMAND_QOS)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.keyboard is not None:
            self.terminal = Terminal(sys.stdin.fileno(), not_a_tty=(
                "keyboard source: stdin is not a terminal; run gato-teleop in a terminal (under ros2 launch: "
                "prefix='xterm -e'), or use --source joy"))  # last: nothing after it can fail and leave it raw
            self.create_timer(KEY_POLL_S, self.on_keys, clock=steady)
            self.status_due = 0.0
        paced = policy_topic if self.source == "policy" else state_topic
        self.get_logger().info(
            f"source {self.source}{f' (override: {override})' if self.source == 'policy' else ''}: one action per "
            f"{paced} message -> {common.ACTION_TOPIC}, flags -> {INTERVENTION_TOPIC}; action bounds "
            f"{list(self.layout.low)}..{list(self.layout.high)}; "
            f"{'engaged between episode start and end (' + event_topic + ')' if self.follow else 'engaged'}"
            + (f"; keys: {KEY_HELP}" if self.keyboard is not None else "")
            + (f"; joy {joy_topic}: hold button {deadman} to move" if self.joy is not None else "")
        )

    # -- inputs ------------------------------------------------------------------------------------------
    def on_keys(self) -> None:
        assert self.terminal is not None and self.keyboard is not None
        data = self.terminal.read()
        now = time.monotonic()
        if data is None:  # the terminal is gone: nobody can steer or stop from it
            self.keyboard.stop()
            if not common.STOP.requested:
                self.get_logger().warning("the terminal closed: stopping")
                common.STOP(signal.SIGHUP, None)
            return
        for key in parse_keys(data):
            if key in QUIT_KEYS:
                common.STOP(signal.SIGINT, None)
                return
            self.keyboard.press(key, now)
        if self.show_status and now >= self.status_due:
            self.status_due = now + STATUS_PERIOD_S
            self.terminal.status(self.status_text(now))

    def status_text(self, now: float) -> str:
        assert self.keyboard is not None
        v = self.keyboard.velocity(now)
        vel = " ".join(
            f"{k.split('_')[-1] if k != 'angular_z' else 'yaw'} {v.get(k, 0.0):+.3f}"
            for k in ("linear_x", "linear_y", "linear_z", "angular_z")
        )
        return (
            f"[gato-teleop] {vel} | gripper {'CLOSED' if self.keyboard.gripper_closed else 'open'} | "
            f"speed x{self.keyboard.scale:.2f} | {'ENGAGED' if self.engaged else 'idle (waiting for start)'} | "
            f"interventions {self.interventions}/{self.published} | x/Esc stop, Ctrl-C quit"
        )

    def on_joy(self, msg: Joy) -> None:
        assert self.joy is not None
        self.joy.update(msg.axes, msg.buttons, time.monotonic())

    def on_episode_event(self, msg: String) -> None:
        try:
            event = json.loads(msg.data)
            kind = event["event"]
        except (ValueError, KeyError, TypeError):
            self.reject_log("an episode event", f"unreadable {str(msg.data)[:80]!r}")
            return
        if kind == "start":
            self.engaged = True
        elif kind in ("end", "discard"):
            self.engaged = False
        else:
            self.reject_log("an episode event", f"unknown event {kind!r}")
            return
        for op in (self.keyboard, self.joy):  # each episode starts at rest, gripper open, nothing held
            if op is not None:
                op.reset()
        self.get_logger().info(
            f"episode {event.get('episode')} {kind}: {'engaged' if self.engaged else 'idle until the next start'}"
        )

    # -- outputs -----------------------------------------------------------------------------------------
    def on_state(self, msg: JointState) -> None:
        stamp = common.stamp_to_sec(msg.header.stamp)
        if self.last_stamp is not None and 0.0 <= stamp - self.last_stamp < 0.9 * self.period:
            return  # faster than rate_hz (0.9: stamps jitter); a stamp going back is a clock reset: publish
        if not self.engaged or common.STOP.requested:
            return
        self.last_stamp = stamp
        assert self.operator is not None
        self.publish(self.operator.action(time.monotonic()), True, msg.header.stamp)

    def on_policy_tokens(self, msg: Image) -> None:
        assert self.arbiter is not None
        try:
            ids = wire.action_tokens_array(msg.encoding, msg.height, msg.width, msg.step, msg.data, self.width)
            action = self.tokenizer.detokenize_action(ids)
        except ValueError as e:
            self.reject_log("policy action tokens", e, verb="dropped")
            return
        if not self.engaged or common.STOP.requested:
            return
        decision = self.arbiter.step(action, time.monotonic())
        self.publish(decision.action, decision.intervention, msg.header.stamp)

    def publish(self, action: np.ndarray, intervention: bool, stamp: object) -> None:
        self.action_pub.publish(
            common.array_image(np.asarray(action, np.float32).reshape(1, self.width), wire.ACTION_ENCODING, stamp)
        )
        self.flag_pub.publish(Bool(data=bool(intervention)))  # right after its action, as the scripted operator
        self.published += 1
        self.interventions += int(intervention)
        self.last_action = action

    def on_exit(self) -> None:
        """Restore the terminal first (the log line below must land on a sane terminal). No last action: the
        controller's watchdog stops the arm when actions stop, as it does for a policy."""
        if self.terminal is not None:
            self.terminal.restore()
        self.get_logger().info(f"published {self.published} actions, {self.interventions} by the operator")

    def destroy_node(self) -> None:
        if self.terminal is not None:
            self.terminal.restore()
        super().destroy_node()


class _NoOperator:
    """``override: none``: the policy's actions are relayed as they are (intervention always false)."""

    gripper_closed = False

    def intervening(self, now: float) -> bool:
        return False

    def action(self, now: float) -> np.ndarray:
        raise AssertionError("never intervenes")


def main(argv: Sequence[str] | None = None) -> int:
    """``gato-teleop [--source keyboard|joy|policy] [--override none|keyboard|joy] [--follow-episodes]`` and any
    ``--ros-args``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args") :] if "--ros-args" in argv else []
    ap = argparse.ArgumentParser(prog="gato-teleop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", choices=SOURCES, help="parameter source (default keyboard)")
    ap.add_argument("--override", choices=OVERRIDES, help="policy source: who may take over (parameter override)")
    ap.add_argument("--follow-episodes", action="store_true", help="move only during recorded episodes")
    ap.add_argument("--robot", help="robot name or robot file (parameter robot)")
    ap.add_argument("--linear-speed", type=float, help="m/s (parameter linear_speed)")
    ap.add_argument("--yaw-speed", type=float, help="rad/s (parameter yaw_speed)")
    ap.add_argument("--use-sim-time", action="store_true")
    args = ap.parse_args(argv[: len(argv) - len(ros_args)])
    params = parameter_args({
        "source": args.source, "override": args.override, "robot": args.robot,
        "linear_speed": args.linear_speed, "yaw_speed": args.yaw_speed,
        "follow_episodes": True if args.follow_episodes else None,
        "use_sim_time": True if args.use_sim_time else None})
    return common.run(TeleopNode, ["gato-teleop", *(ros_args or ["--ros-args"]), *params])


if __name__ == "__main__":
    sys.exit(main())
