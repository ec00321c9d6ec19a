"""Real-environment episodes, several environments in lock-step with one batched policy pass per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mbmpo.policy.gaussian import Params, mean_action, sample
from mbmpo.tasks.base import TaskSpec
from mbmpo.types import Episode


def run_episodes(task: TaskSpec, envs: list[Any], params: Params | None, seeds: list[int], horizon: int,
                 deterministic: bool = False, rng: np.random.Generator | None = None,
                 generator: torch.Generator | None = None) -> list[Episode]:
    """One episode in each env. `params` is None (uniform random actions), shared, or task-batched with
    one parameter set per env (leading dim = len(envs)). Episodes end on termination or at `horizon`.
    """
    n = len(envs)
    rng = rng or np.random.default_rng(seeds[0] if seeds else 0)
    batched = params is not None and params["w0"].dim() == 3
    if params is not None and batched and params["w0"].shape[0] != n:
        raise ValueError(f"{params['w0'].shape[0]} parameter sets for {n} environments")
    obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]
    traj_obs: list[list[np.ndarray]] = [[np.asarray(o, np.float32)] for o in obs]
    traj_act: list[list[np.ndarray]] = [[] for _ in range(n)]
    traj_rew: list[list[float]] = [[] for _ in range(n)]
    terminated = [False] * n
    active = list(range(n))
    for _ in range(horizon):
        if not active:
            break
        if params is None:
            acts = rng.uniform(task.act_low, task.act_high, size=(len(active), task.act_dim))
        else:
            with torch.no_grad():
                x = torch.as_tensor(np.stack([traj_obs[i][-1] for i in active]), dtype=torch.float32)
                p = {k: v[active] for k, v in params.items()} if batched else params
                if batched:
                    x = x.unsqueeze(1)  # T x 1 x D
                a = mean_action(p, x) if deterministic else sample(p, x, generator)[0]
                acts = a.reshape(len(active), task.act_dim).cpu().numpy()
        still = []
        for i, a in zip(active, acts):
            applied = task.clip_action(a).astype(np.float32)
            o, r, term, trunc, _ = envs[i].step(applied)
            traj_obs[i].append(np.asarray(o, np.float32))
            traj_act[i].append(applied)
            traj_rew[i].append(float(r))
            if term:
                terminated[i] = True
            elif not trunc:
                still.append(i)
        active = still
    return [Episode(obs=np.stack(traj_obs[i]), act=np.stack(traj_act[i]).reshape(-1, task.act_dim),
                    rew=np.asarray(traj_rew[i], np.float32), terminated=terminated[i]) for i in range(n)]


def random_episodes(task: TaskSpec, env: Any, steps: int, horizon: int, seed: int,
                    before_episode: Callable[[int], None] | None = None) -> list[Episode]:
    """Uniform random actions until at least `steps` transitions are collected; `before_episode(i)` is called
    before the i-th episode (e.g. to draw the simulated robot's physics)."""
    rng = np.random.default_rng(seed)
    episodes: list[Episode] = []
    total = 0
    while total < steps:
        if before_episode is not None:
            before_episode(len(episodes))
        ep = run_episodes(task, [env], None, [seed + len(episodes)], min(horizon, steps - total), rng=rng)[0]
        episodes.append(ep)
        total += ep.length
    return episodes
