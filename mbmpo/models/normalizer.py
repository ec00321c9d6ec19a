"""Standardisation statistics (mean, std) as a tiny module so they travel with the ensemble's state."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """x -> (x - mean) / std per feature; std floored at `min_std`."""

    mean: Tensor  # size (a buffer: saved with the module, moved with it)
    std: Tensor  # size

    def __init__(self, size: int, min_std: float = 1e-6):
        super().__init__()
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    def fit(self, data: Tensor) -> None:
        """Set the statistics from data: B x size."""
        self.mean.copy_(data.mean(0))
        self.std.copy_(data.std(0, unbiased=False).clamp_min(self.min_std))

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, z: Tensor) -> Tensor:
        return z * self.std + self.mean
