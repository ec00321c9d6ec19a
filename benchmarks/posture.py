"""The torso's posture over a run's real data: did a planar runner learn to run on its back?

    python benchmarks/posture.py --task HalfCheetah-v5 --runs runs/hc_s0 runs/hc_s1 runs/hc_s2 [--chunk 4000]
    python benchmarks/posture.py --task HalfCheetah-v5 --noise uniform 0.3 0.5 1.0 [--episodes 40]

HalfCheetah's reward pays forward speed whichever way up the body is, so a policy can settle on a gait upside
down (the torso's pitch near +-pi), a local optimum that caps its return; seeds that stall below their peers
are often there. For each run the recorded real transitions (`data.npz`, chronological, the oldest dropped past
the buffer's size) are cut into chunks of `--chunk` steps (the preset collects 4,000 per iteration); per chunk
this prints the mean |pitch| and the share of states with |pitch| > pi/2 (on its back). The pitch is the
observation named `qpos:rooty` (HalfCheetah, Hopper, Walker2d), wrapped to (-pi, pi].

`--noise` asks what exploration alone does to the posture: episodes in the simulator of zero-mean actions, each
uniform over the action box (the random phase) or Gaussian of the given std and clipped to the box as the
trainer clips (a fresh policy of `policy.init_std`, before it has learned a mean), with the share of states on
the back and of episodes that ever turn over.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from mbmpo.errors import UserError
from mbmpo.models.buffer import TransitionBuffer
from mbmpo.policy.gaussian import init_params
from mbmpo.rollouts.real import run_episodes
from mbmpo.tasks.base import TaskSpec
from mbmpo.tasks.registry import get_task

PITCH = "qpos:rooty"


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles (any shape) wrapped to (-pi, pi]."""
    return np.pi - np.mod(np.pi - angle, 2 * np.pi)


def on_its_back(pitch: np.ndarray) -> np.ndarray:
    """Pitches (any shape, radians, unwrapped) -> bool, same shape: |wrapped pitch| > pi/2."""
    return np.abs(wrap(pitch)) > math.pi / 2


def posture_by_chunk(pitch: np.ndarray, first_step: int, chunk: int) -> list[tuple[int, float, float]]:
    """Per consecutive chunk of `pitch` (T,), radians, unwrapped, the first at real step `first_step`: (real steps
    at the chunk's end, mean |wrapped pitch|, share of states with |wrapped pitch| > pi/2). A last chunk shorter
    than half of `chunk` is merged into the one before."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    bounds = list(range(0, len(pitch), chunk)) + [len(pitch)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < chunk / 2:
        del bounds[-2]
    tilt, back = np.abs(wrap(pitch)), on_its_back(pitch)
    return [(first_step + end, float(tilt[start:end].mean()), float(back[start:end].mean()))
            for start, end in zip(bounds[:-1], bounds[1:])]


def _planar(task_name: str) -> TaskSpec:
    """The registered task; raises UserError when it has no pitch observation."""
    task = get_task(task_name)
    if PITCH not in task.obs_names:
        raise UserError(f"task {task.name} has no observation named {PITCH}: posture is for planar runners "
                        f"(HalfCheetah, Hopper, Walker2d)")
    return task


def run_posture(run: Path, task_name: str, chunk: int) -> list[tuple[int, float, float]]:
    """`posture_by_chunk` over the run folder's recorded data; raises UserError when the task has no pitch."""
    task = _planar(task_name)
    data = run / "data.npz"
    buf = TransitionBuffer.load(data, task.obs_dim, task.act_dim, capacity=10**9)
    if len(buf) == 0:
        raise UserError(f"{data} holds no transitions")
    return posture_by_chunk(buf.obs[:, task.obs_names.index(PITCH)], buf.total_steps - len(buf), chunk)


def noise_posture(task_name: str, std: float | None, episodes: int, seed: int = 0,
                  horizon: int = 200) -> tuple[float, float, float]:
    """Episodes of zero-mean actions in the simulator: uniform over the box (`std` None) or Gaussian of `std`,
    clipped. Returns (share of states on its back, share of episodes that ever are, mean return)."""
    task = _planar(task_name)
    env = task.make_env(horizon)
    params = None
    if std is not None:
        params = init_params(task.obs_dim, task.act_dim, (), std)
        params["w0"].zero_()  # mean action 0 in every state
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    backs, returns = [], []
    for i in range(episodes):
        ep = run_episodes(task, [env], params, [seed * 100_003 + i], horizon, rng=rng, generator=gen)[0]
        backs.append(on_its_back(ep.obs[1:, task.obs_names.index(PITCH)]))
        returns.append(float(ep.rew.sum()))
    env.close()
    return (float(np.mean(np.concatenate(backs))), float(np.mean([b.any() for b in backs])),
            float(np.mean(returns)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", type=Path, nargs="+", help="run folders (their data.npz)")
    source.add_argument("--noise", nargs="+", help="zero-mean action noise to try in the simulator: 'uniform' "
                        "or a Gaussian std, each clipped to the action box")
    p.add_argument("--chunk", type=int, default=4000, help="real steps per row (the preset's per iteration)")
    p.add_argument("--episodes", type=int, default=40, help="episodes per --noise level")
    args = p.parse_args(argv)
    if args.chunk < 1 or args.episodes < 1:
        p.error(f"--chunk and --episodes must be >= 1, got {args.chunk} and {args.episodes}")
    if args.noise:
        stds = [None if n == "uniform" else _positive(p, n) for n in args.noise]
        print(f"{args.task}, {args.episodes} episodes of 200 steps per level of zero-mean action noise:")
        for name, std in zip(args.noise, stds):
            back, flipped, ret = noise_posture(args.task, std, args.episodes)
            print(f"  {name:>8}: {back:.0%} of states on its back, {flipped:.0%} of episodes turn over, "
                  f"return {ret:.1f}")
        return
    for run in args.runs:
        rows = run_posture(run, args.task, args.chunk)
        print(f"{run.name}: real steps / mean |pitch| (rad) / share on its back")
        print("  " + "  ".join(f"{end // 1000}k {tilt:.2f} {back:.0%}" for end, tilt, back in rows))
        print(f"  last {args.chunk:,} steps: {rows[-1][2]:.0%} on its back")


def _positive(p: argparse.ArgumentParser, text: str) -> float:
    """A --noise level other than 'uniform' as a std > 0, else a usage error."""
    try:
        std = float(text)
    except ValueError:
        std = -1.0
    if not std > 0.0 or not math.isfinite(std):
        p.error(f"--noise takes 'uniform' or a std > 0, got {text!r}")
    return std


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        raise SystemExit(f"posture: {err}") from None
