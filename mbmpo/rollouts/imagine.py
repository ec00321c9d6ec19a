"""Imagined rollouts, vectorised over tasks x trajectories; task t runs in ensemble member t // m.

All T x N trajectories step together: one batched policy pass and one batched ensemble pass per step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.policy.gaussian import Params, sample
from mbmpo.runtime.models import widened
from mbmpo.tasks.base import TaskSpec
from mbmpo.types import Trajectories


def state_bounds(obs: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """Per-dimension (low D, high D) of recorded states B x D, each side widened by `margin` x the range (the
    rule the robot's runtime applies too: `mbmpo.runtime.models.widened`)."""
    return widened(obs.min(0).values, obs.max(0).values, margin)


def training_bounds(obs: Tensor, margin: float) -> tuple[Tensor, Tensor] | None:
    """The bounds training imagines within: `state_bounds` of recorded states B x D, or None (no bound) when
    `margin` (`meta.state_bounds`) is 0."""
    return state_bounds(obs, margin) if margin > 0 else None


@torch.no_grad()
def imagine(ensemble: DynamicsEnsemble, params: Params, start_obs: Tensor, horizon: int, task: TaskSpec,
            clip_obs: float, generator: torch.Generator | None = None,
            bounds: tuple[Tensor, Tensor] | None = None) -> Trajectories:
    """Roll the policy out in the models.

    params: shared or task-batched (leading T). start_obs: T x N x D with T a multiple of the
    ensemble size (tasks grouped by member: tasks [e*m, (e+1)*m) use member e). The ensemble, params,
    start_obs and generator share one device; the trajectories are returned there.
    Predicted states are clipped to +-clip_obs; a non-finite prediction ends its trajectory, and so does a
    state outside `bounds` (low D, high D; `state_bounds`), clamped to them: the reward of a step out of the
    recorded states' range is that of its clamped state, and nothing follows it.
    """
    n_tasks, n_traj, obs_dim = start_obs.shape
    members = ensemble.members
    if n_tasks % members:
        raise ValueError(f"{n_tasks} tasks do not divide over {members} ensemble members")
    device = start_obs.device
    low = torch.as_tensor(task.act_low, device=device)
    high = torch.as_tensor(task.act_high, device=device)
    obs = start_obs.clone()
    alive = torch.ones(n_tasks, n_traj, dtype=torch.bool, device=device)
    obs_buf = torch.zeros(n_tasks, n_traj, horizon, obs_dim, device=device)
    act_buf = torch.zeros(n_tasks, n_traj, horizon, task.act_dim, device=device)
    rew_buf = torch.zeros(n_tasks, n_traj, horizon, device=device)
    mask_buf = torch.zeros(n_tasks, n_traj, horizon, device=device)
    with ensemble.frozen_weights():  # weight normalisation once per pass, not once per step
        for t in range(horizon):
            act, _ = sample(params, obs, generator)
            applied = torch.maximum(torch.minimum(act, high), low)
            nxt = ensemble.predict(obs.reshape(members, -1, obs_dim), applied.reshape(members, -1, task.act_dim))
            nxt = nxt.reshape(n_tasks, n_traj, obs_dim)
            finite = torch.isfinite(nxt).all(-1)
            nxt = torch.nan_to_num(nxt, nan=0.0).clamp(-clip_obs, clip_obs)
            if bounds is not None:
                finite = finite & ((nxt >= bounds[0]) & (nxt <= bounds[1])).all(-1)
                nxt = torch.maximum(torch.minimum(nxt, bounds[1]), bounds[0])
            rew = task.reward(obs, applied, nxt).to(obs.dtype)
            done = task.terminated(obs, applied, nxt) | ~finite
            obs_buf[:, :, t], act_buf[:, :, t] = obs, act
            rew_buf[:, :, t] = torch.where(alive, rew, torch.zeros_like(rew))
            mask_buf[:, :, t] = alive.to(obs.dtype)
            alive = alive & ~done
            if not alive.any():
                break
            obs = nxt
    return Trajectories(obs=obs_buf, act=act_buf, rew=rew_buf, mask=mask_buf)
