"""The inner adaptation step: ONE vanilla policy-gradient step per task, theta'_k = theta - alpha (.) grad L_k.

The step size alpha is either the fixed `meta.inner_lr` or learned (`meta.learn_inner_lr`, as Meta-SGD and
the authors' `trainable_step_size`): one log step size per policy parameter, stored beside the policy's
parameters under `inner_lr/<name>` and optimised by the outer step like any other meta-parameter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mbmpo.policy.gaussian import Params, log_prob, stack_params

STEP_PREFIX = "inner_lr/"  # params[f"inner_lr/{name}"] = log alpha for params[name], same shape


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


def adapt(params: Params, obs: Tensor, act: Tensor, adv: Tensor, mask: Tensor, inner_lr: float,
          create_graph: bool) -> Params:
    """One VPG step for each of the T tasks at once; returns task-batched policy params (leading dim T).

    With `create_graph=True` the result stays differentiable in `params` to second order, which is
    what the MAML meta-gradient differentiates through; with False the step itself is a constant
    (first-order MAML: the result still depends on `params` through the identity, and on learned step
    sizes through alpha). The shared params are expanded to T views, so one backward pass yields all T
    per-task gradients. Learned step sizes in `params` replace `inner_lr`.
    """
    n_tasks = obs.shape[0]
    alphas = step_sizes(params, inner_lr)
    with torch.enable_grad():
        policy = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in policy_part(params).items()}
        stacked = stack_params(policy, n_tasks)
        loss = vpg_loss(stacked, obs, act, adv, mask).sum()
        names = sorted(stacked)
        grads = torch.autograd.grad(loss, [stacked[k] for k in names], create_graph=create_graph)
    return {k: stacked[k] - alphas[k] * g for k, g in zip(names, grads)}
