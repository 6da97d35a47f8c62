"""Sim node: the PyBullet RGB-stacking environment (``gato_robot.sim.env``) as a robot on ROS topics.

Publishes, stamped with sim time: /clock, one sensor_msgs/Image (rgb8) per camera, /joint_states (7 arm joints
and the two finger joints, each finger half the opening), /gato/tool_pose (PoseStamped, base frame) and
/gato/episode_status (std_msgs/String, JSON: episode, step, stacked, success, done, triplet, sim_time).
Takes the arm command (TwistStamped or Float64MultiArray, as the controller publishes it) and /gripper/command.
/sim/reset (std_srvs/Trigger) starts a new episode.

As a stand-in for a real robot (recording operator-labelled demonstrations, docs/logs.md): ``episode_status:
false`` publishes no /gato/episode_status (a robot has none: the recorder's operator starts, ends and labels the
episodes), and ``object_state: true`` publishes the objects' poses and mesh vertices on /sim/object_state
(std_msgs/Float32MultiArray, 3 x (7 + 3 * 20): red, green, blue centre + quaternion xyzw, then the world-frame
vertices; a motion-capture stand-in), what a scripted teleoperator needs to see the scene. Both are sim-only
inputs of the teleoperator, never of the recorded training data.

The first episode starts at once, on /sim/reset (``start_paused``), or once the stack is there
(``wait_for_subscribers``: the launch files set it, so the policy sees the first observation and a recorder logs
the whole episode, instead of an episode that began while the other nodes were still being discovered). With both,
a /sim/reset before the stack is there starts the first episode once it is. "There" includes /gato/episode_status
(the tokenizer and the policy reset on it) and /clock (every node of the stack on sim time).

Stepping (``lockstep``, default true): after publishing the observation at sim time t, the node waits for the
next arm command and then steps the environment by one control period (50 ms of sim time) with it, so a run is
deterministic and as fast as the pipeline. A robot does not wait forever: when no command arrives within
``lockstep_timeout_s`` (wall) it steps with zero velocity, as an arm whose command stream stopped. With
``lockstep: false`` it steps on a wall timer at the control rate with the newest command (zero velocity when
the newest is older than ``command_timeout_s``). ``hold_last_command: true`` makes the simulated arm behave like a
ros2_control forward_command_controller, which has no timeout: the last velocity it received is applied forever
(in lockstep, the timeout steps with the last command instead of zero). It exists so that tests can see what a
dead controller leaves behind (a moving arm) and prove that the stack's stop paths command zero.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray, Float64, Float64MultiArray, String
from std_srvs.srv import Trigger

from gato_robot import wire
from gato_robot.core import specs
from gato_robot.ros import common

SIM_START = 1.0  # s: sim time of the first observation (a zero stamp reads as "unset" to many tools)
STACK_SETTLE_S = 0.5  # s: after this node sees the stack's endpoints, before the first episode starts


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("gato_sim")
        d = lambda *a: common.declare(self, *a)  # noqa: E731
        robot = d("robot", "panda", "robot name (config/robots/<name>.yaml) or robot file path: joint names")
        cameras = d("cameras", list(specs.RGB_STACKING_CAMERAS[:2]), "camera names (spec order)")
        image_size = int(d("image_size", 128, "rendered image size (pixels, square)"))
        topics = d("camera_topics", [common.camera_topic(c) for c in cameras], "Image topic per camera")
        self.triplet = d("triplet", "rgb_test_triplet1", "RGB-objects triplet (or a random set name)")
        self.seed = int(d("seed", 0, "seed of the first episode; episode k uses seed + k"))
        self.interface = d("command_interface", "twist", "arm command topic type: twist | forward_command")
        twist_topic = d("twist_topic", common.TWIST_TOPIC, "TwistStamped arm command topic")
        forward_topic = d("forward_topic", common.FORWARD_TOPIC, "Float64MultiArray arm command topic")
        gripper_topic = d("gripper_topic", common.GRIPPER_TOPIC, "std_msgs/Float64 gripper command topic")
        self.lockstep = bool(d("lockstep", True, "step when a command arrives (true) or on a wall timer"))
        self.lockstep_timeout = float(d("lockstep_timeout_s", 0.5, "lockstep: step with zero after this (s)"))
        self.command_timeout = float(d("command_timeout_s", 0.1, "timer mode: older commands count as zero (s)"))
        self.hold_last = bool(d("hold_last_command", False, "behave like a forward_command_controller without a "
                                "timeout: the last arm command is applied until another arrives"))
        self.control_hz = float(d("control_hz", 20.0, "control rate (Hz): the sim time step is 1/control_hz"))
        self.episode_steps = int(d("episode_steps", 400, "steps per episode (the benchmark's 400 = 20 s)"))
        self.max_episodes = int(d("max_episodes", 0, "stop stepping after this many episodes (0: never)"))
        self.auto_reset = bool(d("auto_reset", True, "start the next episode when one ends"))
        self.frame = d("base_frame", "panda_link0", "frame_id of the tool pose")
        self.publish_status = bool(d("episode_status", True, "publish /gato/episode_status (false: a robot "
                                     "without one, whose episodes the recorder's operator labels)"))
        object_state = bool(d("object_state", False, f"publish the objects' poses and vertices on "
                              f"{common.OBJECT_STATE_TOPIC} (a motion-capture stand-in for scripted teleoperators)"))
        start_paused = bool(d("start_paused", False, "wait for /sim/reset before the first episode"))
        self.wait_subscribers = int(d("wait_for_subscribers", 0, "before the first episode, wait until each camera "
                                      "topic, /gato/observation and /gato/action_tokens has this many subscribers "
                                      "and the arm command has a publisher (0: start at once; the launch files "
                                      "set 1, or 2 with the recorder, so no step goes unseen)"))
        self.wait_timeout = float(d("wait_timeout_s", 60.0, "start anyway after this long (s), with a warning"))
        if len(topics) != len(cameras):
            raise ValueError(f"camera_topics has {len(topics)} topics for {len(cameras)} cameras")
        if self.interface not in ("twist", "forward_command"):
            raise ValueError(f"command_interface must be twist or forward_command, got {self.interface!r}")

        from gato_robot.sim.env import RgbStackingEnv  # lazily: pybullet loads only in this node

        self.env = RgbStackingEnv(triplet=self.triplet, cameras=cameras, image_size=image_size, robot=robot,
                                  privileged=object_state)
        self.embodiment = self.env.embodiment
        self.camera_keys = [f"{specs.CAMERA_PREFIX}{c}" for c in cameras]
        self.dt = 1.0 / self.control_hz
        self.t = SIM_START
        self.episode = -1
        self.info: dict = {}
        self.done = False
        self.finished = False
        self.velocity = np.zeros(4)  # the newest arm command: vx, vy, vz, yaw rate
        self.velocity_time = -math.inf  # wall time of the newest arm command
        self.gripper = -255.0  # open until told otherwise
        self.waiting_since: float | None = None  # lockstep: wall time the current observation was published
        self.invalid_commands = 0
        self.arm_commands = 0  # arm commands received (for the exit line)

        self.clock_pub = self.create_publisher(ClockMsg, "/clock", common.SENSOR_QOS)
        self.image_pubs = [self.create_publisher(Image, t, common.SENSOR_QOS) for t in topics]
        self.joint_pub = self.create_publisher(JointState, common.JOINT_STATES_TOPIC, common.SENSOR_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, common.TOOL_POSE_TOPIC, common.SENSOR_QOS)
        self.status_pub = self.create_publisher(String, common.EPISODE_STATUS_TOPIC, common.COMMAND_QOS) \
            if self.publish_status else None
        self.object_pub = self.create_publisher(Float32MultiArray, common.OBJECT_STATE_TOPIC, common.SENSOR_QOS) \
            if object_state else None
        if self.interface == "twist":
            self.command_sub = self.create_subscription(TwistStamped, twist_topic, self.on_twist, common.COMMAND_QOS)
        else:
            self.command_sub = self.create_subscription(Float64MultiArray, forward_topic, self.on_forward,
                                                        common.COMMAND_QOS)
        self.create_subscription(Float64, gripper_topic, self.on_gripper, common.COMMAND_QOS)
        self.command_topic = twist_topic if self.interface == "twist" else forward_topic
        self.create_service(Trigger, common.SIM_RESET_SERVICE, self.on_reset)
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        period = min(self.dt, self.lockstep_timeout / 5) if self.lockstep else self.dt
        self.create_timer(period, self.on_timer, clock=wall)
        self.get_logger().info(
            f"RGB stacking ({self.triplet}, cameras {cameras} at {image_size} px) -> {list(topics)}; "
            f"{'lockstep' if self.lockstep else 'timer'} stepping at {self.control_hz} Hz sim time")
        self.stack_wait: tuple[float, float | None] | None = None  # (since, ready since) while waiting for the stack
        self.stack_seen = self.wait_subscribers <= 0  # the stack was there once (or nobody asked to wait for it)
        # /clock subscribers of the stack: tokenizer, policy and controller (+ this node when it runs on sim time)
        self.clock_subscribers = 3 + int(bool(self.get_parameter("use_sim_time").value))
        if start_paused:
            self.finished = True
            self.get_logger().info(f"paused: call {common.SIM_RESET_SERVICE} to start the first episode")
        elif self.wait_subscribers > 0:  # on_timer waits (no command steps the sim before its first episode)
            self.stack_wait = (time.monotonic(), None)
            self.get_logger().info(f"waiting for the stack ({self.wait_subscribers} subscriber(s) on the pipeline "
                                   f"topics) before the first episode")
        else:
            self.start_episode()

    # -- commands ----------------------------------------------------------------------------------------
    def _command(self, velocity: np.ndarray) -> None:
        if not np.all(np.isfinite(velocity)):
            self.invalid_commands += 1
            self.get_logger().error("non-finite arm command refused; the arm stops", throttle_duration_sec=1.0)
            velocity = np.zeros(4)
        self.velocity, self.velocity_time = velocity, time.monotonic()
        self.arm_commands += 1
        if self.lockstep and self.waiting_since is not None:
            self.step()

    def on_twist(self, msg: TwistStamped) -> None:
        t = msg.twist
        self._command(self.embodiment.velocity_from_twist((t.linear.x, t.linear.y, t.linear.z),
                                                          (t.angular.x, t.angular.y, t.angular.z)))

    def on_forward(self, msg: Float64MultiArray) -> None:
        try:
            self._command(wire.forward_command_to_velocity(msg.data, self.embodiment))
        except ValueError as e:
            self.invalid_commands += 1
            self.get_logger().error(f"refused arm command: {e}", throttle_duration_sec=1.0)

    def on_gripper(self, msg: Float64) -> None:
        if math.isfinite(msg.data):
            self.gripper = float(msg.data)
        else:
            self.invalid_commands += 1

    def stack_ready(self) -> bool:
        """Every camera topic, /gato/observation and /gato/action_tokens has ``wait_for_subscribers`` subscribers
        (the tokenizer, the policy, the controller, and the recorder when it runs) and the arm command its publishers
        (the controller and its guard: each one matched)."""
        n = self.wait_subscribers
        return (all(pub.get_subscription_count() >= n for pub in self.image_pubs)
                and self.count_subscribers(common.OBSERVATION_TOPIC) >= n
                and self.count_subscribers(common.ACTION_TOKENS_TOPIC) >= n
                # every arm command writer the graph shows (the controller, its guard) matched with this reader
                and self.command_sub.get_publisher_count() >= max(1, self.count_publishers(self.command_topic))
                # the tokenizer and the policy reset on it
                and (self.status_pub is None or self.status_pub.get_subscription_count() >= 2)
                and self.clock_pub.get_subscription_count() >= self.clock_subscribers)  # sim time everywhere

    def wait_for_stack(self) -> None:
        since, ready_since = self.stack_wait
        now = time.monotonic()
        if self.stack_ready():
            if ready_since is None:  # seen by this node's discovery; give the others' a moment to match as well
                self.stack_wait = (since, now)
            elif now - ready_since >= STACK_SETTLE_S:
                self.stack_wait = None
        elif now - since > self.wait_timeout:
            self.get_logger().warning(f"the stack is not all there after {self.wait_timeout:.0f} s: starting anyway")
            self.stack_wait = None
        if self.stack_wait is None:
            self.stack_seen = True
            self.start_episode()

    def on_timer(self) -> None:
        if self.stack_wait is not None:
            self.wait_for_stack()
            return
        if self.lockstep:
            if self.waiting_since is not None and time.monotonic() - self.waiting_since > self.lockstep_timeout:
                if not self.hold_last:
                    self.velocity = np.zeros(4)
                self.step()
        else:
            if not self.hold_last and time.monotonic() - self.velocity_time > self.command_timeout:
                self.velocity = np.zeros(4)
            self.step()

    # -- episodes ----------------------------------------------------------------------------------------
    def start_episode(self) -> None:
        if self.max_episodes and self.episode + 1 >= self.max_episodes:
            self.finished = True
            self.waiting_since = None
            self.get_logger().info(f"{self.max_episodes} episode(s) done; no more stepping")
            return
        self.episode += 1
        obs, self.info = self.env.reset(seed=self.seed + self.episode)
        self.done = False
        self.velocity = np.zeros(4)
        self.gripper = -255.0
        self.get_logger().info(f"episode {self.episode} (seed {self.seed + self.episode}) starts at t={self.t:.2f}")
        self.publish(obs)

    def step(self) -> None:
        if self.finished:
            return
        if self.done:
            if self.auto_reset:
                self.t += self.dt
                self.start_episode()
            else:
                self.waiting_since = None
            return
        action = np.array([*np.clip(self.velocity, -1e3, 1e3), self.gripper], np.float32)
        try:
            obs, _, terminated, truncated, self.info = self.env.step(action)
        except ValueError as e:
            self.invalid_commands += 1
            self.get_logger().error(f"the environment refused the action: {e}")
            obs, _, terminated, truncated, self.info = self.env.step(np.array([0, 0, 0, 0, self.gripper], np.float32))
        self.t += self.dt
        self.done = bool(terminated or truncated or self.info["step"] >= self.episode_steps)
        if self.done:
            self.get_logger().info(f"episode {self.episode} ends after {self.info['step']} steps: "
                                   f"success={self.info['success']}")
        self.publish(obs)

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.finished = False
        self.t += self.dt
        if not self.stack_seen:  # paused before the stack was all there: its first episode waits for it
            if self.stack_wait is None:
                self.stack_wait = (time.monotonic(), None)
            response.success = True
            response.message = json.dumps({"episode": self.episode + 1, "waiting_for_stack": True})
            return response
        self.stack_wait = None
        self.start_episode()
        response.success, response.message = True, json.dumps({"episode": self.episode})
        return response

    # -- publishing --------------------------------------------------------------------------------------
    def publish(self, obs: dict) -> None:
        stamp = common.sec_to_stamp(self.t)
        self.clock_pub.publish(ClockMsg(clock=stamp))
        step = int(self.info.get("step", 0))
        status = String(data=json.dumps({
            "episode": self.episode, "step": step, "stacked": bool(self.info.get("stacked")),
            "success": bool(self.info.get("success")), "done": self.done, "triplet": self.triplet,
            "sim_time": round(self.t, 6), "invalid_commands": self.invalid_commands,
            "seed": self.seed + self.episode,  # episode k resets with seed + k: logs can re-create it
        }))
        if step == 0 and self.status_pub:  # a new episode: the nodes that reset on it hear of it before its images
            self.status_pub.publish(status)
        if self.object_pub is not None:  # before the robot's state: a teleoperator acting on the joint states has it
            from gato_robot.sim.env import PRIVILEGED_POSES, PRIVILEGED_VERTICES

            rows = np.concatenate([obs[PRIVILEGED_POSES].reshape(3, -1), obs[PRIVILEGED_VERTICES].reshape(3, -1)], 1)
            self.object_pub.publish(common.float32_array(rows))
        js = JointState()
        js.header.stamp = stamp
        js.name = [*self.embodiment.arm_joints, *self.embodiment.finger_joints]
        opening, opening_velocity, _ = (float(v) for v in obs[specs.GRIPPER_KEY])
        # the finger joints that read as the observed opening (the robot file's gripper_opening; each its share)
        finger_q, finger_dq = self.embodiment.finger_joint_states(opening, opening_velocity)
        js.position = [*map(float, obs[specs.JOINT_ANGLES_KEY]), *finger_q]
        js.velocity = [*map(float, obs[specs.JOINT_VELOCITIES_KEY]), *finger_dq]
        self.joint_pub.publish(js)
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self.frame
        x, y, z, qx, qy, qz, qw = (float(v) for v in obs[specs.TOOL_POSE_KEY])
        p, o = pose.pose.position, pose.pose.orientation
        p.x, p.y, p.z, o.x, o.y, o.z, o.w = x, y, z, qx, qy, qz, qw
        self.pose_pub.publish(pose)
        for key, pub in zip(self.camera_keys, self.image_pubs):
            pub.publish(common.rgb_image(obs[key], stamp, key[len(specs.CAMERA_PREFIX):]))
        if step != 0 and self.status_pub:  # after the step's sensors: a recorder closes an episode's bag on done
            self.status_pub.publish(status)
        self.waiting_since = time.monotonic() if self.lockstep else None

    def on_exit(self) -> None:
        # what a real arm would still be doing: with hold_last_command (a forward controller without a timeout) it
        # keeps applying this velocity after the stack is gone
        self.get_logger().info(
            f"arm velocity command at exit: {json.dumps([float(v) for v in self.velocity])} (the newest of "
            f"{self.arm_commands} arm command(s)"
            + (f", received {time.monotonic() - self.velocity_time:.3f} s before exit" if self.arm_commands else "")
            + ")")
        self.env.close()


def main(args: list[str] | None = None) -> int:
    return common.run(SimNode, args)


if __name__ == "__main__":
    sys.exit(main())
