"""A user's own robot as a task: an MJCF file plus reward/termination functions, described in YAML.

    # task.yaml (paths are relative to this file)
    name: point_mass               # optional, defaults to the file's stem
    mjcf: point_mass.xml           # the robot model
    horizon: 100                   # episode length
    frame_skip: 2                  # physics steps per control step (control period = frame_skip * timestep)
    reward: point_mass_fns:reward  # module:function, module file beside the YAML
    termination: point_mass_fns:terminated   # optional
    observation:                   # optional: default is all qpos then all qvel
      qpos: [0, 1]
      qvel: [0, 1]
    reset_noise: 0.1               # optional: uniform noise added to the initial qpos/qvel
    preset: small                  # optional: small | medium | paper (default: sized to the task)
    home:                          # optional: where `reset:=home` drives the robot between episodes
      positions: {x: 0.0, y: 0.0}       # joint -> position; optional kp, kd, limit, tolerance

The functions follow `mbmpo.tasks.base`: `reward(obs, act, next_obs)` and `terminated(obs, act, next_obs)`
on `... x D` arrays, using only operations numpy and torch share.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import yaml

from mbmpo.deploy.reset import HomeSpec
from mbmpo.errors import UserError
from mbmpo.tasks.base import TaskSpec
from mbmpo.tasks.mujoco_names import actuator_joints, state_names

_KEYS = {"name", "mjcf", "horizon", "frame_skip", "reward", "termination", "observation", "reset_noise", "preset", "home"}


def resolve_function(ref: str, base_dir: Path, where: str) -> Callable[..., Any]:
    """Import `module:function` where `module.py` lies in `base_dir`."""
    module_name, sep, fn_name = ref.partition(":")
    if not sep or not module_name or not fn_name:
        raise UserError(f"{where}: '{ref}' is not of the form module:function")
    file = base_dir / (module_name.replace(".", "/") + ".py")
    if not file.is_file():
        raise UserError(f"{where}: module file {file} not found")
    key = f"mbmpo_user_task_{abs(hash(str(file)))}"
    module = sys.modules.get(key)
    if module is None:
        spec = importlib.util.spec_from_file_location(key, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # the user's code failed to import: say where
            raise UserError(f"{where}: importing {file} failed: {type(err).__name__}: {err}") from None
        sys.modules[key] = module
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(f"{where}: {file} has no function '{fn_name}'")
    return fn


class MjcfEnv(gym.Env):
    """A Gymnasium environment over a raw MJCF model: actions go to `data.ctrl`, clipped to ctrlrange."""

    metadata = {"render_modes": []}

    def __init__(self, mjcf: Path, frame_skip: int, qpos_idx: np.ndarray, qvel_idx: np.ndarray,
                 reward_fn: Callable[..., Any], termination_fn: Callable[..., Any] | None, reset_noise: float):
        self.model = mujoco.MjModel.from_xml_path(str(mjcf))
        self.data = mujoco.MjData(self.model)
        self.frame_skip = frame_skip
        self.qpos_idx, self.qvel_idx = qpos_idx, qvel_idx
        self.reward_fn, self.termination_fn = reward_fn, termination_fn
        self.reset_noise = reset_noise
        low, high = self.model.actuator_ctrlrange.T.astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        n = len(qpos_idx) + len(qvel_idx)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n,), dtype=np.float64)
        self.dt = float(self.model.opt.timestep * frame_skip)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[self.qpos_idx], self.data.qvel[self.qvel_idx]])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        noise = self.reset_noise
        self.data.qpos[:] += self.np_random.uniform(-noise, noise, self.model.nq)
        self.data.qvel[:] += self.np_random.uniform(-noise, noise, self.model.nv)
        mujoco.mj_forward(self.model, self.data)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs = self._obs()
        space: Any = self.action_space  # a Box
        act = np.clip(np.asarray(action, dtype=np.float64), space.low, space.high)
        self.data.ctrl[:] = act
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        next_obs = self._obs()
        reward = float(self.reward_fn(obs, act, next_obs))
        done = bool(self.termination_fn(obs, act, next_obs)) if self.termination_fn else False
        return next_obs, reward, done, False, {}


def _make_env(horizon: int = 200, **kwargs: Any) -> gym.Env:
    return gym.wrappers.TimeLimit(MjcfEnv(**kwargs), max_episode_steps=horizon)


def _indices(sel: Any, size: int, where: str) -> np.ndarray:
    if sel is None:
        return np.arange(size)
    if not isinstance(sel, list) or not all(isinstance(i, int) and 0 <= i < size for i in sel):
        raise UserError(f"{where} must be a list of indices in [0, {size}), got {sel!r}")
    return np.asarray(sel, dtype=np.int64)


def load_task_yaml(path: str | Path) -> TaskSpec:
    """Read a task YAML (see the module docstring). Raises `UserError` naming what is wrong."""
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read task file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UserError(f"malformed YAML in task file {path}: {err}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise UserError(f"task file {path}: top level must be a mapping")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise UserError(f"task file {path}: unknown key(s) {unknown}; known keys: {sorted(_KEYS)}")
    for key in ("mjcf", "reward"):
        if key not in raw:
            raise UserError(f"task file {path}: missing required key '{key}'")
    base = path.parent
    mjcf = base / str(raw["mjcf"])
    try:
        model = mujoco.MjModel.from_xml_path(str(mjcf))
    except Exception as err:
        raise UserError(f"task file {path}: cannot load MJCF {mjcf}: {err}".replace("\n", " ")) from None
    if model.nu == 0:
        raise UserError(f"task file {path}: MJCF {mjcf} has no actuators to command")
    horizon, frame_skip = raw.get("horizon", 200), raw.get("frame_skip", 1)
    if not isinstance(horizon, int) or horizon < 1 or not isinstance(frame_skip, int) or frame_skip < 1:
        raise UserError(f"task file {path}: horizon and frame_skip must be positive integers")
    obs_sel = raw.get("observation") or {}
    if not isinstance(obs_sel, dict) or set(obs_sel) - {"qpos", "qvel"}:
        raise UserError(f"task file {path}: observation must map 'qpos'/'qvel' to index lists")
    qpos_idx = _indices(obs_sel.get("qpos"), model.nq, f"task file {path}: observation.qpos")
    qvel_idx = _indices(obs_sel.get("qvel"), model.nv, f"task file {path}: observation.qvel")
    reward_fn = resolve_function(str(raw["reward"]), base, f"task file {path}: reward")
    term_ref = raw.get("termination")
    termination_fn = resolve_function(str(term_ref), base, f"task file {path}: termination") if term_ref else None
    qpos_names, qvel_names = state_names(model)
    home = raw.get("home")
    if home is not None:
        try:
            HomeSpec.from_config(home if isinstance(home, dict) else {}, actuator_joints(model))
        except ValueError as err:
            raise UserError(f"task file {path}: {err}") from None
    low, high = model.actuator_ctrlrange.T.astype(np.float32)
    env_kwargs: dict[str, Any] = dict(mjcf=mjcf, frame_skip=frame_skip, qpos_idx=qpos_idx, qvel_idx=qvel_idx,
                      reward_fn=reward_fn, termination_fn=termination_fn,
                      reset_noise=float(raw.get("reset_noise", 0.01)))
    module_file = lambda ref: str(base / (ref.partition(":")[0].replace(".", "/") + ".py")) + ":" + ref.partition(":")[2]
    return TaskSpec(
        name=str(raw.get("name", path.stem)),
        make_env=partial(_make_env, **env_kwargs),
        obs_dim=len(qpos_idx) + len(qvel_idx),
        act_dim=int(model.nu),
        act_low=low,
        act_high=high,
        horizon=horizon,
        dt=float(model.opt.timestep * frame_skip),
        reward_fn=reward_fn,
        termination_fn=termination_fn,
        reward_ref=module_file(str(raw["reward"])),
        termination_ref=module_file(str(term_ref)) if term_ref else None,
        obs_names=tuple(qpos_names[i] for i in qpos_idx) + tuple(qvel_names[i] for i in qvel_idx),
        act_names=tuple(model.actuator(i).name or f"act[{i}]" for i in range(model.nu)),
        source=str(path),
        preset=str(raw.get("preset", "")),
        home=home,
    )
