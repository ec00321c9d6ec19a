"""ros2 launch mbmpo_ros train.launch.py sim:=mujoco task:=InvertedPendulum-v5 out:=runs/ros_train

The training graph: MuJoCo sim (if sim:=mujoco), policy node (explore), data node, trainer node.
Nodes, parameters and arguments come from mbmpo.deploy.graph, the same source mbmpo-bringup uses.
"""

from mbmpo.deploy.launch_description import launch_description


def generate_launch_description():
    return launch_description("train")
