"""Physical perturbations of a simulated robot, to emulate the reality gap (`--perturb KEY=SCALE`)."""

from __future__ import annotations

from typing import Any

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


def apply_perturbations(env: Any, scales: dict[str, float]) -> None:
    """Scale the MuJoCo model of a (wrapped) environment in place."""
    model = env.unwrapped.model
    for key, scale in scales.items():
        field, column = PERTURBATIONS[key]
        array = getattr(model, field)
        if column is None:
            array *= scale
        else:
            array[:, column] *= scale
