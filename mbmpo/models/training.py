"""Fitting the ensemble: per-member train/validation splits, batched Adam, per-member early stopping.

Early stopping follows the original implementation: each member keeps a rolling average of its
validation loss, r <- p r + (1 - p) v (started at 1.5 v_0); a member stops once r rises. Stopped
members keep their weights (their loss is masked out) while the others go on, all in one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mbmpo.config import ModelConfig
from mbmpo.errors import Abandoned
from mbmpo.models.ensemble import DynamicsEnsemble


@dataclass(frozen=True)
class FitResult:
    val_loss: list[float]  # per member, on its own validation split (normalised MSE)
    epochs: list[int]  # per member, epochs trained before stopping
    train_samples: int  # member-samples processed (for throughput figures)


def member_splits(n: int, members: int, valid_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Independent random splits per member: (train E x n_train, valid E x n_valid) index tensors, on the
    generator's device."""
    perm = torch.argsort(torch.rand(members, n, generator=generator, device=generator.device), dim=1)
    n_valid = max(1, int(round(n * valid_fraction)))
    return perm[:, n_valid:], perm[:, :n_valid]


def _member_loss(ensemble: DynamicsEnsemble, x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per member: E x B x in, E x B x out -> E."""
    return ((ensemble(x) - y) ** 2).mean((1, 2))


@torch.no_grad()
def validation_loss(ensemble: DynamicsEnsemble, x: Tensor, y: Tensor, idx: Tensor, chunk: int = 20_000) -> Tensor:
    """Per-member loss on each member's own index set: idx E x n -> E."""
    total = torch.zeros(idx.shape[0], device=x.device)
    for start in range(0, idx.shape[1], chunk):
        part = idx[:, start:start + chunk]
        total += _member_loss(ensemble, x[part], y[part]) * part.shape[1]
    return total / idx.shape[1]


def fit_ensemble(ensemble: DynamicsEnsemble, optimizer: torch.optim.Optimizer, obs: Tensor, act: Tensor,
                 next_obs: Tensor, cfg: ModelConfig, generator: torch.Generator,
                 should_stop: Callable[[], bool] | None = None) -> FitResult:
    """Train all members on (obs B x D, act B x A, next_obs B x D), warm-starting from current weights.
    The data, the ensemble and `generator` share one device (the splits and minibatches are drawn there).
    Raises `Abandoned` at the start of an epoch once `should_stop()` is true."""
    ensemble.fit_normalizers(obs, act, next_obs)
    x, y = ensemble.normalized_io(obs, act, next_obs)
    members = ensemble.members
    train_idx, valid_idx = member_splits(obs.shape[0], members, cfg.valid_fraction, generator)
    n_train = train_idx.shape[1]
    batch = min(cfg.batch_size, n_train)
    active = torch.ones(members, dtype=torch.bool, device=x.device)
    n_active = members  # active.sum() as a Python int, read once per epoch (not a device sync per step)
    epochs = [0] * members
    v0 = validation_loss(ensemble, x, y, valid_idx)
    rolling = 1.5 * v0
    samples = 0
    params = [p for layer in ensemble.layers for p in layer.parameters()]
    frozen = [p.detach().clone() for p in params]
    steps = 0
    for _ in range(cfg.max_epochs):
        if should_stop is not None and should_stop():
            raise Abandoned("stopped during the model fit")
        if cfg.max_steps and steps >= cfg.max_steps:
            break
        shuffle = torch.argsort(torch.rand(members, n_train, generator=generator, device=generator.device), 1)
        order = torch.gather(train_idx, 1, shuffle)
        for start in range(0, n_train - batch + 1, batch):
            if cfg.max_steps and steps >= cfg.max_steps:
                break  # the step budget ends the fit mid-epoch; the validation below still runs
            steps += 1
            idx = order[:, start:start + batch]
            loss = (_member_loss(ensemble, x[idx], y[idx]) * active).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if n_active < members:  # stopped members must not move (Adam momentum would move them)
                with torch.no_grad():
                    for p, f in zip(params, frozen):
                        p[~active] = f[~active]
            samples += batch * n_active
        epochs = [n + int(a) for n, a in zip(epochs, active.tolist())]
        val = validation_loss(ensemble, x, y, valid_idx)
        new_rolling = cfg.persistency * rolling + (1.0 - cfg.persistency) * val
        stopping = active & (new_rolling > rolling)
        if stopping.any():
            with torch.no_grad():
                for p, f in zip(params, frozen):
                    f[stopping] = p[stopping]
        active &= ~stopping
        n_active = int(active.sum())
        rolling = new_rolling
        if n_active == 0:
            break
    val = validation_loss(ensemble, x, y, valid_idx)
    return FitResult([float(v) for v in val], epochs, samples)
