"""Returns, GAE and the linear baseline against hand computations."""

import torch

from mbmpo.meta.returns import advantages, baseline_features, discounted_returns, fit_linear_baseline, gae


def test_discounted_returns_by_hand() -> None:
    rew = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # R2 = 3, R1 = 2 + 0.5*3 = 3.5, R0 = 1 + 0.5*3.5 = 2.75
    assert torch.allclose(discounted_returns(rew, mask, 0.5), torch.tensor([[2.75, 3.5, 3.0, 0.0]]))


def test_gae_by_hand() -> None:
    rew = torch.tensor([[1.0, 1.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the trajectory ends after two steps: V beyond is 0
    gamma, lam = 0.9, 0.8
    d1 = 1.0 + 0.0 - 0.25
    d0 = 1.0 + gamma * 0.25 - 0.5
    expected = torch.tensor([[d0 + gamma * lam * d1, d1, 0.0]])
    assert torch.allclose(gae(rew, values, mask, gamma, lam), expected)


def test_gae_lambda_one_is_return_minus_value() -> None:
    torch.manual_seed(1)
    rew, values = torch.randn(3, 7), torch.randn(3, 7)
    mask = torch.ones(3, 7)
    mask[1, 4:] = 0.0
    out = gae(rew * mask, values * mask, mask, 0.99, 1.0)
    expected = (discounted_returns(rew * mask, mask, 0.99) - values) * mask
    assert torch.allclose(out, expected, atol=1e-5)


def test_linear_baseline_recovers_linear_returns() -> None:
    torch.manual_seed(2)
    obs = torch.rand(2, 4, 5, 3)  # T x N x H x D, within the +-10 clip
    coef = torch.randn(2, baseline_features(obs).shape[-1])
    returns = (baseline_features(obs) * coef[:, None, None, :]).sum(-1)
    mask = torch.ones(2, 4, 5)
    fitted = fit_linear_baseline(obs, returns, mask, reg=1e-10)
    assert torch.allclose(fitted, returns, atol=1e-3)


def test_advantages_normalised_per_task_and_zero_when_padded() -> None:
    torch.manual_seed(3)
    obs, rew = torch.randn(2, 3, 6, 2), torch.randn(2, 3, 6)
    mask = torch.ones(2, 3, 6)
    mask[0, 0, 3:] = 0.0
    adv = advantages(obs, rew * mask, mask, 0.99, 1.0, normalize=True)
    assert (adv[0, 0, 3:] == 0).all()
    for t in range(2):
        valid = adv[t][mask[t] > 0]
        assert abs(float(valid.mean())) < 1e-5 and abs(float(valid.std(unbiased=False)) - 1.0) < 1e-3
