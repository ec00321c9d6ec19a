"""Rewards and terminations of the Gymnasium MuJoCo v5 tasks, written on observations.

Observation indices follow the v5 layouts (positions exclude the root x, y). The forward reward uses
the next state's root x velocity (an observation) where the environment uses the finite difference
of the root position over one control period; tests bound that difference.
All functions take `... x D` arrays (numpy or torch) and return `...` (see `mbmpo.tasks.base`).
"""

from __future__ import annotations

from typing import Any


def _sq(act: Any) -> Any:
    return (act * act).sum(-1)


def halfcheetah_reward(obs: Any, act: Any, next_obs: Any) -> Any:
    """s'[8] - 0.1 ||a||^2 (obs[8] = qvel[0])."""
    return next_obs[..., 8] - 0.1 * _sq(act)


def hopper_reward(obs: Any, act: Any, next_obs: Any) -> Any:
    """s'[5] + healthy(s') - 1e-3 ||a||^2; v5 pays the healthy bonus only while healthy."""
    healthy = 1.0 - hopper_termination(obs, act, next_obs) * 1.0
    return next_obs[..., 5] + healthy - 1e-3 * _sq(act)


def hopper_termination(obs: Any, act: Any, next_obs: Any) -> Any:
    """Unhealthy: non-finite or |s[1:]| >= 100, height s[0] <= 0.7, |angle s[1]| >= 0.2."""
    ok_state = (abs(next_obs[..., 1:]) < 100.0).all(-1)
    ok_z = next_obs[..., 0] > 0.7
    ok_angle = abs(next_obs[..., 1]) < 0.2
    return ~(ok_state & ok_z & ok_angle)


def walker2d_reward(obs: Any, act: Any, next_obs: Any) -> Any:
    """s'[8] + healthy(s') - 1e-3 ||a||^2."""
    healthy = 1.0 - walker2d_termination(obs, act, next_obs) * 1.0
    return next_obs[..., 8] + healthy - 1e-3 * _sq(act)


def walker2d_termination(obs: Any, act: Any, next_obs: Any) -> Any:
    """Unhealthy unless 0.8 < height < 2.0 and -1 < angle < 1 (NaN counts as unhealthy)."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    return ~((z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0))


def ant_reward(obs: Any, act: Any, next_obs: Any) -> Any:
    """s'[13] + healthy(s') - 0.5 ||a||^2; the env's contact cost is not observable here."""
    healthy = 1.0 - ant_termination(obs, act, next_obs) * 1.0
    return next_obs[..., 13] + healthy - 0.5 * _sq(act)


def ant_termination(obs: Any, act: Any, next_obs: Any) -> Any:
    """Unhealthy unless 0.2 <= torso height <= 1.0 and the state is finite."""
    finite = (abs(next_obs) < float("inf")).all(-1)
    z = next_obs[..., 0]
    return ~(finite & (z >= 0.2) & (z <= 1.0))


def swimmer_reward(obs: Any, act: Any, next_obs: Any) -> Any:
    """s'[3] - 1e-4 ||a||^2 (obs[3] = qvel[0])."""
    return next_obs[..., 3] - 1e-4 * _sq(act)


def inverted_pendulum_reward(obs: Any, act: Any, next_obs: Any) -> Any:
    """1 while the pole stays up at s', else 0."""
    return 1.0 - inverted_pendulum_termination(obs, act, next_obs) * 1.0


def inverted_pendulum_termination(obs: Any, act: Any, next_obs: Any) -> Any:
    """The pole angle s'[1] leaves [-0.2, 0.2] or the state is non-finite."""
    finite = (abs(next_obs) < float("inf")).all(-1)
    return ~(finite & (abs(next_obs[..., 1]) <= 0.2))
