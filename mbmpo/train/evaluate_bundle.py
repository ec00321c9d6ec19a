"""Evaluating an exported bundle through the torch-free runtime: what is evaluated is what deploys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mbmpo.errors import UserError
from mbmpo.runtime import AdaptationRefused, BundleError, Policy, load
from mbmpo.runtime.policy import ADAPT_THROUGH
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
                    adapt_episodes: int = 4, seed: int = 12345, adapt_kl: float | None = None,
                    adapt_steps: int = 1, through: str = "episodes", adapt_rounds: int = 1,
                    judge: bool = False) -> dict[str, Any]:
    """Returns before (meta-policy, `return_pre_*`) and, with `adapt`, after ONE adaptation step from fresh
    real episodes (`return_adapted_*`; `return_post` names the model-adapted policies of training). The step
    is the bundle's (training's step size) unless `adapt_kl` scales it to that KL; `adapt_steps` > 1 takes
    more steps on the same episodes, each from the last and under the KL bound (`adapt_kl` the total).
    `through="models"` adapts through the bundle's dynamics models instead (`Policy.adapt_in_models`: up to
    `adapt_steps` steps on imagined rollouts of the models corrected to the fresh episodes). `adapt_rounds` and
    `judge`: see `adapt_online`."""
    for flag, value in (("--adapt-steps", adapt_steps), ("--adapt-rounds", adapt_rounds)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if through not in ADAPT_THROUGH:
        raise UserError(f"adapt through '{through}': expected one of {', '.join(ADAPT_THROUGH)}")
    if episodes < 1:
        raise UserError("--episodes must be >= 1")
    try:
        policy = load(pdir)
    except BundleError as err:
        raise UserError(str(err)) from None
    check_contract(policy, task)
    env = task.make_env(task.horizon)
    apply_perturbations(env, perturb)
    rng = np.random.default_rng(seed)
    pre = [runtime_episode(policy, env, seed + i, task.horizon, True, rng)[2] for i in range(episodes)]
    result: dict[str, Any] = {"task": task.name, "episodes": episodes, "perturb": perturb,
                              "policy_version": policy.manifest["policy_version"],
                              "return_pre_mean": float(np.mean(pre)), "return_pre_std": float(np.std(pre))}
    if adapt:
        def adapt_once(current: Policy, fresh: list[Episode], own: list[Episode], k: int) -> Policy:
            if through == "episodes":  # a policy-gradient step: the current policy's own episodes
                return current.adapt([(o, a) for o, a, _ in own], kl=adapt_kl, steps=adapt_steps)
            return current.adapt_in_models([(o, a) for o, a, _ in fresh], steps=adapt_steps,
                                           rng=np.random.default_rng(seed + 7 + k), kl=adapt_kl)

        def collect(current: Policy, k: int) -> list[Episode]:
            return [runtime_episode(current, env, seed + 1000 + k * adapt_episodes + i, task.horizon, False, rng)
                    for i in range(adapt_episodes)]

        adapted, info = adapt_online(policy, collect, adapt_once, adapt_rounds, judge)
        result.update(info)
        post = [runtime_episode(adapted, env, seed + i, task.horizon, True, rng)[2] for i in range(episodes)]
        result.update({"return_adapted_mean": float(np.mean(post)), "return_adapted_std": float(np.std(post))})
    env.close()
    return result


Episode = tuple[np.ndarray, np.ndarray, float]  # obs (L+1) x D, act L x A, return


def adapt_online(policy: Policy, collect: Callable[[Policy, int], list[Episode]],
                 adapt_once: Callable[[Policy, list[Episode], list[Episode], int], Policy],
                 rounds: int, judge: bool) -> tuple[Policy, dict[str, Any]]:
    """Online adaptation in `rounds`: each collects fresh episodes with the policy in use (`collect(policy, k)`)
    and adapts it from them (`adapt_once(policy, all fresh episodes, its own, k)`; a refused round keeps it).
    With `judge`, each adapted policy first runs its own episodes (one collection more in all) and is kept only
    if their mean return is at least that of the episodes of the policy it came from: else that policy is back
    in use. Returns the policy in use at the end and what happened (`adapt_kl` from `policy` on the fresh
    states, the last adaptation's `adapt_info`, `rounds_adapted`, `rounds_reverted`, `adapt_refused` when the
    policy in use is `policy` again, `adapt_transitions`)."""
    current, parent, parent_own = policy, None, []
    fresh: list[Episode] = []
    info: dict[str, Any] = {"rounds_adapted": 0, "rounds_reverted": 0}
    refusal = ""
    for k in range(rounds + judge):
        own = collect(current, k)
        fresh += own
        if judge and parent is not None:
            if _mean_return(own) < _mean_return(parent_own):
                info["rounds_reverted"] += 1
                current, own = parent, parent_own  # the judged policy's episodes stay in `fresh` (models' data)
            parent = None
        if k == rounds:
            break  # the judging collection of the last round
        try:
            step = adapt_once(current, fresh, own, k)
        except AdaptationRefused as err:
            refusal = str(err)
            continue
        info.update(step.adapt_info)
        info["rounds_adapted"] += 1
        parent, parent_own, current = current, own, step
    if current is policy:
        info["adapt_refused"] = refusal or "every adapted policy scored below the one it came from"
    else:
        info["adapt_kl"] = policy.kl_to(current, np.concatenate([o[:-1] for o, _, _ in fresh]))
    info["adapt_transitions"] = int(sum(len(a) for _, a, _ in fresh))
    return current, info


def _mean_return(episodes: list[Episode]) -> float:
    return float(np.mean([g for _, _, g in episodes]))
