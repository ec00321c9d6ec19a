"""Data node sustained recording rate over real DDS, with loss counted end to end.

    python benchmarks/data_node_throughput.py [--rates 1000 2000 5000 10000] [--seconds 10] [--batch N]

For each offered rate a fresh data node (its own process) records HalfCheetah-v5-sized transitions
(17 + 6 + 17 values) from this script's publisher (reliable QoS, as the policy node publishes them) into a
new bag; then the node is stopped with SIGINT, and the bag is read back with `rosbags`. Loss = published -
read back. `--batch N` sends them as TransitionBatch messages of N (the policy node's `batch:=N`), else one
Transition each. The sustained figure is the highest achieved rate with zero loss; it is recorded as
`data_node_transitions_per_s` (batched, what a fleet uses; one Transition a message:
`data_node_unbatched_transitions_per_s`) in results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # DDS stays on this machine
ROOT = Path(__file__).resolve().parent.parent
from mbmpo_ros.testing import Probe, next_domain, read_report, start_node, stop_node  # noqa: E402
from results import record  # noqa: E402


def offer(rate: float, seconds: float, folder: Path, batch: int = 1) -> dict:
    """Publish at `rate` for `seconds` into a fresh data node; returns sent / accepted / read-back counts."""
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from mbmpo.deploy.bag import read_messages
    from mbmpo.deploy.transitions import TransitionBatch, records_from_msg
    from mbmpo_interfaces.msg import Transition
    from mbmpo_interfaces.msg import TransitionBatch as TransitionBatchMsg
    from mbmpo_ros.common import fill_batch

    domain, log = next_domain(), folder / "data_node.log"
    node = start_node("data_node", domain, {"bag_dir": str(folder / "bag"), "task": "HalfCheetah-v5",
                                            "report": str(folder / "data_node.json")}, log=log)
    probe = Probe(domain, "publisher")
    status: list[dict] = []
    try:
        probe.node.create_subscription(String, "data_node/status", lambda m: status.append(json.loads(m.data)), 10)
        pub = (probe.node.create_publisher(Transition, "transitions",  # as the policy node
                                           QoSProfile(depth=10_000, reliability=ReliabilityPolicy.RELIABLE)) if batch == 1 else
               probe.node.create_publisher(TransitionBatchMsg, "transition_batches",
                                           QoSProfile(depth=1_000, reliability=ReliabilityPolicy.RELIABLE)))
        if not probe.spin_until(lambda: bool(status) and pub.get_subscription_count() > 0, 30):
            raise SystemExit("data node did not come up")
        rng = np.random.default_rng(0)
        msg = Transition()
        obs = rng.normal(size=(201, 17)).astype(np.float32)
        act = rng.uniform(-1, 1, (200, 6)).astype(np.float32)
        period, sent, start = 1.0 / rate, 0, time.perf_counter()
        while (now := time.perf_counter()) - start < seconds:
            due = int((now - start) / period) + 1
            while batch > 1 and sent + batch <= due:  # whole batches, within an episode of 200 steps
                n = min(batch, 200 - sent % 200)
                step = np.arange(sent, sent + n) % 200
                stamp = probe.node.get_clock().now().nanoseconds + np.arange(n)
                rows = TransitionBatch("", stamp, np.full(n, sent // 200), step, ["bench"] * n, obs[step],
                                       act[step], np.full(n, 0.1, np.float32), obs[step + 1], np.zeros(n, bool),
                                       step == 199)
                pub.publish(fill_batch(TransitionBatchMsg(), rows))
                sent += n
            while batch == 1 and sent < due:  # catch up in a burst when behind
                step = sent % 200
                msg.stamp = probe.node.get_clock().now().to_msg()
                msg.episode_id, msg.step, msg.policy_id = sent // 200, step, "bench"
                msg.obs, msg.action, msg.next_obs = obs[step].tolist(), act[step].tolist(), obs[step + 1].tolist()
                msg.reward, msg.terminated, msg.truncated = 0.1, False, step == 199
                pub.publish(msg)
                sent += 1
            probe.executor.spin_once(timeout_sec=0)
        elapsed = time.perf_counter() - start
        acked = pub.wait_for_all_acked(Duration(seconds=30.0))
    finally:
        probe.close()
        stop_node(node)
    final = read_report(folder / "data_node.json")
    read_back = sum(len(records_from_msg(m)) for _, m in read_messages(folder / "bag"))
    return {"offered": rate, "achieved": sent / elapsed, "sent": sent, "acked": acked, **final, "read_back": read_back}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=[1000, 2000, 5000, 10000])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=1, help="transitions a message (1: a Transition each)")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    print("| offered /s | achieved /s | sent | accepted | durable | read back | lost |")
    print("|---|---|---|---|---|---|---|")
    best = None
    for rate in args.rates:
        r = offer(rate, args.seconds, Path(tempfile.mkdtemp(prefix="mbmpo_dn_")), args.batch)
        lost = r["sent"] - r["read_back"]
        print(f"| {rate:g} | {r['achieved']:.0f} | {r['sent']} | {r['accepted']} | {r['durable']} | {r['read_back']} "
              f"| {lost} |", flush=True)
        if lost == 0 and (best is None or r["achieved"] > best):
            best = r["achieved"]
    if best is not None and not args.no_record:
        name = "data_node_transitions_per_s" if args.batch > 1 else "data_node_unbatched_transitions_per_s"
        record(name, best, "transitions/s recorded with zero loss" + (f", batches of {args.batch}" if args.batch > 1 else ""))
    print(f"sustained with zero loss: {best:.0f} transitions/s" if best else "loss at every rate")


if __name__ == "__main__":
    main()
