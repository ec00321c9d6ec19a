"""K dynamics models as ONE module with stacked weights (E x in x out), evaluated in one batched pass.

Each member predicts the standardised change of state, delta = s' - s, from standardised (s, a).
Layers use weight normalisation: W[e, :, j] = g[e, j] * v[e, :, j] / ||v[e, :, j]||.
With `model.precision` bf16 (or auto on hardware that has it) the layers multiply in bfloat16 under autocast;
weights, gradients, the optimiser and every output stay float32. `model.imagine_precision`, when set, applies
inside `frozen_weights` (the imagination) instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mbmpo.config import ModelConfig
from mbmpo.device import compute_dtype
from mbmpo.models.normalizer import Normalizer

_ACT: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "tanh": torch.tanh, "swish": F.silu}


class EnsembleLinear(nn.Module):
    """E independent linear layers: x E x B x in -> E x B x out."""

    def __init__(self, members: int, n_in: int, n_out: int, weight_norm: bool):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        v = torch.empty(members, n_in, n_out).uniform_(-bound * math.sqrt(3.0), bound * math.sqrt(3.0))
        self.weight_norm = weight_norm
        self.v = nn.Parameter(v)
        self.g = nn.Parameter(v.norm(dim=1, keepdim=True)) if weight_norm else None
        self.b = nn.Parameter(torch.zeros(members, 1, n_out))
        self.cached: Tensor | None = None  # the normalised weight, set only while weights are frozen

    def weight(self) -> Tensor:
        if self.cached is not None:
            return self.cached
        if self.g is None:
            return self.v
        return self.v * (self.g / self.v.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.b, x, self.weight())


class DynamicsEnsemble(nn.Module):
    """The ensemble with its input and target normalisers.

    `forward` works in normalised space: E x B x (D + A) -> E x B x D. `predict` maps raw states
    and actions (E x B x D, E x B x A) to raw next states E x B x D.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: ModelConfig):
        super().__init__()
        self.obs_dim, self.act_dim, self.members = obs_dim, act_dim, cfg.ensemble_size
        sizes = (obs_dim + act_dim, *cfg.hidden, obs_dim)
        self.layers = nn.ModuleList(
            EnsembleLinear(cfg.ensemble_size, a, b, cfg.weight_norm) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation: Callable[[Tensor], Tensor] = _ACT[cfg.activation]
        self.activation_name = cfg.activation  # the runtime's models name it (mbmpo.runtime.models)
        self.precision = cfg.precision
        self.imagine_precision = cfg.imagine_precision or cfg.precision
        self._dtypes: dict[tuple[torch.device, bool], torch.dtype] = {}  # per (device, imagining), resolved once
        self._imagining = False  # inside `frozen_weights`: the imagination's precision applies
        self.in_norm = Normalizer(obs_dim + act_dim, cfg.min_std)
        self.out_norm = Normalizer(obs_dim, cfg.min_std)

    def matmul_dtype(self, device: torch.device, imagining: bool = False) -> torch.dtype:
        """The layers' compute dtype on `device` (`model.precision`, or `imagine_precision` for the
        imagination, resolved there once)."""
        key = (device, imagining)
        if key not in self._dtypes:
            self._dtypes[key] = compute_dtype(self.imagine_precision if imagining else self.precision, device)
        return self._dtypes[key]

    def forward(self, x: Tensor) -> Tensor:
        dtype = self.matmul_dtype(x.device, self._imagining)
        if dtype == torch.float32:
            return self._layers(x)
        with torch.autocast(x.device.type, dtype=dtype):
            return self._layers(x).float()

    def _layers(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x

    def fit_normalizers(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> None:
        """Recompute the standardisation from all data: B x D, B x A, B x D."""
        self.in_norm.fit(torch.cat([obs, act], -1))
        self.out_norm.fit(next_obs - obs)

    def normalized_io(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor]:
        """Network inputs and targets for raw transitions (any leading shape)."""
        return self.in_norm.normalize(torch.cat([obs, act], -1)), self.out_norm.normalize(next_obs - obs)

    @contextlib.contextmanager
    def frozen_weights(self) -> Iterator[None]:
        """Compute the weight-normalised weights once for many forward passes (imagination), not per pass."""
        layers = [m for m in self.layers if isinstance(m, EnsembleLinear)]
        with torch.no_grad():
            for layer in layers:
                layer.cached = None
                weight = layer.weight()  # cast once here, not by autocast at every pass
                layer.cached = weight.to(self.matmul_dtype(weight.device, imagining=True))
        self._imagining = True
        try:
            yield
        finally:
            self._imagining = False
            for layer in layers:
                layer.cached = None

    @torch.no_grad()
    def predict(self, obs: Tensor, act: Tensor) -> Tensor:
        """Raw next states: obs E x B x D, act E x B x A -> E x B x D (member e sees batch e)."""
        x = self.in_norm.normalize(torch.cat([obs, act], -1))
        return obs + self.out_norm.denormalize(self(x))
