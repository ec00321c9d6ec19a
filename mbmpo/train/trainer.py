"""The MB-MPO loop (Clavera et al. 2018, Algorithm 1), one iteration at a time:

1. collect real episodes with the K adapted policies (uniform random actions before the first);
2. fit the dynamics ensemble on all data so far (warm start);
3. meta-optimise the policy over the ensemble (inner VPG step per model, outer TRPO step);
4. evaluate in the real environment, log diagnostics, checkpoint.

The run directory holds everything needed to resume: `config.yaml`, `data.npz` (every collected
transition, saved right after collection), `checkpoint.pt` (after each iteration) and the logs.

Devices (`device` in the config, `--device`): the ensemble and its optimiser live on that device for the whole
run, since the fit (2) and the imagined rollouts of the meta-optimisation (3) are the heavy work. The policy's
master copy (`RunState`) stays on the CPU, where collection (1), evaluation (4) and export use it; it is
copied to the device for step 3 only and the results copied back (a few thousand numbers per iteration).
Checkpoints hold CPU tensors.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mbmpo.config import Config
from mbmpo.device import resolve_device, to_device
from mbmpo.errors import UserError
from mbmpo.meta.inner import with_learned_step_sizes
from mbmpo.meta.loop import meta_optimize
from mbmpo.models.buffer import TransitionBuffer
from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.models.training import fit_ensemble
from mbmpo.policy.gaussian import Params, init_params, mean_action, select
from mbmpo.rollouts.imagine import training_bounds
from mbmpo.rollouts.real import random_episodes, run_episodes
from mbmpo.tasks.base import TaskSpec
from mbmpo.tasks.checks import check_task_functions
from mbmpo.tasks.perturb import Randomizer, apply_perturbations, parse_ranges
from mbmpo.train.checkpoint import CHECKPOINT, check_task_matches, load_checkpoint, save_checkpoint
from mbmpo.train.init import load_init, saved_run
from mbmpo.train.logger import RunLogger
from mbmpo.train.progress import ProgressRow

DATA = "data.npz"
CONFIG = "config.yaml"
CPU = torch.device("cpu")  # where the policy's master copy, the buffer and the checkpoints live


@dataclass
class RunState:
    """What changes from iteration to iteration."""

    iteration: int
    params: Params  # the meta-policy theta (on the CPU)
    adapted: Params | None  # theta'_k of the last meta-phase, T x ... (None before the first; on the CPU)


class Stream(enum.IntEnum):
    """The random streams of one iteration, each seeded from (run seed, iteration, stream): adding draws to
    one never shifts another. Episode streams add the episode's index to their base."""

    RANDOM_ACTIONS = 1  # the uniform random data before the first iteration
    EXPLORATION_NOISE = 2  # action noise of the adapted policies' real episodes
    MODEL_FIT = 3  # validation splits and minibatches
    META = 4  # imagined start states and action noise
    EXPLORATION_RESETS = 100  # + episode index: reset states of the real exploration episodes
    EVALUATION_RESETS = 10_000  # + episode index: reset states of the evaluation episodes
    RANDOMIZE = 20_000  # + episode index: the physics drawn for an exploration episode (collect.randomize)


def _seed(seed: int, iteration: int, stream: int) -> int:
    return (seed * 1_000_003 + iteration * 7919 + stream) % (2**31 - 1)


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Adam's state from a checkpoint, on the fused kernel whatever the checkpoint's param groups say (one written
    before the fit used it would bring back the per-parameter loop: a bf16 fit step 34 ms instead of 26 here)."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None


class Trainer:
    """Owns the ensemble, the policy, the data buffer and the run directory. `device` (cpu, cuda, cuda:N,
    auto) overrides `cfg.device`, a resumed run's too; a new run's config.yaml records it, every checkpoint too."""

    def __init__(self, task: TaskSpec, cfg: Config, run_dir: Path, seed: int, resume: bool = False,
                 init: Path | None = None, keep_init_data: bool = False, perturb: dict[str, float] | None = None,
                 tensorboard: bool = True, device: str | None = None):
        self.task, self.cfg, self.run_dir, self.seed = task, cfg, Path(run_dir), seed
        check_task_functions(task, torch_batches=True)  # before anything is written: a bad reward leaves no run
        self.run_dir.mkdir(parents=True, exist_ok=True)
        has_run = (self.run_dir / CHECKPOINT).exists() or (self.run_dir / DATA).exists()
        if has_run and not resume:
            raise UserError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out")
        if resume and (self.run_dir / CONFIG).exists():
            saved, self.cfg = saved_run(self.run_dir)
            cfg = self.cfg
            if saved.get("task") != task.name:
                raise UserError(f"{self.run_dir} was trained on task '{saved.get('task')}', not '{task.name}'")
            self.seed = seed = int(saved["seed"])
            perturb = saved.get("perturb") or perturb
            init, keep_init_data = saved.get("init") or init, bool(saved.get("keep_init_data", keep_init_data))
        if device is not None and device != cfg.device:
            cfg = self.cfg = dataclasses.replace(cfg, device=device)  # checks the name (UserError naming device)
        self.device = resolve_device(cfg.device)  # before any training: a missing GPU is one line, not a traceback
        self.real_horizon = cfg.collect.horizon or task.horizon
        self.imagined_horizon = cfg.meta.horizon or self.real_horizon
        self.n_tasks = cfg.model.ensemble_size * cfg.meta.tasks_per_model
        torch.manual_seed(seed)
        self.ensemble = DynamicsEnsemble(task.obs_dim, task.act_dim, cfg.model).to(self.device)
        self.optimizer = torch.optim.Adam(self.ensemble.parameters(), lr=cfg.model.lr, fused=True)
        gen = torch.Generator().manual_seed(seed)
        params = init_params(task.obs_dim, task.act_dim, cfg.policy.hidden, cfg.policy.init_std, gen)
        if cfg.meta.learn_inner_lr:
            params = with_learned_step_sizes(params, cfg.meta.inner_lr)
        self.state = RunState(0, params, None)
        self.buffer = TransitionBuffer(task.obs_dim, task.act_dim, cfg.model.buffer_size)
        self.envs = [task.make_env(self.real_horizon) for _ in range(self.n_tasks)]
        self.eval_env = task.make_env(self.real_horizon)
        self.perturb = dict(perturb or {})  # the "real" robot's physics scales (emulating a reality gap)
        for env in [*self.envs, self.eval_env]:
            apply_perturbations(env, self.perturb)
        ranges = parse_ranges(cfg.collect.randomize)  # the exploration robots only: evaluation stays nominal
        self.randomizers = [Randomizer(env, ranges) for env in self.envs] if ranges else []
        self.wall_offset = 0.0
        self._start = time.perf_counter()
        self.ckpt_steps: int | None = None
        self.should_stop: Callable[[], bool] = lambda: False  # the owner's stop request (raises Abandoned)
        if resume:
            self._restore()
        if init is not None and self.state.adapted is None:  # no checkpoint of its own yet: start from init
            self._warm_start(Path(init), keep_init_data and not len(self.buffer))
        if not (self.run_dir / CONFIG).exists():
            (self.run_dir / CONFIG).write_text(yaml.safe_dump(
                {"task": task.name, "task_source": task.source or task.name, "seed": seed, "config": cfg.to_dict(),
                 "init": str(init) if init is not None else None, "keep_init_data": keep_init_data,
                 "perturb": self.perturb}, sort_keys=False))
        self.logger = RunLogger(self.run_dir, keep_iterations=self.state.iteration, tensorboard=tensorboard)

    # ---- persistence -------------------------------------------------------------------------------
    def _restore(self) -> None:
        data_path, ckpt_path = self.run_dir / DATA, self.run_dir / CHECKPOINT
        if data_path.exists():
            self.buffer = TransitionBuffer.load(data_path, self.task.obs_dim, self.task.act_dim,
                                                self.cfg.model.buffer_size)
        if ckpt_path.exists():
            ckpt = load_checkpoint(self.run_dir)
            check_task_matches(ckpt, self.task.name, self.task.obs_dim, self.task.act_dim, self.run_dir)
            self.ensemble.load_state_dict(ckpt["ensemble"])
            load_optimizer(self.optimizer, ckpt["optimizer"])
            self.state = RunState(int(ckpt["iteration"]), ckpt["params"], ckpt["adapted"])
            self.wall_offset = float(ckpt["wall_s"])
            self.ckpt_steps = int(ckpt["real_steps"])
        elif len(self.buffer):
            self.ckpt_steps = 0  # killed before the first checkpoint: train on the data already collected

    def _warm_start(self, init: Path, keep_data: bool) -> None:
        """Fine-tuning (`mbmpo.train.init`): ensemble, normalisers, optimiser, meta-policy and adapted policies
        from the run in `init`; its data too with `keep_data`, not counted as this run's real steps."""
        ckpt = load_init(init, self.task.name, self.task.obs_dim, self.task.act_dim, self.cfg)
        self.ensemble.load_state_dict(ckpt["ensemble"])
        load_optimizer(self.optimizer, ckpt["optimizer"])
        self.state = RunState(0, ckpt["params"], ckpt["adapted"])
        if keep_data and (init / DATA).is_file():
            self.buffer = TransitionBuffer.load(init / DATA, self.task.obs_dim, self.task.act_dim,
                                                self.cfg.model.buffer_size)
            self.buffer.total_steps = 0  # the kept transitions are the old run's: this run's count starts at 0

    def _checkpoint(self, wall_s: float) -> None:
        save_checkpoint(self.run_dir, {
            "task": self.task.name, "obs_dim": self.task.obs_dim, "act_dim": self.task.act_dim,
            "iteration": self.state.iteration, "real_steps": self.buffer.total_steps, "wall_s": wall_s,
            "params": self.state.params, "adapted": self.state.adapted,
            "ensemble": self.ensemble.state_dict(), "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(), "obs_names": list(self.task.obs_names),
            "act_names": list(self.task.act_names),
        })

    # ---- phases ------------------------------------------------------------------------------------
    def collect(self, iteration: int) -> list:
        """Random episodes first, then episodes of every adapted policy (tailored exploration)."""
        def draw(env_index: int, episode: int) -> None:
            if self.randomizers:
                rng = np.random.default_rng(_seed(self.seed, iteration, Stream.RANDOMIZE + episode))
                self.randomizers[env_index].draw(rng)

        if self.state.adapted is None:
            return random_episodes(self.task, self.envs[0], self.cfg.collect.initial_random_steps,
                                   self.real_horizon, _seed(self.seed, iteration, Stream.RANDOM_ACTIONS),
                                   before_episode=lambda i: draw(0, i))
        gen = torch.Generator().manual_seed(_seed(self.seed, iteration, Stream.EXPLORATION_NOISE))
        episodes = []
        for r in range(self.cfg.collect.rollouts_per_task):
            for j in range(self.n_tasks):
                draw(j, r * self.n_tasks + j)
            seeds = [_seed(self.seed, iteration, Stream.EXPLORATION_RESETS + r * self.n_tasks + j) for j in range(self.n_tasks)]
            episodes += run_episodes(self.task, self.envs, self.state.adapted, seeds, self.real_horizon,
                                     generator=gen)
        return episodes

    def fit(self, iteration: int):
        """Fit the ensemble on the device to every transition in the buffer."""
        b, device = self.buffer, self.device
        gen = torch.Generator(device).manual_seed(_seed(self.seed, iteration, Stream.MODEL_FIT))
        return fit_ensemble(self.ensemble, self.optimizer, torch.as_tensor(b.obs, device=device),
                            torch.as_tensor(b.act, device=device), torch.as_tensor(b.next_obs, device=device),
                            self.cfg.model, gen, self.should_stop)

    def evaluate(self, iteration: int, episodes: int) -> tuple[float, float]:
        """Deterministic real returns of the meta-policy and of one adapted policy per ensemble member."""
        seeds = [_seed(self.seed, iteration, Stream.EVALUATION_RESETS + j) for j in range(max(episodes, 1))]
        pre = [run_episodes(self.task, [self.eval_env], self.state.params, [s], self.real_horizon,
                            deterministic=True)[0].ret for s in seeds[:episodes]]
        post = []
        if self.state.adapted is not None:
            m = self.cfg.meta.tasks_per_model
            for k in range(self.cfg.model.ensemble_size):
                p = select(self.state.adapted, k * m)
                post.append(run_episodes(self.task, [self.eval_env], p, [seeds[k % len(seeds)]],
                                         self.real_horizon, deterministic=True)[0].ret)
        return float(np.mean(pre)) if pre else float("nan"), float(np.mean(post)) if post else float("nan")

    def log_video(self, iteration: int) -> None:
        """A deterministic episode of the meta-policy in TensorBoard (`rollout/meta_policy`)."""
        from mbmpo.train.video import add_video, render_episode

        params = self.state.params

        def act(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return mean_action(params, torch.as_tensor(obs, dtype=torch.float32)[None])[0].cpu().numpy()

        frames, _ = render_episode(self.task, act, _seed(self.seed, iteration, Stream.EVALUATION_RESETS),
                                   self.real_horizon)
        add_video(self.logger.writer, "rollout/meta_policy", frames, self.buffer.total_steps, 1.0 / self.task.dt)

    def disagreement(self, episodes: list) -> float:
        """Ensemble disagreement on fresh real transitions: mean over dims of the std across members of
        the predicted next state, in units of the target standardisation."""
        if not episodes:
            return float("nan")
        obs = torch.as_tensor(np.concatenate([e.obs[:-1] for e in episodes]), device=self.device)
        act = torch.as_tensor(np.concatenate([e.act for e in episodes]), device=self.device)
        members = self.ensemble.members
        pred = self.ensemble.predict(obs.expand(members, -1, -1), act.expand(members, -1, -1))
        return float((pred.std(0) / self.ensemble.out_norm.std).mean())

    def data_ahead(self) -> bool:
        """True after a resume when data was collected after the last checkpoint (train on it first)."""
        return self.ckpt_steps is not None and self.buffer.total_steps > self.ckpt_steps

    # ---- the loop ----------------------------------------------------------------------------------
    def iterate(self, episodes: list | None = None) -> ProgressRow:
        """One MB-MPO iteration; returns the progress row. Once `should_stop()` is true the fit or the
        meta-optimisation raises `Abandoned`: the state, checkpoint and progress stay those of the last
        finished iteration, and the data saved at its start is trained on first when the run resumes.

        `episodes` are real episodes collected elsewhere (e.g. by the ROS policy node); without them the
        trainer collects in its own environments.
        """
        it = self.state.iteration
        t0 = time.perf_counter()
        skip_collect = self.data_ahead() and episodes is None
        exploring = self.state.adapted is not None
        if len(self.buffer) == 0 and self.ckpt_steps and not episodes:  # a checkpoint with steps, no data
            raise UserError(f"{self.run_dir}: checkpoint found but {DATA} is missing; cannot resume without data")
        if episodes is not None:
            fresh = list(episodes)
        else:
            fresh = [] if skip_collect else self.collect(it)
        self.ckpt_steps = None
        if fresh:
            self.buffer.add_episodes(fresh)
            self.buffer.save(self.run_dir / DATA)
        t1 = time.perf_counter()
        fit = self.fit(it)
        t2 = time.perf_counter()
        gen = torch.Generator(self.device).manual_seed(_seed(self.seed, it, Stream.META))
        starts = torch.as_tensor(self.buffer.starts if self.cfg.meta.start_states == "reset" else self.buffer.obs,
                                 device=self.device)
        bounds = training_bounds(torch.as_tensor(self.buffer.obs, device=self.device), self.cfg.meta.state_bounds)
        params, adapted, meta = meta_optimize(self.ensemble, to_device(self.state.params, self.device), starts,
                                              self.task, self.cfg.meta, self.imagined_horizon, gen, self.should_stop,
                                              bounds)
        t3 = time.perf_counter()
        self.state = RunState(it + 1, to_device(params, CPU), to_device(adapted, CPU))
        ret_pre, ret_post = self.evaluate(it, self.cfg.collect.eval_episodes)
        every = self.cfg.collect.video_every
        if every and (it + 1) % every == 0 and self.logger.writer is not None:
            self.log_video(it)
        t4 = time.perf_counter()
        collected = [e.ret for e in fresh] if exploring else []
        robot = [e.ret for e in fresh if e.terminated or e.length >= self.real_horizon] if episodes is not None else []
        row = ProgressRow(
            iteration=it, real_steps=self.buffer.total_steps, return_pre=round(ret_pre, 3),
            return_post=round(ret_post, 3), wall_s=round(self.wall_offset + t4 - self._start, 2),
            return_collect=round(float(np.mean(collected)), 3) if collected else None,
            imagined_return_pre=round(meta.imagined_return_pre, 3),
            imagined_return_post=round(meta.imagined_return_post, 3), imagined_gain=round(meta.imagined_gain, 3),
            real_gain=round(ret_post - ret_pre, 3), kl_pre_post=meta.kl_pre_post, policy_std=meta.policy_std,
            inner_lr=meta.inner_lr, kl_outer=meta.kl_outer, rejected_steps=meta.rejected_steps,
            outer_steps=meta.outer_steps,
            model_val_loss=float(np.mean(fit.val_loss)), model_epochs=int(np.mean(fit.epochs)),
            disagreement=self.disagreement(fresh), t_collect=round(t1 - t0, 3), t_fit=round(t2 - t1, 3),
            t_meta=round(t3 - t2, 3), t_eval=round(t4 - t3, 3),
            robot_return=round(float(np.mean(robot)), 3) if robot else None, robot_episodes=len(robot),
            val_loss=tuple(float(v) for v in fit.val_loss))
        self.logger.log(row)
        self._checkpoint(row.wall_s)
        return row

    def train(self, total_steps: int, on_iteration: Callable[[ProgressRow], None] | None = None,
              target_return: float | None = None) -> list[ProgressRow]:
        """Iterate until `total_steps` real transitions have been collected, or until the meta-policy's
        evaluation return reaches `target_return` (if given)."""
        self._start = time.perf_counter()
        rows = []
        while self.buffer.total_steps < total_steps or self.data_ahead():
            row = self.iterate()
            rows.append(row)
            if on_iteration is not None:
                on_iteration(row)
            if target_return is not None and row.return_pre >= target_return:
                break
        self.logger.close()
        return rows
