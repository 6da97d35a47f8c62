"""Architecture rules as tests: dependencies point inward (see gato_robot/__init__.py and README)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "gato_robot"
# rosbags and mcap are pure-Python log libraries (no rclpy, no ROS install): gato_robot/logs may use them
ROS_MODULES = ("rclpy", "launch", "launch_ros", "rosgraph_msgs", "builtin_interfaces", "mcap_ros2")
MSG_SUFFIX = "_msgs"


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (anywhere in it, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported_roots(path: Path) -> set[str]:
    return {n.split(".")[0] for n in imported_modules(path)}


def python_files(*folders: Path) -> list[Path]:
    return sorted(p for f in folders if f.exists() for p in f.rglob("*.py"))


def is_ros(name: str) -> bool:
    return name in ROS_MODULES or name.endswith(MSG_SUFFIX) or name.endswith("_srvs")


def test_only_the_ros_folder_imports_ros():
    offenders = [
        f"{p.relative_to(ROOT)}: {sorted(n for n in imported_roots(p) if is_ros(n))}"
        for p in python_files(PKG, ROOT / "sim", ROOT / "training")
        if PKG / "ros" not in p.parents and any(is_ros(n) for n in imported_roots(p))
    ]
    assert not offenders, offenders


def test_core_needs_only_numpy_stdlib_and_sentencepiece():
    # yaml: PyYAML is an install requirement; core/embodiment.py reads the robot files (config/robots) with it
    allowed = {"numpy", "sentencepiece", "yaml", "gato_robot", "__future__"} | set(sys.stdlib_module_names)
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_roots(p) - allowed) for p in python_files(PKG / "core")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_core_never_imports_outer_layers():
    outer = ("gato_robot.model", "gato_robot.runtime", "gato_robot.ros", "gato_robot.sim", "gato_robot.training",
             "gato_robot.data")
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.startswith(outer))
        for p in python_files(PKG / "core")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_simulator_knows_nothing_of_torch_or_onnx_at_import():
    offenders = [str(p.relative_to(ROOT)) for p in python_files(ROOT / "sim")
                 if imported_roots(p) & {"torch", "onnxruntime", "rclpy"}]
    assert not offenders, "sim/ must load policies lazily, not import torch/onnxruntime/rclpy at module level"


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


HEAVY = {"torch", "rclpy", "pybullet", "onnxruntime", "h5py", "gymnasium"}


def test_core_imports_without_heavy_packages():
    loaded = _loaded_after_import(["gato_robot.core.specs", "gato_robot.core.tokenizer", "gato_robot.core.sequence",
                                   "gato_robot.core.embodiment"])
    assert not loaded & HEAVY, loaded & HEAVY


def test_onnx_runtime_imports_without_torch():
    runtime = sorted(p for p in (PKG / "runtime").glob("*.py") if p.name != "__init__.py")
    if not runtime:
        pytest.skip("the ONNX runtime package has no modules yet")
    mods = [f"gato_robot.runtime.{p.stem}" for p in runtime]
    loaded = _loaded_after_import(mods)
    assert "torch" not in loaded and "rclpy" not in loaded


def test_kinematics_needs_only_numpy_and_yourdfpy():
    """The tool pose's forward kinematics (gato_robot.kinematics) runs on a robot: no torch, ROS or simulator
    (pybullet_data only to find a URDF named relative to it, lazily)."""
    allowed = {"numpy", "yourdfpy", "pybullet_data", "gato_robot", "__future__"} | set(sys.stdlib_module_names)
    assert imported_roots(PKG / "kinematics.py") <= allowed, imported_roots(PKG / "kinematics.py") - allowed
    assert not _loaded_after_import(["gato_robot.kinematics"]) & HEAVY
