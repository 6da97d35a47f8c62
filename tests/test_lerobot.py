"""LeRobotDataset v3 in and out (issue 32 parts 3, 4, 6): round trip, a dataset written by lerobot itself, bad
input named by file and episode with nothing half-written, and the trainer on an imported dataset.

tests/data/lerobot_v3_tiny was written by lerobot 0.4.4's own writer (LeRobotDataset.create / add_frame /
save_episode, AV1 video: benchmarks/lerobot_check.py write): 2 episodes x 10 frames,
one 32x48 camera, a 4-element state, a 3-element action, two task strings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the lerobot extra (pyarrow, av) is not installed")
pytest.importorskip("av", reason="the lerobot extra (pyarrow, av) is not installed")
import pyarrow.parquet as pq  # noqa: E402

from gato_robot.core.specs import Kind, rgb_stacking_spec  # noqa: E402
from gato_robot.data import lerobot as L  # noqa: E402
from gato_robot.data.episodes import Episode, list_episodes, read_episode, write_episode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "lerobot_v3_tiny"


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """Gradients that move with t: what a video codec keeps within a few levels (noise it would not)."""
    y, x = np.mgrid[0:size, 0:size]
    out = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        out[t, ..., 0] = x * 4 + 3 * t + 10 * seed
        out[t, ..., 1] = y * 6
        out[t, ..., 2] = 100 + 2 * t
    return out


def make_episode(n: int = 10, seed: int = 0, size: int = 32) -> Episode:
    spec = rgb_stacking_spec(2, image_size=size)
    rng = np.random.default_rng(seed)
    obs = {s.name: smooth_images(n, size, seed) if s.kind is Kind.IMAGE
           else rng.normal(size=(n, *s.shape)).astype(np.float32) for s in spec.observations}
    actions = {"action": rng.uniform(-0.05, 0.05, size=(n, 5)).astype(np.float32)}
    meta = {"task": "rgb_stacking", "triplet": seed + 1, "success": seed == 0, "return": float(seed == 0),
            "policy": "scripted_expert", "seed": seed}
    return Episode(spec, obs, actions, (np.arange(n) == n - 1).astype(np.float32) * (seed == 0), meta)


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ours")
    for i in range(2):
        write_episode(root / f"episode_{i}", make_episode(seed=i))
    return root


@pytest.fixture(scope="module")
def exported(ours, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "ds"
    report = L.export_dataset([ours], out)
    assert (report.episodes, report.frames) == (2, 20)
    return out


def no_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_export_writes_the_v3_layout(exported):
    info = json.loads((exported / L.INFO_PATH).read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 20, 2)
    feats = info["features"]
    assert feats["observation.images.basket_front_left"]["dtype"] == "video"
    assert feats["observation.images.basket_front_left"]["shape"] == [32, 32, 3]
    assert feats["observation.state"]["shape"] == [29] and feats["action"]["names"][0] == "tool_vx"
    assert feats["observation.state"]["names"][0] == "proprio/gripper.opening"
    assert (exported / "videos/observation.images.basket_front_left/chunk-000/file-000.mp4").is_file()
    rows = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    assert rows.column("index").to_pylist() == list(range(20))
    assert rows.column("episode_index").to_pylist() == [0] * 10 + [1] * 10
    eps = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    key = "videos/observation.images.basket_front_left"
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in eps] == [(0, 10), (10, 20)]
    assert [(e[f"{key}/from_timestamp"], e[f"{key}/to_timestamp"]) for e in eps] == [(0.0, 0.5), (0.5, 1.0)]
    assert eps[0]["tasks"] == ["stack the red object on the blue object (triplet 1)"]
    tasks = pq.read_table(exported / L.TASKS_PATH)
    assert tasks.column("task_index").to_pylist() == [0, 1]
    stats = json.loads((exported / L.STATS_PATH).read_text())
    assert np.asarray(stats["observation.images.basket_front_left"]["mean"]).shape == (3, 1, 1)
    assert L.check_layout(exported) == []
    assert not no_leftovers(exported.parent)


def test_round_trip_export_import(ours, exported, tmp_path):
    report = L.import_dataset(exported, tmp_path / "back")
    assert (report.episodes, report.frames) == (2, 20)
    for a_path, b_path in zip(list_episodes(ours), list_episodes(tmp_path / "back"), strict=True):
        a, b = read_episode(a_path), read_episode(b_path)
        assert a.spec == b.spec and a.metadata == b.metadata
        for s in a.spec.observations:
            if s.kind is Kind.IMAGE:  # lossy H.264 (yuv420p): within a few levels
                diff = np.abs(a.observations[s.name].astype(int) - b.observations[s.name].astype(int))
                assert diff.mean() < 3 and np.percentile(diff, 99) < 16, (s.name, diff.mean())
            else:
                np.testing.assert_array_equal(a.observations[s.name], b.observations[s.name])
        np.testing.assert_array_equal(a.actions["action"], b.actions["action"])
        np.testing.assert_array_equal(a.rewards, b.rewards)


def test_import_a_dataset_written_by_lerobot():
    src = L.LeRobotSource(REAL)
    spec = src.spec
    assert spec.name == "lerobot_toy_arm" and spec.control_hz == 10
    obs = {s.name: s for s in spec.observations}
    assert obs["camera/top"].shape == (32, 48, 3)
    assert obs["proprio/state"].names == ("j0", "j1", "j2", "gripper")
    assert obs["text/task"].kind is Kind.TEXT  # two task strings: the prompt tells the episodes apart
    (action,) = spec.actions
    assert action.encoding.value == "linear" and action.low[0] == 0.0 and action.high[2] == 1.0
    episodes = list(src.iter_episodes())
    assert [len(e) for e in episodes] == [10, 10]
    y, x = np.mgrid[0:32, 0:48]
    for e, ep in enumerate(episodes):
        assert ep.metadata["task"] == ["pick up the cube", "push the cube left"][e]
        assert ep.observations["text/task"][0] == ep.metadata["task"]
        t = np.arange(10, dtype=np.float32)
        np.testing.assert_array_equal(ep.observations["proprio/state"][:, 2], np.full(10, e, np.float32))
        np.testing.assert_allclose(ep.observations["proprio/state"][:, 0], t / 10, rtol=1e-6)
        np.testing.assert_allclose(ep.actions["action"][:, 0], 0.1 * t, rtol=1e-6)
        for k in (0, 9):
            want = np.stack([(x * 5 + 8 * k) % 256, y * 7 + 10 * e, np.full_like(x, 100)], -1)
            diff = np.abs(ep.observations["camera/top"][k].astype(int) - want)
            assert np.median(diff) <= 3, (e, k, np.median(diff))


def test_import_resizes_and_can_drop_the_task_text(tmp_path):
    src = L.LeRobotSource(REAL, image_size=(16, 32), task_text="never")
    assert {s.name: s.shape for s in src.spec.observations} == {"camera/top": (16, 32, 3), "proprio/state": (4,)}
    ep = next(src.iter_episodes())
    assert ep.observations["camera/top"].shape == (10, 16, 32, 3)


def bad_copy(exported: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    shutil.copytree(exported, root)
    return root


def rewrite(path: Path, edit) -> None:
    rows = pq.read_table(path).to_pylist()
    edit(rows)
    table = pq.read_table(path)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def assert_refused(src: Path, tmp_path: Path, *patterns: str) -> str:
    out = tmp_path / "out"
    with pytest.raises(L.LeRobotError) as info:
        L.import_dataset(src, out)
    for p in patterns:
        assert p in str(info.value), (p, str(info.value))
    assert not out.exists() and not no_leftovers(tmp_path), "a refused import left files behind"
    return str(info.value)


def test_missing_video_names_file_and_episode(exported, tmp_path):
    root = bad_copy(exported, tmp_path)
    video = root / "videos/observation.images.basket_front_right/chunk-000/file-000.mp4"
    video.unlink()
    assert_refused(root, tmp_path, str(video), "missing video", "episode 0")


def test_unsupported_dtype_names_the_feature(exported, tmp_path):
    root = bad_copy(exported, tmp_path)
    info = json.loads((root / L.INFO_PATH).read_text())
    info["features"]["observation.note"] = {"dtype": "string", "shape": [1], "names": None}
    (root / L.INFO_PATH).write_text(json.dumps(info))
    assert_refused(root, tmp_path, str(root / L.INFO_PATH), "'observation.note'", "dtype 'string'")


def test_mismatched_frame_counts_name_file_and_episode(exported, tmp_path):
    root = bad_copy(exported, tmp_path)
    episodes = root / "meta/episodes/chunk-000/file-000.parquet"
    rewrite(episodes, lambda rows: rows[1].update(length=9))
    assert_refused(root, tmp_path, str(root / "data/chunk-000/file-000.parquet"), "episode 1", "10 frame rows",
                   "length 9")
    # the video holding fewer frames than the episode's rows
    shutil.rmtree(root)
    root = bad_copy(exported, tmp_path)
    key = "videos/observation.images.basket_front_left"
    rewrite(root / "meta/episodes/chunk-000/file-000.parquet", lambda rows: rows[1].update({f"{key}/to_timestamp": 0.9}))
    assert_refused(root, tmp_path, f"{key}/chunk-000/file-000.mp4", "episode 1", "8 frames", "mismatched frame counts")


def test_non_finite_value_names_file_episode_and_frame(exported, tmp_path):
    root = bad_copy(exported, tmp_path)
    data = root / "data/chunk-000/file-000.parquet"

    def poison(rows):
        rows[14]["observation.state"][3] = float("nan")  # episode 1, frame 4

    rewrite(data, poison)
    assert_refused(root, tmp_path, str(data), "episode 1", "non-finite", "frame 4")


def test_episodes_stream_one_at_a_time(exported, tmp_path):
    """Episode 0 is yielded before episode 1 is touched: a bad later episode fails only when it is reached."""
    root = bad_copy(exported, tmp_path)
    rewrite(root / "meta/episodes/chunk-000/file-000.parquet", lambda rows: rows[1].update(length=9))
    stream = L.LeRobotSource(root).iter_episodes()
    assert len(next(stream)) == 10
    with pytest.raises(L.LeRobotError, match="episode 1"):
        next(stream)


def test_export_refuses_mixed_embodiments_and_writes_nothing(ours, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(ours, mixed)
    write_episode(mixed / "episode_9", make_episode(seed=2, size=48))
    out = tmp_path / "ds"
    with pytest.raises(L.LeRobotError, match=r"episode_9\.h5: episode 2: spec"):
        L.export_dataset([mixed], out)
    assert not out.exists() and not no_leftovers(tmp_path)
    with pytest.raises(L.LeRobotError, match="already exists"):
        L.export_dataset([ours], mixed)


def test_command_lines(ours, exported, tmp_path, capsys):
    assert L.export_main([str(ours), "--out", str(tmp_path / "ds"), "--max-episodes", "1"]) == 0
    assert "1 episodes, 10 frames" in capsys.readouterr().out
    assert L.import_main([str(tmp_path / "ds"), "--check"]) == 0
    assert L.import_main([str(exported), "--out", str(tmp_path / "eps")]) == 0
    assert len(list_episodes(tmp_path / "eps")) == 2
    assert L.import_main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "meta/info.json: missing" in capsys.readouterr().err


def test_imported_episodes_cache_once(tmp_path):
    first = L.imported_episodes(REAL, tmp_path / "cache")
    assert len(first) == 2 and L.imported_episodes(REAL, tmp_path / "cache") == first
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one fingerprinted folder, nothing staged left over


def test_trainer_reads_a_lerobot_dataset(tmp_path):
    """``--data lerobot:DIR``: the trainer's episode index imports the folder once into the cache
    ($XDG_CACHE_HOME/gato_robot/lerobot) and samples windows from the imported episodes."""
    pytest.importorskip("torch")
    cmd = [sys.executable, str(ROOT / "training" / "train.py"), "--data", f"lerobot:{REAL}", "--out",
           str(tmp_path / "run"), "--steps", "2", "--set", "model.context=128", "--set", "run.threads=1",
           "--set", "run.progress=false", "--set", "run.tensorboard=false", "--set", "run.eval_every=0",
           "--set", "data.eval_fraction=0", "--set", "optim.schedule=constant"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 2
    assert len(list_episodes(tmp_path / "cache" / "gato_robot" / "lerobot")) == 2


def test_lerobot_reader_accepts_the_export(exported):
    """Optional: lerobot itself (absent from CI; see docs/lerobot.md for the side install that ran this)."""
    pytest.importorskip("lerobot.datasets.lerobot_dataset", reason="lerobot is not installed (optional check)")
    spec = importlib.util.spec_from_file_location("lerobot_check", ROOT / "benchmarks" / "lerobot_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    n, item = check.read_with_lerobot(exported)
    assert n == 20 and tuple(item["observation.images.basket_front_left"].shape) == (3, 32, 32)
    last = make_episode(seed=1)
    np.testing.assert_array_equal(item["action"].numpy(), last.actions["action"][-1])
    assert item["task"] == "stack the red object on the blue object (triplet 2)" and bool(item["next.done"])


def test_image_size_not_a_multiple_of_16_asks_for_image_size(tmp_path):
    root = tmp_path / "odd"
    shutil.copytree(REAL, root)
    info = json.loads((root / L.INFO_PATH).read_text())
    info["features"]["observation.images.top"]["shape"] = [30, 48, 3]
    (root / L.INFO_PATH).write_text(json.dumps(info))
    with pytest.raises(L.LeRobotError, match=r"info\.json: .*multiple of 16.*--image-size"):
        L.LeRobotSource(root)
    assert L.LeRobotSource(root, image_size=(32, 48)).spec.observations[1].shape == (32, 48, 3)
