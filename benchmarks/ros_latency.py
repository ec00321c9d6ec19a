"""Policy node control latency over real DDS: a robot driver streams joint states at 100 and 500 Hz.

    python benchmarks/ros_latency.py [--rates 100 500] [--seconds 20] [--policy PDIR]

For each rate and each control mode (`timer`: the node acts on the newest state at its own control period;
`lockstep`: it acts on every state as it arrives) the policy node runs a HalfCheetah-v5-sized bundle
(17 observations, 6 actions, 32x32 policy) as its own process; this script is the robot driver. Reported:
the node's observation-to-command latency p50/p99 (state received -> command published, measured in the
node, its last 2,000 commands), its ticks and missed control periods (timer mode), watchdog trips, and the
driver-side command rate and inter-arrival p99. Records `policy_node_p50_ms_<rate>hz`,
`policy_node_p99_ms_<rate>hz` (timer mode) and `policy_node_missed_fraction_<rate>hz` in results.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # DDS stays on this machine
ROOT = Path(__file__).resolve().parent.parent
from mbmpo_ros.testing import Probe, next_domain, start_node, stop_node  # noqa: E402
from results import record  # noqa: E402
from runtime_latency import _bundle  # noqa: E402


def joint_fields(obs_names: list[str]) -> list[str]:
    """Unique coordinate names that the bundle's observation contract reads (order kept)."""
    return list(dict.fromkeys(n.partition(":")[2] for n in obs_names))


def drive(pdir: Path, rate: float, lockstep: bool, seconds: float, executor: str) -> dict:
    """Stream states at `rate` Hz to a fresh policy node; returns its last status and driver-side figures."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String

    names = joint_fields(json.loads((pdir / "manifest.json").read_text())["obs_names"])
    domain = next_domain()
    node = start_node("policy_node", domain, {"bundle": str(pdir), "mode": "explore", "lockstep": lockstep,
                                              "control_period": 1.0 / rate, "reset_service": "none",
                                              "executor": executor})
    probe = Probe(domain, "driver")
    status: list[dict] = []
    arrivals: list[float] = []
    try:
        probe.node.create_subscription(String, "policy_node/status", lambda m: status.append(json.loads(m.data)), 10)
        probe.node.create_subscription(Float64MultiArray, "commands", lambda m: arrivals.append(time.perf_counter()),
                                       100)
        pub = probe.node.create_publisher(JointState, "joint_states", 10)
        if not probe.spin_until(lambda: bool(status), 30):
            raise SystemExit("policy node did not come up")
        rng = np.random.default_rng(0)
        msg = JointState()
        msg.name = names
        period, start = 1.0 / rate, time.perf_counter()
        next_t, sent = start, 0
        while next_t - start < seconds:
            while time.perf_counter() < next_t:
                probe.executor.spin_once(timeout_sec=0)
            msg.header.stamp = probe.node.get_clock().now().to_msg()
            msg.position = list(rng.normal(0, 0.1, len(names)))
            msg.velocity = list(rng.normal(0, 0.5, len(names)))
            pub.publish(msg)
            sent += 1
            next_t += period
        probe.spin_for(1.5)  # the status after the stream
        last = status[-1]
    finally:
        probe.close()
        stop_node(node)
    gaps = np.diff([t for t in arrivals if t > start + 1.0]) * 1e3
    return {"status": last, "sent": sent, "commands": len(arrivals),
            "command_gap_ms_p99": float(np.percentile(gaps, 99)) if gaps.size else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--policy", type=Path, help="bundle (default: a HalfCheetah-sized bundle from a tiny run)")
    p.add_argument("--executors", nargs="+", default=["single"],
                   help="policy node executors to compare (single | multi); the first one is recorded")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    pdir = args.policy or _bundle(Path(tempfile.mkdtemp()))
    print("| executor | rate | mode | latency p50 ms | p99 ms | ticks | missed periods | watchdog trips | states sent "
          "| commands | command gap p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rate, executor, lockstep in itertools.product(args.rates, args.executors, (False, True)):
        r = drive(pdir, rate, lockstep, args.seconds, executor)
        s = r["status"]
        mode = "lockstep" if lockstep else "timer"
        print(f"| {executor} | {rate:g} Hz | {mode} | {s['latency_ms_p50']:.3f} | {s['latency_ms_p99']:.3f} | {s['ticks']} "
              f"| {s['missed_periods']} | {s['watchdog_trips']} | {r['sent']} | {r['commands']} "
              f"| {r['command_gap_ms_p99']:.2f} |", flush=True)
        if not lockstep and executor == args.executors[0] and not args.no_record:
            tag = f"{rate:g}hz"
            how = f"timer mode, {executor} executor, {args.seconds:g} s"
            record(f"policy_node_p50_ms_{tag}", s["latency_ms_p50"], f"ms, state received -> command ({how})")
            record(f"policy_node_p99_ms_{tag}", s["latency_ms_p99"], f"ms, state received -> command ({how})")
            record(f"policy_node_missed_fraction_{tag}", s["missed_periods"] / max(1, s["ticks"]),
                   f"missed periods / ticks ({how})")


if __name__ == "__main__":
    main()
