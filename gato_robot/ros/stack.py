"""The one source of truth for which nodes the stack runs, with which parameters (no rclpy, no launch imports).

``launch/stack.launch.py`` (for ``ros2 launch gato_robot stack.launch.py`` on a ROS install) and the launcher
``gato-stack`` (:mod:`gato_robot.ros.launcher`, separate processes on a machine without ``ros2 launch``) both
call :func:`node_plan`; ``tests/test_ros_stack.py`` checks the launch file uses it and hard-codes nothing.

Every node reads ``config/stack.yaml`` (sections ``/**`` for shared values and one per node name); the launch
arguments below override a few parameters on top of it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PACKAGE = "gato_robot"
PARAMS_BASENAME = "stack.yaml"
COMMAND_INTERFACES = ("twist", "forward_command")
# Parameters the launch arguments override. The parameter file keeps them in its shared ``/**`` section: ROS
# gives a node's own section precedence over ``/**`` entries, overrides included, whatever their order.
OVERRIDABLE = ("use_sim_time", "start_armed", "model_dir", "camera_topics", "command_interface", "cameras",
               "image_size", "omit_observations", "temperature")
CAMERA_TOPIC = "/camera/{}/image_raw"  # the sim node's camera topics (common.camera_topic)
CAMERA_PREFIX = "camera/"  # spec keys of camera observations (gato_robot.core.specs.CAMERA_PREFIX)


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    name: str  # the ROS node name, and its section in the parameter file
    executable: str  # console script, installed in lib/gato_robot (what launch_ros runs)
    module: str  # the same entry point as ``python -m <module>`` (what the launcher runs)
    sim_only: bool = False
    lifecycle: bool = False
    # The stack stops when this node exits, for any reason: without its controller no node may go on driving the
    # arm (the controller's guard has commanded zero; docs/ros.md, "What the stack guarantees when it is killed").
    required: bool = False


# After a required node exited, the launchers wait this long before stopping the rest: the controller's guard has
# commanded zero by then (milliseconds) and repeats it; a simulated arm must still be there to receive it.
REQUIRED_EXIT_GRACE_S = 0.5


NODES: tuple[NodeSpec, ...] = (
    NodeSpec("gato_sim", "gato_sim_node", "gato_robot.ros.sim_node", sim_only=True),
    NodeSpec("gato_tokenizer", "gato_tokenizer_node", "gato_robot.ros.tokenizer_node"),
    NodeSpec("gato_policy", "gato_policy_node", "gato_robot.ros.policy_node", lifecycle=True),
    NodeSpec("gato_controller", "gato_controller_node", "gato_robot.ros.controller_node", required=True),
)

# Not one of NODES (the stack runs without it): added by the ``record`` launch argument.
RECORDER = NodeSpec("gato_recorder", "gato_recorder_node", "gato_robot.ros.recorder")
# Recording demonstrations (``demos``): the robot and the controller only; a teleoperator drives /gato/action.
POLICY_NODES = ("gato_tokenizer", "gato_policy")
# The simulator as a stand-in for a robot: no episode status (the operator labels episodes), the objects' poses
# for a scripted teleoperator, a new scene only when the operator asks for one (/sim/reset)
SIM_AS_ROBOT = {"episode_status": False, "object_state": True, "start_paused": True, "auto_reset": False}

# launch argument -> (default, description). Empty defaults mean "keep the parameter file's value".
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "sim": ("false", "true: also run the PyBullet RGB-stacking simulator as the robot (sim time, lockstep)"),
    "params_file": ("", f"parameter file (default: the package's config/{PARAMS_BASENAME})"),
    "model": ("", "exported ONNX policy directory (model.onnx + manifest.json) for the policy node"),
    "robot": ("", "the arm: a robot file's name (config/robots: panda, xarm6) or path, for the tokenizer, the "
                  "controller and the sim; empty: the parameter file's (panda)"),
    "camera_topics": ("", "comma-separated sensor_msgs/Image topics, one per spec camera, in spec order"),
    "command_interface": ("", f"arm command interface: one of {COMMAND_INTERFACES}"),
    "temperature": ("", "the policy's action sampling temperature: 0 greedy, > 0 sampled; empty: the parameter "
                        "file's, by default the model's recommendation (its sampling.json: the shipped model samples "
                        "at 1; greedy without one)"),
    "record": ("", "folder: also run the recorder (rosbag2/MCAP logs of the stack's topics, one per episode)"),
    "demos": ("false", "true: record demonstrations: the robot (sim:=true: the simulator as a robot, without an "
                       "episode status) and the controller, no tokenizer or policy; a teleoperator (gato-teleop, "
                       "gato-scripted-operator) publishes /gato/action and the operator labels the episodes "
                       "(gato-record --operator in a terminal, or record:=DIR and the recorder's services)"),
    "trusted_key": ("", "PEM public key: the policy node refuses a model not signed by its private key "
                        "(gato-sign-model; empty: the origin is not checked)"),
}


def default_params_file() -> Path:
    """The installed share/gato_robot/config/stack.yaml on a ROS install, else this checkout's config/."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            installed = Path(get_package_share_directory(PACKAGE)) / "config" / PARAMS_BASENAME
            if installed.is_file():
                return installed
        except (PackageNotFoundError, OSError):  # not installed, or no AMENT_PREFIX_PATH (pip-only machine)
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2] / "config" / PARAMS_BASENAME


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


MODEL_TEMPERATURE = -1.0  # the policy node's temperature parameter: take the model's recommended sampling


def parse_temperature(value: str | float) -> float | None:
    """A launch argument's temperature: None when empty (keep the parameter file's: config/stack.yaml's
    :data:`MODEL_TEMPERATURE`, the model's recommendation), else checked by the policy contract's one check."""
    from gato_robot.runtime.contract import parse_temperature as parse  # numpy only

    if isinstance(value, str) and not value.strip():
        return None
    return parse(str(value))


def parse_list(value: str | Sequence[str]) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def model_spec_parameters(model_dir: str | Path) -> dict[str, Any] | None:
    """``{"cameras": [...], "image_size": N, "omit_observations": [...]}`` from an exported model's manifest (its
    spec fixes what the tokenizer and the sim must produce; omitted: RGB-stacking observation keys the model was
    trained without, ``data.drop_observations``), or None when the manifest cannot be read: the policy node then refuses the model
    with the reason. Only reads JSON; the policy node verifies the manifest."""
    try:
        spec = json.loads((Path(model_dir) / "manifest.json").read_text())["spec"]
        cameras = [o for o in spec["observations"] if str(o["name"]).startswith(CAMERA_PREFIX)]
        if not cameras:
            return None
        names = [str(o["name"])[len(CAMERA_PREFIX):] for o in cameras]
        size = int(cameras[0]["shape"][0])
        from gato_robot.core.specs import rgb_stacking_spec  # numpy only

        model_keys = {str(o["name"]) for o in spec["observations"]}
        omit = [s.name for s in rgb_stacking_spec(names, size).observations if s.name not in model_keys]
        return {"cameras": names, "image_size": size, "omit_observations": omit}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def node_plan(sim: str | bool = False, params_file: str = "", model: str = "", camera_topics: str | Sequence[str] = "",
              command_interface: str = "", record: str = "", temperature: str | float = "",
              trusted_key: str = "", robot: str = "", demos: str | bool = False
              ) -> list[tuple[NodeSpec, Path, dict[str, Any]]]:
    """(node, parameter file, parameter overrides) for each node to start, in start order."""
    sim = parse_bool(sim)
    demos = parse_bool(demos)
    if demos and model:
        raise ValueError("demos:=true runs no policy: model is not used (a policy teleoperator runs on its own)")
    params = Path(params_file) if params_file else default_params_file()
    if not params.is_file():
        raise ValueError(f"parameter file {params} does not exist")
    if command_interface and command_interface not in COMMAND_INTERFACES:
        raise ValueError(f"command_interface must be one of {COMMAND_INTERFACES}, got {command_interface!r}")
    sampling = parse_temperature(temperature)
    cameras = parse_list(camera_topics)
    # The model's spec decides the camera names and image size of the tokenizer (and what the sim renders).
    from_model = model_spec_parameters(Path(model).expanduser()) if model else None
    if from_model and sim and not cameras:
        cameras = [CAMERA_TOPIC.format(c) for c in from_model["cameras"]]
    plan = []
    for node in NODES:
        if (node.sim_only and not sim) or (demos and node.name in POLICY_NODES):
            continue
        overrides: dict[str, Any] = {}
        if sim and not node.sim_only:
            overrides["use_sim_time"] = True  # the sim node publishes /clock and stamps with sim time
        if node.name == "gato_sim" and demos:
            overrides.update(SIM_AS_ROBOT)
        elif node.name == "gato_sim":
            # the first episode waits for the pipeline (and the recorder) so that no step goes unseen or unlogged
            overrides["wait_for_subscribers"] = 2 if record else 1
        if sim and node.name == "gato_controller":
            overrides["start_armed"] = True  # a simulated arm needs no operator to arm it
        if model and node.name == "gato_policy":
            overrides["model_dir"] = str(Path(model).expanduser().resolve())
        if sampling is not None and node.name == "gato_policy":
            overrides["temperature"] = sampling
        if trusted_key and node.name == "gato_policy":
            overrides["trusted_public_key"] = str(Path(trusted_key).expanduser().resolve())
        if from_model and node.name in ("gato_tokenizer", "gato_sim"):
            overrides.update(cameras=from_model["cameras"], image_size=from_model["image_size"])
        if from_model and from_model["omit_observations"] and node.name == "gato_tokenizer":
            overrides["omit_observations"] = from_model["omit_observations"]
        if robot and node.name in ("gato_tokenizer", "gato_controller", "gato_sim"):
            overrides["robot"] = robot
        if cameras and node.name in ("gato_tokenizer", "gato_sim"):
            overrides["camera_topics"] = cameras
        if command_interface and node.name in ("gato_tokenizer", "gato_controller", "gato_sim"):
            overrides["command_interface"] = command_interface
        plan.append((node, params, overrides))
    if record:
        overrides = {"output_dir": str(Path(record).expanduser().resolve())}
        if sim:
            overrides["use_sim_time"] = True
        if cameras:
            overrides["topics"] = [*(f"{c}:sensor_msgs/msg/Image:sensor" for c in cameras), *RECORDED_TOPICS]
        if model:
            overrides["policy"] = str(Path(model).expanduser().resolve())
        if demos:  # episodes started, ended and labelled by the operator, through the recorder's services
            overrides.update(episodes="operator", policy="teleoperation")
        plan.append((RECORDER, params, overrides))
    return plan


# What the recorder logs besides the cameras when camera_topics is overridden (its default is the whole contract).
RECORDED_TOPICS = ("/joint_states", "/gato/tool_pose", "/gato/observation", "/gato/action_tokens", "/gato/action",
                   "/servo_node/delta_twist_cmds", "/forward_velocity_controller/commands", "/gripper/command",
                   "/gato/episode_status", "/gato/teleop/intervention", "/clock")


def _yaml_value(value: Any) -> str:
    """A parameter value as the YAML that ``--ros-args -p name:=value`` parses back to the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def ros_arguments(node: NodeSpec, params_file: Path, overrides: Mapping[str, Any]) -> list[str]:
    """``--ros-args`` for a node process: its name, the parameter file, then the overrides (later wins)."""
    return ["--ros-args", "-r", f"__node:={node.name}", "--params-file", str(params_file),
            *parameter_args(overrides)]


def parameter_args(values: Mapping[str, Any]) -> list[str]:
    """``-p name:=value`` for each value that is not None (a command-line flag not given), typed as YAML: what the
    nodes' command lines (gato-record, gato-teleop, gato-scripted-operator) turn their flags into."""
    return [a for key, value in values.items() if value is not None for a in ("-p", f"{key}:={_yaml_value(value)}")]


def controller_filter(spec_low: Sequence[float], spec_high: Sequence[float],
                      params_file: str | Path | None = None) -> Any:
    """The controller's safety filter, armed, with the limits, watchdog and action age of a stack parameter file
    (default: the package's config/stack.yaml): what the controller node applies, for checks that reproduce the
    stack's actions outside ROS (tests/test_ros_e2e.py, benchmarks/ros_path_ablation.py). Needs PyYAML."""
    import yaml

    from gato_robot.core.safety import SafetyFilter, controller_limits  # numpy only

    text = Path(params_file or default_params_file()).read_text()
    params = yaml.safe_load(text)["gato_controller"]["ros__parameters"]
    return SafetyFilter(controller_limits(spec_low, spec_high, params), armed=True,
                        watchdog_period=float(params["watchdog_period_s"]),
                        max_action_age=float(params["max_action_age_s"]))
