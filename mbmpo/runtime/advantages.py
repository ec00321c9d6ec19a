"""numpy twins of `mbmpo.meta.returns` for real transitions (tests check they agree with the library).

Episodes are padded to H with a mask: rewards and masks `N x H`, observations `N x H x D`.
"""

from __future__ import annotations

import numpy as np


def discounted_returns(rew: np.ndarray, mask: np.ndarray, gamma: float) -> np.ndarray:
    out = np.zeros_like(rew)
    running = np.zeros_like(rew[..., 0])
    for t in range(rew.shape[-1] - 1, -1, -1):
        running = (rew[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def gae(rew: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    next_values = np.concatenate([values[..., 1:] * mask[..., 1:], np.zeros_like(values[..., :1])], axis=-1)
    deltas = (rew + gamma * next_values - values) * mask
    out = np.zeros_like(rew)
    running = np.zeros_like(rew[..., 0])
    for t in range(rew.shape[-1] - 1, -1, -1):
        running = (deltas[..., t] + gamma * lam * running) * mask[..., t]
        out[..., t] = running
    return out


def baseline_features(obs: np.ndarray) -> np.ndarray:
    o = np.clip(obs, -10.0, 10.0)
    horizon = obs.shape[-2]
    t = np.broadcast_to((np.arange(horizon, dtype=obs.dtype) / 100.0).reshape(horizon, 1), (*obs.shape[:-1], 1))
    return np.concatenate([o, o * o, t, t * t, t * t * t, np.ones_like(t)], axis=-1)


def fit_linear_baseline(obs: np.ndarray, returns: np.ndarray, mask: np.ndarray, reg: float = 1e-5) -> np.ndarray:
    feats = baseline_features(obs).astype(np.float64)
    f = feats.reshape(-1, feats.shape[-1]) * mask.reshape(-1, 1)
    y = (returns * mask).reshape(-1).astype(np.float64)
    gram, rhs = f.T @ f, f.T @ y
    coef = np.zeros(feats.shape[-1])
    for _ in range(5):
        coef = np.linalg.lstsq(gram + reg * np.eye(len(gram)), rhs, rcond=None)[0]
        if np.isfinite(coef).all():
            break
        reg *= 10.0
    return (feats @ np.nan_to_num(coef)).astype(obs.dtype) * mask


def advantages(obs: np.ndarray, rew: np.ndarray, mask: np.ndarray, gamma: float, lam: float,
               normalize: bool) -> np.ndarray:
    """GAE advantages with the linear baseline fitted on this batch: N x H."""
    values = fit_linear_baseline(obs, discounted_returns(rew, mask, gamma), mask)
    adv = gae(rew, values, mask, gamma, lam)
    if normalize:
        n = max(mask.sum(), 1.0)
        mean = (adv * mask).sum() / n
        std = np.sqrt((((adv - mean) * mask) ** 2).sum() / n)
        adv = (adv - mean) / (std + 1e-8) * mask
    return adv


def pad_episodes(episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """[(obs L x D, act L x A, rew L)] -> obs N x H x D, act N x H x A, rew N x H, mask N x H."""
    horizon = max(len(r) for _, _, r in episodes)
    n, d, a = len(episodes), episodes[0][0].shape[-1], episodes[0][1].shape[-1]
    obs = np.zeros((n, horizon, d), np.float32)
    act = np.zeros((n, horizon, a), np.float32)
    rew = np.zeros((n, horizon), np.float32)
    mask = np.zeros((n, horizon), np.float32)
    for i, (o, ac, r) in enumerate(episodes):
        length = len(r)
        obs[i, :length], act[i, :length], rew[i, :length], mask[i, :length] = o[:length], ac, r, 1.0
    return obs, act, rew, mask
