"""policy_node: runs an exported bundle on the robot's topics through `mbmpo.deploy.controller.Controller`.

In: `joint_states` (sensor_msgs/JointState), `policy_bundle` (mbmpo_interfaces/PolicyBundle, from the
trainer). Out: `commands` (std_msgs/Float64MultiArray), `transitions` (mbmpo_interfaces/Transition, every
step, for the data node; with `batch` > 1 `transition_batches`, mbmpo_interfaces/TransitionBatch, at each
episode end, every `batch` steps and at least every 0.2 s), `~/status` (std_msgs/String, JSON counters once a
second).

The controller holds every decision (episodes, explore/deploy, safe commands, faults); this node declares
parameters, wires topics and timers, and hands work over. Concurrency: one mutually exclusive callback
group runs everything the controller reads or writes (states, ticks, the watchdog, and the drain of the
worker's results, woken by a guard condition); bundle loading and adaptation run on the controller's
worker thread. An exception in a control callback never stops the node: it sends the safe command,
counts `faults` and logs (throttled); exit 2 is only for configuration errors at construction.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from mbmpo.deploy.controller import Controller, ControllerSettings, Decision, ReceivedBundle
from mbmpo.deploy.transitions import TransitionBatch, TransitionRecord
from mbmpo.deploy.worker import Worker
from mbmpo.runtime import BundleError
from mbmpo_interfaces.msg import PolicyBundle, Transition
from mbmpo_interfaces.msg import TransitionBatch as TransitionBatchMsg
from mbmpo_ros.common import CONTROL_SUB_QOS, declare, fill_batch, run_node, write_report

BUNDLE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# 10 s at 1 kHz: a reliable KEEP_LAST history overwrites what the data node has not taken yet (a stalled
# flush on a loaded machine lost 499 of 13,315 at depth 1,000); a few MB at most
TRANSITION_QOS = QoSProfile(depth=10_000, reliability=ReliabilityPolicy.RELIABLE)
BATCH_PERIOD_S = 0.2  # a batch waits at most this long for more transitions


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        self.lockstep = declare(self, "lockstep", False, "act on each new state instead of on a timer")
        settings = ControllerSettings(
            mode=declare(self, "mode", "explore", "explore | deploy"),
            lockstep=self.lockstep,
            trigger=declare(self, "trigger", "auto", "act on: auto (on each state when the driver streams at the "
                            "control rate, else on the timer) | timer | state"),
            reset=declare(self, "reset", "service", "between episodes: service (call reset_service and wait) | home "
                          "(drive the joints home) | operator (wait for ~/start_episode) | none (continue)"),
            home=declare(self, "home", "", "reset home: 'joint=position,...[,kp=..,kd=..]' ('' = the task YAML's)"),
            adapt_episodes=declare(self, "adapt_episodes", 2, "deploy: episodes of fresh data per adaptation"),
            adapt_steps=declare(self, "adapt_steps", 1, "deploy: gradient steps on those episodes, each under the KL "
                                "bound (the meta-learned method takes 1)"),
            adapt_max_kl=declare(self, "adapt_max_kl", 0.0, "deploy: KL bound; 0 takes the bundle's"),
            adapt_kl=declare(self, "adapt_kl", 0.0, "deploy: the step scaled to this KL(pre || post) (on the episodes: "
                             "adapt_steps' total; through the models: each step's); 0 takes the bundle's step"),
            adapt_through=declare(self, "adapt_through", "episodes", "deploy: episodes (step on the fresh episodes) | "
                                  "models (step on imagined rollouts of the bundle's models corrected to them)"),
            adapt_rounds=declare(self, "adapt_rounds", 1, "deploy: adaptations in all, each of the policy in use "
                                 "after its adapt_episodes episodes"),
            adapt_judge=declare(self, "adapt_judge", False, "deploy: revert an adapted policy whose own episodes "
                                "score below its parent's"),
            adapt_margin=declare(self, "adapt_margin", 0.0, "deploy, with adapt_judge: keep an adapted policy only if "
                                 "its episodes' mean beats its parent's by this many standard errors"),
            deterministic=declare(self, "deterministic", False, "act with the mean action"),
            horizon=declare(self, "horizon", 0, "episode length; 0 takes the bundle's"),
            control_period=declare(self, "control_period", 0.0, "seconds; 0 takes the bundle's"),
            speedup=declare(self, "speedup", 1.0, "a simulator this many times faster than real time (sim_mode "
                            "fast): the control period is divided by it"),
            watchdog_periods=declare(self, "watchdog_periods", 2.0, "states older than this many control periods "
                                     "are stale; the safe command follows within a quarter period"),
            seed=declare(self, "seed", 0, "action noise seed"),
            robot=declare(self, "robot", "", "this robot's name in a fleet, stamped on its transitions ('' = one "
                          "robot)"),
            explore_offset=declare(self, "explore_offset", 0, "explore: the first of the K adapted policies "
                                   "(spreads them over a fleet)"))
        bundle = declare(self, "bundle", "", "bundle folder to start with ('' waits for the trainer)")
        self.executor_kind = declare(self, "executor", "single", "single | multi (rclpy executor; single keeps "
                                     "the control period far better, BENCHMARKS.md)")
        wait_for_recorder = declare(self, "wait_for_recorder", False, "explore: hold the safe command until a "
                                    "data node subscribes to transitions (none are published unheard)")
        self.reset_service = declare(self, "reset_service", "sim_node/reset", "std_srvs/Trigger of reset:=service")
        task = declare(self, "task", "", "task whose reward code received bundles may carry ('' = only the "
                       "start bundle's reward.py)")
        self.report = declare(self, "report", "", "file for the final counters as JSON ('' = none)")
        self.batch = declare(self, "batch", 1, "transitions a message: 1 sends a Transition each step; N > 1 sends "
                             "TransitionBatch messages of up to N (fast robots and fleets)")
        if self.batch < 1:
            raise ValueError(f"batch {self.batch} must be at least 1")
        self.bundle_root = Path(declare(self, "bundle_dir", "", "where received bundles are unpacked") or
                                tempfile.mkdtemp(prefix="mbmpo_policy_"))

        self.warned: dict[str, float] = {}  # warning kind -> when it was last logged
        control = MutuallyExclusiveCallbackGroup()
        self.control_group = control
        self.work_ready = self.create_guard_condition(self.guarded(self.on_work_done), callback_group=control)
        self.controller = Controller(settings, Worker(notify=self.work_ready.trigger), log=self.log,
                                     clock_ns=lambda: self.get_clock().now().nanoseconds)
        self.cmd_pub = self.create_publisher(Float64MultiArray, "commands", 10)
        self.tr_pub = (self.create_publisher(Transition, "transitions", TRANSITION_QOS) if self.batch == 1 else
                       self.create_publisher(TransitionBatchMsg, "transition_batches", QoSProfile(
                           depth=max(1_000, -(-TRANSITION_QOS.depth // self.batch)),  # as many transitions: 10 s at 1 kHz
                           reliability=ReliabilityPolicy.RELIABLE)))
        self.unsent: list[TransitionRecord] = []  # batch > 1: transitions of the next batch
        if self.batch > 1:
            self.create_timer(BATCH_PERIOD_S, self.guarded(self.send_batch), callback_group=control)
        self.status_pub = self.create_publisher(String, "~/status", 10)
        self.create_subscription(JointState, "joint_states", self.guarded(self.on_state), CONTROL_SUB_QOS, callback_group=control)
        self.create_subscription(PolicyBundle, "policy_bundle", self.guarded(self.on_bundle), BUNDLE_QOS,
                                 callback_group=control)
        self.reset_client = self.create_client(Trigger, self.reset_service,
                                               callback_group=MutuallyExclusiveCallbackGroup())
        self.reset_answer: tuple[bool, str] | None = None  # set by the service's future, taken on the control group
        self.reset_answered = self.create_guard_condition(self.guarded(self.on_reset_answer), callback_group=control)
        self.create_service(Trigger, "~/start_episode", self.on_start_episode, callback_group=control)
        self.create_timer(1.0, self.publish_status)
        self.bundles_received = 0
        self.timers_started = False
        if wait_for_recorder and settings.mode == "explore":
            # whether anything records: looked up 10 times a second, not on the control path
            self.controller.recorder_present = False
            self.create_timer(0.1, self.guarded(self.look_for_recorder), callback_group=control)
        if task:
            self.controller.trust_task(task)
        if bundle:
            try:
                self.controller.start_with(bundle)
            except BundleError as err:
                raise ValueError(str(err)) from None
            self.start_timers()
        self.get_logger().info(f"mode {settings.mode}, {'lockstep' if self.lockstep else 'timer'} control")

    def log(self, level: str, message: str) -> None:
        """The controller's log lines (rclpy binds a severity to each call site: one call per level).
        Warnings are throttled to one a second per kind (the text before the first ':'), so a frequent one
        never hides another."""
        logger = self.get_logger()
        if level == "error":
            logger.error(message)
        elif level == "warning":
            kind, now = message.split(":")[0], time.monotonic()
            if now - self.warned.get(kind, -1e9) >= 1.0:
                self.warned[kind] = now
                logger.warning(message)
        else:
            logger.info(message)

    def guarded(self, callback: Callable[..., None]) -> Callable[..., None]:
        """`callback`, but an exception sends the safe command and is counted and logged, never raised."""
        def run(*args: object) -> None:
            try:
                callback(*args)
            except Exception as err:
                self.controller.counts["faults"] += 1
                self.controller.last_fault = f"{type(err).__name__}: {err}"
                self.get_logger().error(f"{callback.__name__}: {self.controller.last_fault}; safe command sent",
                                        throttle_duration_sec=1.0)
                self.publish_command(self.controller.safe_command())
        return run

    def start_timers(self) -> None:
        """The watchdog and control timers, once the control period is known (from the first bundle)."""
        if self.timers_started or not self.controller.period:
            return
        self.timers_started = True
        period = self.controller.period
        self.create_timer(period / 4, self.guarded(self.on_watchdog), callback_group=self.control_group)
        if not self.lockstep:
            self.create_timer(period, self.guarded(self.on_tick), callback_group=self.control_group)

    # ---- callbacks ----------------------------------------------------------------------------------
    def on_bundle(self, msg: PolicyBundle) -> None:
        folder = self.bundle_root / f"bundle_{self.bundles_received:04d}"
        self.bundles_received += 1
        stamp = msg.header.stamp
        self.controller.receive(ReceivedBundle(msg.policy_version, [(f.name, bytes(f.data)) for f in msg.files],
                                               msg.manifest_json, stamp.sec * 1_000_000_000 + stamp.nanosec), folder)

    def on_work_done(self) -> None:
        self.controller.collect()
        self.start_timers()

    def on_state(self, msg: JointState) -> None:
        now = time.monotonic()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        obs = self.controller.on_state(msg.name, msg.position, msg.velocity, stamp, now)
        if obs is not None and self.controller.acts_on_states:
            self.controller.latest = None
            self.apply(self.controller.control(obs, now))

    def on_tick(self) -> None:
        decision = self.controller.on_tick(time.monotonic())
        if decision is not None:
            self.apply(decision)

    def on_watchdog(self) -> None:
        decision = self.controller.on_watchdog(time.monotonic(), self.lockstep)
        if decision is not None:
            self.apply(decision)

    def look_for_recorder(self) -> None:
        self.controller.recorder_present = self.tr_pub.get_subscription_count() > 0

    # ---- outputs ------------------------------------------------------------------------------------
    def apply(self, decision: Decision) -> None:
        if decision.transition is not None:
            self.publish_transition(decision)
        if decision.fault is not None:
            self.get_logger().error(f"runtime fault: {decision.fault}; safe command sent", throttle_duration_sec=1.0)
        self.publish_command(decision.command)
        if decision.reset:
            self.call_reset()

    def call_reset(self) -> None:
        """reset:=service: call the robot's reset; the answer reaches the controller on the control group."""
        if not self.reset_client.service_is_ready():
            self.reset_answer = (False, f"reset service '{self.reset_client.srv_name}' not available (a robot "
                                        f"without one: reset:=home, operator or none)")
            self.reset_answered.trigger()
            return

        def answered(future: Any) -> None:
            try:
                response = future.result()
                self.reset_answer = (bool(response.success), str(response.message or "no message"))
            except Exception as err:
                self.reset_answer = (False, f"{type(err).__name__}: {err}")
            self.reset_answered.trigger()

        self.reset_client.call_async(Trigger.Request()).add_done_callback(answered)

    def on_reset_answer(self) -> None:
        answer, self.reset_answer = self.reset_answer, None
        if answer is not None:
            decision = self.controller.reset_finished(*answer, time.monotonic())
            if decision is not None:
                self.apply(decision)

    def on_start_episode(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """reset:=operator: the robot is ready, start the next episode."""
        ok, decision = self.controller.operator_go(time.monotonic())
        if decision is not None:
            self.apply(decision)
        response.success = ok
        response.message = "episode starts" if ok else "nothing waits for the operator"
        return response

    def publish_transition(self, decision: Decision) -> None:
        t = decision.transition
        assert t is not None
        if self.batch > 1:
            self.unsent.append(t)
            if len(self.unsent) >= self.batch or t.terminated or t.truncated:
                self.send_batch()
            return
        msg = Transition()
        msg.stamp.sec, msg.stamp.nanosec = divmod(t.stamp_ns, 1_000_000_000)
        msg.episode_id, msg.step, msg.policy_id = t.episode_id, t.step, t.policy_id
        msg.obs, msg.action, msg.next_obs = t.obs.tolist(), t.action.tolist(), t.next_obs.tolist()
        msg.reward, msg.terminated, msg.truncated, msg.robot = t.reward, t.terminated, t.truncated, t.robot
        self.tr_pub.publish(msg)

    def send_batch(self) -> None:
        if self.unsent:
            batch, self.unsent = TransitionBatch.from_records(self.unsent), []
            self.tr_pub.publish(fill_batch(TransitionBatchMsg(), batch))

    def publish_command(self, action: object) -> None:
        if action is None:
            return
        msg = Float64MultiArray()
        msg.data = [float(x) for x in action]  # type: ignore[attr-defined]
        if msg.data:
            self.cmd_pub.publish(msg)

    def publish_status(self) -> None:
        self.status_pub.publish(String(data=json.dumps(self.controller.status())))

    def close(self) -> None:
        """Send what waits for a batch, wait (up to 5 s) until the data node has every transition, then report
        the final counters."""
        self.send_batch()
        acked = self.tr_pub.wait_for_all_acked(Duration(seconds=5.0))
        c = self.controller
        status = c.status()
        write_report("policy_node", {**c.counts, "all_acked": acked, "trigger": c.trigger,
                                     "bundle_delivery_ms": [round(d, 1) for d in c.deliveries_ms],
                                     **{k: status[k] for k in ("robot", "policy_version", "mean_return")},
                                     **c.adaptation_effect()}, self.report)
        c.worker.close(timeout=1.0)


def main() -> None:
    run_node(PolicyNode, threads=3)


if __name__ == "__main__":
    main()
