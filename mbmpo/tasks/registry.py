"""The one task registry: built-in Gymnasium MuJoCo v5 tasks and users' own task YAML files."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from mbmpo.errors import UserError
from mbmpo.tasks import gym_rewards as R
from mbmpo.tasks.base import TaskSpec
from mbmpo.tasks.mujoco_names import state_names

PAPER_HORIZON = 200

# name -> (env kwargs, reward, termination, number of leading qpos entries the observation omits)
_BUILTIN: dict[str, tuple[dict[str, Any], Any, Any, int]] = {
    "HalfCheetah-v5": ({}, R.halfcheetah_reward, None, 1),
    "Hopper-v5": ({}, R.hopper_reward, R.hopper_termination, 1),
    "Walker2d-v5": ({}, R.walker2d_reward, R.walker2d_termination, 1),
    "Ant-v5": ({"include_cfrc_ext_in_observation": False}, R.ant_reward, R.ant_termination, 2),
    "Swimmer-v5": ({}, R.swimmer_reward, None, 2),
    "InvertedPendulum-v5": ({}, R.inverted_pendulum_reward, R.inverted_pendulum_termination, 0),
}
TASK_NAMES: tuple[str, ...] = tuple(_BUILTIN)


def _mujoco_warning(message: str) -> None:
    """MuJoCo's warnings to stderr, less the one Gymnasium's own assets raise at every env creation."""
    if "settotalmass" in message:  # half_cheetah.xml under MuJoCo >= 4: Gymnasium's file, not fixable here
        return
    sys.stderr.write(f"MuJoCo warning: {message}\n")


if mujoco.get_mju_user_warning() is None:  # a handler the user installed stays
    mujoco.set_mju_user_warning(_mujoco_warning)


def _ref(fn: Any) -> str | None:
    return None if fn is None else f"{fn.__module__}:{fn.__name__}"


def _make_gym_env(env_id: str, kwargs: dict[str, Any], horizon: int) -> gym.Env:
    return gym.make(env_id, max_episode_steps=horizon, **kwargs)


def _builtin(name: str) -> TaskSpec:
    kwargs, reward, termination, skip = _BUILTIN[name]
    env = gym.make(name, **kwargs)
    try:
        space: Any = env.action_space  # a Box
        inner: Any = env.unwrapped  # the MuJoCo env
        qpos_names, qvel_names = state_names(inner.model)
        obs_names = tuple(qpos_names[skip:]) + tuple(qvel_names)
        obs_dim = int(np.prod(env.observation_space.shape or (0,)))
        if len(obs_names) != obs_dim:  # layouts with extra entries: fall back to indices
            obs_names = tuple(f"obs[{i}]" for i in range(obs_dim))
        act_names = tuple(inner.model.actuator(i).name or f"act[{i}]" for i in range(inner.model.nu))
        dt = float(inner.dt)
    finally:
        env.close()
    return TaskSpec(
        name=name,
        make_env=partial(_make_gym_env, name, kwargs),
        obs_dim=obs_dim,
        act_dim=int(space.shape[0]),
        act_low=np.asarray(space.low, dtype=np.float32),
        act_high=np.asarray(space.high, dtype=np.float32),
        horizon=PAPER_HORIZON,
        dt=dt,
        reward_fn=reward,
        termination_fn=termination,
        reward_ref=_ref(reward) or "",
        termination_ref=_ref(termination),
        obs_names=obs_names,
        act_names=act_names,
        source=name,
    )


def get_task(name_or_path: str) -> TaskSpec:
    """A registered task name (e.g. 'HalfCheetah-v5') or the path of a user's task YAML.

    Raises `UserError` for unknown names and broken task files.
    """
    if name_or_path in _BUILTIN:
        return _builtin(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        from mbmpo.tasks.checks import check_task_functions
        from mbmpo.tasks.custom import load_task_yaml

        task = load_task_yaml(name_or_path)
        check_task_functions(task)  # a user's functions: named at once if they return the wrong thing
        return task
    raise UserError(f"unknown task '{name_or_path}'; registered tasks: {', '.join(TASK_NAMES)}, or a task .yaml path")
