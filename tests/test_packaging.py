"""The package as ROS users get it: package.xml (format 3, every ROS import declared, the pip part in
requirements/ros.txt) and the colcon builds, with and without ``--symlink-install``, run on this checkout into a
temporary workspace: executables in lib/gato_robot, the launch file in share/, the modules served from the right
place (a symlink install serves the source tree, sim/ and training/ included).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "gato_robot"
# install_requires and requirements/ros.txt names -> their rosdep keys (rosdep/python.yaml of ros/rosdistro)
ROSDEP_KEYS = {"numpy": "python3-numpy", "pyyaml": "python3-yaml"}
STALE = " (setup.py is read from the installed metadata: after editing it, `make setup` reinstalls)"
LAUNCH_PACKAGES = {"launch", "launch_ros"}  # the launch file's imports (from ../shared/ros2-launch-kit here)


def requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def parsed_package():
    catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="catkin-pkg (the test extra) is not installed")
    return catkin_pkg.parse_package(ROOT / "package.xml")


def exec_depends() -> set[str]:
    return {d.name for d in parsed_package().exec_depends}


def imported_top_level(files: list[Path]) -> set[str]:
    names = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def ros_packages_here() -> set[str]:
    """The ROS packages this environment has: the ament index the ROS 2 pip wheels keep in <venv>/share."""
    index = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
    if not index.is_dir():
        pytest.skip(f"no ament index at {index}: the ROS 2 pip wheels (`ros-wheels` extra) are not installed")
    return {p.name for p in index.iterdir()}


def test_package_xml_is_a_valid_format_3_ament_python_package_of_this_version():
    pkg = parsed_package()
    pkg.validate()  # catkin_pkg's checks of a format 3 manifest (name, version, maintainer, license, dependencies)
    assert (pkg.package_format, pkg.name) == (3, PACKAGE)
    assert pkg.get_build_type() == "ament_python"
    assert pkg.version == importlib.metadata.version(PACKAGE), "package.xml and setup.py disagree on the version" + STALE
    assert (ROOT / "resource" / PACKAGE).is_file(), "ament_python needs the empty marker resource/<package>"


def test_every_ros_package_the_code_imports_is_an_exec_depend():
    files = [p for p in (ROOT / PACKAGE).rglob("*.py")] + sorted((ROOT / "launch").glob("*.py"))
    files += [p for d in ("sim", "training") for p in (ROOT / d).rglob("*.py")]
    ros = imported_top_level(files) & (ros_packages_here() | LAUNCH_PACKAGES)
    assert {"rclpy", "sensor_msgs", "launch_ros"} <= ros, "the scan found none of the known imports"
    missing = ros - exec_depends()
    assert not missing, f"imported but not in package.xml: {sorted(missing)} (add <exec_depend>)"


def test_install_requires_come_from_rosdep_or_from_requirements_ros_txt_with_the_same_pins():
    pip_part = [line.strip() for line in (ROOT / "requirements" / "ros.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    by_name = {requirement_name(r): r for r in pip_part}
    deps = exec_depends()
    requires = importlib.metadata.requires(PACKAGE) or []
    core = [r for r in requires if "extra ==" not in r]
    assert core, "no install_requires read from the installed metadata"
    for req in core:
        name = requirement_name(req)
        assert ROSDEP_KEYS.get(name) in deps or name in by_name, f"{req}: neither a package.xml key nor in ros.txt" + STALE
    # every pin in ros.txt is setup.py's own (no drift): compare without spaces and markers
    declared = {re.sub(r"\s|;.*", "", r) for r in requires}
    for name, req in by_name.items():
        assert name not in ROSDEP_KEYS, f"{name} has a rosdep key ({ROSDEP_KEYS[name]}): declare it in package.xml"
        assert req.replace(" ", "") in declared, f"requirements/ros.txt {req!r} differs from setup.py's pins" + STALE
    for lazily_needed in ("onnxruntime", "pybullet", "rosbags"):  # policy node, sim node, recorder
        assert lazily_needed in by_name, f"{lazily_needed} is missing from requirements/ros.txt"


# --- colcon builds ---------------------------------------------------------------------------------------------


def colcon() -> str:
    exe = shutil.which("colcon") or str(Path(sys.executable).parent / "colcon")
    if not os.access(exe, os.X_OK):
        pytest.skip("colcon is not installed (the test extra: colcon-common-extensions)")
    return exe


def sourced(install: Path, command: str, cwd: Path) -> subprocess.CompletedProcess:
    """`command` in bash after `source install/setup.bash`, as a ROS user runs it (cwd outside the source)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)  # the pip wheels keep their ament index in <venv>/share
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", "-c", f'source "{install}/setup.bash" && {command}'], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)


@pytest.fixture(scope="module", params=["plain", "symlink"])
def workspace(request, tmp_path_factory) -> tuple[str, Path]:
    ws = tmp_path_factory.mktemp(f"colcon_{request.param}")
    cmd = [colcon(), "--log-base", str(ws / "log"), "build", "--base-paths", str(ROOT),
           "--build-base", str(ws / "build"), "--install-base", str(ws / "install")]
    if request.param == "symlink":
        cmd.append("--symlink-install")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ws,
                         env=dict(os.environ, AMENT_PREFIX_PATH=os.environ.get("AMENT_PREFIX_PATH", sys.prefix)))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return request.param, ws


def test_colcon_build_installs_the_executables_launch_file_config_and_index_marker(workspace):
    _, ws = workspace
    prefix = ws / "install" / PACKAGE
    scripts = {e.name for e in importlib.metadata.distribution(PACKAGE).entry_points if e.group == "console_scripts"}
    assert {"gato_policy_node", "gato_sim_node", "gato-stack"} <= scripts
    installed = {p.name for p in (prefix / "lib" / PACKAGE).iterdir()}
    assert scripts <= installed, f"missing from lib/{PACKAGE} (where launch_ros looks): {sorted(scripts - installed)}"
    share = prefix / "share" / PACKAGE
    for rel in ("launch/stack.launch.py", "config/stack.yaml", "package.xml"):
        assert (share / rel).is_file(), f"share/{PACKAGE}/{rel} is missing"
        assert (share / rel).read_bytes() == (ROOT / rel).read_bytes()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()


def test_the_installed_package_imports_from_the_workspace_and_its_executables_run(workspace, tmp_path):
    kind, ws = workspace
    install = ws / "install"
    probe = ("import os, gato_robot, gato_robot.sim, gato_robot.training, gato_robot.ros.policy_node; "
             "print(gato_robot.__file__); print(os.path.realpath(gato_robot.sim.__file__)); "
             "print(os.path.realpath(gato_robot.training.__file__))")
    out = sourced(install, f'python -c "{probe}"', cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    origin, sim, training = map(Path, out.stdout.split())
    assert origin.is_relative_to(ws), f"gato_robot imported from {origin}, not from the colcon workspace"
    if kind == "symlink":  # edits in the source tree take effect without a rebuild
        assert (sim, training) == (ROOT / "sim" / "__init__.py", ROOT / "training" / "__init__.py")
    else:
        assert sim.is_relative_to(install) and training.is_relative_to(install)
    out = sourced(install, f'"{install}/{PACKAGE}/lib/{PACKAGE}/gato-stack" --help', cwd=tmp_path)
    assert out.returncode == 0 and "usage: gato-stack" in out.stdout, out.stderr[-3000:]


def test_ros2_cli_finds_the_package_its_executables_and_its_launch_file(workspace, tmp_path):
    if not all(importlib.util.find_spec(m) is not None for m in ("ros2cli", "ros2pkg", "ros2launch")):
        pytest.skip("the `ros2` CLI is not installed (make setup installs ../shared/ros2-launch-kit when present)")
    _, ws = workspace
    install = ws / "install"
    out = sourced(install, f"ros2 pkg prefix {PACKAGE} && ros2 pkg executables {PACKAGE} && "
                           f"ros2 launch {PACKAGE} stack.launch.py --show-args", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert Path(lines[0]) == install / PACKAGE
    assert f"{PACKAGE} gato_policy_node" in lines and f"{PACKAGE} gato_sim_node" in lines
    assert "'sim':" in out.stdout and "'model':" in out.stdout, out.stdout[-2000:]
