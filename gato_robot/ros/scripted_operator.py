"""Scripted operator: a stand-in for a person recording demonstrations, through ROS interfaces only.

What a person does with ``gato-record --operator`` and a teleoperation device, done by a script, so that the
demonstration loop (docs/logs.md, "Recording demonstrations") can be run and tested end to end in simulation: for
each episode it calls /sim/reset (the person arranging a new scene), starts the recorder's episode
(/gato/recorder/start_episode), drives the arm with the scripted expert (``gato_robot.sim.expert``) by publishing
/gato/action (a continuous action, which the controller safety-filters like any other) and
/gato/teleop/intervention (true: every step is the operator's), judges the result and ends the episode with its
label (/gato/recorder/end_episode, data = success).

It sees the scene the way a person would, from outside the robot: the simulator's motion-capture stand-in
(/sim/object_state: object poses and mesh vertices; the sim node's ``object_state: true``), /gato/tool_pose and
/joint_states. None of that is sim-only *in the recording*: the recorder does not log /sim/object_state, and the
converted episodes hold cameras, proprioception and the operator's label only.

The judgement is the person's, not the simulator's: success when red has rested on blue (mesh vertices, the
expert's own test) with the gripper commanded open for ``judge_steps`` consecutive steps; failure after
``max_steps``. The benchmark's success test (contacts, 20 steps held) is not visible here and can disagree.

``gato-scripted-operator --episodes 50`` (with the sim node ``episode_status: false``, ``object_state: true``,
``start_paused: true``, ``auto_reset: false``; the controller armed; ``gato-record --ros-args -p
episodes:=operator``). It exits 0 when its episodes are done.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32MultiArray
from std_srvs.srv import SetBool, Trigger

from gato_robot import wire
from gato_robot.core.embodiment import RawObservation
from gato_robot.robots import load_embodiment
from gato_robot.ros import common
from gato_robot.ros.stack import parameter_args

INTERVENTION_TOPIC = "/gato/teleop/intervention"
READY_SETTLE_S = 1.0  # s: after the stack's endpoints are seen, before the first episode


class ScriptedOperatorNode(Node):
    def __init__(self) -> None:
        super().__init__("gato_scripted_operator")
        d = lambda *a: common.declare(self, *a)  # noqa: E731
        robot = d("robot", "panda", "robot name (config/robots/<name>.yaml) or robot file path")
        self.episodes = int(d("episodes", 1, "episodes to record, then exit"))
        self.max_steps = int(d("max_steps", 400, "end an episode as a failure after this many steps"))
        self.judge_steps = int(d("judge_steps", 20, "steps the stack must be seen resting, hand open, for success"))
        teacher = d("teacher", "feedback", "feedback (the state-feedback expert: a function of what it sees, "
                                           "learnable by a Markov policy) | scripted (the state machine)")
        if teacher not in ("feedback", "scripted"):
            raise ValueError(f"teacher must be feedback or scripted, got {teacher!r}")
        self.service_timeout = float(d("service_timeout_s", 30.0, "wait this long for a service (s)"))
        if self.episodes < 1 or self.max_steps < 1 or self.judge_steps < 1:
            raise ValueError("episodes, max_steps and judge_steps must be positive")
        from gato_robot.sim import env as env_lib
        from gato_robot.sim import expert as expert_lib

        self.expert_lib, self.env_lib = expert_lib, env_lib
        if teacher == "feedback":
            from gato_robot.sim.feedback_expert import FeedbackExpert

            self.expert = FeedbackExpert()
        else:
            self.expert = expert_lib.ScriptedExpert()
        self.embodiment = load_embodiment(robot)
        self.builder = self.embodiment.observation_builder([])
        self.action_pub = self.create_publisher(Image, common.ACTION_TOPIC, common.COMMAND_QOS)
        self.intervention_pub = self.create_publisher(Bool, INTERVENTION_TOPIC, common.COMMAND_QOS)
        self.create_subscription(Float32MultiArray, common.OBJECT_STATE_TOPIC, self.on_objects, common.SENSOR_QOS)
        self.create_subscription(JointState, common.JOINT_STATES_TOPIC, self.on_joints, common.SENSOR_QOS)
        self.create_subscription(PoseStamped, common.TOOL_POSE_TOPIC, self.on_pose, common.SENSOR_QOS)
        self.service_clients = {name: self.create_client(kind, name) for name, kind in (
            (common.SIM_RESET_SERVICE, Trigger), (common.RECORDER_START_SERVICE, Trigger),
            (common.RECORDER_END_SERVICE, SetBool))}
        self.objects: np.ndarray | None = None
        self.joints: tuple[float, JointState] | None = None
        self.state = "wait_services"
        self.ready_since: float | None = None
        self.start_asked = 0.0
        self.last_state = 0.0  # monotonic time of the newest robot state acted on
        self.stall_s = float(d("stall_s", 3.0, "end the episode as a failure when the robot sends no state for this "
                                               "long (s)"))
        self.pending = None  # (future, what, since)
        self.done = 0
        self.labels: list[bool] = []
        self.engaged = False
        self.engaged_at = math.inf  # monotonic time the recorder confirmed the start
        self.steps = 0
        self.resting = 0
        self.expert_state = self.expert.initial_state()
        self.create_timer(0.02, self.on_timer, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"scripted operator ({teacher} expert): {self.episodes} episode(s), at most "
                               f"{self.max_steps} steps each")

    # -- inputs ------------------------------------------------------------------------------------------
    def on_objects(self, msg: Float32MultiArray) -> None:
        try:
            self.objects = common.array_from_float32(msg)
        except ValueError as e:
            self.get_logger().warning(f"object state refused: {e}", throttle_duration_sec=5.0)

    def on_joints(self, msg: JointState) -> None:
        self.joints = (common.stamp_to_sec(msg.header.stamp), msg)

    def on_pose(self, msg: PoseStamped) -> None:
        """The sim publishes joints, then the pose, then the images of a step: the pose completes the state."""
        stamp = common.stamp_to_sec(msg.header.stamp)
        if not self.engaged or self.joints is None or self.objects is None or self.joints[0] != stamp \
                or time.monotonic() < self.engaged_at:
            return
        js = self.joints[1]
        e = self.embodiment
        p, o = msg.pose.position, msg.pose.orientation
        raw = RawObservation(
            images={}, joint_positions=wire.joint_vector(js.name, js.position, e.arm_joints, "position"),
            joint_velocities=wire.joint_vector(js.name, js.velocity, e.arm_joints, "velocity"),
            tool_pose=[p.x, p.y, p.z, o.x, o.y, o.z, o.w],
            finger_positions=wire.joint_vector(js.name, js.position, e.finger_joints, "position"),
            finger_velocities=wire.joint_vector(js.name, js.velocity, e.finger_joints, "velocity"))
        obs = self.builder.build(raw)
        n = self.env_lib.MAX_VERTICES * 3
        obs[self.env_lib.PRIVILEGED_POSES] = self.objects[:, :7]
        obs[self.env_lib.PRIVILEGED_VERTICES] = self.objects[:, 7:7 + n].reshape(3, -1, 3)
        action, self.expert_state = self.expert.step(obs, self.expert_state)
        action = np.asarray(action, np.float32)
        self.builder.command(action)
        self.action_pub.publish(common.array_image(action[None, :], "32FC1", msg.header.stamp))
        self.intervention_pub.publish(Bool(data=True))
        self.steps += 1
        self.last_state = time.monotonic()
        rests = self.expert_lib.red_resting_on_blue(obs[self.env_lib.PRIVILEGED_VERTICES])
        self.resting = self.resting + 1 if rests and action[-1] < 0 else 0  # on blue, the hand open
        if self.resting >= self.judge_steps:
            self.finish(True)
        elif self.steps >= self.max_steps:
            self.finish(False)

    # -- the operator's routine ----------------------------------------------------------------------------
    def call(self, name: str, request: object, what: str) -> None:
        self.pending = (self.service_clients[name].call_async(request), what, time.monotonic())

    def finish(self, success: bool) -> None:
        self.engaged = False
        self.labels.append(success)
        self.call(common.RECORDER_END_SERVICE, SetBool.Request(data=success), "end")

    def on_timer(self) -> None:
        if self.pending is not None:
            future, what, since = self.pending
            if not future.done():
                if time.monotonic() - since > self.service_timeout:
                    raise RuntimeError(f"no answer to the {what} request within {self.service_timeout:.0f} s")
                return
            self.pending = None
            response = future.result()
            if not response.success and what == "start" and "no clock" in response.message \
                    and time.monotonic() - self.start_asked < self.service_timeout:
                self.call(common.RECORDER_START_SERVICE, Trigger.Request(), "start")  # its /clock is on the way
                return
            if not response.success:
                raise RuntimeError(f"the {what} request was refused: {response.message}")
            self.advance(what)
            return
        if self.engaged and time.monotonic() - max(self.last_state, self.engaged_at) > self.stall_s:
            # the robot stopped sending its state (a simulator that ended its episode): a person would notice
            self.get_logger().warning(f"no robot state for {self.stall_s:.0f} s after {self.steps} steps: ending the "
                                      f"episode as a failure")
            self.finish(False)
            return
        if self.state == "wait_services" and self.stack_ready():
            if self.ready_since is None:  # seen here; give the recorder's subscriptions a moment to match too
                self.ready_since = time.monotonic()
            elif time.monotonic() - self.ready_since >= READY_SETTLE_S:
                self.state = "idle"
                self.advance("ready")

    def stack_ready(self) -> bool:
        """The services answer, the controller takes /gato/action, and a recorder subscribes to the robot's state
        (besides this node): episodes are not driven before they can be logged."""
        return (all(c.service_is_ready() for c in self.service_clients.values())
                and self.action_pub.get_subscription_count() >= 1
                and self.count_subscribers(common.JOINT_STATES_TOPIC) >= 2
                and self.count_subscribers(common.TOOL_POSE_TOPIC) >= 2)

    def advance(self, after: str) -> None:
        if after in ("ready", "end"):
            if after == "end":
                self.done += 1
                label = "success" if self.labels[-1] else "failure"
                self.get_logger().info(f"episode {self.done}/{self.episodes}: {label} after {self.steps} steps")
            if self.done >= self.episodes:
                self.get_logger().info(f"done: {sum(self.labels)}/{len(self.labels)} labelled success")
                common.STOP(signal.SIGINT, None)
                return
            self.call(common.SIM_RESET_SERVICE, Trigger.Request(), "reset")
        elif after == "reset":
            self.expert_state = self.expert.initial_state()
            self.builder.reset()
            self.steps = self.resting = 0
            self.start_asked = time.monotonic()
            self.call(common.RECORDER_START_SERVICE, Trigger.Request(), "start")
        elif after == "start":
            self.engaged = True
            self.engaged_at = time.monotonic()  # act on the robot's next state: the recorder sees it


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    ap = argparse.ArgumentParser(prog="gato-scripted-operator", description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=None, help="episodes to record (default 1)")
    ap.add_argument("--robot", default=None, help="robot name or file (default panda)")
    ap.add_argument("--use-sim-time", action="store_true")
    args = ap.parse_args(argv[: len(argv) - len(ros_args)])
    params = parameter_args({"episodes": args.episodes, "robot": args.robot,
                             "use_sim_time": True if args.use_sim_time else None})
    return common.run(ScriptedOperatorNode, ["gato-scripted-operator", *(ros_args or ["--ros-args"]), *params])


if __name__ == "__main__":
    sys.exit(main())
