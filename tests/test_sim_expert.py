"""The scripted expert, demo collection and the benchmark runner (small episode counts, images off)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pybullet")

from gato_robot.data.episodes import EpisodeReader
from gato_robot.sim import benchmark, collect
from gato_robot.sim.env import RgbStackingEnv
from gato_robot.sim.expert import ScriptedExpert, _topple_push, plan_grasp
from gato_robot.sim.feedback_expert import FeedbackExpert
from gato_robot.sim.policies import make_policy
from gato_robot.sim.rollout import run_episode


def test_expert_stacks_cubes():
    env = RgbStackingEnv(render_images=False, privileged=True, object_ids=("s0", "s0", "s0"))
    expert = ScriptedExpert()
    try:
        results = [run_episode(env, expert, seed) for seed in range(3)]
    finally:
        env.close()
    assert all(r.success for r in results), [r.summary() for r in results]
    # a stacking episode passes through every progress stage the benchmark reports
    assert all(r.summary()["reached_red"] and r.summary()["lifted_red"] and r.summary()["red_over_blue"]
               for r in results), [r.summary() for r in results]


def test_feedback_expert_stacks_from_the_start_and_from_wherever_another_policy_left_it():
    """The DAgger property: a memoryless expert labels any state, so it finishes the task from states another
    policy led to (here 60 steps of random motion with random gripper commands first)."""
    env = RgbStackingEnv(render_images=False, privileged=True, object_ids=("s0", "s0", "s0"))
    expert = FeedbackExpert()
    assert expert.initial_state() is None
    rng = np.random.default_rng(3)
    steps = [0]

    def random_first(action, obs):
        steps[0] += 1
        if steps[0] <= 60:
            return rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        return action

    try:
        plain = [run_episode(env, expert, seed) for seed in range(2)]
        perturbed = run_episode(env, expert, 5, execute=random_first)
        obs, _ = env.reset(seed=0)
        first, _ = expert.step(obs, None)
        again, _ = FeedbackExpert().step(obs, "anything")  # no hidden state: the same state, the same action
    finally:
        env.close()
    assert all(r.success for r in plain), [r.summary() for r in plain]
    assert perturbed.success, perturbed.summary()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first[:3]).max() <= 0.07 + 1e-6 and abs(first[3]) <= 1.0 + 1e-6 and first[4] in (-255.0, 255.0)


def test_grasp_plan_prefers_the_nearest_yaw_of_a_symmetric_object():
    # a lone cube: closing along x and along y are equally good; the wrist should turn as little as possible
    cube = np.array([[x, y, z] for x in (-0.025, 0.025) for y in (-0.025, 0.025) for z in (0.0, 0.05)]) + [0.6, 0, 0]
    cube = np.concatenate([cube, np.repeat(cube[-1:], 12, axis=0)])
    far = cube + [0.0, 0.5, 0.0]
    verts = np.stack([cube, far, far + [0.0, 0.2, 0.0]])
    for current in (-1.3, -0.2, 0.3, 1.4):
        _, _, yaw = plan_grasp(verts, 0, prefer_yaw=current, yaw_cost=0.02)
        assert abs(yaw - current) < 0.3, (current, yaw)  # the turn itself: the wrist cannot wrap past +-pi/2


def test_expert_actions_are_valid_demonstrations():
    env = RgbStackingEnv(triplet="rgb_test_triplet4", render_images=False, privileged=True)
    try:
        r = run_episode(env, ScriptedExpert(), seed=0, record=True)
    finally:
        env.close()
    actions = np.stack(r.actions)
    assert actions.shape == (400, 5)
    assert np.all(np.abs(actions[:, :3]) <= 0.07 + 1e-6) and np.all(np.abs(actions[:, 3]) <= 1.0 + 1e-6)
    assert set(np.unique(actions[:, 4])) <= {-255.0, 255.0}
    assert "privileged/object_poses" not in r.observations, "recorded observations are the policy's only"


def test_expert_needs_the_privileged_observation():
    env = RgbStackingEnv(render_images=False)
    try:
        obs, _ = env.reset(seed=0)
        with pytest.raises(ValueError, match="privileged=True"):
            ScriptedExpert().step(obs, ScriptedExpert().initial_state())
    finally:
        env.close()


def test_grasp_closes_across_the_narrow_axis():
    # a 2 x 6 x 4 cm box, long along y, alone: the fingers must close along x (tool yaw +-pi/2)
    corners = np.array([[x, y, z] for x in (-0.01, 0.01) for y in (-0.03, 0.03) for z in (0.0, 0.04)])
    box = np.concatenate([corners, np.repeat(corners[-1:], 12, axis=0)]) + [0.6, 0.0, 0.0]
    far = box + [0.0, 0.5, 0.0]
    xy, z, yaw = plan_grasp(np.stack([box, far, far + [0.0, 0.2, 0.0]]), 0)
    np.testing.assert_allclose(xy, [0.6, 0.0], atol=1e-6)
    assert abs(abs(yaw) - np.pi / 2) < 1e-6
    assert 0.01 < z < 0.04


def _prism(section_yz: list[tuple[float, float]], x_range: tuple[float, float]) -> np.ndarray:
    """World vertices of a prism extruded along x from a (y, z) cross-section."""
    return np.array([[x, y, z] for x in x_range for y, z in section_yz])


def test_ridge_topped_long_prism_is_tipped_along_its_ridge():
    # b3 lying on its widest side face: a quadrilateral section (no two sides parallel), so its top is a ridge
    # along x; rolling it across the ridge only brings up another ridge, so the push runs along the ridge
    section = [(0.062, 0.001), (0.115, 0.001), (0.123, 0.031), (0.087, 0.061)]
    v = _prism(section, (0.634, 0.697))
    start, direction, along = _topple_push(v, v.mean(axis=0))
    assert along
    np.testing.assert_allclose(np.abs(direction), [1.0, 0.0], atol=1e-6)
    assert direction[0] < 0  # toward the basket centre (x = 0.6)
    assert start[0] > 0.697 + 0.02 and start[2] > 0.03  # behind the far end face, high on it
    # a short prism of the same section is pushed across the ridge instead
    start, direction, along = _topple_push(_prism(section, (0.66, 0.70)), v.mean(axis=0))
    assert not along and abs(direction[1]) > 0.99
    # a flat top needs no push
    cube = np.array([[x, y, z] for x in (0.6, 0.65) for y in (0.0, 0.05) for z in (0.0, 0.05)])
    assert _topple_push(cube, cube.mean(axis=0)) is None


def test_collect_writes_a_readable_episode(tmp_path):
    info = collect.collect_one("rgb_test_triplet1", 0, tmp_path, cameras=2, image_size=64, successful_only=False)
    with EpisodeReader(info["path"]) as reader:
        ep = reader.read()
        assert len(ep) == 400
        assert ep.observations["camera/basket_front_left"].shape == (400, 64, 64, 3)
        assert ep.extras["object_poses"].shape == (400, 3, 7)
        assert reader.metadata["policy"] == "scripted_expert"
        assert reader.metadata["triplet"] == "rgb_test_triplet1" and reader.metadata["seed"] == 0
        assert reader.metadata["success"] == info["success"]
        assert reader.metadata["return"] == pytest.approx(float(ep.rewards.sum()))


def test_collect_max_steps_writes_a_short_episode_of_the_same_start(tmp_path):
    paths = [collect.collect_one("rgb_test_triplet1", 0, tmp_path / str(n), cameras=2, image_size=64,
                                 successful_only=False, max_steps=n)["path"] for n in (30, 31)]
    with EpisodeReader(paths[0]) as reader:
        short = reader.read()
        assert len(short) == 30 and short.extras["object_poses"].shape == (30, 3, 7)
        assert reader.metadata["max_steps"] == 30
    with EpisodeReader(paths[1]) as reader:
        longer = reader.read()
    assert len(longer) == 31
    # the same seed starts the same layout and the expert acts the same: the short one is a prefix
    np.testing.assert_array_equal(longer.actions["action"][:30], short.actions["action"])
    np.testing.assert_array_equal(longer.extras["object_poses"][:30], short.extras["object_poses"])


def test_wilson_interval():
    lo, hi = benchmark.wilson_interval(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-3) and hi == pytest.approx(0.9448, abs=1e-3)
    assert benchmark.wilson_interval(0, 10)[0] == 0.0


def test_exact_mcnemar():
    from gato_robot.core.stats import exact_mcnemar

    assert exact_mcnemar(0, 0) == 1.0 and exact_mcnemar(3, 3) == 1.0
    assert exact_mcnemar(16, 6) == pytest.approx(0.0525, abs=1e-4)  # 2 * P(X <= 6), X ~ Bin(22, 1/2)
    assert exact_mcnemar(6, 16) == exact_mcnemar(16, 6)
    assert exact_mcnemar(5, 0) == pytest.approx(2 / 32)


def test_benchmark_runner_writes_results(tmp_path):
    assert benchmark.main(["--policy", "random", "--triplets", "rgb_test_triplet5", "--episodes", "1",
                           "--workers", "1", "--video-episodes", "0", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"][0]["triplet"] == "rgb_test_triplet5" and len(data["episodes"]) == 1
    assert (tmp_path / "success.png").stat().st_size > 1000
    assert "Wilson" in (tmp_path / "results.md").read_text()
    episode = data["episodes"][0]
    assert not episode["lifted_red"] and not episode["red_over_blue"]  # random actions with an open-close gripper
    assert 0.0 < episode["min_tool_red_m"] < 1.0 and data["summary"][0]["lifted_red"] == 0.0


def test_benchmark_runs_over_disjoint_seeds_merge_into_one_result(tmp_path, capsys):
    common = ["--policy", "random", "--triplets", "rgb_test_triplet5", "--episodes", "1", "--workers", "1",
              "--video-episodes", "0"]
    for seed in (0, 1):
        assert benchmark.main([*common, "--seed", str(seed), "--out", str(tmp_path / f"s{seed}")]) == 0
    parts = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    assert benchmark.main(["--merge", *parts, "--out", str(tmp_path / "all")]) == 0
    merged = json.loads((tmp_path / "all" / "results.json").read_text())
    assert sorted(e["seed"] for e in merged["episodes"]) == [0, 1] and merged["episodes_per_triplet"] == 2
    assert merged["summary"][0]["episodes"] == 2 and (tmp_path / "all" / "success.png").stat().st_size > 1000
    # the same seeds twice, or another policy, are refused
    assert benchmark.main(["--merge", parts[0], parts[0], "--out", str(tmp_path / "dup")]) == 2
    other = json.loads((tmp_path / "s1" / "results.json").read_text())
    other["policy"] = "expert"
    (tmp_path / "s1" / "results.json").write_text(json.dumps(other))
    assert benchmark.main(["--merge", *parts, "--out", str(tmp_path / "mixed")]) == 2
    assert "policy" in capsys.readouterr().err


def test_bad_policy_and_triplet_names_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="expert, random, torch"):
        make_policy("gpt")
    assert benchmark.main(["--triplets", "rgb_test_triplet7", "--out", str(tmp_path)]) == 2
    assert "valid names" in capsys.readouterr().err


def test_markov_prefix_restarts_a_policy_at_every_step():
    from gato_robot.sim.policies import Memoryless, needs_privileged

    class Counter:  # acts with the number of steps since initial_state(): all history
        def initial_state(self):
            return 0

        def step(self, observation, state):
            return np.full(5, state + 1, np.float32), state + 1

    state, memoryless, mstate = 0, Memoryless(Counter()), None
    for _ in range(3):
        a, state = Counter().step({}, state)
        b, mstate = memoryless.step({}, mstate)
    assert a[0] == 3 and b[0] == 1
    assert isinstance(make_policy("markov:random"), Memoryless)
    assert needs_privileged("markov:expert") and not needs_privileged("markov:random")


def test_executed_action_drives_while_the_policy_labels():
    """run_episode(execute=...): the env executes the executor's action, the record keeps the policy's."""
    env = RgbStackingEnv(render_images=False, privileged=True, object_ids=("s0", "s0", "s0"))
    executed = []

    def hold_still(action, obs):
        executed.append(action)
        return np.array([0, 0, 0, 0, -255], np.float32)

    try:
        r = run_episode(env, ScriptedExpert(), seed=0, record=True, execute=hold_still)
    finally:
        env.close()
    labels, tool = np.stack(r.actions), np.stack(r.observations["proprio/tool_pose"])
    np.testing.assert_allclose(labels, np.stack(executed))  # the expert's actions are the record
    assert np.abs(labels[:, :3]).max() > 0.02  # the expert asked to move...
    assert np.abs(tool[:, :3] - tool[0, :3]).max() < 0.01  # ...the arm, given zeros, stayed
    assert not r.success


def test_dart_noise_perturbs_motion_within_limits_and_never_the_gripper():
    env = RgbStackingEnv(render_images=False, privileged=True)
    try:
        execute = collect.noise_executor(env, 0.5, seed=3)
        low, high = env.action_space.low, env.action_space.high
        a = np.array([0.0, 0.0, 0.0, 0.0, 255.0], np.float32)
        out = np.stack([execute(a, {}) for _ in range(2000)])
    finally:
        env.close()
    assert np.all(out >= low) and np.all(out <= high) and np.all(out[:, 4] == 255.0)
    std = out[:, :4].std(axis=0) / ((high[:4] - low[:4]) / 2)
    assert np.all((std > 0.3) & (std < 0.7)), std  # about sigma (0.5) of each limit, before clipping
    lag1 = [np.corrcoef(out[:-1, i], out[1:, i])[0, 1] for i in range(4)]
    assert min(lag1) > 0.8, lag1  # correlated in time: it pushes the arm off course, not just jitters


def test_collect_dagger_records_the_expert_labels_of_the_learners_states(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from gato_robot.model.export import export_random_policy

    model = export_random_policy(tmp_path / "tiny")  # untrained: it drives where the expert would not (128 px)
    info = collect.collect_one("rgb_test_triplet1", 0, tmp_path / "data", cameras=2, image_size=128,
                               successful_only=False, dagger=f"onnx:{model}", dagger_beta=0.0)
    with EpisodeReader(info["path"]) as reader:
        ep = reader.read()
        assert reader.metadata["policy"] == "scripted_expert"
        assert reader.metadata["executed"].startswith(f"onnx:{model}")
        executed = ep.observations["proprio/previous_action"][1:]  # what the env ran, one step late
        labels = ep.actions["action"][:-1]
        assert np.abs(executed - labels).max() > 0.01  # the learner drove, the expert labelled


FORK_SAFETY_SCRIPT = """
import sys, torch
from pathlib import Path
from gato_robot.model.export import export_random_policy
from gato_robot.sim import benchmark
torch.set_num_threads(2)
torch.ones(512, 512) @ torch.ones(512, 512)  # the parent's intra-op thread pool is running, as in a trainer
root = Path(sys.argv[1])
export_random_policy(root / "tiny")
rows = benchmark.run(f"torch:{root / 'tiny' / 'checkpoint'}", ["rgb_test_triplet1"], 1, 1, root / "bench",
                     video_episodes=0)
assert rows[0]["episodes"] == 1
print("ok")
"""


def test_benchmark_workers_start_safely_from_a_process_running_torch_threads(tmp_path):
    """The trainer's simulated evaluation calls the benchmark from a process whose torch thread pool is live: a
    forked worker running torch there hung forever (OpenMP is not fork-safe); workers are spawned."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", FORK_SAFETY_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_sampled_benchmark_episodes_depend_on_their_seed_only(tmp_path):
    """--temperature > 0: each episode's draws are seeded by the episode's seed, so an episode gives the same
    result whichever chunk (worker) runs it; the draws do change the actions (greedy differs)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from gato_robot.model.export import export_random_policy

    name = f"onnx:{export_random_policy(tmp_path / 'tiny')}"
    both = benchmark._run_chunk(name, "rgb_test_triplet1", [3, 4], images=True, threads=1, temperature=1.0)
    alone = benchmark._run_chunk(name, "rgb_test_triplet1", [4], images=True, threads=1, temperature=1.0)
    greedy = benchmark._run_chunk(name, "rgb_test_triplet1", [4], images=True, threads=1)
    assert both[1] == alone[0]
    assert greedy[0]["min_tool_red_m"] != alone[0]["min_tool_red_m"]
    with pytest.raises(ValueError, match="greedy only"):
        make_policy(f"markov:{name}", temperature=1.0)


def test_episode_video_re_runs_one_benchmark_episode(tmp_path):
    """The demo's video of a stacked episode: the same seed and seeded draws give the benchmark's episode again."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from gato_robot.model.export import export_random_policy

    name = f"onnx:{export_random_policy(tmp_path / 'tiny')}"
    (episode,) = benchmark._run_chunk(name, "rgb_test_triplet1", [7], images=True, threads=1, temperature=1.0)
    again = benchmark.episode_video(name, "rgb_test_triplet1", 7, tmp_path / "one.mp4", temperature=1.0)
    assert again == episode and (tmp_path / "one.mp4").stat().st_size > 10_000
