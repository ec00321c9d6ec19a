"""What ONE inner step buys, in the models, for a trained run: the imagined adaptation gain (post - pre return)
and KL(pre || post) as functions of the step size, with the run's own meta-policy and ensemble.

    python benchmarks/inner_step.py --run runs/hc_s1 [--alphas 0.0003 0.001 0.003] [--kls 0.005 0.02 0.1]
                                    [--rollouts 20 50] [--repeats 4]

For each setting, `--repeats` fresh meta-batches (K members x tasks_per_model tasks, `--rollouts` imagined
trajectories per task, pre and post each) give the mean gain and its standard error. A step that carries
information gains more than the noise; a step too large for the data loses. Prints a table; records nothing
(it describes one run).
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
from mbmpo.rollouts.imagine import imagine
from mbmpo.tasks import get_task
from mbmpo.train.checkpoint import load_checkpoint


def gain(ensemble: DynamicsEnsemble, params: dict, starts: torch.Tensor, task, cfg, step: InnerStep, rollouts: int,
         gen: torch.Generator) -> tuple[float, float]:
    """(imagined return post - pre, KL(pre || post)) of one fresh meta-batch."""
    n_tasks = ensemble.members * cfg.tasks_per_model
    horizon = cfg.horizon or task.horizon
    pick = lambda: starts[torch.randint(0, starts.shape[0], (n_tasks, rollouts), generator=gen)]
    pre = imagine(ensemble, params, pick(), horizon, task, cfg.clip_obs, gen)
    adv = advantages(pre.obs, pre.rew, pre.mask, cfg.discount, cfg.gae_lambda, cfg.normalize_advantages)
    adapted = {k: v.detach() for k, v in adapt(params, pre.obs, pre.act, adv, pre.mask, step, False).items()}
    post = imagine(ensemble, adapted, pick(), horizon, task, cfg.clip_obs, gen)
    kl = kl_pre_post(params, adapted, pre.obs, pre.mask)
    return float(post.returns.mean() - pre.returns.mean()), kl


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--alphas", type=float, nargs="*", default=[0.0, 0.0003, 0.001, 0.003])
    p.add_argument("--kls", type=float, nargs="*", default=[0.005, 0.02, 0.05, 0.2])
    p.add_argument("--rollouts", type=int, nargs="*", default=[20, 50])
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
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
    gen = torch.Generator().manual_seed(args.seed)
    with ensemble.frozen_weights():
        for rollouts in args.rollouts:
            meta = dataclasses.replace(cfg.meta, rollouts_per_task=rollouts)
            for label, step in settings:
                runs = [gain(ensemble, params, starts, task, meta, step, rollouts, gen) for _ in range(args.repeats)]
                gains, kls = [g for g, _ in runs], [k for _, k in runs]
                se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
                print(f"{rollouts:3d} rollouts/task, {label:>13}: imagined gain {statistics.fmean(gains):+7.2f} "
                      f"+- {se:5.2f}, KL(pre || post) {statistics.fmean(kls):.4f}")


if __name__ == "__main__":
    main()
