"""`Policy`: act with one parameter set through ONNX Runtime, and adapt it with ONE gradient step.

A `Policy` never changes: `adapt` returns a new one (or raises `AdaptationRefused`), so a caller can
swap policies atomically at an episode boundary or keep the old one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mbmpo.runtime.advantages import advantages, pad_episodes
from mbmpo.runtime.bundle import Bundle, load_bundle, policy_session
from mbmpo.runtime.models import imagine, widened

_RNG = np.random.default_rng()


class AdaptationRefused(RuntimeError):
    """The adapted parameters failed validation (non-finite, or KL(pre || post) over the bound)."""


def gaussian_kl(mean_p: np.ndarray, log_std_p: np.ndarray, mean_q: np.ndarray, log_std_q: np.ndarray) -> np.ndarray:
    """KL(p || q) of diagonal Gaussians, summed over the last dimension."""
    var_p, var_q = np.exp(2 * log_std_p), np.exp(2 * log_std_q)
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5).sum(-1)


def kl_scaled_step(trial: float, kl_at_trial: float, target: float) -> float:
    """The step size that moves the policy by KL `target`, from the KL a `trial` step size gave: KL grows
    like the square of the step for small steps (KL ~ a^2 g'Fg / 2), as training's KL-normalised inner step
    assumes. A zero or non-finite trial KL (no gradient) keeps the trial size."""
    if not np.isfinite(kl_at_trial) or kl_at_trial <= 0.0:
        return trial
    return trial * float(np.sqrt(target / kl_at_trial))


class Policy:
    """One parameter set of a bundle (the meta-policy, an exploration policy, or an adapted one)."""

    def __init__(self, bundle: Bundle, params: dict[str, np.ndarray], name: str):
        self.bundle, self.params, self.name = bundle, params, name
        self.session = policy_session(bundle, params)  # built here, never on the control path
        # the std comes from the parameters, not the session: ONNX Runtime does not override an initialiser
        # that is also a graph output (policy.onnx's action_log_std), so every session reported the
        # meta-policy's log-std and adapted or exploration policies sampled with the wrong std
        self.log_std = np.asarray(params["log_std"], np.float32)
        self.kl_from_parent = 0.0  # an adapted policy: mean KL(parent || self) on the data it adapted on
        self.adapt_info: dict[str, float] = {}  # an adapted policy: what its adaptation measured
        self._low = np.asarray(bundle.manifest["act_low"], np.float32)
        self._high = np.asarray(bundle.manifest["act_high"], np.float32)

    @property
    def manifest(self) -> dict:
        return self.bundle.manifest

    def _check_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.bundle.obs_dim:
            raise ValueError(f"observation has shape {obs.shape}; policy '{self.manifest['policy_version']}' "
                             f"expects ({self.bundle.obs_dim},) or (B, {self.bundle.obs_dim}) "
                             f"ordered as {self.manifest['obs_names']}")
        if not np.isfinite(obs).all():
            raise ValueError(f"observation contains non-finite values at indices "
                             f"{np.argwhere(~np.isfinite(obs)).tolist()[:5]}")
        return obs

    def distribution(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean B x A, log_std A) for obs B x D."""
        return self.session.run(None, {"obs": obs})[0], self.log_std

    def act(self, obs: np.ndarray, deterministic: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """Action(s) for obs D or B x D, clipped to the action limits. Raises ValueError for bad input."""
        obs = self._check_obs(obs)
        single = obs.ndim == 1
        mean = self.session.run(None, {"obs": obs[None] if single else obs})[0]
        if not deterministic:
            with np.errstate(over="ignore"):  # an overflowing std is caught below as a non-finite action
                mean += np.exp(self.log_std) * (rng or _RNG).standard_normal(mean.shape, dtype=np.float32)
        if not np.isfinite(mean).all():
            raise ValueError(f"policy '{self.name}' produced a non-finite action")
        np.minimum(np.maximum(mean, self._low, out=mean), self._high, out=mean)  # np.clip is slower here
        return mean[0] if single else mean

    def exploration(self, k: int) -> Policy:
        """The k-th adapted parameter set of the last training iteration (what MB-MPO explores with)."""
        n = self.manifest["n_explore"]
        if not 0 <= k < n:
            raise IndexError(f"exploration policy {k} requested; the bundle has {n}")
        cache = self.bundle.explore_cache
        if k not in cache:
            cache[k] = Policy(self.bundle, {name: v[k] for name, v in self.bundle.explore_params.items()}, f"explore{k}")
        return cache[k]

    def meta(self) -> Policy:
        return Policy(self.bundle, self.bundle.meta_params, "meta")

    def prime(self) -> Policy:
        """Run this policy's session once (ONNX Runtime's first run allocates): call before it acts, off the
        control path."""
        self.session.run(None, {"obs": np.zeros((1, self.bundle.obs_dim), np.float32)})
        return self

    def warm(self) -> Policy:
        """Build every exploration policy's session now and prime each, and this one: call before the control
        loop starts, or off it."""
        for policy in [self, *(self.exploration(k) for k in range(self.manifest["n_explore"]))]:
            policy.prime()
        return self

    def advantages(self, episodes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
        """GAE advantages (linear baseline, the bundle's gamma/lambda) for episodes (obs, act, rew): N x H."""
        obs, _, rew, mask = pad_episodes(list(episodes))
        m = self.manifest
        return advantages(obs, rew, mask, m["gamma"], m["gae_lambda"], m["normalize_advantages"])

    def adapt(self, episodes: Sequence[tuple[np.ndarray, ...]], alpha: float | None = None,
              max_kl: float | None = None, kl: float | None = None, steps: int = 1) -> Policy:
        """`steps` gradient steps on the same episodes, each from the last and each under `max_kl` (`kl`, if
        given, is the total: each step takes kl / steps^2); one adapted policy, its KL measured from this one."""
        adapted = self
        for _ in range(steps):
            adapted = adapted._adapt_once(episodes, alpha, max_kl, None if kl is None else kl / steps ** 2)
        if steps > 1:
            adapted.name = f"{self.name}+adapted"
            adapted.kl_from_parent = self.kl_to(adapted, np.concatenate([self._check_obs(ep[0])[:-1] for ep in episodes]))
        return adapted

    def _adapt_once(self, episodes: Sequence[tuple[np.ndarray, ...]], alpha: float | None,
                    max_kl: float | None, kl: float | None) -> Policy:
        """ONE policy-gradient step from real episodes; returns a NEW policy. Its size is training's (`_step`)
        unless `alpha` is given, or `kl` (the step scaled to that KL(pre || post)).

        episodes: each (obs (L+1) x D, act L x A) with rewards computed by the bundle's reward function,
        or (obs (L+1) x D, act L x A, rew L). Raises `AdaptationRefused` when the result is non-finite
        or moves the policy more than `max_kl` (mean KL(pre || post) on the batch's states).
        """
        prepared = []
        for ep in episodes:
            obs, act = self._check_obs(ep[0]), np.asarray(ep[1], np.float32)
            if obs.ndim != 2 or act.shape != (obs.shape[0] - 1, self.bundle.act_dim):
                raise ValueError(f"episode has obs {obs.shape} and act {act.shape}; expected (L+1, "
                                 f"{self.bundle.obs_dim}) and (L, {self.bundle.act_dim})")
            rew = np.asarray(ep[2], np.float32) if len(ep) > 2 else np.asarray(
                self.bundle.reward_fn(obs[:-1], act, obs[1:]), np.float32)
            if not np.isfinite(act).all() or not np.isfinite(rew).all():
                raise ValueError("episode has non-finite actions or rewards")
            prepared.append((obs[:-1], act, rew))
        if not prepared or sum(len(r) for _, _, r in prepared) == 0:
            raise ValueError("adapt needs at least one transition")
        adv = self.advantages(prepared)
        obs_b = np.concatenate([o for o, _, _ in prepared])
        act_b = np.concatenate([a for _, a, _ in prepared])
        adv_b = np.concatenate([adv[i, :len(r)] for i, (_, _, r) in enumerate(prepared)]).astype(np.float32)
        feed = {**self.params, "obs": obs_b, "act": act_b, "adv": adv_b, "alpha": np.asarray(1.0, np.float32)}
        unit = dict(zip(self.manifest["param_names"], self.bundle.adapt_session.run(None, feed)))
        grad = {k: self.params[k] - unit[k] for k in unit}  # theta - 1 * g: the step's direction g
        bad = [k for k, v in grad.items() if not np.isfinite(v).all()]
        if bad:
            raise AdaptationRefused(f"adapted parameters {bad} are not finite; keeping '{self.name}'")
        adapted = Policy(self.bundle, self._step(grad, obs_b, alpha, kl), f"{self.name}+adapted")
        with np.errstate(all="ignore"):
            kl = self.kl_to(adapted, obs_b)
        if not np.isfinite(kl):
            raise AdaptationRefused(f"adapted policy's actions are not finite (KL {kl}); keeping '{self.name}'")
        bound = self.manifest["adapt_max_kl"] if max_kl is None else max_kl
        if not kl <= bound:
            raise AdaptationRefused(f"adaptation moved the policy by KL {kl:.4g} > bound {bound}; keeping '{self.name}'")
        adapted.kl_from_parent = kl
        return adapted

    def _step(self, grad: dict[str, np.ndarray], obs: np.ndarray, alpha: float | None,
              kl: float | None = None) -> dict[str, np.ndarray]:
        """theta - alpha (.) g: `alpha` when given, else the step scaled to KL(pre || post) = `kl` on `obs`
        B x D when given; else the step training took (in its order): scaled to the manifest's `adapt_kl` when
        > 0, else the learned step sizes (per parameter), else the fixed `alpha`."""
        m = self.manifest
        size = m["alpha"] if alpha is None else alpha
        target = float(m.get("adapt_kl", 0.0) if kl is None else kl)
        if alpha is None and target <= 0.0 and self.bundle.step_sizes:
            return {k: self.params[k] - self.bundle.step_sizes[k] * g for k, g in grad.items()}
        if alpha is None and target > 0.0:
            # a first trial that changes no parameter by more than 0.01 (a KL well above float32 noise, mostly
            # inside the quadratic range), then one correction from the size it suggests
            largest = max(float(np.abs(g).max()) for g in grad.values())
            size = 0.01 / largest if largest > 0.0 else 0.0
            for _ in range(2):
                trial = Policy(self.bundle, {k: self.params[k] - np.float32(size) * g for k, g in grad.items()}, "trial")
                with np.errstate(all="ignore"):
                    size = kl_scaled_step(size, self.kl_to(trial, obs), target)
        return {k: self.params[k] - np.float32(size) * g for k, g in grad.items()}

    def sampler(self, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        """states B x D -> actions sampled from this policy, B x A, not clipped (imagination's log-probabilities
        are of the samples)."""
        def act(obs: np.ndarray) -> np.ndarray:
            mean, log_std = self.distribution(np.ascontiguousarray(obs, np.float32))
            return mean + np.exp(log_std) * rng.standard_normal(mean.shape, dtype=np.float32)
        return act

    def adapt_in_models(self, episodes: Sequence[tuple[np.ndarray, ...]], steps: int = 1,
                        max_kl: float | None = None, rng: np.random.Generator | None = None,
                        kl: float | None = None) -> Policy:
        """Adaptation through the models: the bundle's ensemble is corrected to the fresh episodes (obs (L+1) x D,
        act L x A; `Models.corrected`), then up to `steps` of training's inner step, each on imagined rollouts
        of the corrected members (the data the step was meta-trained on; `kl` scales each to that KL instead)
        and each under `max_kl`. A step is kept only if the imagined return of the policy it gives rises on
        judging rollouts drawn apart from the step's own (the same start states and noise for every policy
        judged); the steps kept stand when a later one is not. Raises `AdaptationRefused` when
        the first step is not kept, or when the bundle carries no models."""
        models, spec = self.bundle.models, self.manifest.get("models")
        if models is None or not spec:
            raise AdaptationRefused(f"bundle '{self.manifest['policy_version']}' carries no dynamics models "
                                    "(export it with them to adapt through the models)")
        if steps < 1:
            raise ValueError(f"adapt_in_models: steps must be >= 1, got {steps}")
        rng = rng or np.random.default_rng()
        obs = [self._check_obs(ep[0]) for ep in episodes]
        if not obs or sum(len(o) - 1 for o in obs) < 5:
            raise ValueError("adapt_in_models needs at least 5 fresh transitions")
        states = np.concatenate([o[:-1] for o in obs])
        act = np.concatenate([np.asarray(ep[1], np.float32) for ep in episodes])
        if act.shape != (len(states), self.bundle.act_dim) or not np.isfinite(act).all():
            raise ValueError(f"episodes' actions have shape {act.shape} (or non-finite values); expected "
                             f"({len(states)}, {self.bundle.act_dim})")
        corrected, err_before, err_after = models.corrected(states, act, np.concatenate([o[1:] for o in obs]), rng)
        starts = np.stack([o[0] for o in obs]) if spec["start_states"] == "reset" else states
        bounds = None
        if models.recorded is not None:  # training's bounds, over its recorded states and the robot's fresh ones
            seen = np.concatenate(obs)
            bounds = widened(np.minimum(models.recorded[0], seen.min(0)), np.maximum(models.recorded[1], seen.max(0)),
                             float(spec.get("state_bounds", 0.0)))
        judge, *draws = (int(x) for x in rng.integers(2**31, size=steps + 1))
        low, high = np.asarray(self.manifest["act_low"], np.float32), np.asarray(self.manifest["act_high"], np.float32)

        def rollouts(policy: Policy, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            common = np.random.default_rng(seed)  # a seed's starts and noise are the same for every policy
            return imagine(policy.sampler(common), corrected, starts, int(spec["rollouts_per_task"]),
                           int(spec["horizon"]), float(spec["clip_obs"]), self.bundle.reward_fn,
                           self.bundle.termination_fn, low, high, common, bounds)

        def value(policy: Policy) -> float:
            """Imagined return on the judging rollouts: never the ones a step was taken on, whose noise the step
            fits (judged on its own batch, a step on an unshifted robot 'gained' every time and drifted)."""
            return float(np.mean([r.sum() for _, _, r in rollouts(policy, judge)]))

        current, returns = self, [value(self)]
        for draw in draws:
            try:
                candidate = current._adapt_once(rollouts(current, draw), None, max_kl, kl)
            except AdaptationRefused:
                if current is self:
                    raise
                break  # a later step out of bounds: the steps kept so far stand
            gained = value(candidate)
            if not gained > returns[-1]:
                break
            current = candidate
            returns.append(gained)
        if current is self:
            raise AdaptationRefused(f"the step did not raise the imagined return in the corrected models "
                                    f"({returns[0]:.1f} before); keeping '{self.name}'")
        current.name = f"{self.name}+adapted"
        current.kl_from_parent = self.kl_to(current, states)
        current.adapt_info = {"model_error_before": err_before, "model_error_after": err_after,
                              "imagined_return_before": returns[0], "imagined_return_after": returns[-1],
                              "steps": float(len(returns) - 1)}
        return current

    def kl_to(self, other: Policy, obs: np.ndarray) -> float:
        """Mean KL(self || other) over states obs B x D."""
        mean_p, log_std_p = self.distribution(obs)
        mean_q, log_std_q = other.distribution(obs)
        return float(gaussian_kl(mean_p, log_std_p, mean_q, log_std_q).mean())


def load(path: str | Path) -> Policy:
    """Load and verify a bundle; its meta-policy. Raises `BundleError` saying which file or field is wrong."""
    bundle = load_bundle(path)
    return Policy(bundle, bundle.meta_params, "meta")
