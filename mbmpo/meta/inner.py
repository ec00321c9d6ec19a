"""The inner adaptation step: ONE vanilla policy-gradient step per task, theta'_k = theta - alpha grad L_k."""

from __future__ import annotations

import torch
from torch import Tensor

from mbmpo.policy.gaussian import Params, log_prob, stack_params


def masked_task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid steps of each task: T x N x H -> T."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1.0)


def vpg_loss(params: Params, obs: Tensor, act: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    """L_k = -mean_valid log pi(a|s) A, per task. obs T x N x H x D, act T x N x H x A -> T."""
    return -masked_task_mean(log_prob(params, obs, act) * adv, mask)


def adapt(params: Params, obs: Tensor, act: Tensor, adv: Tensor, mask: Tensor, inner_lr: float,
          create_graph: bool) -> Params:
    """One VPG step for each of the T tasks at once; returns task-batched params (leading dim T).

    With `create_graph=True` the result stays differentiable in `params` to second order, which is
    what the MAML meta-gradient differentiates through; with False the step itself is a constant
    (first-order MAML: the result still depends on `params` through the identity). The shared params
    are expanded to T views, so one backward pass yields all T per-task gradients.
    """
    n_tasks = obs.shape[0]
    with torch.enable_grad():
        params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
        stacked = stack_params(params, n_tasks)
        loss = vpg_loss(stacked, obs, act, adv, mask).sum()
        names = sorted(stacked)
        grads = torch.autograd.grad(loss, [stacked[k] for k in names], create_graph=create_graph)
    return {k: stacked[k] - inner_lr * g for k, g in zip(names, grads)}
