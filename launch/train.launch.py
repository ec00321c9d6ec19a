"""ros2 launch mbmpo_ros train.launch.py sim:=mujoco task:=InvertedPendulum-v5 out:=runs/ros_train

The training graph: MuJoCo sim (if sim:=mujoco), policy node (explore), data node, trainer node.
Nodes and parameters come from mbmpo.deploy.graph, the same source mbmpo-bringup uses.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mbmpo.deploy.graph import TRAIN_ARGUMENTS, train_graph


def _nodes(context):
    args = {name: LaunchConfiguration(name).perform(context) for name in TRAIN_ARGUMENTS}
    return [Node(package="mbmpo_ros", executable=s.executable, name=s.name, parameters=[s.parameters],
                 remappings=list(s.remappings), output="screen") for s in train_graph(args)]


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in TRAIN_ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
