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
    allowed = {"numpy", "sentencepiece", "gato_robot", "__future__"} | set(sys.stdlib_module_names)
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


# -- the layers as one ordered table --------------------------------------------------------------------------
# Inner first. A unit may import only the units above it in this table (its own modules aside), at module level
# or lazily; the only exceptions are the lazy "plugin" edges below, each inside a function, each with its reason.
LAYERS: list[tuple[str, str]] = [
    ("gato_robot.core", "numpy + standard library: specs, tokenizer, sequences, embodiment, safety filter, sync"),
    ("gato_robot.data", "training episode files"),
    ("gato_robot.robots", "robot description files (config/robots/*.yaml, PyYAML) into core embodiments"),
    ("gato_robot.kinematics", "forward kinematics of a robot's URDF (yourdfpy)"),
    ("gato_robot.wire", "the ROS topic contract's array layouts as numpy (no rclpy): shared by logs and nodes"),
    ("gato_robot.runtime", "the policy contract, the ONNX Runtime policy (no torch), model trust, the URI loader"),
    ("gato_robot.model", "the PyTorch model, its policy and the ONNX export"),
    ("gato_robot.sim", "the PyBullet RGB-stacking environment, scripted experts, the benchmark (top-level sim/)"),
    ("gato_robot.domains", "training domains (control suites, BabyAI, RGB stacking)"),
    ("gato_robot.training", "training, fine-tuning, torchrun (top-level training/)"),
    ("gato_robot.logs", "rosbag2/MCAP logs read and written without rclpy, conversion, replay into the sim"),
    ("gato_robot.ros", "the ROS 2 nodes, launcher, recorder, and the ROS test/evaluation harness"),
    ("gato_robot.cli", "console entry points"),
]
LAZY_PLUGINS = {  # (importing file, imported unit): why it may point outward, lazily
    ("gato_robot/runtime/loader.py", "gato_robot.model"): "torch:DIR policy URIs load the PyTorch policy on demand; "
                                                          "the runtime stays torch-free at import",
}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("sim", "training"):  # top-level folders installed as gato_robot.sim / gato_robot.training
        return f"gato_robot.{parts[0]}"
    return ".".join(parts[:2]) if parts[0] == "gato_robot" and len(parts) > 1 else None


def _layer_files() -> dict[Path, str]:
    files = {p: _unit(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in python_files(PKG)
             if not (PKG / "sim").exists() or not p.resolve().is_relative_to((PKG / "sim").resolve())}
    files = {p: u for p, u in files.items() if u not in ("gato_robot.sim", "gato_robot.training")}
    files |= {p: f"gato_robot.{folder}" for folder in ("sim", "training") for p in python_files(ROOT / folder)}
    return files


def _imports_with_scope(path: Path) -> list[tuple[str, bool]]:
    """(module, lazy) for every absolute import of a file; lazy: inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    lazy_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in lazy_nodes) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in lazy_nodes))
    return found


def test_every_package_module_is_in_the_layer_table():
    units = {u for u, _ in LAYERS}
    assert not sorted({u for u in _layer_files().values()} - units - {"gato_robot.__init__"})


def test_layers_import_only_inward():
    rank = {u: k for k, (u, _) in enumerate(LAYERS)}
    offenders = []
    for path, unit in _layer_files().items():
        rel = str(path.relative_to(ROOT))
        for module, lazy in _imports_with_scope(path):
            target = _unit(module)
            if target is None or target == unit or target not in rank or unit not in rank:
                continue
            if rank[target] > rank[unit] and not (lazy and (rel, target) in LAZY_PLUGINS):
                offenders.append(f"{rel} ({unit}) imports {module}{' lazily' if lazy else ''}")
    assert not offenders, "outward imports:\n" + "\n".join(offenders)


def test_the_layer_test_can_fail(tmp_path):
    """The checker sees an outward import (core importing ros), at module level and lazily."""
    bad = tmp_path / "bad.py"
    bad.write_text("import gato_robot.ros.common\n\ndef f():\n    from gato_robot.model import policy\n")
    assert [(_unit(m), lazy) for m, lazy in _imports_with_scope(bad)] == [("gato_robot.ros", False),
                                                                          ("gato_robot.model", True)]
