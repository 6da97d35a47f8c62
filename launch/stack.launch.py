"""`ros2 launch gato_robot stack.launch.py [sim:=true] [model:=DIR] [params_file:=FILE] [camera_topics:=a,b]
[command_interface:=twist|forward_command]`

The nodes and their parameters come from gato_robot/ros/stack.py (node_plan), the same source the `gato-stack`
launcher uses, so the two cannot drift; nothing about the nodes is written here. A required node (the controller)
that exits shuts the whole launch down, as `gato-stack` does.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown, TimerAction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from gato_robot.ros.stack import LAUNCH_ARGUMENTS, PACKAGE, REQUIRED_EXIT_GRACE_S, node_plan


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    return [
        Node(package=PACKAGE, executable=node.executable, name=node.name, output="screen",
             parameters=[str(params_file), *([overrides] if overrides else [])],
             on_exit=[TimerAction(period=REQUIRED_EXIT_GRACE_S, actions=[
                 Shutdown(reason=f"{node.name} exited: the stack stops without it")])] if node.required else None)
        for node, params_file, overrides in node_plan(**values)
    ]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
