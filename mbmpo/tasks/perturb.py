"""Physical perturbations of a simulated robot, to emulate the reality gap (`--perturb KEY=SCALE`), and
dynamics randomisation (`collect.randomize`): each episode's physics drawn within ranges, as in the authors'
randomised environments, so the models see a range of robots."""

from __future__ import annotations

from typing import Any

import numpy as np

from mbmpo.errors import UserError

# key -> (MjModel field, column or None for the whole array)
PERTURBATIONS: dict[str, tuple[str, int | None]] = {
    "mass": ("body_mass", None),  # every body's mass
    "inertia": ("body_inertia", None),
    "friction": ("geom_friction", 0),  # sliding friction of every geom
    "gear": ("actuator_gear", 0),  # actuator strength
    "damping": ("dof_damping", None),  # joint damping
}


def parse_perturbations(items: list[str] | None) -> dict[str, float]:
    """['mass=1.3', 'friction=0.6'] -> {'mass': 1.3, 'friction': 0.6}; raises UserError on bad items."""
    out: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in PERTURBATIONS:
            raise UserError(f"--perturb '{item}': expected KEY=SCALE with KEY one of {sorted(PERTURBATIONS)}")
        try:
            scale = float(value)
        except ValueError:
            raise UserError(f"--perturb '{item}': SCALE must be a number") from None
        if not scale > 0:
            raise UserError(f"--perturb '{item}': SCALE must be > 0")
        out[key] = scale
    return out


def _set_scaled(model: Any, key: str, base: np.ndarray, scale: float) -> None:
    """Set the MjModel field of `key` to `base` (its values to scale from) times `scale`, in place."""
    field, column = PERTURBATIONS[key]
    array = getattr(model, field)
    if column is None:
        array[:] = base * scale
    else:
        array[:, column] = base[:, column] * scale


def apply_perturbations(env: Any, scales: dict[str, float]) -> None:
    """Scale the MuJoCo model of a (wrapped) environment in place."""
    model = env.unwrapped.model
    for key, scale in scales.items():
        _set_scaled(model, key, getattr(model, PERTURBATIONS[key][0]).copy(), scale)


def parse_ranges(text: str, where: str = "collect.randomize") -> dict[str, tuple[float, float]]:
    """'mass=0.7:1.4,friction=0.5:1.5' -> {'mass': (0.7, 1.4), 'friction': (0.5, 1.5)}; '' -> {}.
    Raises UserError naming the bad item."""
    out: dict[str, tuple[float, float]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, span = item.partition("=")
        low, colon, high = span.partition(":")
        if not sep or not colon or key not in PERTURBATIONS:
            raise UserError(f"{where} '{item}': expected KEY=LOW:HIGH with KEY one of {sorted(PERTURBATIONS)}")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            raise UserError(f"{where} '{item}': LOW and HIGH must be numbers") from None
        if not 0 < lo <= hi:
            raise UserError(f"{where} '{item}': need 0 < LOW <= HIGH")
        out[key] = (lo, hi)
    return out


class Randomizer:
    """Draws a simulated robot's physics for each episode: every field in `ranges` scaled, from the values it
    had when the randomizer was made, by a log-uniform draw in its range (so draws never compound)."""

    def __init__(self, env: Any, ranges: dict[str, tuple[float, float]]):
        self.model, self.ranges = env.unwrapped.model, ranges
        self.nominal = {key: getattr(self.model, PERTURBATIONS[key][0]).copy() for key in ranges}

    def draw(self, rng: np.random.Generator) -> dict[str, float]:
        """Set a new draw in place; returns the scales."""
        scales = {k: float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) for k, (lo, hi) in self.ranges.items()}
        for key, scale in scales.items():
            _set_scaled(self.model, key, self.nominal[key], scale)
        return scales
