"""Throughput benchmark (issue 2): how close the hot loops come to this CPU's matmul peak, and where
one MB-MPO iteration at the paper's settings spends its time.

Measures, in one run:

1. fp32 matmul peak: median GFLOP/s of `torch.mm` on square matrices (2048 x 2048);
2. the dynamics ensemble (5 x (512, 512), HalfCheetah-v5 sizes): `predict` at several batches per
   member, the full `imagine` pass (20 tasks x 50 rollouts x horizon 200, policy included), and
   training steps (forward + backward + Adam, batch 500 per member), each as achieved GFLOP/s and as
   a fraction of the matmul peak;
3. seconds per phase (collect, fit, meta-optimise, evaluate) of the first two `Trainer` iterations
   on HalfCheetah-v5 with the default (paper) `Config`.

FLOP counts are forward-only matmul FLOPs, 2 * in * out per layer per sample per member (bias,
activation, weight normalisation and the policy are not counted); training counts 3x forward.
Every timing is the median of several repeats (the machine is shared); the iteration phases are
single measurements. Torch runs with exactly `--threads` (default 2) intra-op threads.

    python benchmarks/throughput.py --out benchmarks/results_throughput.json
    python benchmarks/throughput.py --quick        # smoke version, well under 30 s
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mbmpo.config import CollectConfig, Config, MetaConfig, ModelConfig
from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.policy.gaussian import init_params, sample
from mbmpo.rollouts.imagine import imagine
from mbmpo.tasks import get_task
from mbmpo.train.trainer import Trainer

TASK = "HalfCheetah-v5"


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run (full or quick)."""

    matmul_n: int
    repeats: int
    predict_batches: tuple[int, ...]  # states per ensemble member
    n_tasks: int  # imagined tasks (multiple of the ensemble size)
    n_traj: int  # rollouts per task
    horizon: int
    train_batch: int  # per member
    train_steps: int  # optimiser steps per timed repeat
    iteration_cfg: Config


FULL = Settings(matmul_n=2048, repeats=7, predict_batches=(200, 1000, 4000, 20000), n_tasks=20, n_traj=50,
                horizon=200, train_batch=500, train_steps=20, iteration_cfg=Config())
QUICK = Settings(
    matmul_n=512, repeats=3, predict_batches=(200, 1000), n_tasks=5, n_traj=10, horizon=20, train_batch=500,
    train_steps=3,
    iteration_cfg=Config(model=ModelConfig(hidden=(64, 64), max_epochs=2),
                         meta=MetaConfig(meta_steps=1, tasks_per_model=1, rollouts_per_task=5, horizon=20),
                         collect=CollectConfig(initial_random_steps=200, eval_episodes=1, horizon=20)))


class Recorder:
    """Collects {"name", "value", "unit", "command"} records and prints each one as it arrives."""

    def __init__(self, command: str):
        self.command = command
        self.records: list[dict[str, Any]] = []

    def add(self, name: str, value: float, unit: str) -> float:
        self.records.append({"name": name, "value": value, "unit": unit, "command": self.command})
        print(f"  {name:<52} {value:>14.4g} {unit}", flush=True)
        return value


def cpu_busy_fraction(seconds: float = 2.0) -> float:
    """Fraction of all CPUs busy over `seconds` while this process sleeps, i.e. other processes' load
    (Linux /proc/stat; NaN elsewhere)."""

    def busy_total() -> tuple[int, int]:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        busy = user + nice + system + irq + softirq + steal
        return busy, busy + idle + iowait

    try:
        b0, t0 = busy_total()
        time.sleep(seconds)
        b1, t1 = busy_total()
    except (OSError, ValueError):
        return float("nan")
    return (b1 - b0) / max(t1 - t0, 1)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(ensemble: DynamicsEnsemble) -> int:
    """Matmul FLOPs of one forward pass of ONE member on ONE sample: sum of 2 * in * out."""
    return sum(2 * layer.v.shape[1] * layer.v.shape[2] for layer in ensemble.layers)


def make_ensemble(obs_dim: int, act_dim: int) -> DynamicsEnsemble:
    """The paper's ensemble, 5 x (512, 512), with normalisers fitted to unit-scale random data."""
    ensemble = DynamicsEnsemble(obs_dim, act_dim, ModelConfig(hidden=(512, 512), ensemble_size=5))
    obs, act = torch.randn(1000, obs_dim), torch.randn(1000, act_dim)
    ensemble.fit_normalizers(obs, act, obs + 0.1 * torch.randn(1000, obs_dim))
    return ensemble


def bench_matmul(rec: Recorder, s: Settings, name: str) -> float:
    """Median GFLOP/s of torch.mm on two random square fp32 matrices."""
    a, b = torch.randn(s.matmul_n, s.matmul_n), torch.randn(s.matmul_n, s.matmul_n)
    seconds = median_seconds(lambda: torch.mm(a, b), max(s.repeats, 9), warmup=2)
    return rec.add(name, 2 * s.matmul_n**3 / seconds / 1e9, "GFLOP/s")


def bench_predict(rec: Recorder, s: Settings, peak: float) -> None:
    """`DynamicsEnsemble.predict` alone, E x B states, at several B."""
    ensemble = make_ensemble(17, 6)
    flops = forward_flops(ensemble) * ensemble.members
    for batch in s.predict_batches:
        obs, act = torch.randn(ensemble.members, batch, 17), torch.randn(ensemble.members, batch, 6)
        seconds = median_seconds(lambda: ensemble.predict(obs, act), s.repeats)
        rec.add(f"predict_b{batch}_model_steps_per_s", ensemble.members * batch / seconds, "model-steps/s")
        rec.add(f"predict_b{batch}_fraction_of_peak", flops * batch / seconds / 1e9 / peak, "fraction")
    with torch.no_grad():
        seconds = median_seconds(lambda: [layer.weight() for layer in ensemble.layers], s.repeats)
    rec.add("ensemble_weight_norm_ms_per_call", seconds * 1e3, "ms")


def bench_imagine(rec: Recorder, s: Settings, peak: float) -> None:
    """The full `imagine` pass (policy sample + predict + reward per step), plus its policy share."""
    task = get_task(TASK)
    ensemble = make_ensemble(task.obs_dim, task.act_dim)
    params = init_params(task.obs_dim, task.act_dim, (32, 32), 1.0, torch.Generator().manual_seed(0))
    start = torch.randn(s.n_tasks, s.n_traj, task.obs_dim)
    gen = torch.Generator().manual_seed(0)
    out = imagine(ensemble, params, start, s.horizon, task, 1000.0, gen)
    assert int(out.mask.sum()) == s.n_tasks * s.n_traj * s.horizon, "rollouts ended early; timing would be off"
    seconds = median_seconds(lambda: imagine(ensemble, params, start, s.horizon, task, 1000.0, gen), s.repeats)
    steps = s.n_tasks * s.n_traj * s.horizon
    gflops = forward_flops(ensemble) * steps / seconds / 1e9
    rec.add("imagination_batch_per_member", s.n_tasks * s.n_traj / ensemble.members, "states")
    rec.add("imagination_pass_s", seconds, "s")
    rec.add("imagination_model_steps_per_s", steps / seconds, "model-steps/s")
    rec.add("imagination_gflops", gflops, "GFLOP/s")
    rec.add("imagination_fraction_of_peak", gflops / peak, "fraction")
    rec.add("imagination_ms_per_step", seconds / s.horizon * 1e3, "ms")
    obs = start.reshape(-1, task.obs_dim)
    with torch.no_grad():
        policy = median_seconds(lambda: sample(params, obs, gen), s.repeats * 5)
        members = ensemble.members
        o, a = obs.reshape(members, -1, task.obs_dim), torch.randn(members, obs.shape[0] // members, task.act_dim)
        model = median_seconds(lambda: ensemble.predict(o, a), s.repeats * 5)
    rec.add("imagination_policy_ms_per_step", policy * 1e3, "ms")
    rec.add("imagination_predict_ms_per_step", model * 1e3, "ms")


def bench_train(rec: Recorder, s: Settings, peak: float) -> None:
    """Ensemble training steps as in `mbmpo.models.training.fit_ensemble`: gather a per-member minibatch,
    masked per-member MSE, zero_grad, backward, Adam step (all members active)."""
    ensemble = make_ensemble(17, 6)
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=1e-3)
    members, n = ensemble.members, 4000
    x, y = torch.randn(n, 23), torch.randn(n, 17)
    active = torch.ones(members, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)

    def steps() -> None:
        for _ in range(s.train_steps):
            idx = torch.randint(0, n, (members, s.train_batch), generator=gen)
            loss = (((ensemble(x[idx]) - y[idx]) ** 2).mean((1, 2)) * active).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    seconds = median_seconds(steps, s.repeats) / s.train_steps
    samples = members * s.train_batch
    gflops = 3 * forward_flops(ensemble) * samples / seconds / 1e9
    rec.add("ensemble_train_step_ms", seconds * 1e3, "ms")
    rec.add("ensemble_train_samples_per_s", samples / seconds, "member-samples/s")
    rec.add("ensemble_train_gflops", gflops, "GFLOP/s")
    rec.add("ensemble_train_fraction_of_peak", gflops / peak, "fraction")


def bench_iterations(rec: Recorder, s: Settings, meta_steps: int | None) -> None:
    """Phase times of the first two `Trainer.iterate()` calls (random collection, then adapted policies)."""
    cfg = s.iteration_cfg
    if meta_steps is not None:
        cfg = dataclasses.replace(cfg, meta=dataclasses.replace(cfg.meta, meta_steps=meta_steps))
    rec.add("halfcheetah_iteration_meta_steps", cfg.meta.meta_steps, "outer steps")
    task = get_task(TASK)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = Trainer(task, cfg, Path(out_dir), seed=0, tensorboard=False)
        trainer._start = time.perf_counter()  # iterate() reads it; only train() sets it
        for i in (1, 2):
            row = trainer.iterate()
            for key in ("t_collect", "t_fit", "t_meta", "t_eval"):
                rec.add(f"halfcheetah_iteration{i}_{key}_s", float(row[key]), "s")
            rec.add(f"halfcheetah_iteration{i}_model_epochs", float(row["model_epochs"]), "epochs")
            rec.add(f"halfcheetah_iteration{i}_real_steps", float(row["real_steps"]), "steps")
            # meta_steps outer steps plus one final meta-batch: t_meta / meta_steps slightly overstates a step
            rec.add(f"halfcheetah_iteration{i}_t_meta_per_outer_step_s", float(row["t_meta"]) / cfg.meta.meta_steps,
                    "s")
        trainer.logger.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke version (< 30 s)")
    parser.add_argument("--out", type=Path, default=None, help="write the records as a JSON list here")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--meta-steps", type=int, default=None,
                        help="override meta.meta_steps for the iteration phase (default: the config's)")
    parser.add_argument("--skip-iterations", action="store_true", help="skip the Trainer phase timings")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rec = Recorder(shlex.join(["python", "benchmarks/throughput.py", *(sys.argv[1:] if argv is None else argv)]))
    s = QUICK if args.quick else FULL
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {'quick' if args.quick else 'full'} run")
    rec.add("torch_threads", torch.get_num_threads(), "threads")
    rec.add("other_cpu_busy_fraction_start", cpu_busy_fraction(), "fraction of all cores")
    print("matmul peak:")
    peak = bench_matmul(rec, s, "matmul_gflops")
    print("ensemble predict:")
    bench_predict(rec, s, peak)
    print(f"imagination, {s.n_tasks} tasks x {s.n_traj} rollouts x horizon {s.horizon}:")
    bench_imagine(rec, s, peak)
    print(f"ensemble training, batch {s.train_batch} per member:")
    bench_train(rec, s, peak)
    if not args.skip_iterations:
        print(f"{TASK} iterations:")
        bench_iterations(rec, s, args.meta_steps)
    print("matmul peak again (the machine is shared; a large change means the figures above are suspect):")
    bench_matmul(rec, s, "matmul_gflops_end")
    rec.add("other_cpu_busy_fraction_end", cpu_busy_fraction(), "fraction of all cores")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rec.records, indent=1) + "\n")
        print(f"wrote {len(rec.records)} records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
