"""The inner step in the Fisher metric: each task's policy gradient preconditioned by its own policy's Fisher matrix.

For a Gaussian policy with state-independent log-std the Fisher matrix of task k on its states is

    F_k = mean_valid J_mu^T diag(1 / sigma^2) J_mu  (+)  2 I on the log-std entries,

J_mu the Jacobian of the action mean in the mean-network's parameters at one state. Its quadratic form is the
`step_kl_curvature` of `inner.py`: KL(pi_theta || pi_theta-d) ~= d^T F_k d / 2. The natural direction
F_k^-1 g_k is found by conjugate gradient, all tasks at once, each with its own step lengths, and is
differentiable in g_k with F_k held constant (`meta.inner_natural`; the outer step's Fisher products then go by
autograd, 3.5x the time of the plain step's Gauss-Newton form on a HalfCheetah meta-batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp

from mbmpo.meta.trpo import conjugate_gradient
from mbmpo.policy.gaussian import Params, mean_action


def fisher_product(stacked: Params, obs: Tensor, mask: Tensor, damping: float = 0.0) -> Callable[[Params], Params]:
    """The map v -> (F_k + damping I) v_k for every task at once, at task-batched params `stacked` (T x ...).

    obs T x N x H x D, mask T x N x H. v and the result are task-batched dicts shaped like `stacked`.
    """
    policy = {k: v.detach().contiguous() for k, v in stacked.items()}
    net = {k: v for k, v in policy.items() if k != "log_std"}
    mean_of = lambda p: mean_action(p, obs)  # noqa: E731
    pullback = vjp(mean_of, net)[1]
    weight = torch.exp(-2.0 * policy["log_std"]).reshape(obs.shape[0], 1, 1, -1) * mask.unsqueeze(-1)
    weight = weight / mask.sum((1, 2)).clamp_min(1.0).reshape(-1, 1, 1, 1)

    def product(v: Params) -> Params:
        with torch.no_grad():
            jv = jvp(mean_of, (net,), ({k: v[k].contiguous() for k in net},))[1]  # T x N x H x A
            out = dict(pullback(jv * weight)[0])
            out["log_std"] = 2.0 * v["log_std"]
            return {k: out[k] + damping * v[k] for k in v}

    return product


class _Solve(torch.autograd.Function):
    """x = P b for a fixed symmetric P given as a function (no graph of its own); the backward pass is the same
    solve, so the result is differentiable in b to any order with P held constant."""

    @staticmethod
    def forward(ctx, b: Tensor, solve: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.solve = solve
        return solve(b)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return _Solve.apply(grad, ctx.solve), None


def natural_direction(stacked: Params, grads: Params, obs: Tensor, mask: Tensor, iters: int = 10,
                      damping: float = 1e-3, fraction: float = 1.0) -> Params:
    """d_k ~= (F_k + damping I)^-1 g_k by `iters` conjugate-gradient steps per task (batched).

    stacked, grads: task-batched params and per-task gradients (T x ...); obs T x N x H x D, mask T x N x H.
    F_k is estimated on the first ceil(`fraction` N) of each task's N rollouts (they are exchangeable draws).
    The Fisher matrices are constants (taken at `stacked`, detached); d is differentiable in `grads` when they
    carry a graph (the MAML meta-gradient: d theta'_k / d theta = I - s_k P_k H_k, P_k the damped inverse).
    """
    names = sorted(grads)
    n_tasks = obs.shape[0]
    shapes = [grads[k].shape[1:] for k in names]
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    used = max(1, math.ceil(fraction * obs.shape[1]))
    fvp = fisher_product(stacked, obs[:, :used], mask[:, :used], damping)

    def to_params(x: Tensor) -> Params:  # T x P -> task-batched dict
        return {k: part.reshape(n_tasks, *shape) for k, part, shape in zip(names, torch.split(x, sizes, 1), shapes)}

    def to_flat(x: Params) -> Tensor:  # task-batched dict -> T x P
        return torch.cat([x[k].reshape(n_tasks, -1) for k in names], 1)

    def solve(b: Tensor) -> Tensor:
        with torch.no_grad():
            return conjugate_gradient(lambda v: to_flat(fvp(to_params(v))), b.detach(), iters, tol=0.0)

    return to_params(_Solve.apply(to_flat(grads), solve))
