"""End to end: `gato-stack --sim` (sim node + tokenizer + policy + controller, separate processes, real DDS) runs a
simulated episode with a tiny exported policy; commands reach the arm, the arm moves, the episode status arrives;
Ctrl-C/SIGTERM stops and reaps every node. The same with the second simulated arm (`--robot xarm6`), chosen by its
robot file alone."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")
pytest.importorskip("pybullet")
pytest.importorskip("torch")  # to export the tiny policy

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from gato_robot import wire
from gato_robot.ros import common, testing

pytestmark = pytest.mark.ros
STEPS = 40


def stamp_ns(msg) -> int:
    """A message's header stamp in integer nanoseconds: the key pairing an observation with its action."""
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return testing.export_tiny_policy(tmp_path_factory.getbasetemp() / "tiny_policy")


@pytest.fixture(scope="module")
def tiny_xarm6_policy(tmp_path_factory):
    """A tiny random policy for the xArm6's spec (6 arm joints: another observation layout)."""
    return testing.export_tiny_policy(tmp_path_factory.getbasetemp() / "tiny_xarm6_policy", robot="xarm6")


@pytest.mark.parametrize("robot", ["panda", "xarm6"])
def test_simulated_episode_through_the_launcher(robot, tmp_path, request, monkeypatch):
    tiny_policy = request.getfixturevalue("tiny_policy" if robot == "panda" else "tiny_xarm6_policy")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = testing.domain_for(request.node.nodeid)
    params = testing.write_params(tmp_path / "stack.yaml", {
        # sampled, drawing from the episode's seed as the direct benchmark does: the episode can be reproduced here
        "gato_policy": {"providers": "cpu", "intra_op_threads": 1, "temperature": 1.0, "seed_from_episode": True},
        # lockstep waits up to 10 s for each command: a stalled CI machine must not step the sim without one
        "gato_sim": {"episode_steps": STEPS, "max_episodes": 1, "start_paused": True, "lockstep_timeout_s": 10.0},
    })
    probe = testing.Probe(domain)
    deep = common.QoSProfile(depth=200, reliability=common.ReliabilityPolicy.RELIABLE)
    probe.record(common.TWIST_TOPIC, TwistStamped, deep)
    probe.record(common.GRIPPER_TOPIC, Float64, deep)
    probe.record(common.EPISODE_STATUS_TOPIC, String, deep)
    probe.record(common.OBSERVATION_TOPIC, Image, deep)
    probe.record(common.ACTION_TOKENS_TOPIC, Image, deep)
    probe.record("/diagnostics", DiagnosticArray, deep)
    probe.record(common.JOINT_STATES_TOPIC, JointState, common.SENSOR_QOS)
    log = tmp_path / "launcher.log"
    with open(log, "w") as err:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "gato_robot.ros.launcher", "--sim", "--model", str(tiny_policy),
             "--params-file", str(params), *(["--robot", robot] if robot != "panda" else [])],
            stdout=subprocess.DEVNULL, stderr=err,
            env=testing.ros_env(domain), start_new_session=True)
    try:
        # start the episode once this probe has discovered every publisher, so it records the whole episode
        topics = [common.TWIST_TOPIC, common.GRIPPER_TOPIC, common.EPISODE_STATUS_TOPIC, common.OBSERVATION_TOPIC,
                  common.ACTION_TOKENS_TOPIC, common.JOINT_STATES_TOPIC]
        probe.wait_matched(topics, timeout=60)
        probe.wait_guarded(60)  # the controller's guard reaches the arm (else its first actions are zeros)
        probe.call(common.SIM_RESET_SERVICE, Trigger, timeout=30)

        def done() -> bool:
            return any(json.loads(m.data)["done"] for _, m in probe.received(common.EPISODE_STATUS_TOPIC))

        probe.wait_for(done, timeout=150, what="the episode to end")

        # the final status goes out with the episode's last images, which the policy answers after it: give that
        # answer time to arrive before stopping the stack (otherwise the stop races it and the check below is flaky)
        def stamps(topic: str) -> set[int]:
            return {stamp_ns(m) for _, m in probe.received(topic)}

        with contextlib.suppress(TimeoutError):  # a missing answer is reported with its detail below
            probe.wait_for(lambda: stamps(common.OBSERVATION_TOPIC) <= stamps(common.ACTION_TOKENS_TOPIC),
                           timeout=20, what="the last observation's action")
        statuses = [json.loads(m.data) for _, m in probe.received(common.EPISODE_STATUS_TOPIC)]
    finally:
        code = testing.stop_launcher(launcher)
        probe.close()
    text = log.read_text()
    pids = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", text)]

    # the launcher stopped every node cleanly and reaped them
    assert code == 0, text[-3000:]
    assert len(pids) == 4
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    # the episode status arrived, with its contract's fields
    last = statuses[-1]
    assert last["done"] and last["step"] == STEPS and last["episode"] == 0
    assert {"episode", "step", "stacked", "success", "done", "triplet"} <= set(last)

    # commands arrived at the arm: finite, inside the limits, and the policy's (not only watchdog zeros)
    twists = [m.twist for _, m in probe.received(common.TWIST_TOPIC)]
    v = np.array([[t.linear.x, t.linear.y, t.linear.z, t.angular.z] for t in twists])
    assert v.shape[0] >= STEPS and np.all(np.isfinite(v))
    assert np.all(np.abs(v[:, :3]) <= 0.07 + 1e-12) and np.all(np.abs(v[:, 3]) <= 1.0 + 1e-12)
    assert np.count_nonzero(np.any(v != 0, axis=1)) >= STEPS // 2
    grippers = np.array([m.data for _, m in probe.received(common.GRIPPER_TOPIC)])
    assert grippers.size and np.all(np.abs(grippers) <= 255)

    # the arm moved: the robot file's joints
    from gato_robot.robots import load_embodiment

    embodiment = load_embodiment(robot)
    joints = [m for _, m in probe.received(common.JOINT_STATES_TOPIC)]
    assert list(joints[-1].name) == [*embodiment.arm_joints, *embodiment.finger_joints]
    q = np.array([m.position[:len(embodiment.arm_joints)] for m in joints])
    assert q.shape[0] >= 2 and np.max(np.abs(q[-1] - q[0])) > 1e-3

    # the policy kept its history across steps: replaying the observations it stepped on, in order, through
    # the same policy in this process gives the same action tokens
    from gato_robot.runtime.onnx_policy import OnnxPolicy

    observations = {stamp_ns(m): m for _, m in probe.received(common.OBSERVATION_TOPIC)}
    actions = [m for _, m in probe.received(common.ACTION_TOKENS_TOPIC)]
    assert len(actions) >= STEPS // 2
    policy = OnnxPolicy(tiny_policy, providers="cpu", intra_op_threads=1, temperature=1.0, seed=last["seed"])
    state = policy.initial_state()
    for a in actions:
        key = stamp_ns(a)
        assert key in observations, f"the probe missed the observation at {key * 1e-9:.2f} s (cannot replay)"
        obs = observations[key]
        _, state = policy.step_tokens(wire.decode_observation_rows(common.observation_rows(obs)), state)
        np.testing.assert_array_equal(np.frombuffer(a.data, np.int32), state.action_tokens)

    # the stack ran the direct episode: stepping the environment in this process with the same policy (the same
    # seeded draws) and the controller's safety filter in between gives, step for step, the same observation
    # tokens and the same actions (no step taken on a watchdog stop, none skipped, none late)
    answered = {stamp_ns(a) for a in actions}
    unanswered = [k * 1e-9 for k in sorted(observations) if k not in answered]
    watchdog = [line for line in text.splitlines() if "watchdog" in line or "lockstep" in line]
    assert len(observations) == STEPS + 1 and not unanswered, \
        f"observations without an action at {unanswered}; {len(actions)} actions; log: {watchdog}"
    check_direct_episode(tiny_policy, [observations[k] for k in sorted(observations)],
                         [np.frombuffer(a.data, np.int32) for a in actions], seed=last["seed"], triplet=last["triplet"],
                         robot=robot)


def check_direct_episode(model_dir, observations: list, actions: list[np.ndarray], seed: int, triplet: str,
                         robot: str = "panda") -> None:
    from gato_robot.ros.stack import controller_filter
    from gato_robot.runtime.onnx_policy import OnnxPolicy
    from gato_robot.sim.benchmark import _env_for

    policy = OnnxPolicy(model_dir, providers="cpu", intra_op_threads=1, temperature=1.0, seed=seed)
    filt = controller_filter(*policy.spec.action_bounds())  # the controller's, from config/stack.yaml
    env = _env_for(policy, f"onnx:{model_dir}", triplet, True, robot)
    try:
        obs, _ = env.reset(seed=seed)
        state = policy.initial_state()
        for k, (msg, stack_action) in enumerate(zip(observations, actions)):
            block = policy.tokenizer.tokenize_observation(obs)
            stack = wire.decode_observation_rows(common.observation_rows(msg))
            assert np.array_equal(block.tokens, stack.tokens), f"step {k}: observation tokens differ"
            assert np.array_equal(block.patches, stack.patches), f"step {k}: image patches differ"
            action, state = policy.step_tokens(block, state)
            assert np.array_equal(state.action_tokens, stack_action), f"step {k}: action tokens differ"
            t = common.stamp_to_sec(msg.header.stamp)
            obs, *_ = env.step(filt.filter_action(action, t, t).command.values.astype(np.float32))
    finally:
        env.close()


def test_forward_command_interface_drives_the_simulated_arm(tiny_policy, tmp_path, request, monkeypatch):
    """command_interface:=forward_command: Float64MultiArray [vx, vy, vz, wx, wy, wz] reaches the arm and moves it."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from std_msgs.msg import Float64MultiArray

    domain = testing.domain_for(request.node.nodeid)
    params = testing.write_params(tmp_path / "stack.yaml", {
        "gato_policy": {"providers": "cpu", "intra_op_threads": 1},
        "gato_sim": {"episode_steps": 20, "max_episodes": 1, "start_paused": True},
    })
    probe = testing.Probe(domain)
    deep = common.QoSProfile(depth=200, reliability=common.ReliabilityPolicy.RELIABLE)
    probe.record(common.FORWARD_TOPIC, Float64MultiArray, deep)
    probe.record(common.EPISODE_STATUS_TOPIC, String, deep)
    probe.record(common.JOINT_STATES_TOPIC, JointState, common.SENSOR_QOS)
    nodes = [testing.NodeProcess(name, domain, tmp_path, params, overrides) for name, overrides in (
        ("gato_sim", {"command_interface": "forward_command"}),
        ("gato_tokenizer", {"command_interface": "forward_command", "use_sim_time": True}),
        ("gato_policy", {"model_dir": str(tiny_policy), "use_sim_time": True}),
        ("gato_controller", {"command_interface": "forward_command", "use_sim_time": True, "start_armed": True}))]
    try:
        probe.wait_matched([common.FORWARD_TOPIC, common.EPISODE_STATUS_TOPIC, common.JOINT_STATES_TOPIC])
        probe.wait_for(lambda: probe.node.count_publishers(common.ACTION_TOKENS_TOPIC) >= 1, 60, "the policy")
        probe.wait_guarded(60)  # the controller's guard reaches the arm (else its first actions are zeros)
        probe.call(common.SIM_RESET_SERVICE, Trigger, timeout=30)
        probe.wait_for(lambda: any(json.loads(m.data)["done"] for _, m in probe.received(common.EPISODE_STATUS_TOPIC)),
                       120, "the episode to end")
    finally:
        for n in nodes:
            n.stop()
        probe.close()
    commands = [m for _, m in probe.received(common.FORWARD_TOPIC)]
    data = np.array([m.data for m in commands])
    assert data.shape[1] == 6 and commands[0].layout.dim[0].label == "vx,vy,vz,wx,wy,wz"
    assert np.all(np.isfinite(data)) and np.all(data[:, 3:5] == 0) and np.count_nonzero(np.any(data != 0, axis=1))
    q = np.array([m.position[:7] for _, m in probe.received(common.JOINT_STATES_TOPIC)])
    assert np.max(np.abs(q[-1] - q[0])) > 1e-3


def test_stack_evaluation_runs_consecutive_episodes(tiny_policy, tmp_path, monkeypatch):
    """`python -m gato_robot.ros.evaluate`: the sim node auto-resets between episodes (seed + k), every episode's end
    is read from the episode status, and the table sits beside the direct benchmark's."""
    from gato_robot.ros import evaluate

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    direct = tmp_path / "direct.json"
    direct.write_text(json.dumps({"summary": [{"triplet": "rgb_test_triplet3", "successes": 1, "episodes": 5}],
                                  "episodes": [{"triplet": "rgb_test_triplet3", "seed": s, "success": s == 8}
                                               for s in range(5, 10)]}))
    out = tmp_path / "eval"
    assert evaluate.main(["--model", str(tiny_policy), "--triplets", "rgb_test_triplet3", "--episodes", "2",
                          "--episode-steps", "15", "--seed", "7", "--compare", str(direct), "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert [(e["triplet"], e["seed"], e["steps"]) for e in result["episodes"]] == [("rgb_test_triplet3", 7, 15),
                                                                                   ("rgb_test_triplet3", 8, 15)]
    assert not any(e["success"] for e in result["episodes"])  # 15 random-weight steps cannot stack
    table = (out / "results.md").read_text()
    assert "| rgb_test_triplet3 | 0/2 |" in table and "1/5" in table and "| yes |" in table
    assert "| yes | 1/2 |" in table  # the direct benchmark on seeds 7 and 8: one success
    assert evaluate.same_seed_successes(result["episodes"], "rgb_test_triplet3", [7, 9]) is None  # 9 not run
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"summary": [], "episodes": [{"triplet": "rgb_test_triplet3"}]}))  # no seed
    with pytest.raises(SystemExit) as exit_info:  # refused before any episode runs
        evaluate.main(["--model", str(tiny_policy), "--compare", str(broken), "--out", str(tmp_path / "no")])
    assert exit_info.value.code == 2 and not (tmp_path / "no").exists()
