"""bf16 against fp32 for the dynamics ensemble (`model.precision`): what one fit step, a fit and an imagination
pass cost at the HalfCheetah preset's sizes, and what the fit reaches.

    python benchmarks/precision.py                                  # synthetic data, timings only
    python benchmarks/precision.py --data runs/RUN/data.npz --record  # + a fit on a run's transitions
    python benchmarks/precision.py --width 32 --matmul 64 --horizon 5  # a quick check of the script itself

Side by side in one process, each repeat timing fp32 then bf16 (so that a shared machine's drift falls on both):
- the machine's reference: the median GFLOP/s of a 2048 x 2048 `torch.mm` in fp32 and in bf16, before and after;
- one fit step (5 members x (512, 512), 500 transitions each, forward + backward + fused Adam), its ms and
  achieved GFLOP/s (3x the forward's matmul FLOPs) as a share of the same dtype's matmul figure;
- one imagination pass of the preset (20 tasks x 20 rollouts x 200 steps, policy included);
- with `--data`: `--steps` fit steps on the first `--transitions` of a run's transitions from one
  initialisation per precision, and each member's validation loss after them (normalised MSE);
- with `--run`: that run's trained ensemble and meta-policy (its checkpoint) imagined in each precision from the
  same recorded start states and random stream (20 rollouts per task, as training does, states bounded as the
  preset bounds them): the mean imagined return per member and overall, and how far the two precisions'
  trajectories drift apart (mean |state difference| at steps 1, 10, 50 and the last).
Torch runs on `--threads` threads (default 1, as training does). Reports medians, the fp32 / bf16 ratios and the
load of other processes (0: idle, 1: every core busy) while it ran. `--record` adds
`ensemble_fit_step_bf16_speedup` and `imagination_bf16_speedup` to benchmarks/results.json. `--width`, `--matmul`
and `--horizon` shrink the members, the reference matmul and the timed pass: a CPU without bf16 arithmetic
(no AVX512-BF16 or AMX) emulates it some 70 times slower than fp32, and the preset's sizes take an hour there.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mbmpo.config import ModelConfig, config_from_dict
from mbmpo.device import native_bf16
from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.models.training import fit_ensemble
from mbmpo.policy.gaussian import init_params
from mbmpo.rollouts.imagine import imagine, training_bounds
from mbmpo.tasks import get_task
from mbmpo.train.checkpoint import load_checkpoint
from mbmpo.types import Trajectories
from results import record  # noqa: E402
from throughput import LoadMeter, forward_flops  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 9) -> float:
    """Median GFLOP/s of torch.mm on two random n x n matrices of `dtype`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def ensembles(obs_dim: int, act_dim: int, width: int) -> dict[str, DynamicsEnsemble]:
    """The preset's ensemble (members `width` x `width`) in each precision, same weights, normalisers fitted
    to unit-scale data."""
    out = {}
    for precision in PRECISIONS:
        torch.manual_seed(0)
        ens = DynamicsEnsemble(obs_dim, act_dim, ModelConfig(hidden=(width, width), precision=precision))
        obs, act = torch.randn(1000, obs_dim), torch.randn(1000, act_dim)
        ens.fit_normalizers(obs, act, obs + 0.1 * torch.randn(1000, obs_dim))
        out[precision] = ens
    return out


def side_by_side(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed alternately (one warm-up call each first)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def fit_step_fn(ens: DynamicsEnsemble, steps: int = 10) -> Callable[[], None]:
    """`steps` fit steps on random minibatches (the loop of `fit_ensemble`, all members active)."""
    optimizer = torch.optim.Adam(ens.parameters(), lr=1e-3, fused=True)
    x, y = torch.randn(ens.members, 500, ens.obs_dim + ens.act_dim), torch.randn(ens.members, 500, ens.obs_dim)

    def run() -> None:
        for _ in range(steps):
            loss = ((ens(x) - y) ** 2).mean((1, 2)).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return run


def imagine_fn(ens: DynamicsEnsemble, horizon: int) -> Callable[[], object]:
    """One imagination pass of the HalfCheetah preset: 20 tasks x 20 rollouts x `horizon` steps, a fresh policy."""
    task = get_task("HalfCheetah-v5")
    params = init_params(task.obs_dim, task.act_dim, (32, 32), 1.0, torch.Generator().manual_seed(0))
    start = torch.randn(20, 20, task.obs_dim, generator=torch.Generator().manual_seed(2)) * 0.1
    return lambda: imagine(ens, params, start, horizon, task, 1000.0, torch.Generator().manual_seed(1))


def fit_on_data(path: Path, transitions: int, steps: int, width: int) -> dict[str, tuple[float, list[float]]]:
    """Seconds and per-member validation loss of a `steps`-step fit on a run's transitions, per precision."""
    data = np.load(path)
    obs, act, nxt = (torch.as_tensor(data[k][:transitions], dtype=torch.float32) for k in ("obs", "act", "next_obs"))
    out = {}
    for precision in PRECISIONS:
        cfg = ModelConfig(hidden=(width, width), max_epochs=1000, max_steps=steps, persistency=0.0, precision=precision)
        torch.manual_seed(0)
        ens = DynamicsEnsemble(obs.shape[1], act.shape[1], cfg)
        optimizer = torch.optim.Adam(ens.parameters(), lr=cfg.lr, fused=True)
        start = time.perf_counter()
        result = fit_ensemble(ens, optimizer, obs, act, nxt, cfg, torch.Generator().manual_seed(0))
        out[precision] = (time.perf_counter() - start, result.val_loss)
    return out


def imagined_in_both(run: Path, rollouts: int = 20) -> tuple[int, dict[str, Trajectories]]:
    """A run's checkpointed ensemble and meta-policy imagined in each precision: the same start states (drawn
    from its data.npz), the same random stream. The ensemble's members E and, per precision, trajectories
    T x N x H (T = E x tasks_per_model)."""
    state = load_checkpoint(run)
    cfg = config_from_dict(state["config"], f"{run}/checkpoint.pt")
    task = get_task(state["task"])
    obs = torch.as_tensor(np.load(run / "data.npz")["obs"], dtype=torch.float32)
    tasks = cfg.model.ensemble_size * cfg.meta.tasks_per_model
    pick = torch.randint(0, obs.shape[0], (tasks * rollouts,), generator=torch.Generator().manual_seed(3))
    start = obs[pick].reshape(tasks, rollouts, -1)
    bounds = training_bounds(obs, cfg.meta.state_bounds)
    out = {}
    for precision in PRECISIONS:
        ens = DynamicsEnsemble(task.obs_dim, task.act_dim, dataclasses.replace(cfg.model, precision=precision,
                                                                               imagine_precision=""))
        ens.load_state_dict(state["ensemble"])
        out[precision] = imagine(ens, state["params"], start, cfg.meta.horizon or task.horizon, task, cfg.meta.clip_obs,
                                 torch.Generator().manual_seed(1), bounds)
    return cfg.model.ensemble_size, out


def report_imagined(run: Path) -> None:
    """Print `imagined_in_both`: mean return per member and overall, the trajectories' drift."""
    members, trajs = imagined_in_both(run)
    for precision, t in trajs.items():
        ret = t.rew.sum(-1).mean(-1).reshape(members, -1).mean(-1)  # T x N x H -> E
        print(f"| imagined return of {run}'s meta-policy in its models, {precision}: per member | "
              + ", ".join(f"{float(r):.1f}" for r in ret) + f" | mean {float(ret.mean()):.1f} |")
    a, b = trajs["fp32"].obs, trajs["bf16"].obs
    last = a.shape[2] - 1
    drift = ", ".join(f"step {k}: {float((a[:, :, k] - b[:, :, k]).abs().mean()):.3g}" for k in (1, 10, 50, last)
                      if k <= last)
    print(f"| fp32 - bf16 trajectories, mean abs state difference (mean abs state {float(a.abs().mean()):.3g}) | "
          f"{drift} | |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--data", type=Path, help="a run's data.npz: also fit on its transitions")
    p.add_argument("--transitions", type=int, default=40_000)
    p.add_argument("--steps", type=int, default=1000, help="fit steps on --data (the preset caps a fit at 2,000)")
    p.add_argument("--run", type=Path, help="a run folder: imagine its trained models and policy in both precisions")
    p.add_argument("--width", type=int, default=512, help="the members' hidden width (the preset's: 512)")
    p.add_argument("--matmul", type=int, default=2048, help="the reference matmul's size n (n x n by n x n)")
    p.add_argument("--horizon", type=int, default=200, help="imagined steps of the timed pass (the preset's: 200)")
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    if min(args.width, args.matmul, args.horizon) < 1:
        p.error("--width, --matmul and --horizon must be >= 1")
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {args.threads} thread(s); native bf16 on this CPU: {native_bf16(cpu)}")
    meter = LoadMeter()
    peaks = {k: [matmul_gflops(d, args.matmul)] for k, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    task = get_task("HalfCheetah-v5")
    ens = ensembles(task.obs_dim, task.act_dim, args.width)
    fit = side_by_side({k: fit_step_fn(ens[k]) for k in PRECISIONS}, args.repeats)
    imag = side_by_side({k: imagine_fn(ens[k], args.horizon) for k in PRECISIONS}, max(3, args.repeats // 2))
    for k, d in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks[k].append(matmul_gflops(d, args.matmul))
    flops = 3 * forward_flops(ens["fp32"]) * ens["fp32"].members * 500
    print("| | fp32 | bf16 | fp32 / bf16 |\n|---|---|---|---|")
    peak = {k: statistics.mean(v) for k, v in peaks.items()}
    print(f"| matmul {args.matmul}, GFLOP/s (before, after) | {peaks['fp32'][0]:.0f}, {peaks['fp32'][1]:.0f} | "
          f"{peaks['bf16'][0]:.0f}, {peaks['bf16'][1]:.0f} | {peak['fp32'] / peak['bf16']:.2f} |")
    step = {k: fit[k] / 10 for k in PRECISIONS}
    print(f"| fit step, ms | {step['fp32'] * 1e3:.1f} | {step['bf16'] * 1e3:.1f} | {step['fp32'] / step['bf16']:.2f} |")
    print("| fit step, GFLOP/s (share of the dtype's matmul) | "
          + " | ".join(f"{flops / step[k] / 1e9:.0f} ({flops / step[k] / 1e9 / peak[k]:.0%})" for k in PRECISIONS)
          + " | |")
    print(f"| imagination pass 20 x 20 x {args.horizon}, s | {imag['fp32']:.2f} | {imag['bf16']:.2f} | "
          f"{imag['fp32'] / imag['bf16']:.2f} |")
    if args.data:
        res = fit_on_data(args.data, args.transitions, args.steps, args.width)
        print(f"| fit of {args.steps} steps on {args.transitions} transitions of {args.data}, s | "
              f"{res['fp32'][0]:.1f} | {res['bf16'][0]:.1f} | {res['fp32'][0] / res['bf16'][0]:.2f} |")
        print("| its validation loss per member | " + " | ".join(
            ", ".join(f"{v:.4f}" for v in res[k][1]) for k in PRECISIONS) + " | |")
    if args.run:
        report_imagined(args.run)
    load = meter.others()
    print(f"load of other processes while it ran: {load:.2f} of all cores")
    if args.record:
        cmd = "python " + " ".join(["benchmarks/precision.py", *(argv if argv is not None else sys.argv[1:])])
        where = f"members {args.width} wide, {args.threads} thread(s), medians side by side, other load {load:.2f}"
        record("ensemble_fit_step_bf16_speedup", step["fp32"] / step["bf16"],
               f"fp32 / bf16 ms of one 5 x ({args.width}, {args.width}) fit step, batch 500 ({where})", cmd)
        record("imagination_bf16_speedup", imag["fp32"] / imag["bf16"],
               f"fp32 / bf16 s of one imagination pass 20 x 20 x {args.horizon} ({where})", cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
