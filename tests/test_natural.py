"""The inner step in the Fisher metric against an explicit Fisher matrix built from autograd Jacobians."""

import pytest
import torch

from mbmpo.meta.inner import InnerStep, adapt, step_kl_curvature
from mbmpo.meta.natural import fisher_product, natural_direction
from mbmpo.policy.gaussian import flat, gaussian_kl, init_params, log_std_like, mean_action, stack_params, unflat

T, N, H, D, A = 2, 3, 4, 3, 2


def _setup():
    torch.manual_seed(0)
    params = {k: v.double() for k, v in init_params(D, A, (4,), 0.7, torch.Generator().manual_seed(1)).items()}
    params["log_std"] = torch.tensor([-0.3, 0.2], dtype=torch.float64)
    stacked = {k: (v + 0.1 * torch.randn_like(v)).contiguous() for k, v in stack_params(params, T).items()}
    obs = torch.randn(T, N, H, D, dtype=torch.float64)
    mask = (torch.rand(T, N, H) > 0.3).double()
    return stacked, obs, mask


def _fisher(stacked, obs, mask, t: int) -> torch.Tensor:
    """Task t's Fisher matrix by hand: mean_valid J^T diag(1/sigma^2) J over the flat params, + 2 I on log_std."""
    policy = {k: v[t] for k, v in stacked.items()}
    jac = torch.autograd.functional.jacobian(lambda x: mean_action(unflat(x, policy), obs[t]).reshape(-1, A),
                                             flat(policy))  # (N H) x A x P
    m = mask[t].reshape(-1)
    fisher = torch.einsum("s,sap,a,saq->pq", m, jac, torch.exp(-2.0 * policy["log_std"]), jac) / m.sum()
    offset = 0
    for k in sorted(policy):
        n = policy[k].numel()
        if k == "log_std":
            fisher[offset:offset + n, offset:offset + n] += 2.0 * torch.eye(n, dtype=fisher.dtype)
        offset += n
    return fisher


def test_fisher_product_equals_the_explicit_fisher_and_the_kl_curvature() -> None:
    stacked, obs, mask = _setup()
    v = {k: torch.randn_like(x) for k, x in stacked.items()}
    fv = fisher_product(stacked, obs, mask, damping=0.01)(v)
    quad = step_kl_curvature(stacked, v, obs, mask)
    for t in range(T):
        fisher = _fisher(stacked, obs, mask, t)
        vt = flat({k: x[t] for k, x in v.items()})
        want = (fisher + 0.01 * torch.eye(fisher.shape[0], dtype=fisher.dtype)) @ vt
        assert torch.allclose(flat({k: x[t] for k, x in fv.items()}), want, atol=1e-10)
        assert torch.isclose(quad[t], vt @ fisher @ vt, rtol=1e-10)


def test_natural_direction_solves_each_tasks_damped_fisher_system() -> None:
    stacked, obs, mask = _setup()
    g = {k: torch.randn_like(x) for k, x in stacked.items()}
    n_params = flat({k: x[0] for k, x in g.items()}).numel()
    d = natural_direction(stacked, g, obs, mask, iters=3 * n_params, damping=0.01)
    for t in range(T):
        fisher = _fisher(stacked, obs, mask, t) + 0.01 * torch.eye(n_params, dtype=torch.float64)
        want = torch.linalg.solve(fisher, flat({k: x[t] for k, x in g.items()}))
        assert torch.allclose(flat({k: x[t] for k, x in d.items()}), want, rtol=1e-6, atol=1e-6 * want.abs().max())


def test_natural_inner_step_moves_each_task_by_the_target_kl_and_is_not_differentiated_through() -> None:
    torch.manual_seed(7)
    params = init_params(3, 2, (8,), 0.3)
    obs, act = torch.randn(4, 6, 5, 3), torch.randn(4, 6, 5, 2)
    mask = torch.ones(4, 6, 5)
    adv = torch.randn(4, 6, 5) * torch.arange(1, 5).reshape(4, 1, 1)
    adapted = adapt(params, obs, act, adv, mask, InnerStep(lr=0.1, kl=1e-4, natural=True), create_graph=False)
    mean_pre, mean_post = mean_action(params, obs), mean_action(adapted, obs)
    kl = gaussian_kl(mean_pre, log_std_like(params, mean_pre), mean_post, log_std_like(adapted, mean_post))
    assert torch.allclose(kl.mean((1, 2)), torch.full((4,), 1e-4), rtol=0.05)
    with pytest.raises(ValueError, match="natural inner step"):
        adapt(params, obs, act, adv, mask, InnerStep(lr=0.1, kl=1e-4, natural=True), create_graph=True)
