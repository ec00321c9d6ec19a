"""Evaluating a run directory's checkpoint in the real environment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mbmpo.errors import UserError
from mbmpo.policy.gaussian import select
from mbmpo.rollouts.real import run_episodes
from mbmpo.tasks.base import TaskSpec
from mbmpo.train.checkpoint import check_task_matches, load_checkpoint


def evaluate_run(run_dir: Path, task: TaskSpec, episodes: int, seed: int = 12345) -> dict[str, float | int | str]:
    """Deterministic returns of the meta-policy (pre) and of the adapted policies (post, cycling over them)."""
    if episodes < 1:
        raise UserError("--episodes must be >= 1")
    ckpt = load_checkpoint(run_dir)
    check_task_matches(ckpt, task.name, task.obs_dim, task.act_dim, run_dir)
    env = task.make_env(task.horizon)
    seeds = [seed + i for i in range(episodes)]
    pre = [run_episodes(task, [env], ckpt["params"], [s], task.horizon, deterministic=True)[0].ret for s in seeds]
    adapted = ckpt["adapted"]
    n_sets = adapted["w0"].shape[0]
    post = [run_episodes(task, [env], select(adapted, i % n_sets), [s], task.horizon, deterministic=True)[0].ret
            for i, s in enumerate(seeds)]
    env.close()
    return {
        "task": task.name, "episodes": episodes, "real_steps": int(ckpt["real_steps"]),
        "return_pre_mean": float(np.mean(pre)), "return_pre_std": float(np.std(pre)),
        "return_post_mean": float(np.mean(post)), "return_post_std": float(np.std(post)),
    }
