"""The robot's state rate against the control rate: a driver streaming slower than the policy acts leaves
ticks without a fresh state; one streaming faster has states dropped. Measured from arrival times, said once."""

from __future__ import annotations

from collections import deque

import numpy as np


class RateMonitor:
    """Median interval of the last `window` state arrivals (seconds from the caller's clock)."""

    def __init__(self, window: int = 50, tolerance: float = 0.1):
        self.arrivals: deque[float] = deque(maxlen=window + 1)
        self.tolerance = tolerance
        self.warned = False

    def feed(self, now: float) -> None:
        self.arrivals.append(now)

    @property
    def hz(self) -> float | None:
        """The measured state rate, once half a window of intervals is in; None before."""
        if len(self.arrivals) < max(3, self.arrivals.maxlen // 2 if self.arrivals.maxlen else 3):
            return None
        interval = float(np.median(np.diff(np.asarray(self.arrivals))))
        return 1.0 / interval if interval > 0 else None

    def matches(self, period: float) -> bool | None:
        """Whether the state rate is within the tolerance of 1 / `period`; None until it is measured."""
        hz = self.hz
        if hz is None or not period:
            return None
        return abs(hz - 1.0 / period) <= self.tolerance / period

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
