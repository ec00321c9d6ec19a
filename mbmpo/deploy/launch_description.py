"""The launch description of a graph, for `launch/<graph>.launch.py` on a real ROS 2 install.

Imports `launch` and `launch_ros` only when called (they are not on PyPI; mbmpo-bringup is used there).
"""

from __future__ import annotations

from typing import Any

from mbmpo.deploy.graph import GRAPHS

SIGTERM_AFTER = "30"  # seconds from SIGINT to SIGTERM when `ros2 launch` shuts a node down (a trainer abandons
# its iteration at the end of the current step: 14 s was seen for a HalfCheetah outer step on a loaded machine)


def launch_description(graph: str) -> Any:
    """DeclareLaunchArgument for each argument of `graph`, and its nodes built from their values."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown, TimerAction
    from launch.event_handlers import OnProcessExit
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    build, table = GRAPHS[graph]

    def nodes(context: Any) -> list:
        args = {name: LaunchConfiguration(name).perform(context) for name in table}
        # SIGTERM only after SIGTERM_AFTER s (launch's default is 5): the policy node may wait 5 s for the data
        # node's acknowledgements and the data node drains and flushes after that (mbmpo-bringup: 10 s a group)
        actions: list = []
        for s in build(args):
            where = {"namespace": s.namespace} if s.namespace else {}  # a robot of a fleet
            node = Node(package="mbmpo_ros", executable=s.executable, name=s.name, parameters=[s.parameters],
                        remappings=list(s.remappings), output="screen", sigterm_timeout=SIGTERM_AFTER, **where)
            actions.append(node)
            if s.ends_graph:  # the trainer's exit (training done) shuts the graph down, as mbmpo-bringup does
                actions.append(RegisterEventHandler(OnProcessExit(
                    target_action=node, on_exit=[Shutdown(reason=f"{s.name} finished")])))
        duration = float(args["duration"] or 0)
        if duration > 0:  # duration:=SECONDS shuts the graph down then, as mbmpo-bringup does
            actions.append(TimerAction(period=duration, actions=[Shutdown(reason=f"duration {duration:g} s reached")]))
        return actions

    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in table.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=nodes)])
