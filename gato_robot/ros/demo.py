"""One simulated episode through the whole ROS 2 stack, watched from outside (the README's main job uses it).

``gato-stack --sim`` starts the sim node, tokenizer, policy and controller as separate processes on a private
ROS domain; a probe node in this process starts the episode, records the arm commands, the episode status and
the front-left camera stream, then stops the stack with SIGTERM. Returns a summary and writes an MP4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from gato_robot import wire
from gato_robot.ros import common, testing

CAMERA = "basket_front_left"


def run_stack_episode(model_dir: str | os.PathLike, out_dir: str | os.PathLike, steps: int = 100,
                      triplet: str = "rgb_test_triplet1", seed: int = 0, timeout_s: float = 300.0,
                      temperature: float | None = None) -> dict[str, Any]:
    """Run ``steps`` control steps of one simulated episode through the stack; write ``stack_episode.mp4``.
    ``temperature``: the policy node's (0 greedy); None: the model's recommendation (the shipped model's: 1)."""
    from gato_robot.ros.stack import MODEL_TEMPERATURE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    domain = testing.domain_for(f"gato-demo-{os.getpid()}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        params = testing.write_params(Path(tmp) / "stack.yaml", {
            "gato_policy": {"providers": "auto", "intra_op_threads": 1, "temperature":
                            MODEL_TEMPERATURE if temperature is None else float(temperature)},
            "gato_sim": {"episode_steps": steps, "max_episodes": 1, "start_paused": True, "triplet": triplet,
                         "seed": seed},
        })
        probe = testing.Probe(domain, name="gato_demo_probe")
        reliable = common.QoSProfile(depth=500, reliability=common.ReliabilityPolicy.RELIABLE)
        probe.record(common.TWIST_TOPIC, TwistStamped, reliable)
        probe.record(common.EPISODE_STATUS_TOPIC, String, reliable)
        probe.record("/diagnostics", DiagnosticArray, reliable)
        camera_topic = common.camera_topic(CAMERA)
        probe.record(camera_topic, Image, common.SENSOR_QOS)
        log_path = out / "stack.log"
        with open(log_path, "w") as log:
            launcher = subprocess.Popen(
                [sys.executable, "-m", "gato_robot.ros.launcher", "--sim", "--model", str(model_dir),
                 "--params-file", str(params)],
                stdout=log, stderr=subprocess.STDOUT, env=testing.ros_env(domain), start_new_session=True)
        try:
            probe.wait_matched([common.TWIST_TOPIC, common.EPISODE_STATUS_TOPIC, camera_topic], timeout=90)
            probe.wait_guarded(60)  # the controller's guard reaches the arm (else its first actions are zeros)
            probe.call(common.SIM_RESET_SERVICE, Trigger, timeout=60)

            def done() -> bool:
                return any(json.loads(m.data)["done"] for _, m in probe.received(common.EPISODE_STATUS_TOPIC))

            probe.wait_for(done, timeout=timeout_s, what="the simulated episode to end")
        finally:
            code = testing.stop_launcher(launcher)
            probe.close()
    statuses = [json.loads(m.data) for _, m in probe.received(common.EPISODE_STATUS_TOPIC)]
    twists = [m for _, m in probe.received(common.TWIST_TOPIC)]
    speeds = [float(np.linalg.norm([t.twist.linear.x, t.twist.linear.y, t.twist.linear.z])) for t in twists]
    frames = [wire.decode_image(m.encoding, m.height, m.width, m.step, m.data) for _, m in probe.received(camera_topic)]
    video = out / "stack_episode.mp4"
    if frames:
        import imageio.v2 as imageio

        imageio.mimwrite(video, frames, fps=20, macro_block_size=8)
    latency = [
        {v.key: v.value for v in s.values}
        for _, a in probe.received("/diagnostics") for s in a.status if s.name.endswith("gato_policy")
    ]
    last = statuses[-1] if statuses else {}
    return {
        "steps": int(last.get("step", 0)), "success": bool(last.get("success", False)), "triplet": triplet,
        "seed": seed, "temperature": temperature,
        "arm_commands": len(twists), "moving_commands": int(sum(s > 1e-6 for s in speeds)),
        "max_commanded_speed_m_s": max(speeds, default=0.0), "camera_frames": len(frames),
        "policy_diagnostics": latency[-1] if latency else {}, "launcher_exit_code": code,
        "video": str(video) if frames else None, "log": str(log_path),
    }
