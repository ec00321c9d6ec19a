"""The bundle's dynamics ensemble on the robot, torch-free: prediction, a linear correction fitted to the robot's
fresh transitions, and imagined rollouts for adaptation through the models.

MB-MPO meta-trains the policy so that ONE step on imagined rollouts of a model adapts it to that model. On a
robot whose dynamics have shifted, `Models.corrected` fits, per member, a ridge regression of what the robot
did beyond what the member predicted (in the ensemble's normalised units), and `imagine` rolls the policy out
in the corrected members: the step the policy was meta-trained to take, on data of the robot's own dynamics.
When training bounded its imagination (`meta.state_bounds`), the bundle carries the recorded states' range and
the robot's imagination is bounded the same way, its range widened by the fresh states.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh, "swish": lambda x: x / (1.0 + np.exp(-x))}
RIDGE = (1e-3, 1e-2, 1e-1, 1.0)  # correction strengths tried; the best on held-out transitions is kept


def widened(low: Any, high: Any, margin: float) -> tuple[Any, Any]:
    """The imagination's bounds (training's and the robot's): the recorded range low D .. high D (numpy arrays
    or torch tensors), each side widened by `margin` x the range."""
    return low - margin * (high - low), high + margin * (high - low)


class Models:
    """E members: normalised (s, a) -> normalised s' - s, plus an optional linear correction.

    weights[i]: E x in x out, biases[i]: E x 1 x out; in_mean/in_std: F = D + A; out_mean/out_std: D;
    correction: E x (F + 1) x D on [x, 1], or None; recorded: the training data's state range (min D, max D),
    when training bounded its imagination, else None.
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], norms: dict[str, np.ndarray],
                 activation: str, correction: np.ndarray | None = None,
                 recorded: tuple[np.ndarray, np.ndarray] | None = None):
        if activation not in _ACT:
            raise ValueError(f"models: unknown activation '{activation}' (known: {sorted(_ACT)})")
        self.weights, self.biases, self.norms, self.activation = weights, biases, norms, activation
        self.correction, self.recorded = correction, recorded
        self.members = int(weights[0].shape[0])
        self.obs_dim = int(weights[-1].shape[-1])

    @classmethod
    def load(cls, path: Path, activation: str) -> Models:
        """From a bundle's models.npz (w0, b0, ..., in_mean, in_std, out_mean, out_std; state_min, state_max
        when training bounded its imagination)."""
        with np.load(path, allow_pickle=False) as data:
            n = sum(1 for k in data.files if k.startswith("w"))
            weights = [np.asarray(data[f"w{i}"], np.float32) for i in range(n)]
            biases = [np.asarray(data[f"b{i}"], np.float32) for i in range(n)]
            norms = {k: np.asarray(data[k], np.float32) for k in ("in_mean", "in_std", "out_mean", "out_std")}
            ranges = {k: np.asarray(data[k], np.float32) for k in ("state_min", "state_max") if k in data.files}
        named = {**{f"w{i}": w for i, w in enumerate(weights)}, **{f"b{i}": b for i, b in enumerate(biases)},
                 **norms, **ranges}
        bad = [k for k, v in named.items() if not np.isfinite(v).all()]
        if bad:
            raise ValueError(f"{path}: non-finite model arrays {bad}")
        if len(ranges) == 1:
            raise ValueError(f"{path}: holds {next(iter(ranges))} without its other end")
        recorded = (ranges["state_min"], ranges["state_max"]) if ranges else None
        if recorded is not None and not (recorded[0].shape == recorded[1].shape == norms["out_mean"].shape
                                         and (recorded[0] <= recorded[1]).all()):
            raise ValueError(f"{path}: state_min / state_max must be {norms['out_mean'].shape} with min <= max")
        return cls(weights, biases, norms, activation, recorded=recorded)

    def network(self, x: np.ndarray) -> np.ndarray:
        """Normalised inputs E x B x F (or B x F, shared) -> the members' normalised outputs E x B x D."""
        h = np.broadcast_to(x, (self.members, *x.shape[-2:])) if x.ndim == 2 else x
        act = _ACT[self.activation]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = act(h)
        return h

    def normalized(self, x: np.ndarray) -> np.ndarray:
        """The corrected normalised prediction: E x B x F (or B x F) -> E x B x D."""
        out = self.network(x)
        if self.correction is not None:
            x = np.broadcast_to(x, out.shape[:-1] + x.shape[-1:])
            out = out + np.concatenate([x, np.ones_like(x[..., :1])], -1) @ self.correction
        return out

    def inputs(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        return (np.concatenate([obs, act], -1) - self.norms["in_mean"]) / self.norms["in_std"]

    def targets(self, obs: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        return (next_obs - obs - self.norms["out_mean"]) / self.norms["out_std"]

    def predict(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """Raw next states: obs E x B x D, act E x B x A -> E x B x D (member e sees batch e)."""
        return obs + self.normalized(self.inputs(obs, act)) * self.norms["out_std"] + self.norms["out_mean"]

    def error(self, x: np.ndarray, y: np.ndarray) -> float:
        """Normalised one-step MSE, mean over members, of B transitions (x B x F, y B x D)."""
        return float(((self.normalized(x) - y) ** 2).mean())

    def corrected(self, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray,
                  rng: np.random.Generator) -> tuple[Models, float, float]:
        """The members corrected to transitions obs B x D, act B x A, next_obs B x D: per member, the ridge
        regression of the residual on [x, 1] whose strength (of RIDGE) has the lowest error on a held-out fifth.
        Returns (corrected models, held-out error before, after); the uncorrected models when no strength
        lowers it."""
        x, y = self.inputs(obs, act).astype(np.float64), self.targets(obs, next_obs).astype(np.float64)
        order = rng.permutation(x.shape[0])
        cut = max(1, x.shape[0] // 5)
        (xv, yv), (xt, yt) = (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])
        before = self.error(xv, yv)
        residual = yt - self.network(xt)  # E x B x D
        xb = np.concatenate([xt, np.ones_like(xt[:, :1])], -1)
        gram, rhs = xb.T @ xb, np.einsum("bf,ebd->efd", xb, residual)
        best: tuple[float, Models] = (before, self)
        for lam in RIDGE:
            w = np.linalg.solve(gram + lam * xt.shape[0] * np.eye(xb.shape[1]), rhs)  # E x (F+1) x D
            candidate = Models(self.weights, self.biases, self.norms, self.activation, w.astype(np.float32),
                               self.recorded)
            err = candidate.error(xv, yv)
            if err < best[0]:
                best = (err, candidate)
        return best[1], before, best[0]


def imagine(act_fn: Callable[[np.ndarray], np.ndarray], models: Models, starts: np.ndarray, per_member: int,
            horizon: int, clip_obs: float, reward_fn: Callable[..., Any],
            termination_fn: Callable[..., Any] | None, act_low: np.ndarray, act_high: np.ndarray,
            rng: np.random.Generator, bounds: tuple[np.ndarray, np.ndarray] | None = None,
            ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """E x per_member imagined episodes from start states drawn from `starts` S x D; member e rolls its own.

    act_fn maps states B x D to sampled actions B x A (before clipping: what the step's log-probability needs);
    the models see them clipped to [act_low, act_high]. An episode ends at `horizon`, where `termination_fn` says
    so, at a non-finite prediction, or at a state outside `bounds` (low D, high D), clamped to them, as training's
    imagination does. Returns (obs (L+1) x D, act L x A, rew L) per episode.
    """
    e, d = models.members, starts.shape[1]
    obs = starts[rng.integers(0, starts.shape[0], size=(e, per_member))].astype(np.float32)
    alive = np.ones((e, per_member), bool)
    length = np.full((e, per_member), horizon)
    obs_buf = np.zeros((e, per_member, horizon + 1, d), np.float32)
    act_buf = np.zeros((e, per_member, horizon, len(act_low)), np.float32)
    rew_buf = np.zeros((e, per_member, horizon), np.float32)
    obs_buf[:, :, 0] = obs
    for t in range(horizon):
        act = np.asarray(act_fn(obs.reshape(-1, d)), np.float32).reshape(e, per_member, -1)
        applied = np.clip(act, act_low, act_high)
        with np.errstate(all="ignore"):
            nxt = models.predict(obs, applied)
        valid = np.isfinite(nxt).all(-1)
        nxt = np.clip(np.nan_to_num(nxt, nan=0.0), -clip_obs, clip_obs).astype(np.float32)
        if bounds is not None:
            valid &= ((nxt >= bounds[0]) & (nxt <= bounds[1])).all(-1)
            nxt = np.clip(nxt, bounds[0], bounds[1]).astype(np.float32)
        rew = np.asarray(reward_fn(obs, applied, nxt), np.float32)
        done = ~valid
        if termination_fn is not None:
            done = done | np.asarray(termination_fn(obs, applied, nxt), bool)
        act_buf[:, :, t], rew_buf[:, :, t], obs_buf[:, :, t + 1] = act, np.where(alive, rew, 0.0), nxt
        ended = alive & done
        length[ended] = t + 1
        alive &= ~done
        if not alive.any():
            break
        obs = nxt
    return [(obs_buf[i, j, :length[i, j] + 1], act_buf[i, j, :length[i, j]], rew_buf[i, j, :length[i, j]])
            for i in range(e) for j in range(per_member)]
