#!/usr/bin/env bash
# The image's entrypoint: ROS 2 and this workspace sourced, then the command (ros2 launch ..., bash, ...).
set -e
source /opt/ros/jazzy/setup.bash
source /ws/install/setup.bash
exec "$@"
