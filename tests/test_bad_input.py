"""Issue 28, bad input to the console scripts of the data, training and log folders: a missing path, an empty
folder and a wrongly typed option each give one clear ``error`` line and a non-zero exit (2 for usage errors, as
argparse; the trainer's documented 3 for a data problem), never a traceback. Each script runs as installed
(``.venv/bin/<script>``), in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TINY_TRAIN = ["--set", "run.threads=1", "--set", "run.progress=false", "--set", "run.tensorboard=false"]

# script -> {case: (arguments after the script, expected exit code, text the error line must hold)}
CASES = {
    "gato-log-convert": {
        "missing": (["{missing}", "--out", "{out}"], 2, "{missing}: no such file or folder"),
        "empty": (["{empty}", "--out", "{out}"], 2, "no rosbag2/MCAP logs"),
        "wrong_type": (["{empty}", "--out", "{out}", "--slop", "fast"], 2, "argument --slop: invalid float value"),
    },
    "gato-log-sim-replay": {
        "missing": (["{missing}"], 2, "{missing}: no such file or folder"),
        "empty": (["{empty}"], 2, "{empty}: no .mcap files"),
        "wrong_type": (["{empty}", "--seed", "one"], 2, "argument --seed: invalid int value"),
    },
    "gato-log-video": {
        "missing": (["{missing}", "--out", "{out}/v.mp4"], 2, "{missing}: no such file or folder"),
        "empty": (["{empty}", "--out", "{out}/v.mp4"], 2, "{empty}: no .mcap files"),
        "wrong_type": (["{empty}", "--out", "{out}/v.mp4", "--scale", "big"], 2, "argument --scale: invalid int"),
    },
    "gato-train": {
        "missing": (["--data", "{missing}", "--out", "{out}", *TINY_TRAIN], 3, "data path {missing} does not exist"),
        "empty": (["--data", "{empty}", "--out", "{out}", *TINY_TRAIN], 3, "no episode files (*.h5) under {empty}"),
        "wrong_type": (["--data", "{empty}", "--out", "{out}", "--set", "run.steps=many"], 2,
                       "override run.steps='many'"),
    },
}


@pytest.mark.parametrize("script,case", [(s, c) for s, cases in CASES.items() for c in cases])
def test_console_scripts_answer_bad_input_with_one_error_line(tmp_path, script, case):
    exe = BIN / script
    if not exe.exists():
        pytest.skip(f"{script} is not installed in this environment (pip install -e .)")
    (tmp_path / "empty").mkdir()
    where = {"missing": str(tmp_path / "no_such_log"), "empty": str(tmp_path / "empty"), "out": str(tmp_path / "out")}
    args, code, want = CASES[script][case]
    args = [a.format(**where) for a in args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == code, out[-2000:]
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, out[-2000:]  # one line says what is wrong
    assert want.format(**where) in errors[0], errors[0]
