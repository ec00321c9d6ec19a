"""Named batch structures shared by rollouts and the meta-optimiser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the robot-side runtime uses Episode without torch
    from torch import Tensor


@dataclass(frozen=True)
class Trajectories:
    """Imagined trajectories for T tasks, N rollouts each, padded to horizon H.

    obs: T x N x H x D   state at each step
    act: T x N x H x A   policy samples (before clipping to the actuator limits)
    rew: T x N x H       r(s, clip(a), s'), zero on padded steps
    mask: T x N x H      1.0 on valid steps, 0.0 after termination
    """

    obs: Tensor
    act: Tensor
    rew: Tensor
    mask: Tensor

    @property
    def returns(self) -> Tensor:
        """Undiscounted return of every trajectory: T x N."""
        return self.rew.sum(-1)


@dataclass(frozen=True)
class Episode:
    """One real-environment episode of length L.

    obs: (L + 1) x D, act: L x A (as applied, clipped), rew: L; `terminated` is False for time-limit ends.
    """

    obs: np.ndarray
    act: np.ndarray
    rew: np.ndarray
    terminated: bool

    @property
    def length(self) -> int:
        return int(self.act.shape[0])

    @property
    def ret(self) -> float:
        return float(self.rew.sum())
