"""The tool pose by forward kinematics against the simulator's own, token by token (docs/ros.md, "Tool pose from
the joints"): why the stack in simulation keeps ``tool_pose_source: topic``.

Scripted-expert episodes (no images). At every step, the tool pose the sim node publishes (the observation's
``proprio/tool_pose``: PyBullet's link state, float32) against what the tokenizer computes with
``tool_pose_source: fk`` (``gato_robot.kinematics`` from the observation's float32 joint angles, float64): the
largest difference and how many of the 7 tool pose tokens differ (``encode_mu_law``, the tokenizer's encoding).

    python benchmarks/fk_tool_pose.py --episodes 6 --steps 400
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from gato_robot.core import specs
from gato_robot.core.tokenizer import encode_mu_law
from gato_robot.kinematics import for_embodiment
from gato_robot.sim.env import RgbStackingEnv
from gato_robot.sim.expert import ScriptedExpert


def measure(episodes: int, steps: int, seed: int = 0) -> dict:
    env = RgbStackingEnv(cameras=2, render_images=False, privileged=True)  # the scripted expert reads object poses
    fk = for_embodiment(env.embodiment)
    expert = ScriptedExpert()
    n = flips = steps_with_flip = 0
    largest = 0.0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state = expert.initial_state()
        for _ in range(steps):
            sim = obs[specs.TOOL_POSE_KEY].astype(np.float64)  # what the sim node publishes
            computed = fk.tool_pose(obs[specs.JOINT_ANGLES_KEY].astype(np.float64))  # what fk mode tokenizes
            differ = int(np.sum(encode_mu_law(sim) != encode_mu_law(computed)))
            flips += differ
            steps_with_flip += differ > 0
            largest = max(largest, float(np.abs(sim - computed).max()))
            n += 1
            action, state = expert.step(obs, state)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    env.close()
    return {"episodes": episodes, "steps": n, "values": 7 * n, "max_abs_difference": largest,
            "token_flips": flips, "steps_with_a_flip": steps_with_flip}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=400, help="at most this many steps per episode")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.episodes, args.steps, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
