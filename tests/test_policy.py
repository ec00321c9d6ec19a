"""The functional Gaussian policy against torch.distributions."""

import torch
from torch.distributions import Normal, kl_divergence

from mbmpo.policy.gaussian import flat, gaussian_kl, init_params, log_prob, mean_action, select, stack_params, unflat


def test_log_prob_matches_torch_distributions() -> None:
    params = init_params(3, 2, (8, 8), 0.7)
    obs, act = torch.randn(10, 3), torch.randn(10, 2)
    mean = mean_action(params, obs)
    expected = Normal(mean, params["log_std"].exp()).log_prob(act).sum(-1)
    assert torch.allclose(log_prob(params, obs, act), expected, atol=1e-5)


def test_kl_matches_torch_distributions() -> None:
    m1, m2, s1, s2 = torch.randn(5, 2), torch.randn(5, 2), torch.randn(2) * 0.3, torch.randn(2) * 0.3
    expected = kl_divergence(Normal(m1, s1.exp()), Normal(m2, s2.exp())).sum(-1)
    assert torch.allclose(gaussian_kl(m1, s1.expand_as(m1), m2, s2.expand_as(m2)), expected, atol=1e-5)


def test_task_batched_params_equal_per_task_evaluation() -> None:
    params = init_params(4, 3, (16,), 1.0)
    batched = {k: v + 0.1 * torch.randn(v.shape) for k, v in stack_params(params, 3).items()}
    obs, act = torch.randn(3, 5, 7, 4), torch.randn(3, 5, 7, 3)
    out = log_prob(batched, obs, act)
    for t in range(3):
        assert torch.allclose(out[t], log_prob(select(batched, t), obs[t], act[t]), atol=1e-5)


def test_flat_unflat_round_trip() -> None:
    params = init_params(4, 3, (16, 8), 1.0)
    back = unflat(flat(params), params)
    assert all(torch.equal(back[k], params[k]) for k in params)
