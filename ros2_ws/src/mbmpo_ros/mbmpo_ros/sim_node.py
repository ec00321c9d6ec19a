"""sim_node: a MuJoCo robot that looks like a ros2_control robot.

Publishes `joint_states` (sensor_msgs/JointState, every coordinate by name), takes `commands`
(std_msgs/Float64MultiArray, one value per actuator), resets on `~/reset` (std_srvs/Trigger), reports
`~/status` (std_msgs/String JSON: counters, `safe` and `safe_since`, the system time in seconds at which the
watchdog last switched to the safe command, and `stale_steps`, the physics steps the last command drove after
it arrived until that switch, i.e. how far a dead controller's last command moved the robot; once a second and
at once when `safe` changes: a late status, say a reliable sample repaired at the next DDS heartbeat, still
tells when the robot went safe).
Timing: `lockstep` steps once per command; `realtime` / `fast` step on a timer at the control period
(divided by `speedup`), applying the latest command, or the safe command (zeros) when commands are
older than `watchdog_timeout`. Perturbations emulate the reality gap.
"""

from __future__ import annotations

import collections
import json
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from mbmpo.deploy.contract import joint_state_entries
from mbmpo.tasks import get_task
from mbmpo.tasks.mujoco_names import state_names
from mbmpo.tasks.perturb import apply_perturbations, parse_perturbations
from mbmpo_ros.common import CONTROL_SUB_QOS, declare, run_node


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        task_name = declare(self, "task", "InvertedPendulum-v5", "registered task or task YAML path")
        self.mode = declare(self, "mode", "lockstep", "lockstep | realtime | fast")
        speedup = declare(self, "speedup", 1.0, "fast mode: simulated seconds per wall second")
        perturb = declare(self, "perturb", "", "physics scales, e.g. mass=1.3,friction=0.6")
        self.obs_noise = declare(self, "obs_noise_std", 0.0, "Gaussian noise added to published states")
        latency = declare(self, "action_latency_steps", 0, "commands take effect this many steps late")
        self.watchdog_timeout = declare(self, "watchdog_timeout", 0.5, "seconds without commands before zeros")
        seed = declare(self, "seed", 0, "reset noise seed")
        if self.mode not in ("lockstep", "realtime", "fast"):
            raise ValueError(f"mode '{self.mode}' is not lockstep, realtime or fast")
        self.task = get_task(task_name)
        self.env = self.task.make_env(10**9).unwrapped  # episodes are the policy's business: no time limit
        apply_perturbations(self.env, parse_perturbations([p for p in perturb.split(",") if p]))
        self.qpos_names, self.qvel_names = state_names(self.env.model)
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.safe = np.zeros(self.task.act_dim)
        self.pending = collections.deque([self.safe.copy()] * latency, maxlen=latency + 1)
        self.command = self.safe.copy()
        self.last_command_time = -np.inf
        self.steps = self.resets = self.safe_steps = self.bad_commands = 0
        self.last_msg: JointState | None = None
        self.holding_safe = False  # the watchdog is applying the safe command
        self.safe_since: float | None = None  # system time (s) of the last switch to the safe command
        self.steps_since_command = 0  # physics steps taken since the last command arrived
        self.stale_steps: int | None = None  # at the last switch to safe: steps driven by a command gone stale
        self.pub = self.create_publisher(JointState, "joint_states", 10)
        self.status_pub = self.create_publisher(String, "~/status", 10)
        self.create_timer(1.0, self.publish_status)
        self.create_subscription(Float64MultiArray, "commands", self.on_command, CONTROL_SUB_QOS)
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.env.reset(seed=seed)
        self.publish_state()
        if self.mode != "lockstep":
            self.create_timer(self.task.dt / (speedup if self.mode == "fast" else 1.0), self.on_timer)
        if self.mode == "lockstep":  # re-send the current state (same stamp) so a late-starting policy begins
            self.create_timer(0.5, self.resend_state)
        self.get_logger().info(f"{self.task.name} at {1 / self.task.dt:.0f} Hz, mode {self.mode}")

    def resend_state(self) -> None:
        if self.last_msg is not None:
            self.pub.publish(self.last_msg)

    def publish_state(self) -> None:
        """Publish the current state (lockstep also re-sends it periodically, so late joiners start)."""
        names, pos, vel = joint_state_entries(self.qpos_names, self.qvel_names, self.env.data.qpos, self.env.data.qvel)
        if self.obs_noise > 0:
            pos = list(np.asarray(pos) + self.rng.normal(0, self.obs_noise, len(pos)))
            vel = list(np.asarray(vel) + self.rng.normal(0, self.obs_noise, len(vel)))
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = f"step{self.steps}"
        msg.name, msg.position, msg.velocity = names, pos, vel
        self.last_msg = msg
        self.pub.publish(msg)

    def on_command(self, msg: Float64MultiArray) -> None:
        action = np.asarray(msg.data, np.float64)
        if action.shape != (self.task.act_dim,) or not np.isfinite(action).all():
            self.bad_commands += 1
            self.get_logger().warning(f"command with {action.shape[0]} values / non-finite refused; "
                                      f"{self.task.name} takes {self.task.act_dim}", throttle_duration_sec=1.0)
            return
        self.command = action
        self.last_command_time = time.monotonic()
        self.steps_since_command = 0
        if self.mode == "lockstep":
            self.step()

    def on_timer(self) -> None:
        stale = time.monotonic() - self.last_command_time > self.watchdog_timeout
        if stale:
            self.command = self.safe.copy()  # commands stopped (the policy died?): hold the safe command
            self.safe_steps += 1
        if stale != self.holding_safe:
            self.holding_safe = stale
            if stale:
                self.safe_since = time.time()
                self.stale_steps = self.steps_since_command
                self.get_logger().warning(f"no command for {self.watchdog_timeout:g} s: applying the safe command")
            self.publish_status()
        self.step()

    def publish_status(self) -> None:
        status = {"mode": self.mode, "safe": self.holding_safe, "safe_since": self.safe_since,
                  "stale_steps": self.stale_steps,
                  "steps": self.steps, "safe_steps": self.safe_steps,
                  "bad_commands": self.bad_commands, "resets": self.resets}
        self.status_pub.publish(String(data=json.dumps(status)))

    def step(self) -> None:
        self.pending.append(self.command)
        self.env.step(self.task.clip_action(self.pending.popleft()))
        self.steps += 1
        self.steps_since_command += 1
        self.publish_state()

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.resets += 1
        self.env.reset(seed=self.seed + self.resets)
        self.command = self.safe.copy()
        depth = self.pending.maxlen or 1
        self.pending = collections.deque([self.safe.copy()] * (depth - 1), maxlen=depth)
        self.publish_state()
        response.success, response.message = True, f"reset {self.resets}"
        return response


def main() -> None:
    run_node(SimNode, threads=1)


if __name__ == "__main__":
    main()
