"""ros2 launch mbmpo_ros deploy.launch.py policy:=runs/ros_train/policy

The robot side: the policy node running a bundle (deploy mode: online one-step adaptation), plus the
MuJoCo sim for a dry run with sim:=mujoco. Nodes and arguments come from mbmpo.deploy.graph.
"""

from mbmpo.deploy.launch_description import launch_description


def generate_launch_description():
    return launch_description("deploy")
