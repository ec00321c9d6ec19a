"""The two ONNX graphs of a bundle, written as ordinary tensor operations (autograd does not export).

Both take the policy parameters as graph inputs (`w0, b0, ..., wL, bL, log_std`), so one graph runs the
meta-policy, any adapted policy, or any of the K exploration policies.

- `PolicyGraph`: obs B x D -> (mean B x A, log_std A)
- `AdaptGraph`: (params, obs B x D, act B x A, adv B, alpha) -> adapted params, the ONE inner VPG step
  theta' = theta - alpha grad L with L = -mean_i A_i log pi(a_i | s_i), its backward pass written by hand.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def param_names(n_layers: int) -> list[str]:
    """Graph input names of the parameters, in order."""
    return [n for i in range(n_layers) for n in (f"w{i}", f"b{i}")] + ["log_std"]


def _forward(obs: Tensor, weights: list[Tensor], biases: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Mean action and the hidden activations [obs, h1, ..., h_{L-1}] needed by the backward pass."""
    hs = [obs]
    h = obs
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w + b
        if i < len(weights) - 1:
            h = torch.tanh(h)
            hs.append(h)
    return h, hs


class PolicyGraph(nn.Module):
    """obs, w0, b0, ..., log_std -> (mean, log_std)."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.n_layers = n_layers

    def forward(self, obs: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        weights, biases = list(params[0:-1:2]), list(params[1:-1:2])
        mean, _ = _forward(obs, weights, biases)
        return mean, params[-1]


def vpg_gradient(obs: Tensor, act: Tensor, adv: Tensor, weights: list[Tensor], biases: list[Tensor],
                 log_std: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Hand-written gradient of L = -mean_i A_i log N(a_i; mu(s_i), sigma) for a tanh MLP.

    obs B x D, act B x A, adv B -> (dW per layer, db per layer, dlog_std A).
    """
    n = obs.shape[0]
    mean, hs = _forward(obs, weights, biases)
    inv_var = torch.exp(-2.0 * log_std)
    diff = act - mean
    scale = -adv.unsqueeze(-1) / n  # dL/dlogp_i = -A_i / B
    g = scale * diff * inv_var  # dL/dmu: B x A
    g_log_std = (scale * (diff * diff * inv_var - 1.0)).sum(0)
    d_w: list[Tensor] = []
    d_b: list[Tensor] = []
    for i in range(len(weights) - 1, -1, -1):
        d_w.insert(0, hs[i].transpose(0, 1) @ g)
        d_b.insert(0, g.sum(0))
        if i > 0:
            h = hs[i]
            g = (g @ weights[i].transpose(0, 1)) * (1.0 - h * h)
    return d_w, d_b, g_log_std


class AdaptGraph(nn.Module):
    """w0, b0, ..., log_std, obs, act, adv, alpha -> adapted w0, b0, ..., log_std."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.n_layers = n_layers

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        n_params = 2 * self.n_layers + 1
        params, (obs, act, adv, alpha) = inputs[:n_params], inputs[n_params:]
        weights, biases, log_std = list(params[0:-1:2]), list(params[1:-1:2]), params[-1]
        d_w, d_b, d_log_std = vpg_gradient(obs, act, adv, weights, biases, log_std)
        out: list[Tensor] = []
        for w, b, dw, db in zip(weights, biases, d_w, d_b):
            out += [w - alpha * dw, b - alpha * db]
        out.append(log_std - alpha * d_log_std)
        return tuple(out)
