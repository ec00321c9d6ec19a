"""Asynchronous ROS graph vs the synchronous loop, and seconds from new data to a new policy on the robot side.

    python benchmarks/graph_modes.py [--task InvertedPendulum-v5] [--steps 6000] [--threshold 190]
    python benchmarks/graph_modes.py --task HalfCheetah-v5 --steps 100000 --threshold 300 \
        --modes sync fast fast:4 --speedup 4 --batch 10 --seconds 9000      # does a fleet pay? (issue 13)

Three runs of the same task, preset (`--config`, default the task's) and seed:
- `sync`: `mbmpo train`, the library's loop (collect with the adapted policies, fit, meta-optimise, repeat);
  the robot waits while the model trains.
- `lockstep`: `mbmpo-bringup train sim:=mujoco sim_mode:=lockstep`: the ROS graph; the simulator steps on each
  command, so the robot side runs as fast as the policy node acts, while the trainer works asynchronously.
- `realtime`: the same graph with the simulator in real time (its control period, 25 Hz for the pendulum):
  what a robot does.
- `fast`: the realtime graph with the simulators `--speedup` times faster than real time (when real-time runs
  do not fit a session; every wall-clock figure is then in sped-up seconds: multiply by the speedup for a robot).
- `MODE:N` (e.g. `realtime:4`): the graph with a fleet of N simulated robots (`robots:=N`), one trainer.
`sync` collects as fast as the simulator steps; its robot time (real steps x control period / speedup) is
added to its wall-clock so that it compares with the graph runs (the robot would be idle while it trains).
With a `MODE` and a `MODE:4` run, records `fleet4_wall_speedup_to_<threshold>` (wall-clock of 1 robot / of 4)
and `fleet4_real_steps_ratio_to_<threshold>` (real steps of 4 robots / of 1).
Reported per run: return of the meta-policy against real steps and against wall-clock (plot), real steps
and seconds to `--threshold`; for the graph runs, seconds from the newest transition a bundle learned from
to its publication (trainer's OUT/bundles.csv: flush wait, intake, the iteration, export) and from
publication to installed in the policy node (its final `bundle_delivery_ms`). Records
`graph_data_to_policy_s` (realtime run, median over bundles) and `graph_<mode>_wall_s_to_threshold`.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mbmpo.train.progress import read_progress
from mbmpo_ros.testing import read_report  # noqa: E402
from results import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ROOT / "benchmarks" / "plots"
Row = tuple[int, float, float]  # real steps, return_pre, wall seconds


def progress(run: Path) -> list[Row]:
    return [(r.real_steps, r.return_pre, r.wall_s) for r in read_progress(run)]


def run_sync(task: str, steps: int, seed: int, threshold: float, out: Path, robot_dt: float, config: str) -> dict:
    """`mbmpo train`; `robot_dt` (control period / speedup) adds the robot's time to each row's wall-clock."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "mbmpo.cli", "train", "--task", task, "--steps", str(steps), "--seed",
                    str(seed), "--out", str(out), "--target-return", str(threshold), "--no-progress"]
                   + (["--config", config] if config else []), check=True, cwd=ROOT, capture_output=True)
    rows = [(s, r, w + s * robot_dt) for s, r, w in progress(out)]
    return {"rows": rows, "wall_s": time.monotonic() - t0 + (rows[-1][0] * robot_dt if rows else 0.0)}


def run_graph(task: str, steps: int, seed: int, threshold: float, out: Path, mode: str, domain: int,
              seconds: float, robots: int = 1, speedup: float = 1.0, batch: int = 1, config: str = "") -> dict:
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONWARNINGS": "ignore"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mbmpo.deploy.bringup", "train", "sim:=mujoco", f"sim_mode:={mode}",
                        f"task:={task}", f"out:={out}", f"steps:={steps}", f"seed:={seed}",
                        f"target_return:={threshold}", f"duration:={seconds:g}", f"robots:={robots}",
                        f"speedup:={speedup:g}", f"batch:={batch}", f"config:={config}"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    (out / "bringup.log").write_text(r.stdout + r.stderr)
    if not (out / "bundles.csv").is_file():
        errors = [line for line in (r.stdout + r.stderr).splitlines() if "error" in line.lower()]
        raise SystemExit(f"{mode} graph (robots {robots}): no bundle was trained (bringup exit {r.returncode}): "
                         f"{errors[-1] if errors else 'no error line'}; see {out / 'bringup.log'}")
    final = read_report(out / "reports" / ("robot_0/policy_node.json" if robots > 1 else "policy_node.json"))
    with open(out / "bundles.csv") as f:
        bundles = [float(b["data_to_bundle_s"]) for b in csv.DictReader(f)]
    return {"rows": progress(out), "wall_s": wall, "data_to_bundle_s": bundles,
            "delivery_ms": final.get("bundle_delivery_ms", [])}


def first_at(rows: list[Row], threshold: float) -> tuple[int, float] | None:
    return next(((s, w) for s, r, w in rows if r >= threshold), None)


def plot(task: str, runs: dict[str, dict], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, run in runs.items():
        s, r, w = zip(*run["rows"])
        axes[0].plot(s, r, marker="o", ms=3, label=name)
        axes[1].plot(w, r, marker="o", ms=3, label=name)
    for ax, xlabel in zip(axes, ("real environment steps", "wall-clock seconds")):
        ax.axhline(threshold, color="grey", ls="--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("return, meta-policy")
        ax.legend()
    fig.suptitle(f"{task}: asynchronous ROS graph vs synchronous loop")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="InvertedPendulum-v5")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--threshold", type=float, default=190.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=900.0, help="time limit of each graph run")
    p.add_argument("--modes", nargs="+", default=["sync", "lockstep", "realtime"])
    p.add_argument("--domain", type=int, default=220, help="ROS domain id of the first graph run (220-232: clear of "
                   "the tests' domains, inside the range ROS 2 keeps clear of ephemeral ports)")
    p.add_argument("--speedup", type=float, default=1.0, help="fast mode: simulated seconds per wall second")
    p.add_argument("--batch", type=int, default=1, help="transitions a message from each policy node")
    p.add_argument("--config", default="", help="training preset YAML of every run (default: config/<task>.yaml)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "graph_modes")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    if any(m.startswith("sync:") for m in args.modes):
        p.error("sync runs one robot (the library's loop); fleets are MODE:N of the graph modes")

    from mbmpo.tasks import get_task

    runs: dict[str, dict] = {}
    for i, spec in enumerate(args.modes):
        mode, _, robots = spec.partition(":")
        out = args.work / spec.replace(":", "_x")
        subprocess.run(["rm", "-rf", str(out)], check=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        if mode == "sync":
            runs[spec] = run_sync(args.task, args.steps, args.seed, args.threshold, out,
                                  get_task(args.task).dt / args.speedup, args.config)
        else:
            runs[spec] = run_graph(args.task, args.steps, args.seed, args.threshold, out, mode, args.domain + i,
                                   args.seconds, int(robots or 1), args.speedup, args.batch, args.config)
        print(f"{spec}: {len(runs[spec]['rows'])} iterations, {runs[spec]['wall_s']:.0f} s", flush=True)
    PLOTS.mkdir(parents=True, exist_ok=True)
    plot(args.task, runs, args.threshold, PLOTS / f"{args.task}_graph_modes.png")
    print(f"| run | iterations | real steps to {args.threshold:g} | wall s to {args.threshold:g} | last return "
          "| data -> bundle s (median, per bundle) | bundle delivery ms (median) |")
    print("|---|---|---|---|---|---|---|")
    for mode, run in runs.items():
        hit = first_at(run["rows"], args.threshold)
        d2b, dms = run.get("data_to_bundle_s", []), run.get("delivery_ms", [])
        print(f"| {mode} | {len(run['rows'])} | {hit[0] if hit else 'not reached'} | "
              f"{f'{hit[1]:.0f}' if hit else '-'} | {run['rows'][-1][1]:.1f} | "
              f"{f'{statistics.median(d2b):.1f} {[round(x, 1) for x in d2b]}' if d2b else '-'} | "
              f"{f'{statistics.median(dms):.0f}' if dms else '-'} |")
        if hit and not args.no_record:
            sped = mode.startswith("fast") or (mode == "sync" and args.speedup != 1.0)
            name = "graph_" + mode.replace(":", "_x") + ("_with_robot_time" if mode == "sync" else "")
            record(f"{name}_wall_s_to_threshold", hit[1], f"s to return {args.threshold:g} ({args.task})"
                   + (f", simulators at speedup {args.speedup:g}" if sped else ""))
    pair = next((m for m in ("realtime", "fast") if m in runs and f"{m}:4" in runs), None)  # realtime first
    if pair and not args.no_record:
        hit1, hit4 = first_at(runs[pair]["rows"], args.threshold), first_at(runs[f"{pair}:4"]["rows"], args.threshold)
        if hit1 and hit4:
            what = f"{args.task}, return {args.threshold:g}, {pair} graph" + (f" at speedup {args.speedup:g}"
                                                                              if pair == "fast" else "")
            record(f"fleet4_wall_speedup_to_{args.threshold:g}", hit1[1] / hit4[1], f"wall 1 robot / 4 robots; {what}")
            record(f"fleet4_real_steps_ratio_to_{args.threshold:g}", hit4[0] / hit1[0], f"steps 4 robots / 1; {what}")
    real = runs.get("realtime")
    if real and real["data_to_bundle_s"] and real["delivery_ms"] and not args.no_record:
        # the first bundle is the untrained one sent at start (no data): skip it on the delivery side
        deliveries = real["delivery_ms"][1:] or real["delivery_ms"]
        value = statistics.median(real["data_to_bundle_s"]) + statistics.median(deliveries) / 1e3
        record("graph_data_to_policy_s", value, f"s, newest transition -> new policy installed ({args.task}, "
               "realtime sim; it acts from the next episode)")
    print(f"plot: {PLOTS / f'{args.task}_graph_modes.png'}")


if __name__ == "__main__":
    main()
