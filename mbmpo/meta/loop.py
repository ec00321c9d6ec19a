"""One meta-optimisation phase: repeated (imagine pre, adapt, imagine post, outer step) over the ensemble."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mbmpo.config import MetaConfig
from mbmpo.errors import Abandoned
from mbmpo.meta.inner import adapt, mean_step_size
from mbmpo.meta.outer import MetaBatch, inner_step, kl_pre_post, meta_step
from mbmpo.meta.returns import advantages
from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.policy.gaussian import Params, floor_std
from mbmpo.rollouts.imagine import imagine
from mbmpo.tasks.base import TaskSpec


@dataclass(frozen=True)
class MetaPhaseStats:
    imagined_return_pre: float  # mean undiscounted return of pre-update imagined trajectories (last step)
    imagined_return_post: float  # same for the post-update (adapted) policies
    kl_pre_post: float  # mean KL(pi_theta || pi_theta'_k) on pre-update states (last step)
    kl_outer: float  # mean KL of the last outer step (<= max_kl for TRPO)
    rejected_steps: int  # outer steps whose line search found no acceptable step
    outer_steps: int  # outer steps taken (fewer than meta_steps when the imagined return fell)
    policy_std: float  # mean action std of the meta-policy, exp(log_std)
    inner_lr: float  # mean inner step size alpha (the fixed one unless learned)

    @property
    def imagined_gain(self) -> float:
        """What the inner step buys in the models: imagined return post - pre."""
        return self.imagined_return_post - self.imagined_return_pre


def sample_start_states(starts: Tensor, n_tasks: int, n_traj: int, generator: torch.Generator) -> Tensor:
    """Draw T x N start states uniformly from observed states S x D (on their device, the generator's)."""
    idx = torch.randint(0, starts.shape[0], (n_tasks, n_traj), generator=generator, device=starts.device)
    return starts[idx]


def build_meta_batch(ensemble: DynamicsEnsemble, params: Params, starts: Tensor, task: TaskSpec, cfg: MetaConfig,
                     horizon: int, generator: torch.Generator,
                     bounds: tuple[Tensor, Tensor] | None = None) -> tuple[MetaBatch, Params]:
    """Pre-update rollouts with theta, the adapted theta'_k, post-update rollouts with them (imagined states
    kept within `bounds` when given: `imagine`)."""
    n_tasks = ensemble.members * cfg.tasks_per_model
    pre = imagine(ensemble, params, sample_start_states(starts, n_tasks, cfg.rollouts_per_task, generator),
                  horizon, task, cfg.clip_obs, generator, bounds)
    pre_adv = advantages(pre.obs, pre.rew, pre.mask, cfg.discount, cfg.gae_lambda, cfg.normalize_advantages)
    adapted = {k: v.detach() for k, v in
               adapt(params, pre.obs, pre.act, pre_adv, pre.mask, inner_step(cfg), create_graph=False).items()}
    post = imagine(ensemble, adapted, sample_start_states(starts, n_tasks, cfg.rollouts_per_task, generator),
                   horizon, task, cfg.clip_obs, generator, bounds)
    post_adv = advantages(post.obs, post.rew, post.mask, cfg.discount, cfg.gae_lambda, cfg.normalize_advantages)
    return MetaBatch(pre, pre_adv, post, post_adv, adapted), adapted


def return_falling(history: list[float], window: int) -> bool:
    """True when the mean of the last `window` values is below the mean of the `window` before them."""
    if window < 1 or len(history) < 2 * window:
        return False
    return sum(history[-window:]) < sum(history[-2 * window:-window])


def meta_optimize(ensemble: DynamicsEnsemble, params: Params, starts: Tensor, task: TaskSpec, cfg: MetaConfig,
                  horizon: int, generator: torch.Generator, should_stop: Callable[[], bool] | None = None,
                  bounds: tuple[Tensor, Tensor] | None = None) -> tuple[Params, Params, MetaPhaseStats]:
    """Run up to `cfg.meta_steps` outer steps; with `cfg.stop_window` w > 0, stop once the post-update
    imagined return, averaged over the last w steps, falls below its average over the w before (the
    authors' `retrain_model_when_reward_decreases`: the policy has begun to exploit the models' errors). With
    `cfg.min_std` > 0 each outer step's policy has its action std raised to that floor (`floor_std`).
    Returns (new meta-params, adapted params T x ... for collecting real data with them, stats). Raises
    `Abandoned` before an outer step once `should_stop()` is true."""
    rejected = 0
    kl_outer = 0.0
    post_returns: list[float] = []
    for _ in range(cfg.meta_steps):
        if should_stop is not None and should_stop():
            raise Abandoned("stopped during the meta-optimisation")
        batch, _ = build_meta_batch(ensemble, params, starts, task, cfg, horizon, generator, bounds)
        post_returns.append(float(batch.post.returns.mean()))
        if return_falling(post_returns, cfg.stop_window):
            break
        params, step = meta_step(params, batch, cfg)
        params = floor_std(params, cfg.min_std)
        rejected += int(step.backtracks < 0)
        kl_outer = step.kl
    batch, adapted = build_meta_batch(ensemble, params, starts, task, cfg, horizon, generator, bounds)
    stats = MetaPhaseStats(
        imagined_return_pre=float(batch.pre.returns.mean()),
        imagined_return_post=float(batch.post.returns.mean()),
        kl_pre_post=kl_pre_post(params, adapted, batch.pre.obs, batch.pre.mask),
        kl_outer=kl_outer,
        rejected_steps=rejected,
        outer_steps=len(post_returns) - int(return_falling(post_returns, cfg.stop_window)),
        policy_std=float(torch.exp(params["log_std"]).mean()),
        inner_lr=mean_step_size(params, cfg.inner_lr),
    )
    return params, adapted, stats
