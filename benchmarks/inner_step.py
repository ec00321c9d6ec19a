"""What ONE inner step buys, in the models, for a trained run: the imagined adaptation gain (post - pre return)
and KL(pre || post) as functions of the step size, with the run's own meta-policy and ensemble.

    python benchmarks/inner_step.py --run runs/hc_s1 [--alphas 0.0003 0.001 0.003] [--kls 0.005 0.02 0.1]
                                    [--natural-kls 0.02] [--fisher-fractions 1 0.2] [--natural-cg-iters 10]
                                    [--rollouts 20 50] [--repeats 4]

For each setting, `--repeats` fresh meta-batches (K members x tasks_per_model tasks, `--rollouts` imagined
trajectories per task, pre and post each, within the run's state bounds) give the mean gain and its standard
error. A step that carries information gains more than the noise; a step too large for the data loses. All
settings of one repeat adapt on the same pre-update batch and roll out from the same states with the same random
stream, so each is also given against the first setting (by default the zero step), a paired and less noisy
figure. `--natural-kls` takes the step in the Fisher metric (`mbmpo/meta/natural.py`) at those KLs, its Fisher
matrices estimated on each `--fisher-fractions` share of the rollouts. Prints a table; records nothing (it
describes one run).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import torch
import yaml

from mbmpo.config import config_from_dict
from mbmpo.meta.inner import InnerStep, adapt, policy_part
from mbmpo.meta.outer import kl_pre_post
from mbmpo.meta.returns import advantages
from mbmpo.models.buffer import TransitionBuffer
from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.rollouts.imagine import imagine, training_bounds
from mbmpo.tasks import get_task
from mbmpo.train.checkpoint import load_checkpoint


def paired_gains(ensemble: DynamicsEnsemble, params: dict, starts: torch.Tensor, task, cfg,
                 steps: list[InnerStep], rollouts: int, gen: torch.Generator,
                 bounds: tuple[torch.Tensor, torch.Tensor] | None) -> list[tuple[float, float]]:
    """(imagined return post - pre, KL(pre || post)) of each step on ONE fresh meta-batch: every step adapts on
    the same pre-update trajectories, and its post-update trajectories start from the same states with the same
    random stream (common random numbers), so the steps' differences carry less noise than their gains."""
    n_tasks = ensemble.members * cfg.tasks_per_model
    horizon = cfg.horizon or task.horizon
    pick = lambda: starts[torch.randint(0, starts.shape[0], (n_tasks, rollouts), generator=gen)]
    pre = imagine(ensemble, params, pick(), horizon, task, cfg.clip_obs, gen, bounds)
    adv = advantages(pre.obs, pre.rew, pre.mask, cfg.discount, cfg.gae_lambda, cfg.normalize_advantages)
    post_starts, stream = pick(), gen.get_state()
    out = []
    for step in steps:
        adapted = {k: v.detach() for k, v in adapt(params, pre.obs, pre.act, adv, pre.mask, step, False).items()}
        post = imagine(ensemble, adapted, post_starts, horizon, task, cfg.clip_obs, gen.set_state(stream), bounds)
        out.append((float(post.returns.mean() - pre.returns.mean()), kl_pre_post(params, adapted, pre.obs, pre.mask)))
    return out


def _se(x: list[float]) -> float:
    return statistics.stdev(x) / len(x) ** 0.5 if len(x) > 1 else float("nan")


def main(argv: list[str] | None = None) -> list[dict]:
    """Prints the table; returns its rows (rollouts, setting, gain, gain_se, paired, paired_se, kl)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--alphas", type=float, nargs="*", default=[0.0, 0.0003, 0.001, 0.003])
    p.add_argument("--kls", type=float, nargs="*", default=[0.005, 0.02, 0.05, 0.2])
    p.add_argument("--natural-kls", type=float, nargs="*", default=[])
    p.add_argument("--fisher-fractions", type=float, nargs="*", default=[1.0],
                   help="share of each task's rollouts the natural step's Fisher matrix is estimated on")
    p.add_argument("--natural-cg-iters", type=int, default=10)
    p.add_argument("--rollouts", type=int, nargs="*", default=[20, 50])
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    saved = yaml.safe_load((args.run / "config.yaml").read_text())
    task = get_task(saved["task"])
    cfg = config_from_dict(saved["config"], source=str(args.run / "config.yaml"))
    ckpt = load_checkpoint(args.run)
    ensemble = DynamicsEnsemble(task.obs_dim, task.act_dim, cfg.model)
    ensemble.load_state_dict(ckpt["ensemble"])
    params = policy_part(ckpt["params"])  # learned step sizes, if any, would override the swept alpha
    buffer = TransitionBuffer.load(args.run / "data.npz", task.obs_dim, task.act_dim, cfg.model.buffer_size)
    starts = torch.as_tensor(buffer.starts)
    print(f"{args.run}: iteration {ckpt['iteration']}, {ckpt['real_steps']:,} real steps, policy std "
          f"{float(torch.exp(params['log_std']).mean()):.3f}")
    settings = [(f"alpha {a:g}", InnerStep(a)) for a in args.alphas] + [(f"KL {k:g}", InnerStep(0.0, k)) for k in args.kls]
    settings += [(f"natural KL {k:g}" + (f", F on {f:g}" if f < 1.0 else ""),
                  InnerStep(0.0, k, natural=True, cg_iters=args.natural_cg_iters, fisher_fraction=f))
                 for k in args.natural_kls for f in args.fisher_fractions]
    gen = torch.Generator().manual_seed(args.seed)
    bounds = training_bounds(torch.as_tensor(buffer.obs), cfg.meta.state_bounds)
    rows = []
    with ensemble.frozen_weights():
        for rollouts in args.rollouts:
            meta = dataclasses.replace(cfg.meta, rollouts_per_task=rollouts)
            runs = [paired_gains(ensemble, params, starts, task, meta, [s for _, s in settings], rollouts, gen, bounds)
                    for _ in range(args.repeats)]
            base = [r[0][0] for r in runs]
            for j, (label, _) in enumerate(settings):
                gains, kls = [r[j][0] for r in runs], [r[j][1] for r in runs]
                diff = [g - b for g, b in zip(gains, base)]
                row = {"rollouts": rollouts, "setting": label, "gain": statistics.fmean(gains), "gain_se": _se(gains),
                       "paired": statistics.fmean(diff), "paired_se": _se(diff), "kl": statistics.fmean(kls)}
                rows.append(row)
                print(f"{rollouts:3d} rollouts/task, {label:>26}: imagined gain {row['gain']:+7.2f} "
                      f"+- {row['gain_se']:5.2f}, against the first setting {row['paired']:+7.2f} +- "
                      f"{row['paired_se']:5.2f}, KL(pre || post) {row['kl']:.4f}")
    return rows


if __name__ == "__main__":
    main()
