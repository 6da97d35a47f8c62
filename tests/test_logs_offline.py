"""Offline uses of a log: re-executing it in the simulator from its reset seed (divergence ~0; a wrong seed
diverges at once), and a policy evaluated on its observations (per-dimension error, token accuracy, PNG)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("mcap")

from gato_robot.logs.synthetic import write_sim_log, write_synthetic_log

STEPS = 8


def test_sim_replay_reproduces_a_logged_episode_and_flags_a_wrong_seed(tmp_path):
    pytest.importorskip("pybullet")
    from gato_robot.logs.sim_replay import replay_in_sim

    log = write_sim_log(tmp_path, seed=3, steps=STEPS)
    (same,) = replay_in_sim(log)["episodes"]
    print(f"replay from seed 3: {same}")
    assert same["steps"] == STEPS and same["seed"] == 3
    assert same["initial_tool_error_m"] < 1e-5 and same["tool_error_m"]["max"] < 1e-3
    assert same["diverged_at_step"] is None and same["replayed_success"] == same["logged_success"]
    (other,) = replay_in_sim(log, seed=4)["episodes"]
    assert other["initial_tool_error_m"] > 1e-3 and other["diverged_at_step"] is not None


class _ConstantPolicy:
    """A fake policy with the project's interface: always the same action (tokens from the tokenizer)."""

    def __init__(self, spec, action):
        from gato_robot.core.tokenizer import Tokenizer

        self.action = np.asarray(action, np.float32)
        self.tokens = Tokenizer(spec).tokenize_action(self.action)

    def initial_state(self):
        return type("S", (), {"action_tokens": None})()

    def step(self, observation, state):
        state.action_tokens = self.tokens
        return self.action, state


def test_offline_evaluation_reports_errors_accuracy_and_a_plot(tmp_path):
    from gato_robot.core.specs import rgb_stacking_spec
    from gato_robot.logs.convert import log_to_episodes
    from gato_robot.logs.offline import evaluate_policy

    (log,) = write_synthetic_log(tmp_path, steps=STEPS, observation_rows=False)
    (episode,), _ = log_to_episodes(log)
    first = episode.actions["action"][0]
    result = evaluate_policy(_ConstantPolicy(rgb_stacking_spec(2), first), log, plot=tmp_path / "actions.png")
    logged = episode.actions["action"]
    assert result["steps"] == STEPS
    assert result["mae"]["tool_vx"] == pytest.approx(float(np.mean(np.abs(logged[:, 0] - first[0]))), rel=1e-5)
    assert 0 < result["token_accuracy"] < 1  # right at step 0 at least, not everywhere
    assert (tmp_path / "actions.png").stat().st_size > 1000


def test_offline_evaluation_of_the_onnx_policy(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from gato_robot.logs.offline import evaluate_policy
    from gato_robot.ros import testing
    from gato_robot.runtime.onnx_policy import OnnxPolicy

    model = testing.export_tiny_policy(tmp_path_factory.getbasetemp() / "tiny_policy")
    tmp = tmp_path_factory.mktemp("eval")
    (log,) = write_synthetic_log(tmp, steps=4, observation_rows=False)
    result = evaluate_policy(OnnxPolicy(model, providers="cpu", intra_op_threads=1), log, plot=tmp / "onnx.png")
    print(f"tiny random ONNX policy on a synthetic log: {result}")
    assert result["steps"] == 4 and set(result["mae"]) == {"tool_vx", "tool_vy", "tool_vz", "tool_yaw_rate", "gripper"}
    assert 0 <= result["token_accuracy"] <= 1 and all(np.isfinite(v) for v in result["mae"].values())


def test_video_of_a_log_has_one_frame_per_tick_with_the_action_panel(tmp_path):
    import imageio_ffmpeg

    from gato_robot.logs.video import write_video

    (log,) = write_synthetic_log(tmp_path, steps=STEPS, observation_rows=False)
    result = write_video(log, tmp_path / "log.mp4", scale=1)
    assert result["frames"] == STEPS
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "log.mp4"))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    assert len(frames) == STEPS and frames[0].shape == (128, 3 * 128, 3)
    panel = frames[0][:, 256:].astype(int)
    assert panel.std() > 5  # the action panel is drawn (not a blank area)
