"""The robot's state rate against the control rate: a driver streaming slower than the policy acts leaves
ticks without a fresh state; one streaming faster has states dropped. Measured from arrival times, said once."""

from __future__ import annotations

from collections import deque

import numpy as np


class RateMonitor:
    """Median of the last `window` intervals between consecutive state arrivals (seconds from the caller's
    clock). `gap()` breaks the chain: the states a driver sends while it resets are not its streaming rate."""

    def __init__(self, window: int = 50, tolerance: float = 0.1):
        self.intervals: deque[float] = deque(maxlen=window)
        self.last: float | None = None
        self.tolerance = tolerance
        self.warned = False

    def feed(self, now: float) -> None:
        if self.last is not None:
            self.intervals.append(now - self.last)
        self.last = now

    def gap(self) -> None:
        """The next arrival starts a new chain (no interval is measured across a reset)."""
        self.last = None

    @property
    def hz(self) -> float | None:
        """The measured state rate, once half a window of intervals is in; None before."""
        if len(self.intervals) < max(2, (self.intervals.maxlen or 4) // 2):
            return None
        interval = float(np.median(np.asarray(self.intervals)))
        return 1.0 / interval if interval > 0 else None

    def matches(self, period: float, tolerance: float | None = None) -> bool | None:
        """Whether the state rate is within `tolerance` (default: the monitor's) of 1 / `period`; None until it
        is measured."""
        hz = self.hz
        if hz is None or not period:
            return None
        return abs(hz - 1.0 / period) <= (self.tolerance if tolerance is None else tolerance) / period

    def mismatch(self, period: float) -> str | None:
        """A one-time message when the state rate differs from 1 / `period` by more than the tolerance."""
        hz = self.hz
        if self.warned or hz is None or not period:
            return None
        control_hz = 1.0 / period
        if abs(hz - control_hz) <= self.tolerance * control_hz:
            return None
        self.warned = True
        slower = hz < control_hz
        return (f"robot states arrive at {hz:.1f} Hz but the control rate is {control_hz:.1f} Hz (period "
                f"{period:g} s): {'ticks will find no fresh state' if slower else 'states are dropped'}; set the "
                f"driver's rate or the policy node's control_period")
