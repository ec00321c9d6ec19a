"""The inner step in the Fisher metric against an explicit Fisher matrix built from autograd Jacobians."""

import pytest
import torch

from mbmpo.meta.inner import InnerStep, adapt, step_kl_curvature
from mbmpo.meta.natural import fisher_product, natural_direction
from mbmpo.policy.gaussian import flat, gaussian_kl, init_params, log_std_like, mean_action, stack_params, unflat
from mbmpo.policy.gaussian import log_prob as log_prob_of

T, N, H, D, A = 2, 3, 4, 3, 2


def _setup(hidden: tuple[int, ...] = (4,)):
    torch.manual_seed(0)
    params = {k: v.double() for k, v in init_params(D, A, hidden, 0.7, torch.Generator().manual_seed(1)).items()}
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


@pytest.mark.parametrize("hidden", [(), (4,), (4, 3)])
def test_fisher_product_equals_the_explicit_fisher_and_the_kl_curvature(hidden: tuple[int, ...]) -> None:
    stacked, obs, mask = _setup(hidden)
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


def test_a_fisher_on_a_share_of_the_rollouts_is_the_fisher_of_the_first_rollouts() -> None:
    stacked, obs, mask = _setup()
    g = {k: torch.randn_like(x) for k, x in stacked.items()}
    n_params = flat({k: x[0] for k, x in g.items()}).numel()
    d = natural_direction(stacked, g, obs, mask, iters=3 * n_params, damping=0.01, fraction=0.5)  # 2 of N = 3
    for t in range(T):
        fisher = _fisher(stacked, obs[:, :2], mask[:, :2], t) + 0.01 * torch.eye(n_params, dtype=torch.float64)
        want = torch.linalg.solve(fisher, flat({k: x[t] for k, x in g.items()}))
        assert torch.allclose(flat({k: x[t] for k, x in d.items()}), want, rtol=1e-6, atol=1e-6 * want.abs().max())
    full = natural_direction(stacked, g, obs, mask, iters=3 * n_params, damping=0.01)
    assert not torch.allclose(flat({k: x[0] for k, x in d.items()}), flat({k: x[0] for k, x in full.items()}))


def test_natural_inner_step_moves_each_task_by_the_target_kl() -> None:
    torch.manual_seed(7)
    params = init_params(3, 2, (8,), 0.3)
    obs, act = torch.randn(4, 6, 5, 3), torch.randn(4, 6, 5, 2)
    mask = torch.ones(4, 6, 5)
    adv = torch.randn(4, 6, 5) * torch.arange(1, 5).reshape(4, 1, 1)
    adapted = adapt(params, obs, act, adv, mask, InnerStep(lr=0.1, kl=1e-4, natural=True), create_graph=False)
    mean_pre, mean_post = mean_action(params, obs), mean_action(adapted, obs)
    kl = gaussian_kl(mean_pre, log_std_like(params, mean_pre), mean_post, log_std_like(adapted, mean_post))
    assert torch.allclose(kl.mean((1, 2)), torch.full((4,), 1e-4), rtol=0.05)


def test_meta_gradient_through_the_natural_step_holds_each_fisher_constant() -> None:
    """theta'_k = theta - alpha P_k g_k(theta), P_k = (F_k + damping I)^-1 at theta held constant: the gradient and a
    Hessian-vector product of a function of the adapted params, through `adapt`, against the same formula written
    with explicit matrices."""
    stacked, obs, mask = _setup()
    params = {k: v[0].clone() for k, v in stacked.items()}
    act = torch.randn(T, N, H, A, dtype=torch.float64)
    adv = torch.randn(T, N, H, dtype=torch.float64) * mask
    n_params = flat(params).numel()
    same = {k: v.unsqueeze(0).expand(T, *v.shape).contiguous() for k, v in params.items()}
    inverse = [torch.linalg.inv(_fisher(same, obs, mask, t) + 1e-3 * torch.eye(n_params, dtype=torch.float64))
               for t in range(T)]
    weights = torch.randn(T, n_params, dtype=torch.float64)

    def objective(adapted_flat: list[torch.Tensor]) -> torch.Tensor:  # any smooth function of the adapted params
        return sum((w * a).sum() + 0.5 * (a * a).sum() for w, a in zip(weights, adapted_flat))

    def by_hand(theta: torch.Tensor) -> torch.Tensor:
        out = []
        for t in range(T):
            p_t = unflat(theta, params)
            loss = -(log_prob_of(p_t, obs[t], act[t]) * adv[t] * mask[t]).sum() / mask[t].sum()
            g = torch.autograd.grad(loss, theta, create_graph=True)[0]
            out.append(theta - 0.1 * inverse[t] @ g)
        return objective(out)

    def through_adapt(theta: torch.Tensor) -> torch.Tensor:
        adapted = adapt(unflat(theta, params), obs, act, adv, mask, InnerStep(lr=0.1, natural=True, cg_iters=4 * n_params),
                        create_graph=True)
        return objective([flat({k: v[t] for k, v in adapted.items()}) for t in range(T)])

    v = torch.randn(n_params, dtype=torch.float64)
    figures = []
    for f in (by_hand, through_adapt):
        theta = flat(params).clone().requires_grad_()
        grad = torch.autograd.grad(f(theta), theta, create_graph=True)[0]
        figures.append((grad.detach(), torch.autograd.grad(grad @ v, theta)[0]))
    (g_hand, hv_hand), (g_adapt, hv_adapt) = figures
    assert torch.allclose(g_adapt, g_hand, rtol=1e-6, atol=1e-8)
    assert torch.allclose(hv_adapt, hv_hand, rtol=1e-5, atol=1e-7)


def test_a_natural_step_with_learned_step_sizes_is_refused_in_one_line() -> None:
    from mbmpo.config import MetaConfig
    from mbmpo.errors import UserError

    with pytest.raises(UserError, match="inner_natural and meta.learn_inner_lr"):
        MetaConfig(inner_natural=True, learn_inner_lr=True)
    with pytest.raises(UserError, match="meta.inner_fisher_subsample must be in"):
        MetaConfig(inner_natural=True, inner_fisher_subsample=0.0)
    with pytest.raises(UserError, match="meta.inner_cg_iters must be >= 1"):
        MetaConfig(inner_natural=True, inner_cg_iters=0)
