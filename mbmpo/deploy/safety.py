"""Safety pieces of the control loop: a staleness watchdog, an action guard and the mode machine."""

from __future__ import annotations

import enum

import numpy as np


class Mode(enum.Enum):
    IDLE = "idle"  # no policy loaded: safe command
    SAFE = "safe"  # stale or invalid input: safe command until fresh states return
    POLICY = "policy"  # the policy drives the robot
    RESET = "reset"  # between episodes: the robot is reset, driven home, or waits for the operator


class Watchdog:
    """Stale when no fresh observation arrived within `timeout` seconds (times come from the caller)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.last: float | None = None
        self.trips = 0
        self._tripped = False

    def feed(self, now: float) -> None:
        self.last = now
        self._tripped = False

    def stale(self, now: float) -> bool:
        """True when stale; counts each transition to stale once."""
        stale = self.last is None or now - self.last > self.timeout
        if stale and not self._tripped and self.last is not None:
            self.trips += 1
            self._tripped = True
        return stale


class ActionGuard:
    """Clips actions to the limits; anything non-finite or of the wrong size becomes the safe command."""

    def __init__(self, low: np.ndarray, high: np.ndarray, safe: np.ndarray | None = None):
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.safe = np.zeros_like(self.low) if safe is None else np.asarray(safe, np.float64)
        self.rejected = 0

    def __call__(self, action: np.ndarray | None) -> np.ndarray:
        a = None if action is None else np.asarray(action, np.float64).reshape(-1)
        if a is None or a.shape != self.low.shape or not np.isfinite(a).all():
            self.rejected += action is not None
            return self.safe.copy()
        return np.clip(a, self.low, self.high)
