"""A log of the simulated stack, written without ROS: what the recorder writes, for tests and benchmarks.

Per control step, in the sim node's order: /clock, /joint_states, /gato/tool_pose, one Image per camera and
/gato/episode_status (sim time stamps, 50 ms apart), then the tokenized observation, the action tokens, the gripper
command and the arm command (receive times a few ms later). One rosbag2 folder per episode, like the recorder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from gato_robot import wire
from gato_robot.core import specs
from gato_robot.core.embodiment import Embodiment, RawObservation
from gato_robot.core.tokenizer import Tokenizer
from gato_robot.logs import bag
from gato_robot.robots import load_embodiment


def _types() -> dict[str, Any]:
    return bag.typestore().types


def stamp(t: float) -> Any:
    ns = round(t * 1e9)
    return _types()["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def header(t: float, frame: str = "") -> Any:
    return _types()["std_msgs/msg/Header"](stamp=stamp(t), frame_id=frame)


def image_msg(array: np.ndarray, t: float, frame: str, encoding: str = "rgb8") -> Any:
    a = np.ascontiguousarray(array)
    return _types()["sensor_msgs/msg/Image"](
        header=header(t, frame), height=a.shape[0], width=a.shape[1], encoding=encoding, is_bigendian=0,
        step=a.shape[1] * (a.itemsize * (a.shape[2] if a.ndim == 3 else 1)),
        data=np.frombuffer(a.tobytes(), np.uint8))


def write_step(w: bag.BagWriter, conns: dict[str, Any], wall: int, t_sim: float, obs: dict[str, np.ndarray],
               status: dict[str, Any], action: np.ndarray | None, rows: np.ndarray | None, spec_name: str,
               tokens: np.ndarray | None = None, embodiment: Embodiment | None = None) -> None:
    """One control step's messages, in the sim node's publish order, then the pipeline's answers (joint names:
    ``embodiment``'s, default the Panda's; each finger carries its share of the opening, as the sim node's)."""
    T = _types()
    robot = embodiment or load_embodiment()
    fingers = len(robot.finger_joints)

    def put(topic: str, msg: Any, dt_ns: int) -> None:
        w.write(conns[topic], wall + dt_ns, bag.serialize(msg, conns[topic].msgtype))

    q, dq = obs[specs.JOINT_ANGLES_KEY], obs[specs.JOINT_VELOCITIES_KEY]
    opening, opening_velocity = (float(v) for v in obs[specs.GRIPPER_KEY][:2])
    pose = np.asarray(obs[specs.TOOL_POSE_KEY], np.float64)
    put("/clock", T["rosgraph_msgs/msg/Clock"](clock=stamp(t_sim)), 100_000)
    put("/joint_states", T["sensor_msgs/msg/JointState"](
        header=header(t_sim), name=[*robot.arm_joints, *robot.finger_joints],
        position=np.array([*q, *[opening / fingers] * fingers], np.float64),
        velocity=np.array([*dq, *[opening_velocity / fingers] * fingers], np.float64), effort=np.zeros(0)),
        200_000)
    p = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=pose[0], y=pose[1], z=pose[2]),
        orientation=T["geometry_msgs/msg/Quaternion"](x=pose[3], y=pose[4], z=pose[5], w=pose[6]))
    put("/gato/tool_pose", T["geometry_msgs/msg/PoseStamped"](header=header(t_sim, "panda_link0"), pose=p), 300_000)
    for i, c in enumerate(bag.CAMERAS):
        put(bag.camera_topic(c), image_msg(obs[f"{specs.CAMERA_PREFIX}{c}"], t_sim, c), 400_000 + 100_000 * i)
    put("/gato/episode_status", T["std_msgs/msg/String"](data=json.dumps(status)), 700_000)
    if rows is not None:
        put("/gato/observation", image_msg(rows, t_sim, spec_name, wire.OBSERVATION_ENCODING), 3_000_000)
    if action is None:
        return
    if tokens is not None:
        put("/gato/action_tokens", image_msg(tokens.astype(np.int32).view(np.uint8).reshape(1, -1), t_sim, spec_name,
                                             wire.ACTION_TOKENS_ENCODING), 30_000_000)
    put("/gripper/command", T["std_msgs/msg/Float64"](data=float(action[4])), 31_000_000)
    twist = T["geometry_msgs/msg/Twist"](
        linear=T["geometry_msgs/msg/Vector3"](x=float(action[0]), y=float(action[1]), z=float(action[2])),
        angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=float(action[3])))
    put("/servo_node/delta_twist_cmds", T["geometry_msgs/msg/TwistStamped"](
        header=header(t_sim + 0.03, "panda_link0"), twist=twist), 31_500_000)


def write_synthetic_log(out_dir: str | os.PathLike, *, episodes: int = 1, steps: int = 20, seed: int = 0,
                        image_size: int = 128, observation_rows: bool = True, policy: str = "synthetic",
                        start_wall_ns: int = 1_700_000_000_000_000_000, chunk_size: int = 256 * 1024) -> list[Path]:
    """Write ``episodes`` rosbag2 folders ``episode_NNNNNN`` of random data under ``out_dir``; returns them.
    ``chunk_size``: the MCAP chunk size (bytes), as the recorder's (smaller: more chunks, for damage tests)."""
    rng = np.random.default_rng(seed)
    robot = load_embodiment()
    spec = robot.spec(list(bag.CAMERAS), image_size)
    tokenizer = Tokenizer(spec)
    builder = robot.observation_builder(bag.CAMERAS, np.float64)  # the tokenizer node's observation
    paths = []
    t_sim, wall = 1.0, start_wall_ns
    for ep in range(episodes):
        path = Path(out_dir) / f"episode_{ep:06d}"
        with bag.BagWriter(path, chunk_size=chunk_size) as w:
            conns = {topic: w.add_topic(topic, msgtype) for topic, (msgtype, _) in bag.contract_topics().items()}
            w.episode = {"episode": ep, "seed": seed + ep, "triplet": "rgb_test_triplet1", "policy": policy,
                         "task": "rgb_stacking", "start_sim_time": t_sim, "start_wall_ns": wall}
            q = rng.uniform(-1, 1, len(robot.arm_joints))
            images = {c: rng.integers(0, 256, (image_size, image_size, 3), np.uint8) for c in bag.CAMERAS}
            builder.reset()
            success = False
            for k in range(steps + 1):
                done = k == steps
                success = success or k >= steps // 2 + 3
                dq = rng.normal(0, 0.05, len(robot.arm_joints))
                q = q + 0.05 * dq
                for c in bag.CAMERAS:
                    images[c] = np.roll(images[c], 3, axis=1)
                finger = 0.02 if builder.previous_action[robot.gripper_index] <= 0 else 0.005  # open / on an object
                obs = builder.build(RawObservation(
                    images=dict(images), joint_positions=q, joint_velocities=dq,
                    tool_pose=np.array([0.5 + 0.01 * k, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0]),
                    finger_positions=[finger, finger], finger_velocities=[0.0, 0.0]))
                status = {"episode": ep, "step": k, "stacked": k > steps // 2, "success": success, "done": done,
                          "triplet": "rgb_test_triplet1", "sim_time": round(t_sim, 6), "invalid_commands": 0}
                rows = wire.encode_observation_rows(tokenizer.tokenize_observation(obs)) if observation_rows else None
                action = None if done else np.array(
                    [*rng.uniform(-0.07, 0.07, 3), rng.uniform(-1, 1), 255.0 * rng.choice([-1, 1])])
                tokens = tokenizer.tokenize_action(action) if action is not None and observation_rows else None
                write_step(w, conns, wall, t_sim, obs, status, action, rows, spec.name, tokens, robot)
                if action is not None:
                    builder.command(action)
                t_sim += 0.05
                wall += 50_000_000
            w.episode.update({"success": success, "steps": steps, "end_sim_time": t_sim, "end_wall_ns": wall})
        paths.append(path)
    return paths


def write_sim_log(out_dir: str | os.PathLike, *, seed: int = 0, steps: int = 10, triplet: str = "rgb_test_triplet1",
                  action_seed: int = 0, image_size: int = 128) -> Path:
    """One episode of the PyBullet simulator (reset with ``seed``, random actions), logged as the sim node and
    the controller publish it: for replay-in-simulation tests without ROS."""
    from gato_robot.sim.env import RgbStackingEnv  # lazily: pybullet

    rng = np.random.default_rng(action_seed)
    env = RgbStackingEnv(triplet=triplet, cameras=list(bag.CAMERAS), image_size=image_size)
    path = Path(out_dir) / f"sim_seed{seed}"
    t_sim, wall = 1.0, 1_700_000_000_000_000_000
    try:
        obs, info = env.reset(seed=seed)
        with bag.BagWriter(path) as w:
            conns = {topic: w.add_topic(topic, msgtype) for topic, (msgtype, _) in bag.contract_topics().items()}
            w.episode = {"episode": 0, "seed": seed, "triplet": triplet, "policy": "random", "task": "rgb_stacking"}
            for k in range(steps + 1):
                done = k == steps
                status = {"episode": 0, "step": k, "stacked": bool(info["stacked"]), "success": bool(info["success"]),
                          "done": done, "triplet": triplet, "sim_time": round(t_sim, 6), "invalid_commands": 0}
                action = None if done else np.array(
                    [*rng.uniform(-0.07, 0.07, 3), rng.uniform(-1, 1), 255.0 * rng.choice([-1, 1])])
                write_step(w, conns, wall, t_sim, obs, status, action, None, "")
                if action is not None:
                    obs, _, _, _, info = env.step(action.astype(np.float32))
                t_sim += 0.05
                wall += 50_000_000
            w.episode.update(success=bool(info["success"]), steps=steps)
    finally:
        env.close()
    return path
