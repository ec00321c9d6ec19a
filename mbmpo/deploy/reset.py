"""How a robot gets back to an episode's start, for robots with and without a reset service.

Modes (the policy node's `reset` parameter, the graphs' `reset` launch argument):
- `service`: call a std_srvs/Trigger and wait for its response; the episode starts from the first state
  stamped after it (after the request in lock-step, where the simulator publishes its reset state while
  answering and moves only on commands).
- `home`: drive the actuated joints to a home configuration with a bounded PD law until every listed joint
  is within tolerance and nearly still, then start the episode there.
- `operator`: hold the safe command until a person says go (Enter in the mbmpo-bringup terminal, or the
  policy node's `~/start_episode` Trigger); then as `service`.
- `none`: continuing episodes: the next starts where the last one ended (said once in the log).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESET_MODES = ("service", "home", "operator", "none")


@dataclass(frozen=True)
class HomeSpec:
    """Where `reset:=home` drives the robot and how. Gains are in action units per rad (or m) and per rad/s."""

    positions: Mapping[str, float]  # joint -> home position
    actuators: Sequence[str]  # the joint each action entry drives ('' = none: held at the safe command)
    kp: float = 1.0
    kd: float = 0.1
    limit: float = 0.5  # fraction of each action's range the PD law may use
    tolerance: float = 0.05  # |position error| at home, every listed joint
    velocity_tolerance: float = 0.1  # |velocity| at home, every listed joint
    timeout_s: float = 30.0  # warn when home is not reached in this long (and keep driving)
    driven: tuple[int, ...] = field(init=False)  # action entries that drive a listed joint

    def __post_init__(self) -> None:
        if not self.positions:
            raise ValueError("home: no joint positions given")
        bad = [j for j, v in self.positions.items() if not np.isfinite(v)]
        if bad:
            raise ValueError(f"home: position of {bad} is not a finite number")
        driven = tuple(i for i, j in enumerate(self.actuators) if j in self.positions)
        undriven = sorted(set(self.positions) - set(self.actuators))
        if undriven:
            raise ValueError(f"home: joint(s) {undriven} are driven by no actuator (actuated joints: "
                             f"{[j for j in self.actuators if j]})")
        if not (self.kp > 0 and self.kd >= 0 and 0 < self.limit <= 1 and self.tolerance > 0
                and self.velocity_tolerance > 0 and self.timeout_s > 0):
            raise ValueError("home: kp, tolerance, velocity_tolerance, timeout_s must be > 0, kd >= 0, limit in (0, 1]")
        object.__setattr__(self, "driven", driven)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], actuators: Sequence[str]) -> HomeSpec:
        """From a task YAML's / manifest's `home` mapping: `positions` (joint -> value) and optional gains."""
        known = {"positions", "kp", "kd", "limit", "tolerance", "velocity_tolerance", "timeout_s"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"home: unknown key(s) {unknown}; known: {sorted(known)}")
        positions = config.get("positions")
        if not isinstance(positions, Mapping):
            raise ValueError("home: 'positions' must map joint names to positions")
        try:
            gains = {k: float(v) for k, v in config.items() if k != "positions"}
            return cls({str(j): float(v) for j, v in positions.items()}, list(actuators), **gains)
        except (TypeError, ValueError) as err:
            raise ValueError(f"home: {err}") from None

    @classmethod
    def parse(cls, text: str, actuators: Sequence[str]) -> HomeSpec:
        """From a parameter: 'joint=position,...' with optional 'kp=..', 'kd=..', 'tolerance=..' entries."""
        positions: dict[str, float] = {}
        gains: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in text.split(","))):
            name, sep, value = item.partition("=")
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not sep or not name or not np.isfinite(number):
                raise ValueError(f"home: '{item}' is not of the form joint=number")
            (gains if name in ("kp", "kd", "limit", "tolerance", "velocity_tolerance", "timeout_s")
             else positions)[name] = number
        return cls(positions, list(actuators), **gains)

    def errors(self, positions: Mapping[str, float], velocities: Mapping[str, float]) -> dict[str, float]:
        """Position error (home - current) of each listed joint the state carries."""
        return {j: target - positions[j] for j, target in self.positions.items() if j in positions}

    def reached(self, positions: Mapping[str, float], velocities: Mapping[str, float]) -> bool:
        """Every listed joint within tolerance and nearly still."""
        if any(j not in positions for j in self.positions):
            return False
        return all(abs(e) <= self.tolerance and abs(velocities.get(j, 0.0)) <= self.velocity_tolerance
                   for j, e in self.errors(positions, velocities).items())

    def command(self, positions: Mapping[str, float], velocities: Mapping[str, float], low: np.ndarray,
                high: np.ndarray, safe: np.ndarray) -> np.ndarray:
        """The bounded PD command A: kp * error - kd * velocity on each driven entry, clipped to `limit` of
        the entry's range (around its midpoint); the safe command on the others and on joints the state lacks."""
        u = np.asarray(safe, np.float64).copy()
        for i in self.driven:
            joint = self.actuators[i]
            if joint not in positions:
                continue
            raw = self.kp * (self.positions[joint] - positions[joint]) - self.kd * velocities.get(joint, 0.0)
            mid, half = (high[i] + low[i]) / 2, (high[i] - low[i]) / 2
            u[i] = float(np.clip(raw, mid - self.limit * half, mid + self.limit * half))
        return u
