"""Evaluating an exported bundle through the torch-free runtime: what is evaluated is what deploys."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mbmpo.config import ADAPT_THROUGH, shipped_adaptation
from mbmpo.deploy.online import OnlineAdaptation, Request
from mbmpo.errors import UserError
from mbmpo.runtime import AdaptationRefused, BundleError, Policy, load
from mbmpo.tasks.base import TaskSpec
from mbmpo.tasks.perturb import apply_perturbations


def runtime_episode(policy: Policy, env: Any, seed: int, horizon: int, deterministic: bool,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """One episode driven by `policy.act`; returns (obs (L+1) x D, act L x A, return)."""
    obs, _ = env.reset(seed=seed)
    observations, actions, total = [np.asarray(obs, np.float32)], [], 0.0
    for _ in range(horizon):
        action = policy.act(observations[-1], deterministic=deterministic, rng=rng)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(np.asarray(obs, np.float32))
        actions.append(action)
        total += float(reward)
        if terminated or truncated:
            break
    return np.stack(observations), np.stack(actions), total


def check_contract(policy: Policy, task: TaskSpec) -> None:
    """The bundle's observation/action layout must be the task's, name for name."""
    m = policy.manifest
    if list(m["obs_names"]) != list(task.obs_names) or list(m["act_names"]) != list(task.act_names):
        raise UserError(f"bundle {policy.bundle.path} expects observations {m['obs_names']} and actions "
                        f"{m['act_names']}; task '{task.name}' gives {list(task.obs_names)} and {list(task.act_names)}")


def evaluate_bundle(pdir: Path, task: TaskSpec, episodes: int, adapt: bool, perturb: dict[str, float],
                    adapt_episodes: int | None = None, seed: int = 12345, adapt_kl: float | None = None,
                    adapt_steps: int | None = None, through: str | None = None, adapt_rounds: int | None = None,
                    judge: bool | None = None, margin: float | None = None) -> dict[str, Any]:
    """Returns before (meta-policy, `return_pre_*`) and, with `adapt`, after ONE adaptation step from fresh
    real episodes (`return_adapted_*`; `return_post` names the model-adapted policies of training). The step
    is the bundle's (training's step size) unless `adapt_kl` scales it to that KL; `adapt_steps` > 1 takes
    more steps on the same episodes, each from the last and under the KL bound (`adapt_kl` the total).
    `through="models"` adapts through the bundle's dynamics models instead (`Policy.adapt_in_models`: up to
    `adapt_steps` steps on imagined rollouts of the models corrected to the fresh episodes). `adapt_rounds` > 1
    adapts online in rounds and `judge` keeps an adapted policy only if the robot's returns say so (by `margin`
    standard errors), as the policy node does (mbmpo.deploy.online), on at most (adapt_rounds + judge) x
    adapt_episodes fresh episodes.
    Each adaptation setting left None is the one the bundle ships (`result["adaptation"]`: what was used)."""
    for flag, value in (("--adapt-episodes", adapt_episodes), ("--adapt-steps", adapt_steps),
                        ("--adapt-rounds", adapt_rounds)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if through is not None and through not in ADAPT_THROUGH:
        raise UserError(f"adapt through '{through}': expected one of {', '.join(ADAPT_THROUGH)}")
    if episodes < 1:
        raise UserError("--episodes must be >= 1")
    if margin is not None and not margin >= 0:
        raise UserError(f"--adapt-margin must be >= 0 (standard errors), got {margin}")
    if adapt_kl is not None and not adapt_kl >= 0:
        raise UserError(f"--adapt-kl must be >= 0 (0: training's step; left out: as the bundle ships it), "
                        f"got {adapt_kl}")
    try:
        policy = load(pdir)
    except BundleError as err:
        raise UserError(str(err)) from None
    check_contract(policy, task)
    how = shipped_adaptation(policy.manifest, str(Path(pdir) / "manifest.json"), adapt_episodes=adapt_episodes,
                             adapt_steps=adapt_steps, adapt_through=through, adapt_rounds=adapt_rounds,
                             adapt_kl=adapt_kl, adapt_judge=judge, adapt_margin=margin)
    env = task.make_env(task.horizon)
    apply_perturbations(env, perturb)
    rng = np.random.default_rng(seed)
    pre = [runtime_episode(policy, env, seed + i, task.horizon, True, rng)[2] for i in range(episodes)]
    result: dict[str, Any] = {"task": task.name, "episodes": episodes, "perturb": perturb,
                              "policy_version": policy.manifest["policy_version"],
                              "return_pre_mean": float(np.mean(pre)), "return_pre_std": float(np.std(pre))}
    if adapt:
        kl = how.adapt_kl or None  # 0: training's step

        def adapt_once(request: Request, k: int) -> Policy:
            pieces = request.episodes
            if how.adapt_through == "episodes":
                return request.policy.adapt(pieces, kl=kl, steps=how.adapt_steps)
            return request.policy.adapt_in_models(pieces, steps=how.adapt_steps,
                                                  rng=np.random.default_rng(seed + 7 + k), kl=kl)

        def collect(current: Policy, n: int) -> Episode:
            return runtime_episode(current, env, seed + 1000 + n, task.horizon, False, rng)

        online = OnlineAdaptation(policy, how.adapt_episodes, how.adapt_rounds, how.adapt_judge, how.adapt_through,
                                  how.adapt_margin)
        result["adaptation"] = dataclasses.asdict(how)
        budget = (how.adapt_rounds + how.adapt_judge) * how.adapt_episodes
        result.update(adapt_online(online, collect, adapt_once, budget))
        post = [runtime_episode(online.current, env, seed + i, task.horizon, True, rng)[2] for i in range(episodes)]
        result.update({"return_adapted_mean": float(np.mean(post)), "return_adapted_std": float(np.std(post))})
    env.close()
    return result


Episode = tuple[np.ndarray, np.ndarray, float]  # obs (L+1) x D, act L x A, return


def adapt_online(online: OnlineAdaptation, collect: Callable[[Policy, int], Episode],
                 adapt_once: Callable[[Request, int], Policy], budget: int) -> dict[str, Any]:
    """Drives `online` (mbmpo.deploy.online: what the policy node does) for at most `budget` fresh episodes:
    `collect(policy in use, n)` runs the n-th, `adapt_once(request, k)` runs the k-th adaptation (raising
    `AdaptationRefused` to refuse it). Returns what happened: `adapt_kl` (from the meta-policy to the policy in
    use, on the fresh states), the last adaptation's `adapt_info`, `rounds_adapted`, `rounds_reverted`,
    `adapt_refused` (why) when the meta-policy is still in use, `adapt_transitions`."""
    fresh: list[Episode] = []
    info: dict[str, Any] = {}
    refusal = ""
    while len(fresh) < budget and not online.finished:
        fresh.append(collect(online.current, len(fresh)))
        obs, act, episode_return = fresh[-1]
        request, _ = online.episode_ended(online.current, [(obs, act)], episode_return)
        if request is None:
            continue
        try:
            step: Policy | None = adapt_once(request, online.adapted_count)
        except AdaptationRefused as err:
            step, refusal = None, str(err)
        online.adapted(step)
        info.update(step.adapt_info if step is not None else {})
    base = online.base
    info.update({"rounds_adapted": online.adapted_count, "rounds_reverted": online.reverted,
                 "adapt_transitions": int(sum(len(a) for _, a, _ in fresh))})
    if online.current is base:
        info["adapt_refused"] = refusal or "every adapted policy scored below the one it came from"
    else:
        info["adapt_kl"] = base.kl_to(online.current, np.concatenate([o[:-1] for o, _, _ in fresh]))
    return info
