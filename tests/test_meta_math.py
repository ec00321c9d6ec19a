"""The inner step, the meta-gradient and the TRPO step against autograd, finite differences and the KL bound."""

import pytest
import torch

from mbmpo.config import MetaConfig
from mbmpo.meta.inner import STEP_PREFIX, InnerStep, adapt, policy_part, with_learned_step_sizes
from mbmpo.meta.outer import MetaBatch, _old_post_policy, _surrogate_and_kl, adapted_params, trpo_step
from mbmpo.meta.trpo import conjugate_gradient
from mbmpo.policy.gaussian import floor_std, gaussian_kl, init_params, log_prob, log_std_like, mean_action
from mbmpo.types import Trajectories


def _traj(n_tasks: int, n: int, h: int, d: int, a: int, dtype=torch.float32) -> Trajectories:
    mask = torch.ones(n_tasks, n, h, dtype=dtype)
    mask[:, 0, h // 2:] = 0.0
    return Trajectories(obs=torch.randn(n_tasks, n, h, d, dtype=dtype), act=torch.randn(n_tasks, n, h, a, dtype=dtype),
                        rew=torch.randn(n_tasks, n, h, dtype=dtype) * mask, mask=mask)


def _double(params):
    return {k: v.double() for k, v in params.items()}


def test_inner_step_equals_manual_gradient_step() -> None:
    params = init_params(3, 2, (8,), 1.0)
    tr = _traj(3, 4, 5, 3, 2)
    adv = torch.randn(3, 4, 5) * tr.mask
    adapted = adapt(params, tr.obs, tr.act, adv, tr.mask, step=0.1, create_graph=False)
    for t in range(3):
        leaf = {k: v.clone().requires_grad_() for k, v in params.items()}
        lp = log_prob(leaf, tr.obs[t], tr.act[t])
        loss = -(lp * adv[t] * tr.mask[t]).sum() / tr.mask[t].sum()  # hand-written VPG loss of task t
        loss.backward()
        for k in params:
            assert torch.allclose(adapted[k][t], params[k] - 0.1 * leaf[k].grad, atol=1e-6), k


def test_meta_gradient_reaches_pre_update_params_and_matches_finite_differences() -> None:
    torch.manual_seed(4)
    params = _double(init_params(2, 1, (4,), 1.0))
    pre, post = _traj(2, 3, 4, 2, 1, torch.float64), _traj(2, 3, 4, 2, 1, torch.float64)
    batch = MetaBatch(pre, torch.randn(2, 3, 4, dtype=torch.float64) * pre.mask, post,
                      torch.randn(2, 3, 4, dtype=torch.float64) * post.mask)
    lr = 0.5  # large, so the second-order term matters
    old = _old_post_policy(params, batch, lr)
    theta = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss, _, _ = _surrogate_and_kl(theta, batch, lr, True, old)
    grads = torch.autograd.grad(loss, list(theta.values()))
    assert all(g.abs().sum() > 0 for g in grads)  # every pre-update parameter receives gradient
    eps = 1e-6
    for (k, v), g in zip(theta.items(), grads):
        for idx in [(0,) * v.dim(), tuple(s - 1 for s in v.shape)]:
            plus = {kk: vv.detach().clone() for kk, vv in theta.items()}
            minus = {kk: vv.detach().clone() for kk, vv in theta.items()}
            plus[k][idx] += eps
            minus[k][idx] -= eps
            fd = (float(_surrogate_and_kl(plus, batch, lr, False, old)[0].detach())
                  - float(_surrogate_and_kl(minus, batch, lr, False, old)[0].detach())) / (2 * eps)
            assert abs(fd - float(g[idx])) < 1e-6 * max(1.0, abs(fd)), (k, idx, fd, float(g[idx]))


def test_first_order_gradient_differs_from_second_order() -> None:
    torch.manual_seed(5)
    params = _double(init_params(2, 1, (4,), 1.0))
    pre, post = _traj(2, 3, 4, 2, 1, torch.float64), _traj(2, 3, 4, 2, 1, torch.float64)
    batch = MetaBatch(pre, torch.randn(2, 3, 4, dtype=torch.float64), post, torch.randn(2, 3, 4, dtype=torch.float64))
    old = _old_post_policy(params, batch, 0.5)
    out = []
    for second in (True, False):
        theta = {k: v.clone().requires_grad_() for k, v in params.items()}
        loss, _, _ = _surrogate_and_kl(theta, batch, 0.5, second, old)
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(theta.values()))]))
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_conjugate_gradient_solves_spd_system() -> None:
    torch.manual_seed(6)
    m = torch.randn(6, 6, dtype=torch.float64)
    a = m @ m.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=20)
    assert torch.allclose(a @ x, b, atol=1e-8)


def test_conjugate_gradient_solves_a_batch_of_systems_each_with_its_own_steps() -> None:
    torch.manual_seed(6)
    m = torch.randn(3, 6, 6, dtype=torch.float64)
    a = m @ m.transpose(1, 2) + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(3, 6, dtype=torch.float64)
    b[1] = 0.0  # a row already solved stays at zero, no 0 / 0
    x = conjugate_gradient(lambda v: torch.einsum("bij,bj->bi", a, v), b, iters=20)
    assert torch.allclose(torch.einsum("bij,bj->bi", a, x), b, atol=1e-8) and bool((x[1] == 0).all())


def test_trpo_step_respects_kl_bound_and_improves_surrogate() -> None:
    torch.manual_seed(7)
    params = init_params(3, 2, (16,), 1.0)
    pre, post = _traj(2, 8, 10, 3, 2), _traj(2, 8, 10, 3, 2)
    # post-update data sampled from the adapted policies, advantages favour larger first action
    batch0 = MetaBatch(pre, torch.randn(2, 8, 10) * pre.mask, post, post.act[..., 0] * post.mask)
    cfg = MetaConfig(max_kl=0.01, inner_lr=0.05)
    new, stats = trpo_step(params, batch0, cfg)
    assert stats.backtracks >= 0
    assert stats.kl <= cfg.max_kl
    assert stats.loss_after < stats.loss_before
    old = _old_post_policy(params, batch0, cfg.inner_lr)
    loss, kl, _ = _surrogate_and_kl(new, batch0, cfg.inner_lr, False, old)
    assert float(kl.detach()) <= cfg.max_kl and float(loss.detach()) < stats.loss_before
    assert any(not torch.equal(new[k], params[k]) for k in params)


def test_trpo_step_with_subsampled_fisher_still_respects_kl_bound() -> None:
    torch.manual_seed(8)
    params = init_params(3, 2, (16,), 1.0)
    pre, post = _traj(2, 10, 10, 3, 2), _traj(2, 10, 10, 3, 2)
    batch = MetaBatch(pre, torch.randn(2, 10, 10) * pre.mask, post, post.act[..., 0] * post.mask)
    cfg = MetaConfig(max_kl=0.01, inner_lr=0.05, cg_subsample=0.3)
    _, stats = trpo_step(params, batch, cfg)
    assert stats.backtracks >= 0 and stats.kl <= cfg.max_kl and stats.loss_after < stats.loss_before


def test_trpo_step_given_the_sampling_post_params_matches_recomputing_them() -> None:
    torch.manual_seed(9)
    params = init_params(3, 2, (16,), 1.0)
    pre, post = _traj(2, 8, 10, 3, 2), _traj(2, 8, 10, 3, 2)
    pre_adv = torch.randn(2, 8, 10) * pre.mask
    cfg = MetaConfig(max_kl=0.01, inner_lr=0.05)
    adapted = {k: v.detach() for k, v in adapted_params(params, MetaBatch(pre, pre_adv, post, post.act[..., 0]),
                                                        cfg.inner_lr, False).items()}
    given, _ = trpo_step(params, MetaBatch(pre, pre_adv, post, post.act[..., 0] * post.mask, adapted), cfg)
    recomputed, _ = trpo_step(params, MetaBatch(pre, pre_adv, post, post.act[..., 0] * post.mask), cfg)
    for k in params:
        torch.testing.assert_close(given[k], recomputed[k], rtol=1e-6, atol=1e-7)


def test_learned_step_sizes_scale_each_element_of_the_inner_step() -> None:
    torch.manual_seed(5)
    params = with_learned_step_sizes(init_params(3, 2, (8,), 1.0), inner_lr=0.1)
    params[STEP_PREFIX + "w0"] = torch.randn_like(params["w0"])  # a different alpha per element
    tr = _traj(2, 4, 5, 3, 2)
    adv = torch.randn(2, 4, 5) * tr.mask
    adapted = adapt(params, tr.obs, tr.act, adv, tr.mask, step=123.0, create_graph=False)  # the fixed alpha is unused
    assert sorted(adapted) == sorted(policy_part(params))
    for t in range(2):
        leaf = {k: v.clone().requires_grad_() for k, v in policy_part(params).items()}
        loss = -(log_prob(leaf, tr.obs[t], tr.act[t]) * adv[t] * tr.mask[t]).sum() / tr.mask[t].sum()
        loss.backward()
        for k in leaf:
            alpha = torch.exp(params[STEP_PREFIX + k])
            assert torch.allclose(adapted[k][t], params[k] - alpha * leaf[k].grad, atol=1e-6), k


def test_meta_gradient_reaches_learned_step_sizes_and_matches_finite_differences() -> None:
    torch.manual_seed(6)
    params = _double(with_learned_step_sizes(init_params(2, 1, (4,), 1.0), inner_lr=0.3))
    pre, post = _traj(2, 3, 4, 2, 1, torch.float64), _traj(2, 3, 4, 2, 1, torch.float64)
    batch = MetaBatch(pre, torch.randn(2, 3, 4, dtype=torch.float64) * pre.mask, post,
                      torch.randn(2, 3, 4, dtype=torch.float64) * post.mask)
    old = _old_post_policy(params, batch, 0.3)
    theta = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss, _, _ = _surrogate_and_kl(theta, batch, 0.3, True, old)
    names = [k for k in theta if k.startswith(STEP_PREFIX)]
    grads = torch.autograd.grad(loss, [theta[k] for k in names])
    eps = 1e-6
    for k, g in zip(names, grads):
        idx = (0,) * theta[k].dim()
        plus = {kk: vv.detach().clone() for kk, vv in theta.items()}
        minus = {kk: vv.detach().clone() for kk, vv in theta.items()}
        plus[k][idx] += eps
        minus[k][idx] -= eps
        fd = (float(_surrogate_and_kl(plus, batch, 0.3, False, old)[0].detach())
              - float(_surrogate_and_kl(minus, batch, 0.3, False, old)[0].detach())) / (2 * eps)
        assert abs(fd - float(g[idx])) < 1e-6 * max(1.0, abs(fd)), (k, fd, float(g[idx]))


def test_kl_normalised_inner_step_moves_each_task_by_the_target_kl() -> None:
    torch.manual_seed(7)
    params = init_params(3, 2, (8,), 0.3)
    tr = _traj(4, 6, 5, 3, 2)
    adv = torch.randn(4, 6, 5) * tr.mask * torch.arange(1, 5).reshape(4, 1, 1)  # tasks of different scales
    adapted = adapt(params, tr.obs, tr.act, adv, tr.mask, InnerStep(lr=0.1, kl=1e-4), create_graph=False)
    mean_pre = mean_action(params, tr.obs)
    mean_post = mean_action(adapted, tr.obs)
    kl = gaussian_kl(mean_pre, log_std_like(params, mean_pre), mean_post, log_std_like(adapted, mean_post))
    per_task = (kl * tr.mask).sum((1, 2)) / tr.mask.sum((1, 2))
    assert torch.allclose(per_task, torch.full((4,), 1e-4), rtol=0.05), per_task  # second order: small step


def test_std_floor_raises_only_the_stds_below_it() -> None:
    params = init_params(3, 2, (4,), 1.0)
    params["log_std"] = torch.log(torch.tensor([0.1, 0.5]))
    floored = floor_std(params, 0.2)
    assert torch.allclose(torch.exp(floored["log_std"]), torch.tensor([0.2, 0.5]))
    assert floored["w0"] is params["w0"] and torch.allclose(torch.exp(params["log_std"]), torch.tensor([0.1, 0.5]))
    assert floor_std(params, 0.0) is params


def test_return_falling_compares_consecutive_window_means() -> None:
    from mbmpo.meta.loop import return_falling

    assert not return_falling([1, 2, 3], 2)  # too short to judge
    assert not return_falling([1, 2, 3, 4], 2)
    assert return_falling([1, 5, 3, 2], 2)  # mean 2.5 < mean 3.0
    assert not return_falling([5, 1, 3, 2], 0)  # off


@pytest.mark.parametrize("step", [InnerStep(lr=0.05), InnerStep(lr=0.1, kl=0.02)], ids=["fixed alpha", "kl step"])
def test_gauss_newton_fisher_product_equals_the_kl_hessian_through_the_inner_step(step: InnerStep) -> None:
    """The outer step's KL Hessian in theta, by autograd through the second-order inner step, against
    sum_k J_k^T F_k J_k (double precision: the two must agree to rounding)."""
    from mbmpo.meta.fisher import gauss_newton_fvp

    torch.manual_seed(11)
    params = _double(init_params(3, 2, (8, 8), 0.7))
    pre, post = _traj(3, 4, 6, 3, 2, torch.float64), _traj(3, 4, 6, 3, 2, torch.float64)
    batch = MetaBatch(pre, torch.randn(3, 4, 6, dtype=torch.float64) * pre.mask, post, post.act[..., 0] * post.mask)
    theta = {k: v.clone().requires_grad_() for k, v in params.items()}
    names = sorted(theta)
    old = _old_post_policy(theta, batch, step)
    _, kl, _ = _surrogate_and_kl(theta, batch, step, True, old)
    kl_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, [theta[k] for k in names],
                                                                      create_graph=True)])
    fvp = gauss_newton_fvp(params, pre, batch.pre_adv, post, old[0], old[1], step)
    for _ in range(3):
        v = torch.randn(kl_grad.shape[0], dtype=torch.float64)
        exact = torch.cat([h.reshape(-1) for h in torch.autograd.grad(kl_grad @ v, [theta[k] for k in names],
                                                                        retain_graph=True)])
        torch.testing.assert_close(fvp(v), exact, rtol=1e-8, atol=1e-10)
    assert float(kl_grad.detach().norm()) < 1e-8  # at the old point, where Gauss-Newton is exact
