"""The observation contract between a robot's `JointState` stream and a policy.

Observation entries are named `qpos:<coordinate>` and `qvel:<coordinate>` (see
`mbmpo.tasks.mujoco_names`). A JointState carries coordinates by name: entry `<coordinate>` gives
`position` for `qpos:<coordinate>` and `velocity` for `qvel:<coordinate>`. Order in the message is free:
values are looked up by name, so a driver that reorders joints cannot silently scramble the policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ObservationError(ValueError):
    """A robot message that cannot be turned into an observation (missing joint, NaN, bad lengths)."""


class ObservationBuilder:
    """JointState fields (names, positions, velocities) -> observation vector D, by the contract's names.
    Values beyond `max_abs` (a broken encoder, a unit mix-up) are refused like non-finite ones."""

    def __init__(self, obs_names: Sequence[str], max_abs: float = 1e6):
        self.obs_names = list(obs_names)
        self.max_abs = max_abs
        self.fields: list[tuple[str, str]] = []
        for name in self.obs_names:
            kind, sep, coordinate = name.partition(":")
            if not sep or kind not in ("qpos", "qvel"):
                raise ValueError(f"observation entry '{name}' is not of the form qpos:<name> or qvel:<name>")
            self.fields.append((kind, coordinate))

    def build(self, names: Sequence[str], positions: Sequence[float], velocities: Sequence[float]) -> np.ndarray:
        """Raises `ObservationError` naming the problem."""
        if len(positions) != len(names) or (len(velocities) not in (0, len(names))):
            raise ObservationError(f"JointState has {len(names)} names, {len(positions)} positions and "
                                   f"{len(velocities)} velocities")
        if len(set(names)) != len(names):
            raise ObservationError("JointState repeats joint names")
        index = {n: i for i, n in enumerate(names)}
        obs = np.empty(len(self.fields), np.float64)
        for j, (kind, coordinate) in enumerate(self.fields):
            i = index.get(coordinate)
            if i is None:
                raise ObservationError(f"JointState lacks joint '{coordinate}' needed for '{kind}:{coordinate}'")
            if kind == "qvel" and not len(velocities):
                raise ObservationError(f"JointState has no velocities; '{kind}:{coordinate}' needs one")
            obs[j] = positions[i] if kind == "qpos" else velocities[i]
        if not np.isfinite(obs).all():
            bad = [self.obs_names[j] for j in np.flatnonzero(~np.isfinite(obs))]
            raise ObservationError(f"non-finite values for {bad[:5]}")
        if np.abs(obs).max(initial=0.0) > self.max_abs:
            j = int(np.abs(obs).argmax())
            raise ObservationError(f"'{self.obs_names[j]}' is {obs[j]:.3g}, beyond the plausible {self.max_abs:g}")
        return obs.astype(np.float32)


def joint_state_entries(qpos_names: Sequence[str], qvel_names: Sequence[str], qpos: np.ndarray,
                        qvel: np.ndarray) -> tuple[list[str], list[float], list[float]]:
    """A simulator's state as JointState fields: every coordinate once, position and velocity by name
    (0.0 where a coordinate has only one of the two, e.g. the 7th qpos entry of a free joint)."""
    pos = {n.partition(":")[2]: float(v) for n, v in zip(qpos_names, qpos)}
    vel = {n.partition(":")[2]: float(v) for n, v in zip(qvel_names, qvel)}
    names = list(pos) + [n for n in vel if n not in pos]
    return names, [pos.get(n, 0.0) for n in names], [vel.get(n, 0.0) for n in names]
