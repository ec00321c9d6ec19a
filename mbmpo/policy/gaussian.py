"""Gaussian MLP policy with tanh hidden units and a learned state-independent log-std.

Parameters are a plain dict `{"w0", "b0", ..., "wL", "bL", "log_std"}`, so the inner adaptation step
is a function `params -> new params` (no module surgery). Every function also accepts *task-batched*
parameters with a leading dimension T (`w_i: T x in x out`, `log_std: T x A`) together with
observations `T x ... x D`, which evaluates T different policies in one pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Params = dict[str, Tensor]
LOG_2PI = math.log(2.0 * math.pi)


def init_params(obs_dim: int, act_dim: int, hidden: tuple[int, ...], init_std: float,
                generator: torch.Generator | None = None) -> Params:
    """Xavier-uniform weights, zero biases, log_std = log(init_std). Shapes: w_i in x out, b_i out, log_std A."""
    sizes = (obs_dim, *hidden, act_dim)
    params: Params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = math.sqrt(6.0 / (n_in + n_out))
        w = (torch.rand(n_in, n_out, generator=generator) * 2.0 - 1.0) * bound
        if i == len(sizes) - 2:
            w = w * 0.1  # a small output layer starts near the zero-mean action
        params[f"w{i}"] = w
        params[f"b{i}"] = torch.zeros(n_out)
    params["log_std"] = torch.full((act_dim,), math.log(init_std))
    return params


def n_layers(params: Params) -> int:
    return sum(1 for k in params if k.startswith("w"))


def mean_action(params: Params, obs: Tensor) -> Tensor:
    """Action mean. obs: ... x D (or T x ... x D with task-batched params) -> ... x A."""
    n = n_layers(params)
    h = obs
    batched = params["w0"].dim() == 3
    for i in range(n):
        w, b = params[f"w{i}"], params[f"b{i}"]
        if batched:  # T x ... x in @ T x in x out, with ... flattened
            shape = h.shape
            h = torch.baddbmm(b.unsqueeze(1), h.reshape(shape[0], -1, shape[-1]), w)
            h = h.reshape(*shape[:-1], w.shape[-1])
        else:
            h = torch.addmm(b, h.reshape(-1, h.shape[-1]), w).reshape(*h.shape[:-1], w.shape[-1])
        if i < n - 1:
            h = torch.tanh(h)
    return h


def log_std_like(params: Params, mean: Tensor) -> Tensor:
    """Broadcast log_std (A, or T x A for task-batched params) to the shape of `mean`."""
    log_std = params["log_std"]
    if log_std.dim() == 2:
        log_std = log_std.reshape(log_std.shape[0], *([1] * (mean.dim() - 2)), log_std.shape[1])
    return log_std.expand_as(mean)


def gaussian_log_prob(mean: Tensor, log_std: Tensor, act: Tensor) -> Tensor:
    """Diagonal Gaussian log-density, summed over the last (action) dimension: ... x A -> ...."""
    z = (act - mean) * torch.exp(-log_std)
    return -0.5 * (z * z).sum(-1) - log_std.sum(-1) - 0.5 * LOG_2PI * act.shape[-1]


def log_prob(params: Params, obs: Tensor, act: Tensor) -> Tensor:
    """log pi(a | s). obs ... x D, act ... x A -> ...."""
    mean = mean_action(params, obs)
    return gaussian_log_prob(mean, log_std_like(params, mean), act)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last dimension: ... x A -> ...."""
    var_p, var_q = torch.exp(2.0 * log_std_p), torch.exp(2.0 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2.0 * var_q) - 0.5
    return kl.sum(-1)


def sample(params: Params, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample actions; returns (act ... x A, mean ... x A). The noise is drawn on the device of `obs` and
    `params`, where `generator` (if given) must live too."""
    mean = mean_action(params, obs)
    std = torch.exp(log_std_like(params, mean))
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + std * noise, mean


def floor_std(params: Params, min_std: float) -> Params:
    """The same policy with every action std at least `min_std` (log_std A clamped at log(min_std)); the other
    entries are the same tensors. `min_std <= 0` returns `params` itself."""
    if min_std <= 0.0:
        return params
    return {**params, "log_std": params["log_std"].clamp(min=math.log(min_std))}


def stack_params(params: Params, n: int) -> Params:
    """Repeat shared params n times along a new leading task dimension (views, gradients flow back)."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}


def select(params: Params, index: int) -> Params:
    """Task `index` of task-batched params."""
    return {k: v[index] for k, v in params.items()}


def flat(params: Params) -> Tensor:
    """Concatenate all parameters into one vector (sorted keys, stable order)."""
    return torch.cat([params[k].reshape(-1) for k in sorted(params)])


def unflat(vector: Tensor, like: Params) -> Params:
    """Inverse of `flat` for parameters shaped like `like`."""
    out: Params = {}
    offset = 0
    for k in sorted(like):
        n = like[k].numel()
        out[k] = vector[offset:offset + n].reshape(like[k].shape)
        offset += n
    return out
