"""The trainer on a torch device (issue 13): how fast the heavy work runs with `device: cuda`, and how close it
comes to the device's own matmul peak.

Measures, on `--device`:

1. the matmul peak: fp32 `torch.mm` of square matrices at a few sizes, the median of repeats at each size; the
   peak is the best size. fp32 at torch's default precision ("highest": no TF32), as the trainer runs;
2. imagination throughput: `mbmpo.rollouts.imagine` at the paper's settings, a 5 x (512, 512) ensemble of
   HalfCheetah-v5 size (17 observations, 6 actions) and the (32, 32) policy, 20 tasks (5 members x 4) x 50
   rollouts x 200 steps: imagined transitions per second, and their matmul FLOP rate (ensemble and policy
   forward passes, 2 * in * out per layer per transition; bias, activations, rewards not counted) as a
   fraction of the peak;
3. the phase seconds of one `Trainer` iteration on HalfCheetah-v5 at the paper's settings (`Config()`:
   5,000 random steps, the full model fit with early stopping, the meta-optimisation, 5 evaluation episodes)
   with `meta.meta_steps` cut to `--meta-steps` (the output says so, and scales the meta phase to the
   paper's 30 steps). Collection and evaluation are MuJoCo on the CPU whatever the device.

Prints a markdown table. `--record` adds the figures to benchmarks/results.json, named `trainer_<cuda|cpu>_...`,
with the device's name in the unit. Every timed call ends with a device synchronisation.

    python benchmarks/gpu.py --device cuda --record
    python benchmarks/gpu.py --device cpu --quick        # tiny sizes: a smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mbmpo.config import Config, MetaConfig
from mbmpo.device import resolve_device, to_device
from mbmpo.errors import UserError
from mbmpo.policy.gaussian import init_params
from mbmpo.rollouts.imagine import imagine
from mbmpo.tasks import get_task
from mbmpo.train.trainer import Trainer
from results import machine, record
from throughput import QUICK as THROUGHPUT_QUICK
from throughput import TASK, forward_flops, make_ensemble, median_seconds

PAPER = Config()  # the published settings: sizes of the ensemble, the policy and the meta-batch


@dataclass(frozen=True)
class Sizes:
    """The sizes of one benchmark run (full or quick)."""

    matmul_n: tuple[int, ...]  # square matrix sizes
    repeats: int
    hidden: tuple[int, ...]  # ensemble hidden widths
    tasks: int  # imagined tasks (a multiple of the 5 members)
    rollouts: int  # per task
    horizon: int
    iteration_cfg: Config


def full_sizes(device: torch.device) -> Sizes:
    """The paper's settings; matrices up to 8192 on a GPU, 2048 on a CPU (where 8192 takes minutes)."""
    return Sizes(matmul_n=(1024, 2048, 4096, 8192) if device.type == "cuda" else (512, 1024, 2048), repeats=10,
                 hidden=PAPER.model.hidden, tasks=PAPER.model.ensemble_size * PAPER.meta.tasks_per_model,
                 rollouts=PAPER.meta.rollouts_per_task, horizon=get_task(TASK).horizon, iteration_cfg=PAPER)


QUICK = Sizes(matmul_n=(128, 256), repeats=3, hidden=(64, 64), tasks=5, rollouts=10, horizon=20,
              iteration_cfg=THROUGHPUT_QUICK.iteration_cfg)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Wait for the device's queued work (CUDA runs asynchronously); nothing to wait for on the CPU."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({machine()})"


def matmul_tflops(device: torch.device, n: int, repeats: int) -> float:
    """Median fp32 TFLOP/s of `torch.mm` on two n x n matrices (2 n^3 FLOPs a call)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = synchronizer(device)
    seconds = median_seconds(lambda: (torch.mm(a, b), sync()), repeats, warmup=2)
    return 2 * n**3 / seconds / 1e12


def policy_flops(hidden: tuple[int, ...], obs_dim: int, act_dim: int) -> int:
    """Matmul FLOPs of one policy forward pass on one state: sum of 2 * in * out."""
    sizes = (obs_dim, *hidden, act_dim)
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def imagination(device: torch.device, s: Sizes) -> tuple[float, float, float]:
    """(imagined transitions/s, matmul TFLOP/s, seconds per pass) of `imagine` at the sizes `s`."""
    task = get_task(TASK)
    ensemble = make_ensemble(task.obs_dim, task.act_dim, s.hidden).to(device)
    policy_hidden = PAPER.policy.hidden
    params = to_device(init_params(task.obs_dim, task.act_dim, policy_hidden, 1.0, torch.Generator().manual_seed(0)),
                       device)
    start = torch.randn(s.tasks, s.rollouts, task.obs_dim, device=device)
    gen = torch.Generator(device).manual_seed(0)
    sync = synchronizer(device)
    out = imagine(ensemble, params, start, s.horizon, task, 1000.0, gen)
    assert int(out.mask.sum()) == s.tasks * s.rollouts * s.horizon, "rollouts ended early; the timing would be off"
    seconds = median_seconds(lambda: (imagine(ensemble, params, start, s.horizon, task, 1000.0, gen), sync()),
                             s.repeats)
    transitions = s.tasks * s.rollouts * s.horizon
    flops = forward_flops(ensemble) + policy_flops(policy_hidden, task.obs_dim, task.act_dim)
    return transitions / seconds, flops * transitions / seconds / 1e12, seconds


def iteration(device: torch.device, s: Sizes, meta_steps: int) -> dict[str, float]:
    """Phase seconds of the first `Trainer.iterate()` (random collection, fit, meta-optimisation, evaluation)."""
    cfg = s.iteration_cfg
    cfg = dataclasses.replace(cfg, device=str(device), meta=dataclasses.replace(cfg.meta, meta_steps=meta_steps))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(get_task(TASK), cfg, Path(out), seed=0, tensorboard=False)
        row = trainer.iterate()
        trainer.logger.close()
    phases = {key: float(getattr(row, key)) for key in ("t_collect", "t_fit", "t_meta", "t_eval")}
    return {**phases, "model_epochs": float(row.model_epochs), "real_steps": float(row.real_steps)}


def main(argv: list[str] | None = None) -> list[tuple[str, float, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cpu | cuda | cuda:N | auto (default cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every section")
    parser.add_argument("--meta-steps", type=int, default=3,
                        help=f"outer steps of the timed iteration (the paper's: {MetaConfig().meta_steps})")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip-iteration", action="store_true", help="skip section 3 (the Trainer iteration)")
    parser.add_argument("--record", action="store_true", help="add the figures to benchmarks/results.json")
    args = parser.parse_args(argv)
    if args.record and args.quick:
        parser.error("--record keeps full-size figures only; drop --quick")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except UserError as err:
        parser.error(str(err))
    s = QUICK if args.quick else full_sizes(device)
    name = device_name(device)
    print(f"# trainer on {device}: {name}; torch {torch.__version__}, fp32 matmul precision "
          f"'{torch.get_float32_matmul_precision()}', {torch.get_num_threads()} CPU threads"
          f"{', QUICK sizes (not the paper settings)' if args.quick else ''}", flush=True)
    rows: list[tuple[str, float, str]] = []
    start = time.perf_counter()

    peaks = {n: matmul_tflops(device, n, s.repeats) for n in s.matmul_n}
    rows += [(f"matmul fp32 {n} x {n}, median of {s.repeats}", t, "TFLOP/s") for n, t in peaks.items()]
    peak = max(peaks.values())
    rows.append(("matmul fp32 peak (best size)", peak, "TFLOP/s"))

    per_s, tflops, seconds = imagination(device, s)
    shape = f"{s.tasks} tasks x {s.rollouts} rollouts x {s.horizon} steps, 5 x {s.hidden} ensemble"
    rows += [(f"imagination pass ({shape})", seconds, "s"), ("imagination throughput", per_s, "imagined transitions/s"),
             ("imagination matmul rate", tflops, "TFLOP/s"), ("imagination fraction of the matmul peak",
                                                             tflops / peak, "fraction")]

    if not args.skip_iteration:
        paper_steps = MetaConfig().meta_steps
        phases = iteration(device, s, args.meta_steps)
        label = f"{TASK} iteration 1, meta_steps {args.meta_steps} (paper: {paper_steps})"
        rows += [(f"{label}: {key}", phases[key], "s") for key in ("t_collect", "t_fit", "t_meta", "t_eval")]
        rows += [(f"{label}: model epochs", phases["model_epochs"], "epochs"),
                 (f"{label}: t_meta scaled to {paper_steps} outer steps",
                  phases["t_meta"] * (paper_steps + 1) / (args.meta_steps + 1), "s")]

    print("\n| measure | value | unit |\n|---|---:|---|")
    for label, value, unit in rows:
        print(f"| {label} | {value:.4g} | {unit} |")
    print(f"\n{time.perf_counter() - start:.0f} s in all", flush=True)
    if args.record:
        command = shlex.join(["python", "benchmarks/gpu.py", *(sys.argv[1:] if argv is None else argv)])
        prefix, on = f"trainer_{device.type}", f" on {name}"
        record(f"{prefix}_matmul_fp32_peak_tflops", peak, "TFLOP/s" + on, command)
        record(f"{prefix}_imagination_transitions_per_s", per_s, f"imagined transitions/s ({shape}){on}", command)
        record(f"{prefix}_imagination_fraction_of_peak", tflops / peak, "fraction of the fp32 matmul peak" + on,
               command)
        if not args.skip_iteration:
            for key in ("t_fit", "t_meta", "t_eval"):
                record(f"{prefix}_halfcheetah_iteration1_{key}_s", phases[key],
                       f"s, paper settings with meta_steps {args.meta_steps}{on}", command)
    return rows


if __name__ == "__main__":
    main()
