"""Learning over seeds: each seed's figures at 100k real steps, their mean, min and max, and every seed's curve
in one plot with the published anchors drawn in.

    python benchmarks/seeds.py --task HalfCheetah-v5 --runs runs/hc_s0 runs/hc_s1 runs/hc_s2 [--label kl02]
    python benchmarks/seeds.py --task HalfCheetah-v5 --train --seeds 0 1 2

Per seed, at the first iteration with at least `--steps` real steps: `return_pre` (deterministic meta-policy),
`return_collect` (the adapted policies' sampled exploration episodes: the metric of the authors' and RLlib's
curves, so the one to hold against their anchors), `return_post` (model-adapted policies, deterministic),
the wall-clock; over the second half of each run, the mean imagined adaptation gain (imagined return post -
pre) and the median KL(pre || post). With `--record` (and N runs) records `<task>_return_at_100k_meanN`,
`_minN`, `_maxN` (N >= 2), `<task>_collect_return_at_100k_meanN`, `<task>_imagined_adaptation_gain`,
`<task>_kl_pre_post_median` and `<task>_wall_s_to_100k` (median) in results.json, and per run (its config's
seed S) `<task>_return_at_100k_seedS` and `<task>_collect_return_at_100k_seedS`.

Run folders do not outlive a session, so `--keep` (and `--record`) copies each run's `progress.csv` and
`config.yaml` (every per-iteration figure and the configuration, ~10 KB) to
`benchmarks/progress/<task>[_<label>]_s<seed>/`. Such a folder is a run folder as this script and
`sample_efficiency.py --mbmpo-run` read one, so seeds trained in different sessions are combined by naming
their kept folders in `--runs`:

    python benchmarks/seeds.py --task HalfCheetah-v5 --keep --label fit2000 --runs runs/hc_fit2000_s2
    python benchmarks/seeds.py --task HalfCheetah-v5 --runs benchmarks/progress/HalfCheetah-v5_fit2000_s{0,1,2}

(The curves kept before as `benchmarks/plots/curves/*.json` hold only the returns; `sample_efficiency.py` still
reads them.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from mbmpo.train.init import saved_run
from mbmpo.train.progress import ProgressRow, read_progress
from results import record
from sample_efficiency import PLOTS, SHORT

ROOT = Path(__file__).resolve().parent.parent
KEPT = ROOT / "benchmarks" / "progress"  # runs kept by --keep / --record
# REFERENCE.md section 2: sampled real returns of the adapted policies at 100k steps, 200-step episodes
ANCHORS = {"HalfCheetah-v5": {"original code": 550.0, "RLlib": 520.0},
           "Hopper-v5": {"original code": 650.0, "RLlib": 620.0}}


def at_steps(rows: list[ProgressRow], steps: int) -> ProgressRow | None:
    return next((r for r in rows if r.real_steps >= steps), None)


def summary(rows: list[ProgressRow], steps: int) -> dict[str, float]:
    """One run's figures (see the module docstring)."""
    at = at_steps(rows, steps)
    if at is None:
        raise SystemExit(f"a run has not reached {steps} real steps (last: {rows[-1].real_steps if rows else 0})")
    half = [r for r in rows if r.iteration >= rows[-1].iteration / 2]
    return {"real_steps": at.real_steps, "return_pre": at.return_pre, "return_post": at.return_post,
            "return_collect": at.return_collect if at.return_collect is not None else float("nan"),
            "wall_s": at.wall_s, "imagined_gain": statistics.fmean(r.imagined_gain for r in half),
            "kl_pre_post": statistics.median(r.kl_pre_post for r in half)}


def plot(task: str, runs: dict[str, list[ProgressRow]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, rows) in enumerate(runs.items()):
        color = f"C{i}"
        steps = [r.real_steps for r in rows]
        ax.plot(steps, [r.return_pre for r in rows], "-", color=color, label=f"{name}: meta-policy (deterministic)")
        collect = [(r.real_steps, r.return_collect) for r in rows if r.return_collect is not None]
        if collect:
            ax.plot(*zip(*collect), "--", color=color, alpha=0.7, label=f"{name}: exploration (sampled)")
    for j, (who, value) in enumerate(ANCHORS.get(task, {}).items()):
        ax.axhline(value, color="black", ls=[":", "-."][j % 2], lw=1, label=f"{who} at 100k (sampled)")
    ax.set_xlabel("real environment steps")
    ax.set_ylabel("mean episode return (200 steps)")
    ax.set_title(f"MB-MPO on {task}, {len(runs)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def keep_run(task: str, label: str, seed: int, run: Path) -> Path:
    """Copy a run's progress.csv and config.yaml to `KEPT/<task>[_<label>]_s<seed>/`, a run folder without its
    checkpoint, data and models, for comparisons made after the run's own folder is gone. Returns that folder."""
    kept = KEPT / f"{task}{'_' + label if label else ''}_s{seed}"
    if kept.resolve() == run.resolve():
        return kept  # already a kept folder
    kept.mkdir(parents=True, exist_ok=True)
    for name in ("progress.csv", "config.yaml"):
        shutil.copyfile(run / name, kept / name)
    return kept


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--runs", type=Path, nargs="*", default=[], help="finished run folders, one per seed")
    p.add_argument("--train", action="store_true", help="train --seeds into runs/<task>_s<seed> first")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--config", type=Path)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--label", default="", help="name of the variant, for the plot file")
    p.add_argument("--record", action="store_true", help="write the aggregate records to results.json (and --keep)")
    p.add_argument("--keep", action="store_true", help="copy each run's progress.csv and config.yaml to "
                   "benchmarks/progress/<task>[_<label>]_s<seed>/")
    args = p.parse_args(argv)
    runs = list(args.runs)
    if args.train:
        from mbmpo.cli import main as cli

        for seed in args.seeds:
            run = ROOT / "runs" / f"{args.task}_s{seed}"
            train = ["train", "--task", args.task, "--steps", str(args.steps), "--seed", str(seed), "--out", str(run),
                     "--threads", "1", "--no-progress"] + (["--config", str(args.config)] if args.config else [])
            if cli(train) != 0:
                raise SystemExit(f"training seed {seed} failed")
            runs.append(run)
    if not runs:
        raise SystemExit("give --runs or --train")
    rows = {run.name: read_progress(run) for run in runs}
    per_run = {name: summary(r, args.steps) for name, r in rows.items()}
    for name, s in per_run.items():
        print(f"{name}: {s['real_steps']:,} steps, return {s['return_pre']:.1f} (collect {s['return_collect']:.1f}, "
              f"model-adapted {s['return_post']:.1f}), {s['wall_s']:.0f} s; second half: imagined gain "
              f"{s['imagined_gain']:+.2f}, KL(pre || post) median {s['kl_pre_post']:.3f}")
    n = len(per_run)
    agg = {k: [s[k] for s in per_run.values()] for k in next(iter(per_run.values()))}
    for key in ("return_pre", "return_collect", "return_post", "imagined_gain", "kl_pre_post", "wall_s"):
        v = agg[key]
        print(f"{key}: mean {statistics.fmean(v):.2f}, min {min(v):.2f}, max {max(v):.2f} ({n} seeds)")
    PLOTS.mkdir(parents=True, exist_ok=True)
    out = PLOTS / f"{args.task}_seeds{'_' + args.label if args.label else ''}.png"
    plot(args.task, rows, out)
    print(f"curves: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    seeds = {run.name: saved_run(run)[0]["seed"] for run in runs} if args.keep or args.record else {}
    if seeds:
        for run in runs:
            kept = keep_run(args.task, args.label, seeds[run.name], run)
            print(f"kept: {kept.relative_to(ROOT) if kept.is_relative_to(ROOT) else kept}")
    if args.record:
        name = SHORT.get(args.task, args.task.lower())
        command = "python " + " ".join(sys.argv).replace(f"{ROOT}/", "")
        unit = f"mean return, 200-step episodes, at {args.steps:,} real steps, {n} seeds"
        for run in runs:
            s, seed = per_run[run.name], seeds[run.name]
            one = f"return, 200-step episodes, at {s['real_steps']:,} real steps, seed {seed} ({run.name})"
            record(f"{name}_return_at_100k_seed{seed}", s["return_pre"], f"{one}, deterministic meta-policy", command)
            record(f"{name}_collect_return_at_100k_seed{seed}", s["return_collect"],
                   f"{one}, sampled exploration episodes", command)
        if n >= 2:
            record(f"{name}_return_at_100k_mean{n}", statistics.fmean(agg["return_pre"]), unit, command)
            record(f"{name}_return_at_100k_min{n}", min(agg["return_pre"]), unit, command)
            record(f"{name}_return_at_100k_max{n}", max(agg["return_pre"]), unit, command)
            record(f"{name}_collect_return_at_100k_mean{n}", statistics.fmean(agg["return_collect"]),
                   f"{unit} (sampled exploration episodes, the anchors' metric)", command)
        record(f"{name}_imagined_adaptation_gain", statistics.fmean(agg["imagined_gain"]),
               f"imagined return post - pre, mean over the second half of {n} runs", command)
        record(f"{name}_kl_pre_post_median", statistics.median(agg["kl_pre_post"]),
               f"median KL(pre || post) over the second half, median of {n} runs", command)
        record(f"{name}_wall_s_to_100k", statistics.median(agg["wall_s"]), f"s, median of {n} runs", command)


if __name__ == "__main__":
    main()
