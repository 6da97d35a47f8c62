"""Controller node: action tokens -> safe arm and gripper commands, with a watchdog and hold / e-stop.

Inputs: /gato/action_tokens (32SC1 1 x A, from the policy node) and /gato/action (32FC1 1 x A, a continuous
action in physical units, for policies or tools that produce actions directly), both reliable;
/gato/episode_status (a new episode: the arm was reset at rest, the rate limit ramps from zero); /gato/hold
(std_msgs/Bool, true = hold) and the services /gato/controller/hold and /gato/controller/rearm (std_srvs/Trigger).

Outputs (reliable): the arm command, by ``command_interface``: geometry_msgs/TwistStamped on
/servo_node/delta_twist_cmds (MoveIt Servo's input; stamp = when issued) or std_msgs/Float64MultiArray on
/forward_velocity_controller/commands (``[vx, vy, vz, wx, wy, wz]``); std_msgs/Float64 on /gripper/command
(> 0 closes, in [-255, 255]); /diagnostics (armed/held, watchdog trips, dropped actions by reason).

All decisions are :class:`gato_robot.core.safety.SafetyFilter`'s; this node only moves messages. The watchdog
ticks on a steady (wall) timer every control cycle and measures ages on the node clock (sim time in simulation),
so a frozen simulation does not trip it and a dead policy on a robot does. The policy's first action gets one
watchdog period from the first tick, as every later one does (in simulation, from the first /clock message): a
lockstep simulation steps on every arm command, so a stop sent before the policy could answer would move the
episode on without it.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import Trigger

from gato_robot import wire
from gato_robot.core import specs
from gato_robot.core.safety import (
    CONTROLLER_LIMITS,
    MAX_FUTURE_S,
    Command,
    Reason,
    SafetyFilter,
    State,
    controller_limits,
)
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.robots import load_embodiment
from gato_robot.ros import common
from gato_robot.ros.guard import GuardProcess

VELOCITY_DIMS = 4  # vx, vy, vz, yaw rate; then the gripper
LOGGED_DROPS = (Reason.NON_FINITE, Reason.BAD_SHAPE, Reason.TOO_OLD, Reason.FUTURE, Reason.OUT_OF_ORDER)
STAMP_DROPS = (Reason.TOO_OLD, Reason.FUTURE, Reason.OUT_OF_ORDER)


class ControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("gato_controller")
        d = lambda *a: common.declare(self, *a)  # noqa: E731
        cameras = d("cameras", list(specs.RGB_STACKING_CAMERAS[:2]), "spec camera names (selects the spec)")
        image_size = d("image_size", 128, "spec image size (pixels, square)")
        self.interface = d("command_interface", "twist", "arm command: twist (TwistStamped) | forward_command")
        twist_topic = d("twist_topic", common.TWIST_TOPIC, "TwistStamped arm command topic")
        forward_topic = d("forward_topic", common.FORWARD_TOPIC, "Float64MultiArray arm command topic")
        gripper_topic = d("gripper_topic", common.GRIPPER_TOPIC, "std_msgs/Float64 gripper command topic")
        robot = d("robot", "panda", "robot name (config/robots/<name>.yaml) or robot file path: its action bounds "
                                    "and command mapping (the spec) and its base link")
        self.frame = d("command_frame", "", "frame_id of twist commands (empty: the robot file's base link)")
        self.embodiment = load_embodiment(robot)
        if not self.frame:
            self.frame = self.embodiment.base_link
        control_hz = float(d("control_hz", 20.0, "watchdog / hold heartbeat rate (Hz)"))
        lim = CONTROLLER_LIMITS  # the defaults
        limit_params = {
            "max_linear_velocity": d("max_linear_velocity", lim["max_linear_velocity"], "|vx|, |vy|, |vz| limit (m/s)"),
            "max_yaw_rate": d("max_yaw_rate", lim["max_yaw_rate"], "|yaw rate| limit (rad/s)"),
            "max_gripper": d("max_gripper", lim["max_gripper"], "|gripper command| limit (> 0 closes)"),
            "max_linear_step": d("max_linear_step", lim["max_linear_step"],
                                 "largest change of vx, vy, vz per command (m/s)"),
            "max_yaw_step": d("max_yaw_step", lim["max_yaw_step"], "largest change of the yaw rate per command (rad/s)"),
            "max_gripper_step": d("max_gripper_step", lim["max_gripper_step"],
                                  "largest change of the gripper command per command"),
        }
        watchdog = float(d("watchdog_period_s", 0.1, "stop when no fresh action arrived within this (s)"))
        max_age = float(d("max_action_age_s", 0.25, "drop actions whose source stamp is older than this (s)"))
        max_future = float(d("max_future_s", MAX_FUTURE_S, "drop actions stamped further ahead of the clock (s)"))
        self.stop_ack_timeout = float(d("stop_ack_timeout_s", 0.5, "on shutdown: wait this long for the last zero "
                                        "command to be acknowledged by the arm's subscribers (s)"))
        guard = bool(d("guard", True, "start the dead man's switch (gato_robot.ros.guard): a process that commands "
                                      "zero velocity when this one dies without stopping the arm (SIGKILL, abort)"))
        armed = bool(d("start_armed", False, "start armed (true) or held until /gato/controller/rearm (false)"))
        if self.interface not in ("twist", "forward_command"):
            raise ValueError(f"command_interface must be twist or forward_command, got {self.interface!r}")

        # The robot's own spec: its action bounds decode the tokens and bound the limits (a robot file slower than
        # the Panda's is held to its own bounds, not the Panda's), and its command mapping splits each action.
        self.spec = self.embodiment.spec(cameras, image_size)
        self.tokenizer = Tokenizer(self.spec)
        limits = controller_limits(*self.spec.action_bounds(), limit_params)
        self.filter = SafetyFilter(limits, watchdog_period=watchdog, max_action_age=max_age, armed=armed,
                                   max_future=max_future)
        self.width = self.spec.action_tokens
        self.commands = 0
        self.reject_log = common.RejectLog(self)
        self.filter_log = common.RejectLog(self)  # the filter counts its own drops (diagnostics: dropped)
        self.invalid = self.reject_log.counts  # what -> invalid messages dropped, for diagnostics
        self.last_gripper: float | None = None
        self.sim_time = bool(self.get_parameter("use_sim_time").value)
        self.sim_floor = 0.0  # simulation: the newest action source stamp (a lower bound on sim time)
        self.last_clock = 0.0  # the clock's newest reading (a smaller one is a clock reset)

        if self.interface == "twist":
            self.arm_pub = self.create_publisher(TwistStamped, twist_topic, common.COMMAND_QOS)
        else:
            self.arm_pub = self.create_publisher(Float64MultiArray, forward_topic, common.COMMAND_QOS)
        self.gripper_pub = self.create_publisher(Float64, gripper_topic, common.COMMAND_QOS)
        self.diag = self.create_publisher(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
        self.create_subscription(Image, common.ACTION_TOKENS_TOPIC, self.on_action_tokens, common.PIPELINE_QOS)
        self.create_subscription(Image, common.ACTION_TOPIC, self.on_action, common.COMMAND_QOS)
        self.create_subscription(Bool, common.HOLD_TOPIC, self.on_hold_topic, common.COMMAND_QOS)
        self.create_subscription(String, common.EPISODE_STATUS_TOPIC, self.on_episode_status, common.COMMAND_QOS)
        self.episodes = common.EpisodeWatch(self)
        self.create_service(Trigger, common.HOLD_SERVICE, self.on_hold_service)
        self.create_service(Trigger, common.REARM_SERVICE, self.on_rearm_service)
        self.reset_client = self.create_client(Trigger, common.POLICY_RESET_SERVICE)
        self.create_timer(1.0 / control_hz, self.on_cycle, clock=Clock(clock_type=ClockType.STEADY_TIME))
        arm_topic = twist_topic if self.interface == "twist" else forward_topic
        self.guard = GuardProcess(self.interface, arm_topic, self.frame, [
            "-p", f"use_sim_time:={'true' if self.sim_time else 'false'}"], os.getpid()) if guard else None
        self.guard_covered = False  # an action went out under the guard's cover once
        self.create_timer(1.0, self.publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"{self.interface} -> {twist_topic if self.interface == 'twist' else forward_topic}, gripper -> "
            f"{gripper_topic}; limits low {limits.low} high {limits.high}, step {limits.max_step}; watchdog "
            f"{watchdog} s; {'ARMED' if armed else 'HELD until ' + common.REARM_SERVICE}")

    # -- time --------------------------------------------------------------------------------------------
    def now(self, source_stamp: float | None = None) -> float:
        """The node clock. In simulation it is never behind a stamp an action was computed from: observations
        carry sim time, so a clock behind one has missed /clock messages (under load, or while discovery is still
        matching /clock at the first episode), and reading it would stamp commands in the past and trip the
        watchdog as soon as /clock arrives. On a robot (wall or PTP time) the clock is read as it is."""
        now = common.now_sec(self)
        if now < self.last_clock:  # a /clock reset (or a stepped system clock): the floor was the old timeline's
            self.get_logger().warning(f"clock went back by {self.last_clock - now:.3f} s: stamps of the old timeline "
                                      f"forgotten, zero velocity until a fresh action")
            self.sim_floor = 0.0
        self.last_clock = now
        if not self.sim_time:
            return now
        if source_stamp is not None and np.isfinite(source_stamp):
            self.sim_floor = max(self.sim_floor, source_stamp)
        return max(now, self.sim_floor)

    # -- actions -----------------------------------------------------------------------------------------
    def _invalid(self, what: str, error: Exception) -> None:
        self.reject_log(what, error, verb="dropped")

    def on_action_tokens(self, msg: Image) -> None:
        try:
            ids = wire.action_tokens_array(msg.encoding, msg.height, msg.width, msg.step, msg.data, self.width)
            action = self.tokenizer.detokenize_action(ids)
        except ValueError as e:
            self._invalid("action tokens", e)
            return
        self.apply(action, msg)

    def on_action(self, msg: Image) -> None:
        try:
            action = wire.action_array(msg.encoding, msg.height, msg.width, msg.step, msg.data, self.width)
        except ValueError as e:
            self._invalid("action", e)
            return
        self.apply(action, msg)

    def apply(self, action: np.ndarray, msg: Image) -> None:
        if common.STOP.requested:  # stopping: the last command this node sends is on_exit's zero
            return
        stamp = common.stamp_to_sec(msg.header.stamp)
        now = self.now()
        if self.sim_time and (now == 0.0 or 0.0 <= stamp - now <= self.filter.max_future):
            now = self.now(stamp)  # a sim clock behind a plausible stamp has missed /clock messages (see now())
        decision = self.filter.filter_action(action, stamp, now)
        if decision.command is None:
            if decision.reason in LOGGED_DROPS:
                detail = f" ({stamp - now:+.3f} s from the clock)" if decision.reason in STAMP_DROPS else ""
                self.filter_log("an action", decision.reason.value + detail, verb="dropped")
            return
        self.send(decision.command)

    def on_episode_status(self, msg: String) -> None:
        """A new episode (a simulator's reset puts the arm at rest): the next action ramps up from zero velocity,
        as in the environment, instead of from the previous episode's last command."""
        if self.episodes.update(msg) is not None and not self.episodes.first:
            self.filter.at_rest()

    # -- hold / re-arm -----------------------------------------------------------------------------------
    def hold(self, why: str) -> Command:
        was = self.filter.state
        command = self.filter.hold(self.now())
        self.send(command)
        if was is not State.HELD:
            self.get_logger().warning(f"HOLD ({why}): arm stopped, actions dropped until {common.REARM_SERVICE}")
        self.request_policy_reset()
        return command

    def on_hold_topic(self, msg: Bool) -> None:
        if msg.data:
            self.hold(f"{common.HOLD_TOPIC} true")
        # false does not re-arm: only the re-arm service does (an explicit operator action)

    def on_hold_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        command = self.hold(common.HOLD_SERVICE)
        response.success = True
        response.message = json.dumps({"state": "held", "stamp": command.stamp})
        return response

    def on_rearm_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        now = self.now()
        changed = self.filter.rearm(now)
        self.request_policy_reset()
        self.get_logger().info("RE-ARMED: actions newer than now are executed" if changed else "re-arm: already armed")
        response.success = True
        response.message = json.dumps({"state": "armed", "stamp": now})
        return response

    def request_policy_reset(self) -> None:
        if self.reset_client.service_is_ready():
            self.reset_client.call_async(Trigger.Request())  # fire and forget: never block the control loop
        else:
            self.get_logger().warning(f"{common.POLICY_RESET_SERVICE} is not available: the policy keeps its history",
                                      throttle_duration_sec=5.0)

    # -- the cycle ---------------------------------------------------------------------------------------
    def on_cycle(self) -> None:
        if common.STOP.requested:
            return
        now = self.now()
        if now == 0.0:  # sim time before the first /clock message: no arm moves, and no silence can be measured
            return
        was_tripped = self.filter.tripped
        command = self.filter.tick(now)
        if command is None:
            return
        if command.reason is Reason.WATCHDOG and not was_tripped:
            self.get_logger().warning(
                f"watchdog: no fresh action within {self.filter.watchdog_period} s, commanding zero velocity "
                f"(trip #{self.filter.trips})")
        self.send(command)

    def send(self, command: Command, gripper: bool = True) -> None:
        if command.reason is Reason.ACTION and self.guard is not None and not self.guard.covers(
                subscribers := self.arm_pub.get_subscription_count()):
            # a reader the guard has not matched would keep a non-zero command if this process died: stop instead
            # (usual for a second or two after start-up, while discovery matches the guard; a warning later)
            text = (f"the guard has matched {self.guard.matched} of the arm topic's {subscribers} subscriber(s): "
                    "commanding zero velocity until it reaches them all")
            # two call sites: rclpy refuses one call site logging at two severities ("Logger severity cannot be
            # changed between calls"), which raised here and killed the controller
            if self.guard_covered:
                self.get_logger().warning(text, throttle_duration_sec=1.0)
            else:
                self.get_logger().info(text, throttle_duration_sec=1.0)
            command = self.filter.stop(command.stamp, Reason.UNGUARDED)
        elif command.reason is Reason.ACTION:
            self.guard_covered = True
        v = command.values
        assert np.all(np.isfinite(v)), "non-finite command"  # the filter guarantees this
        msg = common.arm_command(self.interface, v, common.sec_to_stamp(command.stamp), self.frame, self.embodiment)
        grip = float(v[VELOCITY_DIMS])
        if gripper and (command.reason is Reason.ACTION or grip != self.last_gripper):  # first: a lockstep sim
            self.gripper_pub.publish(Float64(data=grip))  # steps on the arm command
            self.last_gripper = grip
        self.arm_pub.publish(msg)
        self.commands += 1

    def on_exit(self) -> None:
        """At shutdown, before the context goes down (``common.run``): hold (every later action is dropped), one
        last zero-velocity command, and wait until the arm's subscribers acknowledged it or ``stop_ack_timeout_s``
        passed; then release the guard, which would otherwise command the zero itself."""
        try:
            self.send(self.filter.hold(self.now()), gripper=False)
            acked = self.arm_pub.wait_for_all_acked(Duration(seconds=self.stop_ack_timeout))
            self.get_logger().info(
                f"shutdown: zero velocity commanded ({self.arm_pub.get_subscription_count()} subscriber(s), "
                f"{'acknowledged' if acked else f'not acknowledged within {self.stop_ack_timeout} s'})")
        finally:
            if self.guard is not None:
                self.guard.release()

    def guarded(self) -> bool:
        """The guard is off, or it has matched every subscriber of the arm topic (this node's publisher's count) and
        at least one: a harness starts an episode once this holds (``testing.wait_guarded``), or the first actions
        of an episode go out as zeros while discovery matches the guard."""
        subscribers = self.arm_pub.get_subscription_count()
        return self.guard is None or (subscribers >= 1 and self.guard.covers(subscribers))

    def publish_diagnostics(self) -> None:
        f = self.filter
        status = DiagnosticStatus(name="gato_controller", hardware_id=self.interface)
        status.level = DiagnosticStatus.OK if f.state is State.ARMED and not f.tripped else DiagnosticStatus.WARN
        status.message = f.state.value + (" (watchdog: stopped)" if f.tripped and f.state is State.ARMED else "")
        status.values = [
            KeyValue(key="state", value=f.state.value),
            KeyValue(key="held_since", value="" if f.held_since is None else f"{f.held_since:.9f}"),
            KeyValue(key="watchdog_tripped", value=str(f.tripped).lower()),
            KeyValue(key="watchdog_trips", value=str(f.trips)),
            KeyValue(key="commands", value=str(self.commands)),
            KeyValue(key="dropped", value=json.dumps({k.value: n for k, n in f.dropped.items()}, sort_keys=True)),
            KeyValue(key="invalid_messages", value=json.dumps(self.invalid, sort_keys=True)),
            KeyValue(key="guarded", value=str(self.guarded()).lower()),
        ]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag.publish(msg)


def main(args: list[str] | None = None) -> int:
    return common.run(ControllerNode, args)


if __name__ == "__main__":
    sys.exit(main())
