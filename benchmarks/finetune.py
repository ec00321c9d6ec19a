"""Fine-tuning a simulation run on a shifted robot, against the simulation's policy left as it is and against
training from scratch on the same shifted robot (issue 11).

    python benchmarks/finetune.py --sim-run runs/hop_s1 --task Hopper-v5 --perturb mass=1.3 \
        --steps 12000 --scratch-steps 30000 [--record]

The "robot" is the task's MuJoCo model with `--perturb` applied (the library loop, one torch thread). The
target is 90% of the simulation run's own final return on the nominal robot (`return_pre` of its last
iteration). Reported: the sim policy's return on the shifted robot before any robot data; per iteration of
the fine-tuning run (`mbmpo train --init`) and of the scratch run, the robot steps used and the meta-policy's
return; the robot steps each needs to reach the target (the scratch run may not within its budget: then
the ratio is a lower bound). Runs go to `--out` (default runs/finetune_<task>).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mbmpo.tasks import get_task
from mbmpo.tasks.perturb import parse_perturbations
from mbmpo.train.init import init_config
from mbmpo.train.progress import ProgressRow, read_progress
from mbmpo.train.trainer import Trainer
from results import record


def steps_to(rows: list[ProgressRow], target: float) -> int | None:
    """Robot steps at the first iteration whose meta-policy return reaches `target`."""
    return next((r.real_steps for r in rows if r.return_pre >= target), None)


def run(task_name: str, sim_run: Path, perturb: dict[str, float], out: Path, steps: int, init: bool,
        seed: int) -> list[ProgressRow]:
    """A fine-tuning (init) or scratch run on the shifted robot; resumes a finished or partial one."""
    task, cfg = get_task(task_name), init_config(sim_run)
    resume = (out / "checkpoint.pt").exists() or (out / "data.npz").exists()
    trainer = Trainer(task, cfg, out, seed, resume=resume, init=sim_run if init else None, perturb=perturb)
    trainer.train(steps, lambda r: print(f"  {'fine-tune' if init else 'scratch'}: {r.real_steps} steps, "
                                          f"return {r.return_pre:.1f}", flush=True))
    return read_progress(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sim-run", type=Path, required=True, help="a finished run on the nominal robot")
    p.add_argument("--task", required=True)
    p.add_argument("--perturb", nargs="+", default=["mass=1.3"], metavar="KEY=SCALE")
    p.add_argument("--steps", type=int, default=12000, help="robot steps of the fine-tuning run")
    p.add_argument("--scratch-steps", type=int, default=30000, help="robot steps of the scratch run (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    perturb = parse_perturbations(args.perturb)
    out = args.out or Path("runs") / f"finetune_{args.task}"
    nominal = read_progress(args.sim_run)[-1].return_pre
    target = 0.9 * nominal
    shift = "_".join(f"{k}{str(v).replace('.', '')}" for k, v in perturb.items())
    task = get_task(args.task)
    as_is = Trainer(task, init_config(args.sim_run), out / "as_is", args.seed, init=args.sim_run, perturb=perturb,
                    tensorboard=False).evaluate(0, 5)[0]
    print(f"{args.task}, robot shifted {perturb}: sim run's nominal return {nominal:.1f}, target (90%) {target:.1f}, "
          f"the sim policy as it is on the shifted robot {as_is:.1f}", flush=True)
    tuned = run(args.task, args.sim_run, perturb, out / "init", args.steps, True, args.seed)
    scratch = run(args.task, args.sim_run, perturb, out / "scratch", args.scratch_steps, False, args.seed) \
        if args.scratch_steps else []
    n_tuned, n_scratch = steps_to(tuned, target), steps_to(scratch, target)
    print("| run | robot steps -> meta-policy return | steps to 90% of nominal |")
    print("|---|---|---|")
    for label, rows, n in (("fine-tune (--init)", tuned, n_tuned), ("scratch", scratch, n_scratch)):
        curve = ", ".join(f"{r.real_steps}: {r.return_pre:.0f}" for r in rows)
        print(f"| {label} | {curve} | {n if n is not None else 'not reached'} |")
    if n_tuned and scratch:
        bound = "" if n_scratch else ">= "
        ratio = (n_scratch or scratch[-1].real_steps) / n_tuned
        print(f"scratch / fine-tune steps to the target: {bound}{ratio:.1f}")
    if args.record and n_tuned:
        name = f"finetune_steps_to_90pct_{args.task.split('-')[0].lower()}_{shift}"
        record(name, n_tuned, f"robot steps to 90% of the nominal return ({target:.0f}) fine-tuning {args.sim_run}")
        if scratch:
            record("finetune_vs_scratch_steps_ratio", (n_scratch or scratch[-1].real_steps) / n_tuned,
                   f"scratch / fine-tune robot steps to the same return on {args.task} {perturb}"
                   + ("" if n_scratch else f" (lower bound: scratch did not reach it in {scratch[-1].real_steps})"))


if __name__ == "__main__":
    sys.exit(main())
