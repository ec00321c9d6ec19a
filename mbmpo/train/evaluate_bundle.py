"""Evaluating an exported bundle through the torch-free runtime: what is evaluated is what deploys."""

from __future__ import annotations

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
                    adapt_steps: int = 1, through: str = "episodes", adapt_rounds: int = 1) -> dict[str, Any]:
    """Returns before (meta-policy, `return_pre_*`) and, with `adapt`, after ONE adaptation step from fresh
    real episodes (`return_adapted_*`; `return_post` names the model-adapted policies of training). The step
    is the bundle's (training's step size) unless `adapt_kl` scales it to that KL; `adapt_steps` > 1 takes
    more steps on the same episodes, each from the last and under the KL bound (`adapt_kl` the total).
    `through="models"` adapts through the bundle's dynamics models instead (`Policy.adapt_in_models`: up to
    `adapt_steps` steps on imagined rollouts of the models corrected to the fresh episodes). `adapt_rounds` > 1
    goes on adapting online: each further round collects `adapt_episodes` more with the policy adapted so far
    and adapts it again, through the models corrected to every fresh episode so far, or on the round's own
    episodes (a policy-gradient step needs its own policy's data); a refused round keeps the policy it had."""
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
        adapted, fresh, refusal = policy, [], ""
        for k in range(adapt_rounds):
            new = [runtime_episode(adapted, env, seed + 1000 + k * adapt_episodes + i, task.horizon, False, rng)
                   for i in range(adapt_episodes)]
            fresh += new
            try:
                if through == "episodes":
                    step = adapted.adapt([(o, a) for o, a, _ in new], kl=adapt_kl, steps=adapt_steps)
                else:
                    step = adapted.adapt_in_models([(o, a) for o, a, _ in fresh], steps=adapt_steps,
                                                   rng=np.random.default_rng(seed + 7 + k), kl=adapt_kl)
            except AdaptationRefused as err:
                refusal = str(err)
                continue
            result.update(step.adapt_info)
            result["adapt_kl"] = policy.kl_to(step, np.concatenate([o[:-1] for o, _, _ in fresh]))
            result["rounds_adapted"] = result.get("rounds_adapted", 0) + 1
            adapted = step
        if adapted is policy:
            result["adapt_refused"] = refusal
        post = [runtime_episode(adapted, env, seed + i, task.horizon, True, rng)[2] for i in range(episodes)]
        result.update({"adapt_transitions": int(sum(len(a) for _, a, _ in fresh)),
                       "return_adapted_mean": float(np.mean(post)), "return_adapted_std": float(np.std(post))})
    env.close()
    return result
