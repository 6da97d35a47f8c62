"""safety.md scenario 20, the trainer's side: bad episode files are named and skipped with a count in the report
(default) or stop the run with a clear error naming them (``data.on_bad_episode=error``), and data folders with
nothing to train on exit 3 with one clear line: never a traceback.

Every file is written by the real writer and then damaged the way other tools or disks damage them (h5py edits,
flipped bytes, truncation); every run is the real ``training/train.py`` entry (tiny model, 2 steps, CPU).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from gato_robot.training import demos

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "training" / "train.py")
TINY = ["--steps", "2", "--set", "model.context=128", "--set", "run.threads=1", "--set", "run.progress=false",
        "--set", "run.tensorboard=false", "--set", "optim.warmup_steps=1", "--set", "run.eval_every=0",
        "--set", "run.checkpoint_every=1000", "--set", "data.workers=0"]
EXIT_DATA = 3


def train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, TRAIN, "--data", str(data), "--out", str(out), *TINY, *extra],
                          capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)


def errors(p: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (p.stdout + p.stderr).splitlines() if " ERROR " in line]


def put_nan(path: Path, key: str = "observations/proprio/joints", row: int = 3) -> None:
    """A NaN as another tool would leave it: the value edited in place, its row CRC recomputed (only the NaN is
    wrong, so it is the finiteness check that must catch it, not the checksum)."""
    with h5py.File(path, "r+") as f:
        ds = f[key]
        a = ds[...]
        a[row, 0] = np.nan
        ds[...] = a
        f[f"checksums/{key}"][...] = [zlib.crc32(np.ascontiguousarray(r).tobytes()) for r in a]


def flip_data_byte(path: Path, key: str = "actions/action", chunk: int = 2) -> None:
    """One byte flipped inside a data chunk (HDF5's Fletcher-32 catches it when the chunk is read)."""
    with h5py.File(path, "r") as f:
        info = f[key].id.get_chunk_info(chunk)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + 1] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> list[Path]:
    return demos.synthetic_episodes(tmp_path_factory.mktemp("good"), episodes=4, length=20, tasks=1, seed=0)


def copy_of(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir()
    out = []
    for p in paths:
        (folder / p.name).write_bytes(p.read_bytes())
        out.append(folder / p.name)
    return out


def test_scenario_20_bad_files_are_named_skipped_and_counted_in_the_report(good, tmp_path):
    eps = copy_of(good, tmp_path / "data")
    put_nan(eps[1])
    flip_data_byte(eps[2])
    p = train(tmp_path / "data", tmp_path / "run")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    for bad in (eps[1], eps[2]):
        assert re.search(rf"skipping bad episode file .*{bad.name}", out), out[-3000:]
    assert re.search(rf"{eps[1].name}: 'observations/proprio/joints' holds non-finite values .* row 3", out)
    assert re.search(rf"{eps[2].name}: damaged data in 'actions/action'", out)
    report = [line for line in out.splitlines() if "report:" in line]
    assert len(report) == 1 and "2 bad episode files skipped" in report[0]
    assert eps[1].name in report[0] and eps[2].name in report[0] and eps[0].name not in report[0]
    assert "'bad_episodes': 2" in out and "data: 2 training episodes" in out


def test_scenario_20_on_bad_episode_error_stops_naming_the_file(good, tmp_path):
    eps = copy_of(good, tmp_path / "data")
    put_nan(eps[2])
    p = train(tmp_path / "data", tmp_path / "run", "--set", "data.on_bad_episode=error")
    out = p.stdout + p.stderr
    assert p.returncode == EXIT_DATA, out[-3000:]
    assert "Traceback" not in out
    (line,) = errors(p)
    assert f"bad episode file {eps[2]}" in line and "non-finite" in line and "on_bad_episode" in line
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_scenario_20_a_bad_window_found_mid_run_in_a_worker_is_named_without_a_traceback(good, tmp_path):
    """Without the start-up scan (data.verify_episodes=false), the NaN is met when a window is drawn, inside a
    DataLoader worker process: the error still names the file, in one line, exit 3."""
    eps = copy_of(good, tmp_path / "data")
    with h5py.File(eps[0], "r") as f:
        n = f["actions/action"].shape[0]
    for row in range(n):  # every row: whichever window is drawn from this file hits one
        put_nan(eps[0], "actions/action", row)
    p = train(tmp_path / "data", tmp_path / "run", "--set", "data.verify_episodes=false", "--set",
              "data.on_bad_episode=error", "--set", "data.workers=1")
    out = p.stdout + p.stderr
    assert p.returncode == EXIT_DATA, out[-3000:]
    assert "Traceback" not in out and "Original" not in out
    (line,) = errors(p)
    assert f"{eps[0]}: actions['action'] holds non-finite values" in line


@pytest.mark.parametrize("case", ["empty", "not_episodes", "all_damaged"])
def test_scenario_20_nothing_to_train_on_exits_3_with_one_clear_line(good, tmp_path, case):
    data = tmp_path / "data"
    if case == "empty":
        data.mkdir()
        want = "no episode files (*.h5) under"
    elif case == "not_episodes":
        data.mkdir()
        (data / "notes.txt").write_text("not an episode")
        (data / "weights.h5").write_bytes(b"\x00" * 64)  # named like an episode, not HDF5 at all
        with h5py.File(data / "other.h5", "w") as f:  # real HDF5, another format
            f["x"] = np.zeros(3)
        want = "all 2 episode files are bad"
    else:
        eps = copy_of(good, data)
        raw = eps[0].read_bytes()
        eps[0].write_bytes(raw[: len(raw) // 2])  # truncated
        put_nan(eps[1])
        flip_data_byte(eps[2])
        put_nan(eps[3], "actions/action", 0)
        want = "all 4 episode files are bad"
    p = train(data, tmp_path / "run")
    out = p.stdout + p.stderr
    assert p.returncode == EXIT_DATA, out[-3000:]
    assert "Traceback" not in out and "IndexError" not in out
    (line,) = errors(p)
    assert want in line and str(data) in line
