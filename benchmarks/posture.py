"""The torso's posture over a run's real data: did a planar runner learn to run on its back?

    python benchmarks/posture.py --task HalfCheetah-v5 --runs runs/hc_s0 runs/hc_s1 runs/hc_s2 [--chunk 4000]

HalfCheetah's reward pays forward speed whichever way up the body is, so a policy can settle on a gait upside
down (the torso's pitch near +-pi), a local optimum that caps its return; seeds that stall below their peers
are often there. For each run the recorded real transitions (`data.npz`, chronological, the oldest dropped past
the buffer's size) are cut into chunks of `--chunk` steps (the preset collects 4,000 per iteration); per chunk
this prints the mean |pitch| and the share of states with |pitch| > pi/2 (on its back). The pitch is the
observation named `qpos:rooty` (HalfCheetah, Hopper, Walker2d), wrapped to (-pi, pi].
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from mbmpo.errors import UserError
from mbmpo.models.buffer import TransitionBuffer
from mbmpo.tasks.registry import get_task

PITCH = "qpos:rooty"


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles (any shape) wrapped to (-pi, pi]."""
    return np.pi - np.mod(np.pi - angle, 2 * np.pi)


def posture_by_chunk(pitch: np.ndarray, first_step: int, chunk: int) -> list[tuple[int, float, float]]:
    """Per consecutive chunk of `pitch` (T,), radians, unwrapped, the first at real step `first_step`: (real steps
    at the chunk's end, mean |wrapped pitch|, share of states with |wrapped pitch| > pi/2). A last chunk shorter
    than half of `chunk` is merged into the one before."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    bounds = list(range(0, len(pitch), chunk)) + [len(pitch)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < chunk / 2:
        del bounds[-2]
    tilt = np.abs(wrap(pitch))
    return [(first_step + end, float(tilt[start:end].mean()), float((tilt[start:end] > math.pi / 2).mean()))
            for start, end in zip(bounds[:-1], bounds[1:])]


def run_posture(run: Path, task_name: str, chunk: int) -> list[tuple[int, float, float]]:
    """`posture_by_chunk` over the run folder's recorded data; raises UserError when the task has no pitch."""
    task = get_task(task_name)
    if PITCH not in task.obs_names:
        raise UserError(f"task {task.name} has no observation named {PITCH}: posture is for planar runners "
                        f"(HalfCheetah, Hopper, Walker2d)")
    data = run / "data.npz"
    buf = TransitionBuffer.load(data, task.obs_dim, task.act_dim, capacity=10**9)
    if len(buf) == 0:
        raise UserError(f"{data} holds no transitions")
    return posture_by_chunk(buf.obs[:, task.obs_names.index(PITCH)], buf.total_steps - len(buf), chunk)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders (their data.npz)")
    p.add_argument("--chunk", type=int, default=4000, help="real steps per row (the preset's per iteration)")
    args = p.parse_args(argv)
    if args.chunk < 1:
        p.error(f"--chunk must be >= 1, got {args.chunk}")
    for run in args.runs:
        rows = run_posture(run, args.task, args.chunk)
        print(f"{run.name}: real steps / mean |pitch| (rad) / share on its back")
        print("  " + "  ".join(f"{end // 1000}k {tilt:.2f} {back:.0%}" for end, tilt, back in rows))
        print(f"  last {args.chunk:,} steps: {rows[-1][2]:.0%} on its back")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        raise SystemExit(f"posture: {err}") from None
