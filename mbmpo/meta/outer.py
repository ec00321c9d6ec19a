"""The outer (meta) step: maximise the mean post-update surrogate, differentiating through the inner step.

    theta'_k(theta) = theta - alpha grad L_k(theta)                    (inner VPG step, on pre-update data)
    J(theta)        = mean_k mean_valid ratio_k(theta) A_post           (on post-update data)
    TRPO: max J s.t. mean_k KL(pi_theta'_k,old || pi_theta'_k(theta)) <= delta
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mbmpo.config import MetaConfig
from mbmpo.meta import fisher
from mbmpo.meta.inner import InnerStep, adapt, masked_task_mean
from mbmpo.meta.trpo import backtracking_line_search, conjugate_gradient, natural_step
from mbmpo.policy.gaussian import Params, flat, gaussian_kl, log_std_like, mean_action, unflat
from mbmpo.types import Trajectories


@dataclass(frozen=True)
class MetaBatch:
    """What one outer step needs: pre-update data with advantages, post-update data with advantages."""

    pre: Trajectories
    pre_adv: Tensor  # T x N x H
    post: Trajectories
    post_adv: Tensor  # T x N x H
    post_params: Params | None = None  # the theta'_k that sampled `post` (detached), when the caller has them


@dataclass(frozen=True)
class MetaStepStats:
    loss_before: float
    loss_after: float
    kl: float  # mean KL(old post-update || new post-update) after the step
    backtracks: int  # -1 when the line search rejected every step


def inner_step(cfg: MetaConfig) -> InnerStep:
    return InnerStep(cfg.inner_lr, cfg.inner_kl, cfg.inner_natural, cfg.inner_cg_iters, cfg.inner_fisher_subsample)


def adapted_params(params: Params, batch: MetaBatch, step: InnerStep | float, create_graph: bool) -> Params:
    """theta'_k for all tasks of the batch (task-batched params)."""
    pre = batch.pre
    return adapt(params, pre.obs, pre.act, batch.pre_adv, pre.mask, step, create_graph)


def _old_post_policy(params: Params, batch: MetaBatch, step: InnerStep | float) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, log-std and log-prob of the post-update policies that sampled the post-update data (constants).
    Uses `batch.post_params` when present (the same tensors the inner step at `params` gives)."""
    adapted = batch.post_params
    if adapted is None:
        adapted = {k: v.detach() for k, v in adapted_params(params, batch, step, create_graph=False).items()}
    with torch.no_grad():
        mean = mean_action(adapted, batch.post.obs)
        log_std = log_std_like(adapted, mean)
        z = (batch.post.act - mean) * torch.exp(-log_std)
        logp = -0.5 * (z * z).sum(-1) - log_std.sum(-1)
    return mean, log_std, logp


def _surrogate_and_kl(params: Params, batch: MetaBatch, step: InnerStep | float, create_graph: bool,
                      old: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(-J, mean KL(old || new), likelihood ratios T x N x H) at `params`."""
    old_mean, old_log_std, old_logp = old
    adapted = adapted_params(params, batch, step, create_graph)
    mean = mean_action(adapted, batch.post.obs)
    log_std = log_std_like(adapted, mean)
    z = (batch.post.act - mean) * torch.exp(-log_std)
    logp = -0.5 * (z * z).sum(-1) - log_std.sum(-1)  # the constant cancels in the ratio
    ratio = torch.exp(logp - old_logp)
    mask = batch.post.mask
    loss = -masked_task_mean(ratio * batch.post_adv, mask).mean()
    kl = masked_task_mean(gaussian_kl(old_mean, old_log_std, mean, log_std), mask).mean()
    return loss, kl, ratio


def subsample(batch: MetaBatch, fraction: float, generator: torch.Generator | None = None) -> MetaBatch:
    """The same tasks with a random `fraction` of their pre- and post-update rollouts (N -> N')."""
    if fraction >= 1.0:
        return batch
    n = batch.pre.obs.shape[1]
    keep = max(1, int(round(n * fraction)))
    idx = torch.randperm(n, generator=generator)[:keep].to(batch.pre.obs.device)  # drawn on the CPU
    pick = lambda tr: Trajectories(tr.obs[:, idx], tr.act[:, idx], tr.rew[:, idx], tr.mask[:, idx])
    return MetaBatch(pick(batch.pre), batch.pre_adv[:, idx], pick(batch.post), batch.post_adv[:, idx])


def _fisher_vector_product(theta: Params, batch: MetaBatch, step: InnerStep, second_order: bool,
                           old: tuple[Tensor, Tensor, Tensor], damping: float) -> Callable[[Tensor], Tensor]:
    """v -> (H_KL + damping I) v, H_KL the Hessian in theta of the KL constraint at theta. In Gauss-Newton form
    (`mbmpo.meta.fisher`: 0.094 s a product against 0.135 s by autograd, HalfCheetah, 1 thread) unless step
    sizes are learned or the inner step is natural; else by autograd through the inner step."""
    if second_order and fisher.supports(theta) and not step.natural:
        product = fisher.gauss_newton_fvp(theta, batch.pre, batch.pre_adv, batch.post, old[0], old[1], step)
        return lambda v: product(v) + damping * v
    names = sorted(theta)
    _, kl, _ = _surrogate_and_kl(theta, batch, step, second_order, old)
    kl_grads = torch.autograd.grad(kl, [theta[k] for k in names], create_graph=True)
    kl_grad = torch.cat([x.reshape(-1) for x in kl_grads])

    def fvp(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(kl_grad @ v, [theta[k] for k in names], retain_graph=True)
        return torch.cat([x.reshape(-1) for x in hv]) + damping * v

    return fvp


def trpo_step(params: Params, batch: MetaBatch, cfg: MetaConfig) -> tuple[Params, MetaStepStats]:
    """One TRPO meta-step: natural gradient through the inner step, CG on the KL's Hessian, line search.

    The Fisher-vector products may use a subsample of the rollouts (`cfg.cg_subsample`, as rllab's
    TRPO `subsample_factor`); gradient, line search and constraint always use the whole batch.
    """
    second_order = not cfg.first_order
    theta = {k: v.detach().requires_grad_() for k, v in params.items()}
    names = sorted(theta)
    step = inner_step(cfg)
    old = _old_post_policy(theta, batch, step)
    loss, _, _ = _surrogate_and_kl(theta, batch, step, second_order, old)
    grads = torch.autograd.grad(loss, [theta[k] for k in names])
    g = torch.cat([x.reshape(-1) for x in grads])
    fisher_batch = subsample(batch, cfg.cg_subsample)
    fisher_old = old if fisher_batch is batch else _old_post_policy(theta, fisher_batch, step)
    fvp = _fisher_vector_product(theta, fisher_batch, step, second_order, fisher_old, cfg.cg_damping)

    direction = conjugate_gradient(fvp, -g, cfg.cg_iters)
    full_step = natural_step(direction, fvp(direction), cfg.max_kl).detach()
    x0 = flat(theta).detach()

    def evaluate(x: Tensor) -> tuple[float, float]:
        candidate = unflat(x, theta)
        loss_x, kl_x, _ = _surrogate_and_kl(candidate, batch, step, False, old)
        return float(loss_x.detach()), float(kl_x.detach())

    x, loss_after, kl_after, backtracks = backtracking_line_search(
        evaluate, x0, full_step, float(loss.detach()), cfg.max_kl, cfg.backtrack_ratio, cfg.max_backtracks)
    new = {k: v.detach().clone() for k, v in unflat(x, theta).items()}
    return new, MetaStepStats(float(loss.detach()), loss_after, kl_after, backtracks)


def ppo_step(params: Params, batch: MetaBatch, cfg: MetaConfig) -> tuple[Params, MetaStepStats]:
    """A ProMP-style alternative: a few Adam epochs on the clipped post-update surrogate."""
    theta = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    optimizer = torch.optim.Adam(list(theta.values()), lr=cfg.ppo_lr)
    step = inner_step(cfg)
    old = _old_post_policy(theta, batch, step)
    loss0 = 0.0
    for epoch in range(cfg.ppo_epochs):
        _, _, ratio = _surrogate_and_kl(theta, batch, step, not cfg.first_order, old)
        adv = batch.post_adv
        clipped = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * adv)
        loss = -masked_task_mean(clipped, batch.post.mask).mean()
        if epoch == 0:
            loss0 = float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss_after, kl_after, _ = _surrogate_and_kl(theta, batch, step, False, old)
    new = {k: v.detach().clone() for k, v in theta.items()}
    return new, MetaStepStats(loss0, float(loss_after), float(kl_after), 0)


def meta_step(params: Params, batch: MetaBatch, cfg: MetaConfig) -> tuple[Params, MetaStepStats]:
    """The configured outer step."""
    return trpo_step(params, batch, cfg) if cfg.outer == "trpo" else ppo_step(params, batch, cfg)


def kl_pre_post(params: Params, adapted: Params, obs: Tensor, mask: Tensor) -> float:
    """Mean KL(pi_theta || pi_theta'_k) on pre-update states: how far adaptation moves the policy."""
    with torch.no_grad():
        mean_pre = mean_action(params, obs)
        mean_post = mean_action(adapted, obs)
        kl = gaussian_kl(mean_pre, log_std_like(params, mean_pre), mean_post, log_std_like(adapted, mean_post))
        return float(masked_task_mean(kl, mask).mean())
