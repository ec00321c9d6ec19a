"""Load: a 1 kHz robot state stream into the policy node (lock-step: one action per state) and the data node.

    python benchmarks/load_1khz.py --seconds 600 [--bundle DIR] [--json out.json]

The driver publishes `joint_states` at 1 kHz on absolute deadlines; the policy node acts on each state and
publishes a transition for each step; the data node records them. Reported: states sent and the driver's
achieved rate, actions taken per state (the control period is kept when every state gets an action),
action latency p50/p99, transitions published vs durable in the bag (lost = the difference, after the
ordered shutdown), and each node's resident memory over time (flat = no growth in the second half).
Run on loopback, own ROS domain; needs no GPU. The test suite runs a short version (tests/test_load.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
from mbmpo_ros.testing import make_bundle, read_report, start_node, stop_node  # noqa: E402


def _rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def _slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over the second half of the run (the first half includes warm-up)."""
    half = [(t, m) for t, m in samples if t >= samples[-1][0] / 2]
    if len(half) < 3:
        return float("nan")
    n = len(half)
    mt, mm = sum(t for t, _ in half) / n, sum(m for _, m in half) / n
    den = sum((t - mt) ** 2 for t, _ in half)
    return 60 * sum((t - mt) * (m - mm) for t, m in half) / den if den else float("nan")


def run(seconds: float, bundle: Path | None = None, rate_hz: float = 1000.0, domain: int = 90,
        work: Path | None = None) -> dict[str, Any]:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    work = Path(work or tempfile.mkdtemp(prefix="mbmpo_load_"))
    bundle = bundle or make_bundle(work)
    data = start_node("data_node", domain, {"bag_dir": str(work / "bag"), "task": "InvertedPendulum-v5",
                                            "flush_period": 1.0, "report": str(work / "data_node.json")},
                      log=work / "data.log")
    policy = start_node("policy_node", domain, {"bundle": str(bundle), "mode": "explore", "lockstep": True,
                                                "reset": "none",  # the 1 kHz driver streams; it has no reset service
                                                "report": str(work / "policy_node.json")},
                        log=work / "policy.log")
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = Node("load_driver", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    status: dict[str, dict] = {}
    for name in ("policy_node", "data_node"):
        node.create_subscription(String, f"{name}/status", lambda m, n=name: status.__setitem__(n, json.loads(m.data)),
                                 10)
    pub = node.create_publisher(JointState, "joint_states", 10)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.1) for _ in iter(stop.is_set, True)],
                               daemon=True)
    spinner.start()
    try:
        end = time.monotonic() + 60
        while not ("policy_node" in status and "data_node" in status) and time.monotonic() < end:
            time.sleep(0.1)
        if not status:
            raise RuntimeError(f"nodes did not come up; see {work}")
        time.sleep(1.0)
        msg = JointState()
        msg.name, msg.velocity = ["slider", "hinge"], [0.0, 0.0]
        period, sent, late_max = 1.0 / rate_hz, 0, 0.0
        rss: dict[str, list[tuple[float, float]]] = {"policy_node": [], "data_node": []}
        t0 = time.monotonic()
        next_sample = t0
        while (now := time.monotonic()) - t0 < seconds:
            deadline = t0 + sent * period
            if now < deadline:
                time.sleep(max(0.0, deadline - now - 0.0002))
                continue
            late_max = max(late_max, now - deadline)
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.position = [0.0, 0.01 * ((sent % 7) - 3) / 3]
            pub.publish(msg)
            sent += 1
            if now >= next_sample:
                for name, proc in (("policy_node", policy), ("data_node", data)):
                    rss[name].append((now - t0, _rss_mb(proc.pid)))
                next_sample += 1.0
        elapsed = time.monotonic() - t0
        time.sleep(1.5)  # the last status reports
        live = dict(status)
    finally:
        stop.set()
        spinner.join(timeout=2)
        for proc in (policy, data):  # ordered: the policy node waits for acks, then the data node flushes
            stop_node(proc, timeout=30)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    from mbmpo.deploy.bag import read_messages

    p_final = read_report(work / "policy_node.json")
    d_final = read_report(work / "data_node.json")
    in_bag = sum(1 for _ in read_messages(work / "bag"))
    pol = live.get("policy_node", {})
    actions = p_final.get("transitions", 0) + p_final.get("episodes", 0)
    return {
        "seconds": round(elapsed, 1), "states_sent": sent, "state_rate_hz": round(sent / elapsed, 1),
        "driver_late_max_ms": round(1e3 * late_max, 2),
        "actions_per_state": round(actions / sent, 4) if sent else None,
        "latency_ms_p50": pol.get("latency_ms_p50"), "latency_ms_p99": pol.get("latency_ms_p99"),
        "transitions_published": p_final.get("transitions"), "all_acked": p_final.get("all_acked"),
        "durable": d_final.get("durable"), "in_bag": in_bag,
        "lost": None if p_final.get("transitions") is None else p_final["transitions"] - in_bag,
        "rejected": d_final.get("rejected"), "missing_steps": d_final.get("missing_steps"),
        "rss_mb": {n: {"first": round(v[0][1], 1), "last": round(v[-1][1], 1),
                       "slope_mb_per_min_2nd_half": round(_slope_mb_per_min(v), 3)} for n, v in rss.items() if v},
        "work": str(work),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the 1 kHz stream (default 10 min)")
    parser.add_argument("--rate", type=float, default=1000.0, help="state rate in Hz")
    parser.add_argument("--bundle", type=Path, default=None, help="policy bundle (default: train a tiny one)")
    parser.add_argument("--domain", type=int, default=230, help="ROS domain id (clear of the tests' 60-140)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = run(args.seconds, args.bundle, args.rate, args.domain)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
