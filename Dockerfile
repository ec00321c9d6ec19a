# MB-MPO on a real ROS 2 Jazzy install. Not built on the development machines (no Docker engine there):
# it mirrors what `make` installs there (same pinned Python requirements, same packages), with ROS from
# the official image instead of the PyPI wheels, and colcon instead of scripts/build_interfaces.sh.
#
#   docker build -t mbmpo .
#   docker run --rm -v $PWD/runs:/ws/runs mbmpo                                  # train graph in simulation
# Robot and workstation on different hosts (same ROS_DOMAIN_ID; host networking for DDS discovery):
#   workstation: docker run --rm --net=host -e ROS_DOMAIN_ID=7 -v $PWD/runs:/ws/runs mbmpo \
#                ros2 launch mbmpo_ros train.launch.py sim:=none task:=... out:=/ws/runs/robot
#   robot:       docker run --rm --net=host -e ROS_DOMAIN_ID=7 -v $PWD/runs:/ws/runs mbmpo \
#                ros2 launch mbmpo_ros deploy.launch.py policy:=/ws/runs/robot/policy
FROM ros:jazzy-ros-base

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    MUJOCO_GL=egl \
    ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET

RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-pip python3-colcon-common-extensions ros-jazzy-std-srvs ros-jazzy-rosbag2-storage-mcap \
        libegl1 libgl1 && \
    rm -rf /var/lib/apt/lists/*

WORKDIR /ws
COPY requirements.txt ./
# torch first and pinned (CPU build), then the same pins as `make` uses; ROS itself comes from the image
RUN pip3 install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && \
    pip3 install --no-cache-dir -r requirements.txt rosbags==0.11.9 mcap==1.6.0

COPY . /ws
RUN pip3 install --no-cache-dir --no-deps -e /ws && \
    . /opt/ros/jazzy/setup.sh && \
    colcon build --base-paths ros2_ws/src --symlink-install

# runs (bags, checkpoints, bundles) live outside the container
VOLUME ["/ws/runs"]
# ROS 2 and the workspace sourced for any command; by default the train launch in simulation
ENTRYPOINT ["/ws/docker/entrypoint.sh"]
CMD ["ros2", "launch", "mbmpo_ros", "train.launch.py", "sim:=mujoco", "out:=/ws/runs/ros_train"]
