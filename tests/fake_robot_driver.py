"""Stands in for a real robot's ros2_control driver in tests: NOT part of mbmpo_ros.

Simulates InvertedPendulum-v5's MuJoCo model and speaks only standard interfaces: publishes
sensor_msgs/JointState on `joint_states` at 25 Hz in real time, applies std_msgs/Float64MultiArray
from `commands` (zeros when they stop for 0.2 s), and offers `reset` (std_srvs/Trigger).

    python tests/fake_robot_driver.py [--reset-delay SECONDS] [--no-reset-service]

`--reset-delay`: the reset takes this long, the old state streaming meanwhile, and puts the pendulum exactly
upright and still (a state no episode ends in) before answering. `--no-reset-service`: a robot without one.
"""

import argparse
import time

import gymnasium as gym
import numpy as np
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger


class Driver(Node):
    def __init__(self, reset_delay: float, reset_service: bool) -> None:
        super().__init__("robot_driver")
        self.reset_delay = reset_delay
        self.env = gym.make("InvertedPendulum-v5").unwrapped
        self.env.reset(seed=0)
        self.command, self.last = np.zeros(1), 0.0
        self.pub = self.create_publisher(JointState, "joint_states", 10)
        self.create_subscription(Float64MultiArray, "commands", self.on_command, 10)
        if reset_service:
            self.create_service(Trigger, "reset", self.on_reset, callback_group=ReentrantCallbackGroup())
        self.create_timer(self.env.dt, self.tick)

    def on_command(self, msg: Float64MultiArray) -> None:
        self.command, self.last = np.clip(np.asarray(msg.data), -3, 3), time.monotonic()

    def on_reset(self, request, response):
        if self.reset_delay:
            time.sleep(self.reset_delay)  # the robot moves back meanwhile; its old state keeps streaming
            self.env.reset()
            self.env.data.qpos[:] = 0.0
            self.env.data.qvel[:] = 0.0
        else:
            self.env.reset()
        response.success = True
        return response

    def tick(self) -> None:
        action = self.command if time.monotonic() - self.last < 0.2 else np.zeros(1)
        self.env.step(action)
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = ["hinge", "slider"]
        msg.position = [float(self.env.data.qpos[1]), float(self.env.data.qpos[0])]
        msg.velocity = [float(self.env.data.qvel[1]), float(self.env.data.qvel[0])]
        self.pub.publish(msg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reset-delay", type=float, default=0.0)
    parser.add_argument("--no-reset-service", action="store_true")
    args = parser.parse_args()
    rclpy.init()
    node = Driver(args.reset_delay, not args.no_reset_service)
    try:
        rclpy.spin(node, MultiThreadedExecutor(num_threads=2))
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
