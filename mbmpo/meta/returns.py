"""Pure functions for returns, GAE and the linear feature baseline, on padded masked batches.

Shapes: rewards and masks are `... x H`; valid steps form a prefix of each trajectory (mask 1 then 0).
"""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rew: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """R_t = r_t + gamma * R_{t+1}, zero after the last valid step. ... x H -> ... x H."""
    out = torch.zeros_like(rew)
    running = torch.zeros_like(rew[..., 0])
    for t in range(rew.shape[-1] - 1, -1, -1):
        running = (rew[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def gae(rew: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimation with V = 0 past the last valid step.

    delta_t = r_t + gamma V_{t+1} - V_t;  A_t = delta_t + gamma lam A_{t+1}.  ... x H -> ... x H.
    """
    horizon = rew.shape[-1]
    next_values = torch.cat([values[..., 1:] * mask[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = (rew + gamma * next_values - values) * mask
    out = torch.zeros_like(rew)
    running = torch.zeros_like(rew[..., 0])
    for t in range(horizon - 1, -1, -1):
        running = (deltas[..., t] + gamma * lam * running) * mask[..., t]
        out[..., t] = running
    return out


def baseline_features(obs: Tensor) -> Tensor:
    """rllab's linear feature baseline features: [o, o^2, t, t^2, t^3, 1] with o clipped to +-10, t = step/100.

    obs: ... x H x D -> ... x H x (2D + 4).
    """
    o = obs.clamp(-10.0, 10.0)
    horizon = obs.shape[-2]
    t = torch.arange(horizon, dtype=obs.dtype, device=obs.device) / 100.0
    t = t.reshape(horizon, 1).expand(*obs.shape[:-1], 1)
    return torch.cat([o, o * o, t, t * t, t * t * t, torch.ones_like(t)], dim=-1)


def fit_linear_baseline(obs: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Per-task ridge regression of returns on baseline features; returns the fitted values.

    obs: T x N x H x D, returns and mask: T x N x H -> values T x N x H.
    The ridge coefficient grows tenfold (up to 5 times) while the solution is not finite, as in rllab.
    """
    feats = baseline_features(obs).double()  # T x N x H x F
    n_tasks, n_feat = feats.shape[0], feats.shape[-1]
    f = feats.reshape(n_tasks, -1, n_feat) * mask.reshape(n_tasks, -1, 1).double()
    y = (returns * mask).reshape(n_tasks, -1, 1).double()
    gram, rhs = f.transpose(1, 2) @ f, f.transpose(1, 2) @ y
    eye = torch.eye(n_feat, dtype=torch.float64, device=obs.device)
    coef = torch.zeros(n_tasks, n_feat, 1, dtype=torch.float64, device=obs.device)
    for _ in range(5):
        coef = torch.linalg.lstsq(gram + reg * eye, rhs).solution
        if torch.isfinite(coef).all():
            break
        reg *= 10.0
    coef = torch.nan_to_num(coef)
    return (feats @ coef.unsqueeze(1)).squeeze(-1).to(obs.dtype) * mask


def advantages(obs: Tensor, rew: Tensor, mask: Tensor, gamma: float, lam: float, normalize: bool) -> Tensor:
    """GAE advantages with a per-task linear baseline; optionally centred and scaled per task.

    obs: T x N x H x D, rew and mask: T x N x H -> T x N x H (zero on padded steps).
    """
    values = fit_linear_baseline(obs, discounted_returns(rew, mask, gamma), mask)
    adv = gae(rew, values, mask, gamma, lam)
    if normalize:
        n = mask.sum((1, 2), keepdim=True).clamp_min(1.0)
        mean = (adv * mask).sum((1, 2), keepdim=True) / n
        var = (((adv - mean) * mask) ** 2).sum((1, 2), keepdim=True) / n
        adv = (adv - mean) / (var.sqrt() + 1e-8) * mask
    return adv
