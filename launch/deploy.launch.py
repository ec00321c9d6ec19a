"""ros2 launch mbmpo_ros deploy.launch.py policy:=runs/ros_train/policy

The robot side: the policy node running a bundle (deploy mode: online one-step adaptation),
plus the MuJoCo sim for a dry run with sim:=mujoco.
Nodes and parameters come from mbmpo.deploy.graph, the same source mbmpo-bringup uses.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mbmpo.deploy.graph import DEPLOY_ARGUMENTS, deploy_graph


def _nodes(context):
    args = {name: LaunchConfiguration(name).perform(context) for name in DEPLOY_ARGUMENTS}
    return [Node(package="mbmpo_ros", executable=s.executable, name=s.name, parameters=[s.parameters],
                 remappings=list(s.remappings), output="screen") for s in deploy_graph(args)]


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in DEPLOY_ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
