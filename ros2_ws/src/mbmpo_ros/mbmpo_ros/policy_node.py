"""policy_node: runs an exported bundle through `mbmpo.runtime` on the robot's topics.

In: `joint_states` (sensor_msgs/JointState), `policy_bundle` (mbmpo_interfaces/PolicyBundle, from the
trainer). Out: `commands` (std_msgs/Float64MultiArray), `transitions` (mbmpo_interfaces/Transition, every
step, for the data node), `~/status` (std_msgs/String, JSON counters once a second).

Modes: `explore` cycles the K adapted policies per episode (MB-MPO data collection); `deploy` runs the
meta-policy for `adapt_episodes` episodes, adapts it with ONE gradient step off the control path, and
swaps the adapted policy in at the next episode boundary. Safety: actions clipped to the limits, the
safe command (zeros) within one control period of stale states, NaN guards, bundles and adaptations
verified before use, missed control periods counted.
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from mbmpo.deploy.contract import ObservationBuilder, ObservationError
from mbmpo.deploy.safety import ActionGuard, Mode, Watchdog
from mbmpo.deploy.trust import CodeAllowlist, task_code_digest
from mbmpo.runtime import AdaptationRefused, BundleError, Policy, load
from mbmpo_interfaces.msg import PolicyBundle, Transition
from mbmpo_ros.common import declare, run_node

BUNDLE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# 10 s at 1 kHz: a reliable KEEP_LAST history overwrites what the data node has not taken yet (a stalled
# flush on a loaded machine lost 499 of 13,315 at depth 1,000); a few MB at most
TRANSITION_QOS = QoSProfile(depth=10_000, reliability=ReliabilityPolicy.RELIABLE)


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        self.mode_name = declare(self, "mode", "explore", "explore | deploy")
        bundle = declare(self, "bundle", "", "bundle folder to start with ('' waits for the trainer)")
        self.lockstep = declare(self, "lockstep", False, "act on each new state instead of on a timer")
        period = declare(self, "control_period", 0.0, "seconds; 0 takes the bundle's")
        self.watchdog_factor = declare(self, "watchdog_periods", 2.0, "states older than this many control "
                                       "periods are stale; the safe command follows within a quarter period")
        self.horizon_param = declare(self, "horizon", 0, "episode length; 0 takes the bundle's")
        self.adapt_episodes = declare(self, "adapt_episodes", 2, "deploy: episodes of fresh data per adaptation")
        self.adapt_max_kl = declare(self, "adapt_max_kl", 0.0, "deploy: KL bound; 0 takes the bundle's")
        self.executor_kind = declare(self, "executor", "single", "single | multi (rclpy executor; single keeps "
                                     "the control period far better, BENCHMARKS.md)")
        self.deterministic = declare(self, "deterministic", False, "act with the mean action")
        wait_for_recorder = declare(self, "wait_for_recorder", False, "explore: hold the safe command until a "
                                    "data node subscribes to transitions (none are published unheard)")
        reset_service = declare(self, "reset_service", "sim_node/reset", "std_srvs/Trigger between episodes")
        task = declare(self, "task", "", "task whose reward code received bundles may carry ('' = only the "
                       "start bundle's reward.py)")
        self.bundle_root = Path(declare(self, "bundle_dir", "", "where received bundles are unpacked") or
                                tempfile.mkdtemp(prefix="mbmpo_policy_"))
        if self.mode_name not in ("explore", "deploy"):
            raise ValueError(f"mode '{self.mode_name}' is not explore or deploy")
        self.rng = np.random.default_rng(declare(self, "seed", 0, "action noise seed"))
        self.state_mode = Mode.IDLE
        self.base: Policy | None = None  # the meta-policy of the current bundle
        self.policy: Policy | None = None  # what acts now
        self.pending: Policy | None = None  # swapped in at the next episode boundary
        self.period = period
        self.counts = {"transitions": 0, "episodes": 0, "ticks": 0, "missed_periods": 0, "bad_states": 0,
                       "bundles_loaded": 0, "bundles_refused": 0, "adaptations": 0, "adaptations_refused": 0}
        self.latencies: list[float] = []
        self.returns: dict[str, list[float]] = {}
        # episode ids unique across restarts (microseconds at start): a restarted node's episodes are new
        # episodes to the data node and the trainer, not repeats of the old ones
        self.episode_id, self.step, self.episode_return = time.time_ns() // 1000, 0, 0.0
        self.explore_index = 0
        self.prev: tuple[np.ndarray, np.ndarray] | None = None
        self.fresh: list[tuple[np.ndarray, np.ndarray]] = []  # deploy: meta-policy episodes for adaptation
        self.episode_obs: list[np.ndarray] = []
        self.episode_act: list[np.ndarray] = []
        self.adapting = False
        self.latest: tuple[np.ndarray, float, object] | None = None
        self.last_stamp = None
        self.last_tick = None
        self.builder: ObservationBuilder | None = None
        self.guard: ActionGuard | None = None
        self.watchdog = Watchdog(1.0)

        control = MutuallyExclusiveCallbackGroup()
        self.cmd_pub = self.create_publisher(Float64MultiArray, "commands", 10)
        self.tr_pub = self.create_publisher(Transition, "transitions", TRANSITION_QOS)
        self.status_pub = self.create_publisher(String, "~/status", 10)
        self.create_subscription(JointState, "joint_states", self.on_state, 10, callback_group=control)
        self.create_subscription(PolicyBundle, "policy_bundle", self.on_bundle, BUNDLE_QOS,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        # bundles are verified and loaded off the control path; the control group installs them
        self.loaded: queue.SimpleQueue[tuple[Policy, int]] = queue.SimpleQueue()  # (policy, stamp ns)
        self.deliveries_ms: list[float] = []  # bundle publication -> installed here, per received bundle
        self.bundle_ready = self.create_guard_condition(self.install_loaded, callback_group=control)
        self.bundles_received = 0
        self.bundle_lock = threading.Lock()  # one bundle at a time, in arrival order
        self.reset_client = self.create_client(Trigger, reset_service, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, self.publish_status)
        self.control_group = control
        # whether anything records the transitions: looked up 10 times a second, not on the control path
        self.recorder_seen = not (wait_for_recorder and self.mode_name == "explore")
        if not self.recorder_seen:
            self.create_timer(0.1, self.look_for_recorder, callback_group=control)
        self.timers_started = False
        self.trusted = CodeAllowlist()  # the reward code received bundles may run: only what the user named
        if task:
            self.trusted.allow(task_code_digest(task), f"task {task}")
        if bundle:
            try:
                self.install(load(bundle))
            except BundleError as err:
                raise ValueError(str(err)) from None
            self.trusted.allow(self.base.manifest["files"]["reward.py"], f"bundle {bundle}")
        self.get_logger().info(f"mode {self.mode_name}, {'lockstep' if self.lockstep else 'timer'} control")

    # ---- bundles and policies ---------------------------------------------------------------------
    def install(self, meta: Policy) -> None:
        """Make a verified bundle current: contract, limits, timers; the policy starts at the next episode."""
        m = meta.manifest
        self.builder = ObservationBuilder(m["obs_names"])
        self.guard = ActionGuard(np.asarray(m["act_low"]), np.asarray(m["act_high"]))
        self.horizon = self.horizon_param or int(m["horizon"])
        if not self.period:
            self.period = float(m["control_period_s"])
        self.watchdog.timeout = self.watchdog_factor * self.period
        self.base = meta
        self.explore_index = 0
        self.fresh = []
        first = self.policy is None
        self.pending = self.next_policy()
        if first:
            self.policy, self.pending = self.pending, None
            self.state_mode = Mode.POLICY
        if not self.timers_started:
            self.timers_started = True
            self.create_timer(self.period / 4, self.on_watchdog, callback_group=self.control_group)
            if not self.lockstep:
                self.create_timer(self.period, self.on_tick, callback_group=self.control_group)
        self.counts["bundles_loaded"] += 1
        self.get_logger().info(f"policy {m['policy_version']} ready ({m['n_explore']} exploration sets)")

    def next_policy(self) -> Policy:
        assert self.base is not None
        if self.mode_name == "explore":
            k = self.explore_index % self.base.manifest["n_explore"]
            self.explore_index += 1
            return self.base.exploration(k)
        return self.base

    def on_bundle(self, msg: PolicyBundle) -> None:
        """A bundle from the trainer: written, sha256-checked and loaded in a worker thread (tens of ms of
        ONNX session setup must not stall the control loop), then installed by `install_loaded`."""
        folder = self.bundle_root / f"bundle_{self.bundles_received:04d}"
        self.bundles_received += 1
        threading.Thread(target=self.load_bundle, args=(msg, folder), daemon=True).start()

    def load_bundle(self, msg: PolicyBundle, folder: Path) -> None:
        with self.bundle_lock:
            self._load_bundle(msg, folder)

    def _load_bundle(self, msg: PolicyBundle, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for f in msg.files:
                if "/" in f.name or f.name.startswith("."):
                    raise BundleError(f"file name {f.name!r} is not allowed")
                (folder / f.name).write_bytes(bytes(f.data))
            (folder / "manifest.json").write_text(msg.manifest_json)
            self.trusted.check(folder)  # before load() imports reward.py
            meta = load(folder)
            if self.base is not None and meta.manifest["obs_names"] != self.base.manifest["obs_names"]:
                raise BundleError("observation layout differs from the running policy's")
        except (BundleError, OSError, ValueError) as err:
            self.counts["bundles_refused"] += 1
            self.get_logger().error(f"bundle {msg.policy_version!r} refused: {err}; keeping the current policy")
            return
        stamp = msg.header.stamp
        self.loaded.put((meta, stamp.sec * 1_000_000_000 + stamp.nanosec))
        self.bundle_ready.trigger()

    def install_loaded(self) -> None:
        while True:
            try:
                meta, published_ns = self.loaded.get_nowait()
            except queue.Empty:
                return
            self.install(meta)
            self.deliveries_ms.append((time.time_ns() - published_ns) / 1e6)

    def adapt_in_background(self, episodes: list[tuple[np.ndarray, np.ndarray]], base: Policy) -> None:
        """deploy mode: ONE adaptation step from fresh episodes, off the control path."""
        def work() -> None:
            t0 = time.perf_counter()
            try:
                adapted = base.adapt(episodes, max_kl=self.adapt_max_kl or None)
            except (AdaptationRefused, ValueError) as err:
                self.counts["adaptations_refused"] += 1
                self.get_logger().warning(f"adaptation refused: {err}")
            else:
                if base is self.base:
                    self.pending = adapted
                    self.counts["adaptations"] += 1
                    self.get_logger().info(f"adapted in {1e3 * (time.perf_counter() - t0):.1f} ms "
                                           f"(KL {adapted.kl_from_parent:.2e}); swapping at the next episode")
            finally:
                self.adapting = False
        self.adapting = True
        threading.Thread(target=work, daemon=True).start()

    # ---- the control loop -------------------------------------------------------------------------
    def on_state(self, msg: JointState) -> None:
        now = time.monotonic()
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp == self.last_stamp or self.builder is None:
            return  # a re-sent state already used, or no policy yet
        if self.last_stamp is not None and stamp < self.last_stamp:  # late or replayed: never act on the past
            self.counts["bad_states"] += 1
            self.get_logger().warning("state rejected: stamped before the last state used", throttle_duration_sec=1.0)
            return
        try:
            obs = self.builder.build(msg.name, msg.position, msg.velocity)
        except ObservationError as err:
            self.counts["bad_states"] += 1
            self.get_logger().warning(f"state rejected: {err}", throttle_duration_sec=1.0)
            return
        self.last_stamp = stamp
        self.watchdog.feed(now)
        self.latest = (obs, now, stamp)
        if self.lockstep:
            self.control(obs, now)

    def on_tick(self) -> None:
        """Timer control: act on the newest fresh state. A tick later than 1.5 periods counts the periods it
        missed (`ticks` is the denominator for the miss rate)."""
        now = time.monotonic()
        self.counts["ticks"] += 1
        if self.last_tick is not None:
            late = (now - self.last_tick) / self.period - 1.0
            if late > 0.5:
                self.counts["missed_periods"] += int(round(late))
        self.last_tick = now
        if self.latest is not None and not self.watchdog.stale(now):
            obs, _, _ = self.latest
            self.latest = None
            self.control(obs, now)

    def on_watchdog(self) -> None:
        """Stale states: the safe command within one control period. In lock-step the robot (a simulator)
        moves only on commands, so there is nothing to hold and a command would step it: none is sent."""
        if self.lockstep or self.policy is None or not self.watchdog.stale(time.monotonic()):
            return
        if self.state_mode is not Mode.SAFE:
            self.get_logger().warning("robot states stale: sending the safe command")
            self.prev = None  # the applied action is unknown: no transition across the gap
        self.state_mode = Mode.SAFE
        self.publish_command(self.guard.safe if self.guard else None)

    def look_for_recorder(self) -> None:
        self.recorder_seen = self.tr_pub.get_subscription_count() > 0

    def control(self, obs: np.ndarray, received: float) -> None:
        if self.policy is None or self.guard is None:
            return
        if not self.recorder_seen:
            # transitions published before the data node matched are never delivered (volatile QoS), though
            # `wait_for_all_acked` reports success: explore only while something records
            if self.state_mode is not Mode.SAFE:
                self.get_logger().warning("no data node subscribes to transitions: holding the safe command")
            self.state_mode, self.prev = Mode.SAFE, None
            self.publish_command(self.guard.safe)
            return
        self.state_mode = Mode.POLICY
        if self.prev is not None and self.record(obs):
            return  # the episode ended: wait for the reset state
        action = self.guard(self.policy.act(obs, deterministic=self.deterministic, rng=self.rng))
        self.publish_command(action)
        self.latencies.append(time.monotonic() - received)
        if len(self.latencies) > 5000:
            del self.latencies[:2500]
        self.prev = (obs, action.astype(np.float32))
        self.episode_obs.append(obs)
        self.episode_act.append(self.prev[1])

    def record(self, obs: np.ndarray) -> bool:
        """Publish the transition that ends in `obs`; returns True when it ended the episode."""
        prev_obs, prev_act = self.prev
        bundle = self.base.bundle
        reward = float(bundle.reward_fn(prev_obs, prev_act, obs))
        terminated = bool(bundle.termination_fn(prev_obs, prev_act, obs)) if bundle.termination_fn else False
        truncated = not terminated and self.step + 1 >= self.horizon
        msg = Transition()
        msg.stamp = self.get_clock().now().to_msg()
        msg.episode_id, msg.step, msg.policy_id = self.episode_id, self.step, self.policy.name
        msg.obs, msg.action, msg.next_obs = prev_obs.tolist(), prev_act.tolist(), obs.tolist()
        msg.reward, msg.terminated, msg.truncated = reward, terminated, truncated
        self.tr_pub.publish(msg)
        self.counts["transitions"] += 1
        self.step += 1
        self.episode_return += reward
        if terminated or truncated:
            self.episode_obs.append(obs)
            self.end_episode()
            return True
        return False

    def end_episode(self) -> None:
        self.returns.setdefault(self.policy.name, []).append(self.episode_return)
        self.counts["episodes"] += 1
        if self.mode_name == "deploy" and self.policy is self.base and not self.adapting:
            self.fresh.append((np.stack(self.episode_obs), np.stack(self.episode_act)))
            if len(self.fresh) >= self.adapt_episodes:
                self.adapt_in_background(self.fresh, self.base)
                self.fresh = []
        if self.pending is not None:
            self.policy, self.pending = self.pending, None
        elif self.mode_name == "explore":
            self.policy = self.next_policy()
        self.episode_id += 1
        self.step, self.episode_return, self.prev = 0, 0.0, None
        self.episode_obs, self.episode_act = [], []
        if self.reset_client.service_is_ready():
            self.reset_client.call_async(Trigger.Request())

    def publish_command(self, action: np.ndarray | None) -> None:
        msg = Float64MultiArray()
        msg.data = [float(x) for x in (action if action is not None else [])]
        if msg.data:
            self.cmd_pub.publish(msg)

    def publish_status(self) -> None:
        lat = np.asarray(self.latencies[-2000:]) * 1e3
        status = {
            "mode": self.mode_name, "state": self.state_mode.value,
            "policy": None if self.policy is None else self.policy.name,
            "policy_version": None if self.base is None else self.base.manifest["policy_version"],
            "episode": self.episode_id, "watchdog_trips": self.watchdog.trips,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "bundle_delivery_ms": self.deliveries_ms[-1] if self.deliveries_ms else None,
            "mean_return": {k: float(np.mean(v[-10:])) for k, v in self.returns.items()},
            **self.counts,
        }
        self.status_pub.publish(String(data=json.dumps(status)))


    def close(self) -> None:
        """Wait (up to 5 s) until the data node has every transition, then log the final counters."""
        acked = self.tr_pub.wait_for_all_acked(Duration(seconds=5.0))
        print("policy_node final " + json.dumps({**self.counts, "all_acked": acked,
                                                 "bundle_delivery_ms": [round(d, 1) for d in self.deliveries_ms]}),
              flush=True)


def main() -> None:
    run_node(PolicyNode, threads=3)


if __name__ == "__main__":
    main()
