"""Tokenizer node: cameras + joint states + tool pose -> synchronised, tokenized observation rows.

Inputs (sensor-data QoS): one sensor_msgs/Image per spec camera (rgb8, bgr8, rgba8, bgra8, mono8; any size,
resized to the spec), /joint_states (by name), /gato/tool_pose (geometry_msgs/PoseStamped; with
``tool_pose_source: fk`` the tool pose is the forward kinematics of the robot's URDF from /joint_states instead,
``gato_robot.kinematics``, for a robot that publishes none). The previous action
comes from the controller's last arm and gripper commands (reliable), the grasp flag from the fingers
(``core.gripper.GraspDetector``); a new episode on /gato/episode_status clears both, as the environment's reset
does. The robot (``robot``: a name under config/robots or a robot file's path, default panda) names the arm and
finger joints read from /joint_states; its observation builder (``core.embodiment``, the simulator's and the
log converter's too) assembles the observation and keeps the previous action and the grasp flag. Output: /gato/observation (8UC1 rows with
the patches as uint8 pixels, ``gato_robot.wire``; reliable, keep last 1), header.stamp = the set's newest camera
stamp, frame_id = the spec name.

Decisions live in pure code: synchronisation and staleness in ``gato_robot.core.sync``, decoding in
``gato_robot.wire``, tokenization in ``gato_robot.core.tokenizer``. Each image is resized and cut into patch
pixels as it arrives (``wire.ObservationEncoder.camera_pixels``), so a complete set only costs copying the pixels
into the rows and tokenizing the proprioception (the same bytes as ``tokenize_observation``, tested).
"""

from __future__ import annotations

import collections
import json
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from gato_robot import wire
from gato_robot.core import specs
from gato_robot.core.embodiment import RawObservation
from gato_robot.core.safety import MAX_FUTURE_S
from gato_robot.core.sync import ApproximateSync, Status
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.kinematics import for_embodiment
from gato_robot.robots import load_embodiment
from gato_robot.ros import common

JOINTS, POSE = "joint_states", "tool_pose"


class TokenizerNode(Node):
    def __init__(self) -> None:
        super().__init__("gato_tokenizer")
        d = lambda *a: common.declare(self, *a)  # noqa: E731
        robot = d("robot", "panda", "robot name (config/robots/<name>.yaml) or robot file path: joint names, spec")
        cameras = d("cameras", list(specs.RGB_STACKING_CAMERAS[:2]), "spec camera names, in spec order")
        image_size = d("image_size", 128, "spec image size (pixels, square)")
        omit = d("omit_observations", [""], "spec observation keys the model does not take (e.g. proprio/previous_action)")
        topics = d("camera_topics", [common.camera_topic(c) for c in cameras],
                   "sensor_msgs/Image topic per camera, in the order of 'cameras'")
        self.control_hz = float(d("control_hz", 20.0, "control rate: at most one observation per 1/control_hz"))
        slop = float(d("slop_s", 0.025, "largest stamp distance of any input from the newest camera stamp (s)"))
        max_age = float(d("max_age_s", 0.15, "an input older than this (node clock - stamp) stops publishing (s)"))
        max_future = float(d("max_future_s", MAX_FUTURE_S, "an input stamped further ahead of the node clock is "
                             "refused (s)"))
        self.interface = d("command_interface", "twist", "arm command topic type: twist | forward_command")
        joint_topic = d("joint_states_topic", common.JOINT_STATES_TOPIC, "sensor_msgs/JointState topic")
        pose_topic = d("tool_pose_topic", common.TOOL_POSE_TOPIC, "geometry_msgs/PoseStamped tool pose topic")
        pose_source = d("tool_pose_source", "topic", "topic: the tool pose from tool_pose_topic (the simulator's, "
                        "bit-identical to its own observations) | fk: forward kinematics of the robot's URDF from "
                        "joint_states_topic (a robot that publishes no tool pose; docs/ros.md)")
        twist_topic = d("twist_topic", common.TWIST_TOPIC, "TwistStamped arm command topic (previous action)")
        forward_topic = d("forward_topic", common.FORWARD_TOPIC, "Float64MultiArray arm command topic")
        gripper_topic = d("gripper_topic", common.GRIPPER_TOPIC, "std_msgs/Float64 gripper command topic")
        self.embodiment = load_embodiment(robot)
        self.arm_joints = self.embodiment.arm_joints  # in spec order
        self.finger_joints = self.embodiment.finger_joints  # their positions sum to the gripper opening
        if len(topics) != len(cameras):
            raise ValueError(f"camera_topics has {len(topics)} topics for {len(cameras)} cameras {cameras}")
        if pose_source not in ("topic", "fk"):
            raise ValueError(f"tool_pose_source must be topic or fk, got {pose_source!r}")
        # fk: the tool pose computed from each synchronised joint state (gato_robot.kinematics, the robot's URDF)
        self.fk = for_embodiment(self.embodiment) if pose_source == "fk" else None
        if self.interface not in ("twist", "forward_command"):
            raise ValueError(f"command_interface must be twist or forward_command, got {self.interface!r}")

        self.spec = self.embodiment.spec(cameras, image_size).without([k for k in omit if k])
        self.tokenizer = Tokenizer(self.spec)
        self.encoder = wire.ObservationEncoder(self.tokenizer)  # the tokenizer's rows, images prepared on arrival
        self.camera_keys = [f"{specs.CAMERA_PREFIX}{c}" for c in cameras]
        inputs = [*self.camera_keys, JOINTS] + ([POSE] if self.fk is None else [])
        self.sync = ApproximateSync(inputs, self.camera_keys, slop=slop,
                                    max_age=max_age, min_interval=0.9 / self.control_hz, max_future=max_future)
        self.cameras = tuple(cameras)
        # previous action (the last arm and gripper commands) and grasp flag; float64: values as received
        self.builder = self.embodiment.observation_builder(self.cameras, np.float64)
        self.published = 0
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=1000)  # tokenize + publish
        self.reject_log = common.RejectLog(self)
        self.rejected = self.reject_log.counts  # what -> messages rejected, for diagnostics
        self._last_status: tuple[Status, str] | None = None
        self.clock_resets = 0  # the sync's clock resets already logged

        self.pub = self.create_publisher(Image, common.OBSERVATION_TOPIC, common.PIPELINE_PUB_QOS)
        self.diag = self.create_publisher(DiagnosticArray, "/diagnostics", common.COMMAND_QOS)
        for key, topic in zip(self.camera_keys, topics):
            self.create_subscription(Image, topic, lambda m, k=key: self.on_camera(k, m), common.SENSOR_QOS)
        self.create_subscription(JointState, joint_topic, self.on_joints, common.SENSOR_QOS)
        if self.fk is None:
            self.create_subscription(PoseStamped, pose_topic, self.on_pose, common.SENSOR_QOS)
        else:
            pose_topic = f"forward kinematics of {self.fk.urdf_path.name} ({self.fk.base_link} -> {self.fk.tool_link})"
        if self.interface == "twist":
            self.create_subscription(TwistStamped, twist_topic, self.on_twist, common.COMMAND_QOS)
        else:
            self.create_subscription(Float64MultiArray, forward_topic, self.on_forward, common.COMMAND_QOS)
        self.create_subscription(Float64, gripper_topic, self.on_gripper, common.COMMAND_QOS)
        self.create_subscription(String, common.EPISODE_STATUS_TOPIC, self.on_episode_status, common.COMMAND_QOS)
        self.episodes = common.EpisodeWatch(self)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(
            f"spec {self.spec.name}: cameras {dict(zip(cameras, topics))}, joints {joint_topic}, pose {pose_topic}; "
            f"slop {slop} s, max age {max_age} s, at most {self.control_hz} Hz -> {common.OBSERVATION_TOPIC}")

    # -- inputs ------------------------------------------------------------------------------------------
    def _reject(self, what: str, error: Exception) -> None:
        self.reject_log(what, error)

    def on_camera(self, key: str, msg: Image) -> None:
        try:
            pixels = self.encoder.camera_pixels(key, common.image_rgb(msg))  # resized + patch order, now
            self.sync.add(key, common.stamp_to_sec(msg.header.stamp), pixels, self.clock())
        except ValueError as e:
            self._reject(f"image on {key}", e)
            return
        self.try_publish()

    def on_joints(self, msg: JointState) -> None:
        try:
            q = wire.joint_vector(msg.name, msg.position, self.arm_joints, "position")
            if len(msg.velocity) == 0:
                raise ValueError("joint_states carries no velocities (the spec needs them)")
            dq = wire.joint_vector(msg.name, msg.velocity, self.arm_joints, "velocity")
            fq = wire.joint_vector(msg.name, msg.position, self.finger_joints, "position")
            fdq = wire.joint_vector(msg.name, msg.velocity, self.finger_joints, "velocity")
            self.sync.add(JOINTS, common.stamp_to_sec(msg.header.stamp), (q, dq, fq, fdq), self.clock())
        except ValueError as e:
            self._reject("joint_states", e)
            return
        self.try_publish()

    def on_pose(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        pose = np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w], np.float64)
        try:
            if not np.all(np.isfinite(pose)):
                raise ValueError("non-finite tool pose")
            if abs(np.linalg.norm(pose[3:]) - 1.0) > 1e-3:
                raise ValueError(f"tool orientation is not a unit quaternion (norm {np.linalg.norm(pose[3:]):.4f})")
            self.sync.add(POSE, common.stamp_to_sec(msg.header.stamp), pose, self.clock())
        except ValueError as e:
            self._reject("tool_pose", e)
            return
        self.try_publish()

    def on_twist(self, msg: TwistStamped) -> None:
        t = msg.twist
        v = self.embodiment.velocity_from_twist((t.linear.x, t.linear.y, t.linear.z),
                                                (t.angular.x, t.angular.y, t.angular.z))
        if np.all(np.isfinite(v)):
            self.builder.command_velocity(v)

    def on_forward(self, msg: Float64MultiArray) -> None:
        try:
            v = wire.forward_command_to_velocity(msg.data, self.embodiment)
        except ValueError as e:
            self._reject("forward command", e)
            return
        if np.all(np.isfinite(v)):
            self.builder.command_velocity(v)

    def on_gripper(self, msg: Float64) -> None:
        if np.isfinite(msg.data):
            self.builder.command_gripper(float(msg.data))

    def on_episode_status(self, msg: String) -> None:
        """A new episode (the simulator, or whatever runs episodes on a robot) starts with no previous command and
        nothing grasped, as the environment's reset does (the first status seen: this node starts fresh)."""
        if self.episodes.update(msg) is not None and not self.episodes.first:
            self.builder.reset()

    def clock(self) -> float | None:
        """The node clock for the sync's clock checks; None while sim time has not started (no /clock yet): then
        nothing can be judged future or stale, as before the first tick of a robot's clock."""
        now = common.now_sec(self)
        return None if now == 0.0 else now

    # -- output ------------------------------------------------------------------------------------------
    def try_publish(self) -> None:
        outcome = self.sync.poll(common.now_sec(self))
        if self.sync.clock_resets != self.clock_resets:
            self.clock_resets = self.sync.clock_resets
            self.get_logger().warning("the clock went back: synchronisation restarted on the new timeline")
        if outcome.status is Status.STALE:
            self.rejected["stale"] = self.rejected.get("stale", 0) + 1
        if outcome.status is Status.STALE:
            if self._last_status is None:  # one line when publishing stops, one when it resumes
                self.get_logger().warning(f"stale inputs, not publishing observations: {outcome.reason}")
            self._last_status = (outcome.status, outcome.reason)
            return
        if outcome.status is not Status.SET:
            return  # waiting for a partner message (normal between arrivals) or nothing new
        if self._last_status is not None:
            self.get_logger().info("inputs fresh and synchronised again: publishing observations")
            self._last_status = None
        t0 = time.perf_counter()
        items = outcome.items
        q, dq, fq, fdq = items[JOINTS]
        try:
            tool_pose = items[POSE] if self.fk is None else self.fk.tool_pose(q)
        except ValueError as e:
            self._reject("tool_pose (forward kinematics)", e)
            return
        obs = self.builder.build(RawObservation(
            images={c: items[key] for c, key in zip(self.cameras, self.camera_keys)}, joint_positions=q,
            joint_velocities=dq, tool_pose=tool_pose, finger_positions=fq, finger_velocities=fdq))
        try:
            rows = self.encoder.encode(obs)  # = encode_observation_rows(tokenizer.tokenize_observation(images))
        except ValueError as e:
            self._reject("observation", e)
            return
        self.pub.publish(common.array_image(rows, wire.OBSERVATION_ENCODING, common.sec_to_stamp(outcome.stamp),
                                            self.spec.name))
        self.published += 1
        self.latency_ms.append((time.perf_counter() - t0) * 1e3)

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="gato_tokenizer", hardware_id=self.spec.name, message="ok")
        status.level = DiagnosticStatus.OK if self._last_status is None else DiagnosticStatus.WARN
        if self._last_status is not None:
            status.message = f"not publishing: {self._last_status[0].value}"
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        status.values = [KeyValue(key="published", value=str(self.published)),
                         KeyValue(key="tokenize_publish_p50_ms", value=f"{np.percentile(lat, 50):.3f}"),
                         KeyValue(key="tokenize_publish_p99_ms", value=f"{np.percentile(lat, 99):.3f}"),
                         KeyValue(key="rejected", value=json.dumps(self.rejected, sort_keys=True))]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag.publish(msg)


def main(args: list[str] | None = None) -> int:
    return common.run(TokenizerNode, args)


if __name__ == "__main__":
    sys.exit(main())
