"""The trainer as researchers run it (subprocesses, CPU, tiny model): loss falls, SIGKILL during a checkpoint
write, SIGKILL at a random step then --resume, torchrun with 2 processes (gloo) against 1 process.

Demonstrations: synthetic episodes with a learnable action rule (``gato_robot.training.demos``); the simulator's
collector is not used here so the suite stays fast and independent of PyBullet.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gato_robot.model.checkpoint import load_checkpoint
from gato_robot.training import checkpointing, demos
from gato_robot.training.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "training" / "train.py")
COMMON = ["--set", "model.context=128", "--set", "run.threads=1", "--set", "run.progress=false",
          "--set", "run.tensorboard=false", "--set", "optim.warmup_steps=3", "--set", "run.eval_every=0",
          "--set", "run.deterministic=true"]


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demos")
    demos.synthetic_episodes(root, episodes=8, length=30, tasks=2, seed=0)
    return root


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_cmd(episodes: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, TRAIN, "--data", str(episodes), "--out", str(out), "--steps", str(steps), *COMMON, *extra]


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def losses(out: Path) -> dict[int, float]:
    """step -> loss; a step logged twice (before a kill and after the resume) keeps its last value."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows}


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"trainer exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < end, "timed out waiting for the trainer"
        time.sleep(0.02)


def test_loss_falls_on_demonstrations(episodes, tmp_path):
    run(train_cmd(episodes, tmp_path, 40, "--set", "optim.lr=2e-3"))
    ls = losses(tmp_path)
    first, last = sum(ls[s] for s in (1, 2, 3)) / 3, sum(ls[s] for s in (38, 39, 40)) / 3
    assert last < first - 2.0, (first, last)
    assert json.loads((tmp_path / "train_config.json").read_text())["run"]["steps"] == 40


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(episodes, tmp_path):
    cmd = train_cmd(episodes, tmp_path, 12, "--set", "run.checkpoint_every=4",
                    "--set", "run.checkpoint_write_delay_s=1.0")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    ckpts = tmp_path / "checkpoints"
    try:
        wait_for(lambda: (ckpts / "step_000000004" / "MANIFEST.json").exists(), proc)
        partial = ckpts / ".tmp-step_000000008"
        wait_for(lambda: (partial / "model.safetensors").exists(), proc)  # mid-write: model there, no manifest
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.stderr.close()
    assert partial.exists() and not (partial / "MANIFEST.json").exists()
    latest = checkpointing.latest_valid(ckpts)
    assert latest == ckpts / "step_000000004"
    load_checkpoint(latest)
    from gato_robot.model.config import preset
    from gato_robot.model.gato import Gato

    model = Gato(preset("tiny", context=128))
    state = checkpointing.load(latest, model=model, optimizer=None, dist=DistInfo(), restore_rng=False)
    assert state["step"] == 4
    run(cmd + ["--resume", "--set", "run.checkpoint_write_delay_s=0"])  # and the run continues from it
    assert checkpointing.latest_valid(ckpts) == ckpts / "step_000000012" and not partial.exists()


def test_sigkill_at_a_random_step_then_resume_repeats_the_next_20_losses(episodes, tmp_path):
    steps = 32
    extra = ["--set", "run.checkpoint_every=5", "--set", "model.dropout=0.1", "--set", "data.workers=1"]
    ref = tmp_path / "reference"
    run(train_cmd(episodes, ref, steps, *extra))
    kill_at = random.Random(os.getpid()).randint(6, 12)
    out = tmp_path / "killed"
    cmd = train_cmd(episodes, out, steps, *extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        wait_for(lambda: (out / "metrics.jsonl").exists() and max(losses(out), default=0) >= kill_at, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.stderr.close()
    resumed_from = int(checkpointing.latest_valid(out / "checkpoints").name.split("_")[1])
    assert 5 <= resumed_from <= kill_at
    run(cmd + ["--resume"])
    want, got = losses(ref), losses(out)
    nxt = range(resumed_from + 1, resumed_from + 21)
    assert [got[s] for s in nxt] == [want[s] for s in nxt], f"killed at {kill_at}, resumed from {resumed_from}"


def test_torchrun_two_processes_match_one_process_on_the_same_global_batch(episodes, tmp_path):
    extra = ["--set", "run.batch_size=8", "--set", "run.checkpoint_every=100"]
    run(train_cmd(episodes, tmp_path / "one", 4, *extra))
    one = losses(tmp_path / "one")
    for mode in ("ddp", "fsdp"):
        cmd = train_cmd(episodes, tmp_path / mode, 4, *extra, "--set", f"run.parallel={mode}")
        run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *cmd[1:]])
        two = losses(tmp_path / mode)
        assert sorted(one) == sorted(two) == [1, 2, 3, 4]
        for s in one:
            assert two[s] == pytest.approx(one[s], rel=1e-5, abs=1e-6), (mode, s, one[s], two[s])
        files = {p.name for p in (tmp_path / mode / "checkpoints" / "step_000000004").iterdir()}
        assert {"rng_rank0.json", "rng_rank1.json", "model.safetensors"} <= files
        load_checkpoint(tmp_path / mode / "checkpoints" / "step_000000004")  # a full (unsharded) model checkpoint


def test_sigterm_saves_the_current_step_and_exits_cleanly(episodes, tmp_path):
    cmd = train_cmd(episodes, tmp_path, 200, "--set", "run.checkpoint_every=1000")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        wait_for(lambda: (tmp_path / "metrics.jsonl").exists() and max(losses(tmp_path), default=0) >= 3, proc)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.stderr.close()
    last = max(losses(tmp_path))
    assert last < 200 and checkpointing.latest_valid(tmp_path / "checkpoints").name == f"step_{last:09d}"
