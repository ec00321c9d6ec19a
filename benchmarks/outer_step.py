"""Where one outer step of the meta-optimisation spends its time, and the Fisher-vector product both ways.

    python benchmarks/outer_step.py [--run RUN_DIR] [--config runs/hc_m512.yaml] [--repeats 5]

One outer step = the meta-batch (imagined pre-update rollouts, the inner step, post-update rollouts) plus the
TRPO step (surrogate gradient through the inner step, 11 Fisher-vector products in conjugate gradient and the
natural step, line search). With `--run`, the models and meta-policy come from that run's checkpoint and the
start states and state bounds from its data (a real batch, bounded as in training); else a fresh ensemble and
policy. One torch thread. Printed: medians over `--repeats` of the meta-batch, the TRPO step and one Fisher-vector
product in Gauss-Newton form (`mbmpo.meta.fisher`, the default) and by autograd through the inner step, with the
matmul peak measured before and after and the other processes' load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mbmpo.config import load_config
from mbmpo.meta import fisher
from mbmpo.meta.loop import build_meta_batch
from mbmpo.meta.outer import _fisher_vector_product, _old_post_policy, inner_step, subsample, trpo_step
from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.policy.gaussian import flat, init_params
from mbmpo.rollouts.imagine import training_bounds
from mbmpo.tasks import get_task
from mbmpo.train.checkpoint import load_checkpoint
from mbmpo.train.init import init_config
from throughput import LoadMeter


def seconds(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds(lambda: torch.mm(a, b), 9) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="HalfCheetah-v5")
    p.add_argument("--config", type=Path, help="default: the run's config.yaml, else config/<task>.yaml")
    p.add_argument("--run", type=Path, help="a run folder: its checkpoint's models and policy, its data's starts")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    task = get_task(args.task)
    root = Path(__file__).resolve().parent.parent
    cfg = (load_config(args.config) if args.config else init_config(args.run) if args.run
           else load_config(root / "config" / f"{args.task}.yaml"))
    ensemble = DynamicsEnsemble(task.obs_dim, task.act_dim, cfg.model)
    gen = torch.Generator().manual_seed(0)
    bounds = None
    if args.run:
        ckpt = load_checkpoint(args.run)
        ensemble.load_state_dict(ckpt["ensemble"])
        params = ckpt["params"]
        data = np.load(args.run / "data.npz")
        starts = torch.as_tensor(data["starts"], dtype=torch.float32)  # observed episode starts, as training
        bounds = training_bounds(torch.as_tensor(data["obs"], dtype=torch.float32), cfg.meta.state_bounds)
    else:
        params = init_params(task.obs_dim, task.act_dim, cfg.policy.hidden, cfg.policy.init_std, gen)
        starts = torch.as_tensor(np.stack([task.make_env(200).reset(seed=i)[0] for i in range(100)]),
                                 dtype=torch.float32)
    horizon = cfg.meta.horizon or cfg.collect.horizon or task.horizon
    peak_before, load = matmul_gflops(), LoadMeter()
    batch, _ = build_meta_batch(ensemble, params, starts, task, cfg.meta, horizon, gen, bounds)
    t_batch = seconds(lambda: build_meta_batch(ensemble, params, starts, task, cfg.meta, horizon, gen, bounds),
                      args.repeats)
    step = inner_step(cfg.meta)
    theta = {k: v.detach().requires_grad_() for k, v in params.items()}
    fisher_batch = subsample(batch, cfg.meta.cg_subsample)
    old = _old_post_policy(theta, fisher_batch, step)
    v = torch.randn_like(flat(theta))
    times: dict[str, list[float]] = {"trpo gn": [], "trpo autograd": [], "fvp gn": [], "fvp autograd": []}
    supports = fisher.supports
    trpo_step(params, batch, cfg.meta)  # warm-up, untimed
    try:
        for _ in range(args.repeats):  # the two forms alternate, so a change of load hits both alike
            for form in ("gn", "autograd"):
                fisher.supports = supports if form == "gn" else (lambda _: False)  # type: ignore[assignment]
                times[f"trpo {form}"].append(seconds(lambda: trpo_step(params, batch, cfg.meta), 1))
                fvp = _fisher_vector_product(theta, fisher_batch, step, True, old, cfg.meta.cg_damping)
                times[f"fvp {form}"].append(seconds(lambda: fvp(v), 11))
    finally:
        fisher.supports = supports
    t_trpo, t_trpo_autograd, t_gn, t_autograd = (statistics.median(times[k]) for k in times)
    others, peak_after = load.others(), matmul_gflops()
    n_tasks, n_traj = batch.pre.obs.shape[:2]
    print(f"{args.task}, model {list(cfg.model.hidden)} x {cfg.model.ensemble_size}, {n_tasks} tasks x {n_traj} "
          f"rollouts x {horizon} steps, 1 torch thread, {'run ' + str(args.run) if args.run else 'fresh weights'}")
    print(f"  meta-batch (2 imagination passes + inner step): {t_batch:.2f} s")
    print(f"  TRPO step: {t_trpo:.2f} s (Fisher products by autograd: {t_trpo_autograd:.2f} s)")
    print(f"  one Fisher-vector product: Gauss-Newton {1e3 * t_gn:.0f} ms, autograd {1e3 * t_autograd:.0f} ms "
          f"(ratio {t_autograd / t_gn:.2f}); 11 per outer step")
    print(f"  outer step: {t_batch + t_trpo:.2f} s; x{cfg.meta.meta_steps + 1} = "
          f"{(t_batch + t_trpo) * (cfg.meta.meta_steps + 1):.0f} s of meta-optimisation per iteration")
    print(f"  matmul 1024^2 fp32: {peak_before:.1f} GFLOP/s before, {peak_after:.1f} after; other processes' "
          f"load {100 * others:.0f}% of the cores")


if __name__ == "__main__":
    main()
