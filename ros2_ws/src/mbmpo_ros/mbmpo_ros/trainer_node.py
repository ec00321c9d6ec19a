"""trainer_node: fits the ensemble and meta-optimises on recorded data, asynchronously.

In: `data_node/segments` (std_msgs/String JSON, a closed bag segment). Out: `policy_bundle`
(mbmpo_interfaces/PolicyBundle, reliable + transient-local, so a policy node that starts later still
gets the latest), `~/status`. Training runs in a worker thread, never in an executor callback; the bag
is the source of truth: a notice only says "look again", and only segments listed in the bag's metadata
are read. A restarted trainer resumes from its checkpoint and data, and `mbmpo.deploy.intake` makes it
read every transition it had not trained on, exactly once (OUT/intake.json). Writes OUT/progress.csv,
OUT/learning_curve.png, OUT/policy/ (latest bundle).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path

import rclpy
import torch
import yaml
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from mbmpo.config import Config, choose_config, load_config
from mbmpo.deploy.bag import read_messages
from mbmpo.deploy.intake import Intake
from mbmpo.deploy.recording import RecordingListing
from mbmpo.deploy.transitions import assemble_episodes, records_from_msg
from mbmpo.errors import Abandoned
from mbmpo.export.bundle import export_policy
from mbmpo.policy.gaussian import stack_params
from mbmpo.runtime.format import sha256
from mbmpo.tasks import get_task
from mbmpo.train.init import init_config
from mbmpo.train.logger import plot_learning_curve
from mbmpo.train.progress import ProgressRow
from mbmpo.train.trainer import CHECKPOINT, Trainer
from mbmpo_interfaces.msg import BundleFile, PolicyBundle
from mbmpo_ros.common import declare, run_node

INTAKE = "intake.json"
BUNDLE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TrainerNode(Node):
    def __init__(self) -> None:
        super().__init__("trainer_node")
        task_name = declare(self, "task", "InvertedPendulum-v5", "registered task or task YAML path")
        config = declare(self, "config", "", "preset YAML ('' = config/<task>.yaml)")
        self.out = Path(declare(self, "out", "runs/ros_train", "output folder"))
        seed = declare(self, "seed", 0, "random seed")
        self.steps = declare(self, "steps", 10000, "real transitions after which training stops")
        self.target_return = declare(self, "target_return", 0.0, "stop early at this return (0: never)")
        self.bag_dir = Path(declare(self, "bag_dir", "", "bag to read ('' = OUT/bag)") or self.out / "bag")
        self.listing = RecordingListing(self.bag_dir)
        init = declare(self, "init", "", "fine-tune: a finished run to start from ('' = from scratch)")
        keep_init_data = declare(self, "keep_init_data", False, "with init: also train on that run's transitions")
        threads = declare(self, "threads", 1, "torch CPU threads; 1 leaves cores to the robot-side nodes")
        device = declare(self, "device", "", "torch device of the fit and meta-optimisation: cpu | cuda | cuda:N | "
                                            "auto ('' = the config's)")
        torch.set_num_threads(max(1, threads))
        self.task = get_task(task_name)
        if init and not config:
            cfg, chosen = init_config(Path(init)), f"config of the run {init} (init)"
        else:
            path, chosen = (Path(config), f"config {config}") if config else \
                choose_config(self.task.name, self.task.obs_dim, self.task.act_dim, self.task.preset)
            cfg = load_config(path) if path else Config()
        self.get_logger().info(f"{self.task.name}: {chosen}")
        resume = (self.out / CHECKPOINT).exists() or (self.out / "data.npz").exists()
        self.trainer = Trainer(self.task, cfg, self.out, seed, resume=resume, init=Path(init) if init else None,
                               keep_init_data=keep_init_data, device=device or None)
        self.trainer.should_stop = lambda: self.stopping  # a stop abandons the iteration between steps
        self.cfg = self.trainer.cfg
        self.episodes_per_iteration = self.trainer.n_tasks * self.cfg.collect.rollouts_per_task
        self.intake = Intake(self.out / INTAKE, self.trainer.buffer.total_steps)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.done = False
        self.bundle_pub = self.create_publisher(PolicyBundle, "policy_bundle", BUNDLE_QOS)
        self.status_pub = self.create_publisher(String, "~/status", 10)
        self.create_subscription(String, "data_node/segments", self.on_segment,
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.create_timer(1.0, self.publish_status)
        self.last_row: ProgressRow | None = None
        self.publish_bundle()  # the current (possibly untrained) policy starts the exploration
        self.catch_up()
        self.worker = threading.Thread(target=self.loop, daemon=True)
        self.worker.start()
        self.get_logger().info(f"training {self.task.name} into {self.out}; {self.episodes_per_iteration} "
                               f"episodes per iteration, {self.trainer.buffer.total_steps} steps already used")

    # ---- data intake (executor thread: cheap only) ------------------------------------------------
    def catch_up(self) -> None:
        """Read every segment the bag's metadata lists that has not been read yet (at start, after a
        restart, and on each notice: a notice names nothing that is trusted, not even a file name)."""
        try:
            listed = self.listing.segments()
        except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
            self.get_logger().error(f"cannot read the metadata of {self.bag_dir}: {err}")
            return
        with self.lock:
            new = [s for s in listed if not self.intake.known(s)]
        for segment in new:
            try:
                records = [r for _, m in read_messages(self.bag_dir, [segment]) for r in records_from_msg(m)]
            except Exception as err:  # an unreadable file must not stop training on the rest
                self.get_logger().error(f"cannot read {self.bag_dir / segment}: {err}")
                continue
            with self.lock:
                self.intake.add(segment, records)
        self.wake.set()

    def on_segment(self, msg: String) -> None:
        try:
            json.loads(msg.data)["segment"]
        except (ValueError, KeyError, TypeError):
            self.get_logger().warning(f"malformed segment notice {msg.data[:80]!r}", throttle_duration_sec=1.0)
            return
        self.catch_up()

    # ---- training (worker thread) -----------------------------------------------------------------
    def take_episodes(self) -> tuple[list, int] | None:
        """Complete episodes and the newest transition's stamp (ns), once enough for the next iteration have
        arrived; None otherwise. What is taken is recorded (OUT/intake.json) before the trainer saves it:
        see `mbmpo.deploy.intake`."""
        # uniform random data first, unless the run starts from another's (init) adapted policies
        first = self.trainer.state.adapted is None
        with self.lock:
            ready = self.intake.take(min_transitions=self.cfg.collect.initial_random_steps if first else 0,
                                     min_episodes=0 if first else self.episodes_per_iteration)
            if ready is None:
                return None
            self.intake.commit(ready, self.trainer.buffer.total_steps + len(ready))
        return assemble_episodes(ready), max(r.stamp_ns for r in ready)

    def loop(self) -> None:
        while not self.stopping and not self.done:
            if self.trainer.data_ahead():  # saved by an iteration that did not finish: train on it first
                episodes, newest_ns = None, time.time_ns()
            else:
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                taken = self.take_episodes()
                if not taken or not taken[0]:
                    continue
                episodes, newest_ns = taken
            t0 = time.time_ns()
            try:
                row = self.trainer.iterate(episodes)
            except Abandoned as err:
                self.get_logger().info(f"iteration {self.trainer.state.iteration} abandoned ({err}); its data is "
                                       f"saved and a restarted trainer trains on it first")
                return
            self.last_row = row
            self.publish_bundle()
            self.log_bundle(row, newest_ns, t0)
            plot_learning_curve(self.out, f"MB-MPO (ROS) on {self.task.name}")
            robot = "" if row.robot_return is None else f"robot episodes {row.robot_return:.1f}; "
            self.get_logger().info(f"iteration {row.iteration}: {row.real_steps} real steps, {robot}MuJoCo "
                                   f"evaluation pre {row.return_pre:.1f} post {row.return_post:.1f}")
            if self.trainer.buffer.total_steps >= self.steps or (
                    self.target_return and row.return_pre >= self.target_return):
                self.done = True
                self.get_logger().info(f"training done; the latest bundle is in {self.out / 'policy'}")
                self.hand_over_last_bundle()
                rclpy.try_shutdown(context=self.context)  # ends spin: the process exits 0

    def hand_over_last_bundle(self, seconds: float = 10.0) -> None:
        """Before exiting, let the last bundle reach a subscriber: wait (up to `seconds`) for one to be matched,
        then for its acknowledgement. `wait_for_all_acked` alone returns at once while discovery is still
        under way (nothing matched, nothing to wait for), and the transient-local bundle dies with the node.
        Without any subscriber the bundle stays in OUT/policy."""
        end = time.monotonic() + seconds
        while self.bundle_pub.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.05)
        if self.bundle_pub.get_subscription_count() == 0:
            self.get_logger().warning(f"no subscriber to policy_bundle after {seconds:g} s; the last bundle is "
                                      f"only in {self.out / 'policy'}")
            return
        if not self.bundle_pub.wait_for_all_acked(Duration(seconds=max(1.0, end - time.monotonic()))):
            self.get_logger().warning("the last bundle was not acknowledged by every subscriber")

    def publish_bundle(self) -> None:
        """Export the current policy to OUT/policy (atomically) and send it to the policy node."""
        state = self.trainer.state
        adapted = state.adapted if state.adapted is not None else {
            k: v.clone() for k, v in stack_params(state.params, self.trainer.n_tasks).items()}
        tmp = self.out / "policy.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        recorded = self.trainer.buffer.obs
        # the bundle sent before any data has no models: untrained, and no recorded states to bound them with
        manifest = export_policy(state.params, adapted, self.task, dataclasses.asdict(self.cfg.meta), state.iteration,
                                 self.trainer.buffer.total_steps, tmp,
                                 models=self.trainer.ensemble if len(recorded) else None, recorded_obs=recorded,
                                 deploy_cfg=dataclasses.asdict(self.cfg.deploy))  # deployable as is
        final = self.out / "policy"
        old = self.out / "policy.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.replace(old)
        tmp.replace(final)
        shutil.rmtree(old, ignore_errors=True)
        msg = PolicyBundle()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.policy_version = manifest["policy_version"]
        msg.manifest_json = (final / "manifest.json").read_text()
        for name in manifest["files"]:
            data = (final / name).read_bytes()
            msg.files.append(BundleFile(name=name, sha256=sha256(final / name), data=data))
        self.bundle_pub.publish(msg)

    def log_bundle(self, row: ProgressRow, newest_ns: int, start_ns: int) -> None:
        """OUT/bundles.csv: per bundle, seconds from the newest transition it learned from to its publication
        (flush wait + intake + the iteration + export), and the iteration's own seconds."""
        now = time.time_ns()
        path = self.out / "bundles.csv"
        new = not path.is_file()
        with path.open("a") as f:
            if new:
                f.write("iteration,real_steps,data_to_bundle_s,iteration_s\n")
            f.write(f"{row.iteration},{row.real_steps},{(now - newest_ns) / 1e9:.3f},{(now - start_ns) / 1e9:.3f}\n")

    def publish_status(self) -> None:
        with self.lock:
            waiting = self.intake.waiting()
        status = {"iteration": self.trainer.state.iteration, "real_steps": self.trainer.buffer.total_steps,
                  "waiting_transitions": waiting, "done": self.done,
                  "last": self.last_row.to_dict() if self.last_row else {}}
        self.status_pub.publish(String(data=json.dumps(status, default=str)))

    def close(self) -> None:
        """Stop training between two steps: the iteration in progress finishes its current step and is
        abandoned (nothing half-written: checkpoint and progress.csv stay those of the last finished
        iteration), so the process never exits while torch is mid-computation in the worker thread."""
        self.stopping = True
        self.wake.set()
        self.worker.join(timeout=60.0)
        if self.worker.is_alive():
            self.get_logger().error("the training thread did not stop within 60 s")
        if (self.out / "progress.csv").is_file():
            plot_learning_curve(self.out, f"MB-MPO (ROS) on {self.task.name}")


def main() -> None:
    run_node(TrainerNode, threads=2)


if __name__ == "__main__":
    main()
