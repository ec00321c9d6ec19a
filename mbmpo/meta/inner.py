"""The inner adaptation step: ONE vanilla policy-gradient step per task, theta'_k = theta - alpha (.) grad L_k.

The step size alpha is either the fixed `meta.inner_lr` or learned (`meta.learn_inner_lr`, as Meta-SGD and
the authors' `trainable_step_size`): one log step size per policy parameter, stored beside the policy's
parameters under `inner_lr/<name>` and optimised by the outer step like any other meta-parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp

from mbmpo.meta.natural import natural_direction
from mbmpo.policy.gaussian import Params, log_prob, mean_action, stack_params

STEP_PREFIX = "inner_lr/"  # params[f"inner_lr/{name}"] = log alpha for params[name], same shape


@dataclass(frozen=True)
class InnerStep:
    """How large the inner step is: alpha = `lr` (or the learned sizes in the params), or, with `kl` > 0,
    each task's step scaled to that KL(pre || post). `natural` (`meta.inner_natural`): the direction F_k^-1 g_k
    (the step in the Fisher metric, `natural.py`) instead of g_k, the meta-gradient taken through it with F_k
    held constant; at KL 0.02 it gained +0.7 to +5.7 imagined return over g_k on four trained HalfCheetah runs,
    at about 1.8x the outer step's time (BENCHMARKS.md, 2026-12-06 sixth and seventh sessions)."""

    lr: float
    kl: float = 0.0
    natural: bool = False  # the direction F_k^-1 g_k (natural.py) instead of g_k
    cg_iters: int = 10  # conjugate-gradient steps of the natural direction
    fisher_fraction: float = 1.0  # the share of each task's rollouts its Fisher matrix is estimated on

    @classmethod
    def of(cls, step: InnerStep | float) -> InnerStep:
        return step if isinstance(step, InnerStep) else cls(float(step))


def policy_part(params: Params) -> Params:
    """The policy's own parameters (w_i, b_i, log_std), without learned step sizes."""
    return {k: v for k, v in params.items() if not k.startswith(STEP_PREFIX)}


def with_learned_step_sizes(params: Params, inner_lr: float) -> Params:
    """`params` plus one log step size per parameter element, all starting at log(inner_lr)."""
    logs = {STEP_PREFIX + k: torch.full_like(v, math.log(inner_lr)) for k, v in policy_part(params).items()}
    return {**params, **logs}


def step_sizes(params: Params, inner_lr: float) -> dict[str, Tensor | float]:
    """alpha per policy parameter: exp of the learned log step size, else the fixed `inner_lr`."""
    return {k: torch.exp(params[STEP_PREFIX + k]) if STEP_PREFIX + k in params else inner_lr
            for k in policy_part(params)}


def mean_step_size(params: Params, inner_lr: float) -> float:
    """Mean alpha over all policy parameter elements (a diagnostic; `inner_lr` when not learned)."""
    sizes = step_sizes(params, inner_lr)
    learned = [s.detach().reshape(-1) for s in sizes.values() if isinstance(s, Tensor)]
    return float(torch.cat(learned).mean()) if learned else inner_lr


def masked_task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid steps of each task: T x N x H -> T."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1.0)


def vpg_loss(params: Params, obs: Tensor, act: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    """L_k = -mean_valid log pi(a|s) A, per task. obs T x N x H x D, act T x N x H x A -> T."""
    return -masked_task_mean(log_prob(params, obs, act) * adv, mask)


def step_kl_curvature(stacked: Params, grads: Params, obs: Tensor, mask: Tensor) -> Tensor:
    """q_k = g_k^T F_k g_k, the Fisher quadratic form of each task's step direction on its states, so that
    KL(pi_theta || pi_theta-a*g) ~= a^2 q_k / 2 for small steps a.

    For a Gaussian with state-independent log-std: q = mean_valid ||J_mu g||^2 / sigma^2 + 2 ||g_log_std||^2,
    with J_mu g from one forward-mode pass. stacked, grads: task-batched params (T x ...); obs T x N x H x D,
    mask T x N x H -> T.
    """
    with torch.no_grad():
        policy = {k: v.detach().contiguous() for k, v in stacked.items()}
        tangent = {k: grads[k].detach() for k in policy}
        d_mean = jvp(lambda p: mean_action(p, obs), (policy,), (tangent,))[1]  # T x N x H x A
        inv_var = torch.exp(-2.0 * policy["log_std"]).reshape(obs.shape[0], 1, 1, -1)
        mean_part = masked_task_mean((d_mean * d_mean * inv_var).sum(-1), mask)
        return mean_part + 2.0 * (tangent["log_std"] ** 2).sum(-1)


def adapt(params: Params, obs: Tensor, act: Tensor, adv: Tensor, mask: Tensor, step: InnerStep | float,
          create_graph: bool) -> Params:
    """One VPG step for each of the T tasks at once; returns task-batched policy params (leading dim T).

    With `create_graph=True` the result stays differentiable in `params` to second order, which is
    what the MAML meta-gradient differentiates through; with False the step itself is a constant
    (first-order MAML: the result still depends on `params` through the identity, and on learned step
    sizes through alpha). The shared params are expanded to T views, so one backward pass yields all T
    per-task gradients. `step` is an `InnerStep` or a fixed alpha; learned step sizes in `params` replace
    `step.lr`.

    With `step.kl > 0` each task's step is scaled to move the policy by about that KL:
    alpha_k = sqrt(2 kl / q_k) (`step_kl_curvature`), a constant in the meta-gradient. A fixed alpha's
    KL grows like 1/sigma^4 as the policy's std shrinks; this one does not.
    """
    n_tasks = obs.shape[0]
    step = InnerStep.of(step)
    alphas = step_sizes(params, step.lr)
    with torch.enable_grad():
        policy = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in policy_part(params).items()}
        stacked = stack_params(policy, n_tasks)
        loss = vpg_loss(stacked, obs, act, adv, mask).sum()
        names = sorted(stacked)
        grads = torch.autograd.grad(loss, [stacked[k] for k in names], create_graph=create_graph)
    if step.natural:  # d_k = P_k g_k, differentiable in g_k with P_k held constant (as s_k is)
        direction = natural_direction(stacked, dict(zip(names, grads)), obs, mask, step.cg_iters,
                                      fraction=step.fisher_fraction)
        grads = tuple(direction[k] for k in names)
        alphas = {k: step.lr for k in names}
    if step.kl > 0.0:
        q = step_kl_curvature(stacked, dict(zip(names, grads)), obs, mask)  # T
        scale = torch.sqrt(2.0 * step.kl / q.clamp_min(1e-12))
        return {k: stacked[k] - scale.reshape(-1, *([1] * (g.dim() - 1))) * g for k, g in zip(names, grads)}
    return {k: stacked[k] - alphas[k] * g for k, g in zip(names, grads)}
