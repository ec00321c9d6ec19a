"""Against the published MB-MPO runs: return at 100k real steps and the wall-clock to get there.

    python benchmarks/published.py --task HalfCheetah-v5 --threads 1
    python benchmarks/published.py --task HalfCheetah-v5 --run runs/hc100k     # score a finished run

Anchors (REFERENCE.md section 2, 200-step episodes): the original code about 550 (HalfCheetah) and 650 (Hopper)
at 100k real steps; RLlib 520 / 620, HalfCheetah taking 2-3 hours with 20 workers and a GPU.
The return is the run's meta-policy before adaptation (`return_pre`, 5 deterministic evaluation episodes) at
the first iteration with at least `--steps` real steps, plus the adapted policies' (`return_post`) beside it.
Records `<task>_return_at_100k`, `<task>_return_post_at_100k` and `<task>_wall_s_to_100k` in results.json
and writes the run's curve to benchmarks/plots/<task>_100k.png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from mbmpo.train.progress import read_progress
from results import record  # beside this script
from sample_efficiency import PLOTS, SHORT  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--run", type=Path, help="a finished run folder (default: train one into runs/<task>_100k)")
    p.add_argument("--config", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    run = args.run
    command = " ".join(sys.argv)
    if run is None:
        from mbmpo.cli import main as cli

        run = ROOT / "runs" / f"{args.task}_100k"
        train = ["train", "--task", args.task, "--steps", str(args.steps), "--seed", str(args.seed), "--out", str(run),
                 "--threads", str(args.threads), "--no-progress"] + (["--config", str(args.config)] if args.config else [])
        if cli(train) != 0:
            raise SystemExit("training failed")
        command = ("mbmpo " + " ".join(train)).replace(f"{ROOT}/", "")
    rows = read_progress(run)
    at = next((r for r in rows if r.real_steps >= args.steps), None)
    if at is None:
        raise SystemExit(f"{run} has not reached {args.steps} real steps (last: {rows[-1].real_steps if rows else 0})")
    pre, post, wall = at.return_pre, at.return_post, at.wall_s
    print(f"{args.task}: {at.real_steps} real steps, return before adaptation {pre:.1f}, "
          f"adapted {post:.1f}, {wall:.0f} s wall ({wall / 3600:.2f} h)")
    PLOTS.mkdir(parents=True, exist_ok=True)
    if (run / "learning_curve.png").exists():
        shutil.copyfile(run / "learning_curve.png", PLOTS / f"{args.task}_100k.png")
    if not args.no_record:
        name = SHORT.get(args.task, args.task.lower())
        where = f"at {at.real_steps:,} real steps (the first iteration at or past {args.steps:,})"
        record(f"{name}_return_at_100k", pre, f"mean return, 200-step episodes, {where}", command)
        record(f"{name}_return_post_at_100k", post, f"mean return, 200-step episodes, {where}", command)
        record(f"{name}_wall_s_to_100k", wall, f"s, {where}", command)


if __name__ == "__main__":
    main()
