"""data_node: validates every transition and records it into crash-safe rosbag2 MCAP bags (parts of at most
`segments_per_part` segments, BAG/part_NNNN, each a complete bag).

In: `transitions` (mbmpo_interfaces/Transition) and `transition_batches` (mbmpo_interfaces/TransitionBatch, many
transitions a message: what fleets and fast robots send). Out: `~/segments` (std_msgs/String, JSON
{"bag", "segment", "count", "total"} each time a segment is closed, which tells the trainer what is new),
`~/status` (JSON counters). Malformed transitions are rejected with a logged, counted reason. A crash
loses at most the last `flush_period` seconds. An unwritable bag folder is a clear error at start (exit
2); a write failure later (disk full) stops recording, logged once, and the node keeps running and
reporting (`error`, `lost` in the status) without touching what is already on disk: no crash loop.
"""

from __future__ import annotations

import json
import sys
import time

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from std_msgs.msg import String

from mbmpo.deploy.recording import RollingBagWriter
from mbmpo.deploy.transitions import TransitionBatch, TransitionRecord, TransitionValidator
from mbmpo_interfaces.msg import Transition
from mbmpo_interfaces.msg import TransitionBatch as TransitionBatchMsg
from mbmpo_ros.common import declare, fill_batch, run_node, write_report

TOPIC = "/transitions"
MSGTYPE = "mbmpo_interfaces/msg/Transition"
BATCH_TOPIC = "/transition_batches"
BATCH_MSGTYPE = "mbmpo_interfaces/msg/TransitionBatch"
TRANSITION_QOS = QoSProfile(depth=10_000, reliability=ReliabilityPolicy.RELIABLE)

DRAIN_S = 10.0  # at most this long after a stop signal to take what the policy nodes still send

class DataNode(Node):
    def __init__(self) -> None:
        super().__init__("data_node")
        bag_dir = declare(self, "bag_dir", "runs/bag", "rosbag2 folder to record into (appends if it exists)")
        task = declare(self, "task", "", "task whose sizes transitions must have ('' accepts the first seen)")
        self.report = declare(self, "report", "", "file for the final counters as JSON ('' = none)")
        obs_dim = declare(self, "obs_dim", 0, "observation size (0: from the task)")
        act_dim = declare(self, "act_dim", 0, "action size (0: from the task)")
        flush_period = declare(self, "flush_period", 1.0, "seconds between durable segment flushes")
        per_part = declare(self, "segments_per_part", 600, "segments a bag part holds before the next part starts "
                           "(bounds the metadata rewritten at every flush; mbmpo/deploy/recording.py)")
        if task and not (obs_dim and act_dim):
            from mbmpo.tasks import get_task

            spec = get_task(task)
            obs_dim, act_dim = spec.obs_dim, spec.act_dim
        if not (obs_dim and act_dim):
            raise ValueError("set task, or obs_dim and act_dim")
        try:
            self.writer = RollingBagWriter(bag_dir, TOPIC, MSGTYPE, per_part)
            self.writer.add_topic(BATCH_TOPIC, BATCH_MSGTYPE)
        except OSError as err:
            raise ValueError(f"cannot record into {bag_dir}: {err.strerror or err}") from None
        self.validator = TransitionValidator(obs_dim, act_dim)
        self.bag_dir = bag_dir
        self.accepted = 0
        self.by_robot: dict[str, int] = {}  # accepted transitions per robot of a fleet ("" for one robot)
        self.lost = 0  # accepted but never made durable: the open segment at a write failure, and after it
        self.failed: str | None = None
        self.seg_pub = self.create_publisher(String, "~/segments", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.status_pub = self.create_publisher(String, "~/status", 10)
        self.subscription = self.create_subscription(Transition, "transitions", self.on_transition, TRANSITION_QOS)
        self.batches = self.create_subscription(TransitionBatchMsg, "transition_batches", self.on_batch, TRANSITION_QOS)
        self.create_timer(flush_period, self.flush)
        self.create_timer(1.0, self.publish_status)
        self.get_logger().info(f"recording into {bag_dir} ({self.writer.transitions} transitions already there)")

    def on_transition(self, msg: Transition) -> None:
        """Validate, then append to the open segment; accepted = durable + pending + lost at all times."""
        record = TransitionRecord.from_msg(msg)
        reason = self.validator.check(record)
        if reason is not None:
            self.get_logger().warning(f"transition rejected ({reason})", throttle_duration_sec=1.0)
            return
        self.record(serialize_message(msg), record.stamp_ns, TOPIC, 1, record.robot)

    def on_batch(self, msg: TransitionBatchMsg) -> None:
        """Validate every row; the valid ones are recorded as one message (the message itself when all are)."""
        rows = max(map(len, (msg.step, msg.episode_id, msg.stamp_ns, msg.policy_id, msg.reward, msg.terminated,
                             msg.truncated)))
        if not rows and not len(msg.obs):
            return  # an empty batch: nothing to record or reject
        try:
            batch = TransitionBatch.from_msg(msg)
        except ValueError as err:
            self.validator.reject(str(err), max(rows, 1))  # the longest column: the transitions that were meant
            self.get_logger().warning(f"transition batch rejected ({err})", throttle_duration_sec=1.0)
            return
        keep, reason = self.validator.check_batch(batch)
        if reason is not None:
            self.get_logger().warning(f"transition rejected ({reason})", throttle_duration_sec=1.0)
            if not keep.any():
                return
            batch = batch.rows(keep)
            msg = fill_batch(TransitionBatchMsg(), batch)
        self.record(serialize_message(msg), int(batch.stamp_ns[0]), BATCH_TOPIC, len(batch), batch.robot)

    def record(self, raw: bytes, stamp_ns: int, topic: str, count: int, robot: str) -> None:
        """Append `count` accepted transitions (one message) to the open segment."""
        self.accepted += count
        self.by_robot[robot] = self.by_robot.get(robot, 0) + count
        if self.failed:
            self.lost += count
            return
        try:
            self.writer.write(raw, stamp_ns, topic, count)
        except OSError as err:
            self.lost += count
            self.stop_recording(err)

    def flush(self) -> None:
        if self.failed:
            return
        count = self.writer.pending
        try:
            segment = self.writer.flush()
        except OSError as err:
            self.stop_recording(err)
            return
        if segment is not None:
            info = {"bag": str(self.bag_dir), "segment": segment, "count": count, "total": self.writer.transitions}
            self.seg_pub.publish(String(data=json.dumps(info)))

    def stop_recording(self, err: OSError) -> None:
        """A write failed: stop recording for good (no retry loop on a full disk); what is listed stays."""
        self.failed = f"{err.strerror or err}"
        self.lost += self.writer.pending
        self.get_logger().error(f"recording stopped: cannot write to {self.bag_dir}: {self.failed}; "
                                f"{self.writer.transitions} transitions already on disk are intact, "
                                f"{self.writer.pending} in the open segment are lost; free space and restart "
                                f"the node to append")

    def publish_status(self) -> None:
        status = {"accepted": self.accepted, "durable": self.writer.transitions,
                  "pending": 0 if self.failed else self.writer.pending,
                  "rejected": dict(self.validator.rejected), "segments": self.writer.segment_count,
                  "lost": self.lost, "missing_steps": self.validator.missing, "error": self.failed,
                  "robots": dict(self.by_robot)}
        self.status_pub.publish(String(data=json.dumps(status)))

    def close(self) -> None:
        """Take what is still queued, flush it to the bag, and log the final counters. The flush happens
        whatever the drain meets (a second signal, a context shut down under it): what was accepted is
        written."""
        # `ros2 launch` signals every node at once: while a policy node is still there (waiting for the
        # acknowledgement of its last transitions) keep taking them; stop once it is gone and the queue is quiet,
        # or after DRAIN_S (below launch's SIGTERM escalation). Before, a 3 s drain lost the tail of the
        # stream in 2 of 5 launch shutdowns on a loaded machine although every transition was acknowledged.
        end, count, quiet_since = time.monotonic() + DRAIN_S, -1, time.monotonic()
        topics = (self.subscription.topic_name, self.batches.topic_name)
        try:
            while self.executor is not None and time.monotonic() < end:  # drain the subscription queue
                self.executor.spin_once(timeout_sec=0.05)
                if self.accepted != count:
                    count, quiet_since = self.accepted, time.monotonic()
                elif time.monotonic() - quiet_since > (1.0 if any(map(self.count_publishers, topics)) else 0.3):
                    break
        except BaseException as err:  # noqa: BLE001 - stop draining, never skip the flush below
            print(f"data_node: draining stopped early ({type(err).__name__}: {err})", file=sys.stderr, flush=True)
        if not self.failed:
            try:
                self.flush()
            except Exception as err:  # the bag flush itself succeeded or set self.failed; a notice may not go out
                print(f"data_node: segment notice not sent ({type(err).__name__}: {err})", file=sys.stderr)
        write_report("data_node", {"accepted": self.accepted, "durable": self.writer.transitions,
                                   "rejected": dict(self.validator.rejected), "lost": self.lost,
                                   "missing_steps": self.validator.missing, "error": self.failed,
                                   "robots": dict(self.by_robot)}, self.report)


def main() -> None:
    run_node(DataNode, threads=1)


if __name__ == "__main__":
    main()
