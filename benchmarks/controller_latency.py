"""Nothing slow on the control path: the policy node's decision latency in explore mode, the first episode of
each of the K exploration policies against the rest, with sessions built on the worker before the swap
(what the node does) beside building them on first use (what it did before).

    python benchmarks/controller_latency.py [--rounds 3] [--horizon 50] [--no-record]

A HalfCheetah-v5-sized bundle (policy 32x32, K = 20 exploration sets) is made from a tiny training run.
Prints, per mode, median latencies of the decision that switches policies at an episode boundary and of
the new policy's first action, a policy's first use against later uses, in milliseconds; the machine is
shared, so compare ratios (its load is printed too).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mbmpo.cli import main as cli
from mbmpo.deploy.controller import Controller, ControllerSettings
from mbmpo.deploy.worker import Worker
from mbmpo.runtime import load
from results import record

TINY = Path(__file__).resolve().parent.parent / "tests" / "configs" / "tiny.yaml"


def make_bundle(folder: Path) -> Path:
    """HalfCheetah-sized policy with 5 members x 4 tasks = 20 exploration sets (a tiny, untrained run)."""
    cfg = folder / "cfg.yaml"
    cfg.write_text(TINY.read_text().replace("policy: {hidden: [8]}", "policy: {hidden: [32, 32]}")
                   .replace("ensemble_size: 2", "ensemble_size: 5").replace("tasks_per_model: 1", "tasks_per_model: 4"))
    run = folder / "run"
    cli(["train", "--task", "HalfCheetah-v5", "--steps", "100", "--out", str(run), "--config", str(cfg), "--no-progress"])
    cli(["export", "--run", str(run), "--out", str(folder / "bundle")])
    return folder / "bundle"


def boundary_ms(bundle: Path, warm: bool, rounds: int, horizon: int) -> dict[str, list[float]]:
    """Decision latencies (ms) where a policy's first use could cost: the decision that ends an episode and
    picks the next policy, and the next policy's first action, each split into the first time a policy is
    picked and later times; plus every decision."""
    c = Controller(ControllerSettings(mode="explore", horizon=horizon), Worker())
    if warm:
        c.start_with(bundle)  # loads and builds all K sessions before control
    else:
        c.install(load(bundle))  # sessions built on first use, inside a control decision
    joints = sorted({n.split(":", 1)[1] for n in c.base.manifest["obs_names"]})
    rng = np.random.default_rng(0)
    out: dict[str, list[float]] = {k: [] for k in ("switch_first", "switch_later", "act_first", "act_later", "all")}
    seen, stamp, fresh_episode = {c.policy.name}, 0, False
    for _ in range(rounds * c.base.manifest["n_explore"] * (horizon + 1)):
        stamp += 1_000_000
        pos = rng.standard_normal(len(joints)) * 0.1
        obs = c.on_state(joints, pos, pos * 0.5, stamp, time.monotonic())
        t0 = time.perf_counter()
        d = c.control(obs, time.monotonic())
        ms = 1e3 * (time.perf_counter() - t0)
        out["all"].append(ms)
        if fresh_episode:
            out["act_later" if c.policy.name in seen else "act_first"].append(ms)
            seen.add(c.policy.name)
            fresh_episode = False
        if d.reset:  # this decision ended the episode and chose the next policy
            out["switch_later" if c.policy.name in seen else "switch_first"].append(ms)
            fresh_episode = True
    c.worker.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="episodes of each exploration policy")
    p.add_argument("--horizon", type=int, default=50)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    bundle = make_bundle(Path(tempfile.mkdtemp(prefix="mbmpo_ctl_")))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results = {}
    for label, warm in (("warmed on the worker (the node now)", True), ("built on first use (before)", False)):
        r = boundary_ms(bundle, warm, args.rounds, args.horizon)
        results[warm] = r
        med = {k: float(np.median(v)) for k, v in r.items()}
        print(f"{label}: median ms, episode switch to a policy's first use {med['switch_first']:.3f} vs later "
              f"{med['switch_later']:.3f}; its first action {med['act_first']:.3f} vs later {med['act_later']:.3f}; "
              f"all decisions {med['all']:.3f} (p99 {np.percentile(r['all'], 99):.3f})")
    warm_r, cold_r = results[True], results[False]
    ratio = float(np.median(warm_r["switch_first"]) / np.median(warm_r["switch_later"]))
    cold_ratio = float(np.median(cold_r["switch_first"]) / np.median(cold_r["switch_later"]))
    print(f"episode switch, first use / later (median): warmed {ratio:.2f}, built on first use {cold_ratio:.2f}")
    if not args.no_record:
        record("controller_first_use_switch_ratio", ratio, "median latency of the decision that switches to an "
               "exploration policy for the first time / for a later time (1.0: no first-use cost)")
        record("controller_first_use_switch_ms_before", float(np.median(cold_r["switch_first"])),
               "ms, median first-use switch when sessions were built on the control path (no longer done)")


if __name__ == "__main__":
    main()
