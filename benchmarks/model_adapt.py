"""Online adaptation through the models: does the meta-learned step, taken in imagination in an ensemble
corrected with the shifted robot's fresh data, recover more than the step taken on the fresh episodes?

    python benchmarks/model_adapt.py --run RUN --task HalfCheetah-v5 [--seeds 3] [--episodes 5] \
        [--adapt-episodes 4] [--fit-steps 300] [--steps 1 3] [--shifts ...] [--out rows.json]

MB-MPO meta-trains its policy so that one step on imagined rollouts of a model adapts it to that model; on the
robot the runtime steps on a few real episodes instead. Here, for each shifted robot (the four shifts of
sim_to_real.py and nominal) and evaluation seed, with the run's meta-policy and ensemble (torch, no bundle):

- before: the deterministic meta-policy's return on the shifted robot;
- `real`: one step on the `--adapt-episodes` fresh sampled episodes (what the runtime does);
- `imagined`: `S` steps, each on K x rollouts_per_task imagined rollouts of the run's ensemble started where
  training's imagination starts (`meta.start_states`: the fresh episodes' first states, or all their states); no correction;
- `corrected`: the same in a copy of the ensemble fine-tuned on the fresh transitions (`--fit-steps` Adam
  steps, best held-out loss kept);
- `residual`: the same in the ensemble plus the runtime's per-member linear correction (ridge regression,
  `mbmpo.runtime.models.Models.corrected`, what `adapt_through:=models` computes on the robot);

and the models' one-step error on held-out fresh transitions before and after the correction (normalised MSE,
the fit's loss): whether the ensemble ever saw dynamics like the shifted robot's. Recovery as in sim_to_real.py:
(after - before) / (nominal - before), nominal being the unshifted meta-policy's return. Records nothing:
a screen of a lever, on one run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from mbmpo.config import MetaConfig, config_from_dict
from mbmpo.export.bundle import model_arrays
from mbmpo.meta.inner import adapt, policy_part
from mbmpo.meta.outer import inner_step
from mbmpo.meta.returns import advantages
from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.policy.gaussian import Params
from mbmpo.rollouts.imagine import imagine
from mbmpo.rollouts.real import run_episodes
from mbmpo.runtime.models import Models
from mbmpo.tasks import get_task
from mbmpo.tasks.base import TaskSpec
from mbmpo.tasks.perturb import apply_perturbations
from mbmpo.train.checkpoint import load_checkpoint
from mbmpo.types import Episode
from sim_to_real import MIN_LOSS

SHIFTS = {"nominal": {}, "mass x1.3": {"mass": 1.3}, "friction x0.6": {"friction": 0.6},
          "gear x0.8": {"gear": 0.8}, "mass x1.3 + friction x0.6": {"mass": 1.3, "friction": 0.6}}


def pad(episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Episodes as one task: obs 1 x N x H x D, act 1 x N x H x A, rew 1 x N x H, mask 1 x N x H."""
    h = max(ep.length for ep in episodes)
    n, d, a = len(episodes), episodes[0].obs.shape[1], episodes[0].act.shape[1]
    obs, act, rew, mask = np.zeros((n, h, d)), np.zeros((n, h, a)), np.zeros((n, h)), np.zeros((n, h))
    for i, ep in enumerate(episodes):
        obs[i, :ep.length], act[i, :ep.length], rew[i, :ep.length], mask[i, :ep.length] = ep.obs[:-1], ep.act, ep.rew, 1
    return tuple(torch.as_tensor(x, dtype=torch.float32)[None] for x in (obs, act, rew, mask))  # type: ignore[return-value]


def step_on(params: Params, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, mask: torch.Tensor,
            meta: MetaConfig) -> Params:
    """The meta-learned step (training's size rule) on one task's trajectories (1 x N x H x ...): shared params."""
    adv = advantages(obs, rew, mask, meta.discount, meta.gae_lambda, meta.normalize_advantages)
    stepped = adapt(params, obs, act, adv, mask, inner_step(meta), False)
    return {k: v[0].detach() for k, v in stepped.items()}


def imagined_steps(ensemble: DynamicsEnsemble, params: Params, starts: torch.Tensor, task: TaskSpec,
                   meta: MetaConfig, steps: int, gen: torch.Generator) -> list[Params]:
    """`steps` meta-learned steps, each on fresh imagined rollouts (K x rollouts_per_task, pooled as one task)
    from states `starts` S x D; the policy after each step."""
    horizon = meta.horizon or task.horizon
    out = []
    for _ in range(steps):
        pick = starts[torch.randint(0, starts.shape[0], (ensemble.members, meta.rollouts_per_task), generator=gen)]
        tr = imagine(ensemble, params, pick, horizon, task, meta.clip_obs, gen)
        flat = [x.reshape(1, -1, *x.shape[2:]) for x in (tr.obs, tr.act, tr.rew, tr.mask)]
        params = step_on(params, *flat, meta)
        out.append(params)
    return out


def transitions(episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    obs = np.concatenate([ep.obs[:-1] for ep in episodes])
    act = np.concatenate([ep.act for ep in episodes])
    nxt = np.concatenate([ep.obs[1:] for ep in episodes])
    return tuple(torch.as_tensor(x, dtype=torch.float32) for x in (obs, act, nxt))  # type: ignore[return-value]


def split(ensemble: DynamicsEnsemble, episodes: list[Episode], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The fresh transitions as the ensemble's normalised inputs and targets, a fifth held out:
    (x_train B x F, y_train B x D, x_valid, y_valid)."""
    x, y = ensemble.normalized_io(*transitions(episodes))
    perm = torch.randperm(x.shape[0], generator=gen)
    cut = max(1, x.shape[0] // 5)
    return x[perm[cut:]], y[perm[cut:]], x[perm[:cut]], y[perm[:cut]]


def heldout(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """Normalised one-step MSE, mean over members: predict maps B x F to E x B x D."""
    with torch.no_grad():
        return float(((predict(x) - y) ** 2).mean())


def finetuned(ensemble: DynamicsEnsemble, data: tuple[torch.Tensor, ...], fit_steps: int,
              lr: float) -> tuple[DynamicsEnsemble, float]:
    """A copy fine-tuned on the fresh transitions (normalisers kept), full-batch Adam, with the weights of the
    best held-out loss (the start included); (copy, its held-out loss)."""
    model = copy.deepcopy(ensemble)
    xt, yt, xv, yv = data
    xt, xv = xt.expand(model.members, *xt.shape), xv.expand(model.members, *xv.shape)
    params = [p for layer in model.layers for p in layer.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    best = (float("inf"), [p.detach().clone() for p in params])
    for i in range(fit_steps + 1):
        val = heldout(lambda x: model(x), xv, yv)
        if val < best[0]:
            best = (val, [p.detach().clone() for p in params])
        if i == fit_steps:
            break
        loss = ((model(xt) - yt) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for p, b in zip(params, best[1]):
            p.copy_(b)
    return model, best[0]


class ResidualCorrected:
    """The ensemble plus a per-member linear correction of its normalised output, w_e: (F + 1) x D on [x, 1]:
    a correction a torch-free runtime can fit in closed form. Duck-types the ensemble for `imagine`."""

    def __init__(self, ensemble: DynamicsEnsemble, weights: torch.Tensor):
        self.ensemble, self.weights, self.members = ensemble, weights, ensemble.members  # weights E x (F+1) x D

    def frozen_weights(self) -> contextlib.AbstractContextManager:
        return self.ensemble.frozen_weights()

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised prediction for normalised inputs E x B x F (or B x F): E x B x D."""
        x = x.expand(self.members, *x.shape[-2:])
        return self.ensemble(x) + torch.cat([x, torch.ones_like(x[..., :1])], -1) @ self.weights

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Raw next states: obs E x B x D, act E x B x A -> E x B x D."""
        x = self.ensemble.in_norm.normalize(torch.cat([obs, act], -1))
        return obs + self.ensemble.out_norm.denormalize(self.normalized(x))


def residual(ensemble: DynamicsEnsemble, episodes: list[Episode], seed: int) -> tuple[ResidualCorrected, float]:
    """The runtime's correction (`mbmpo.runtime.models.Models.corrected`, the ridge strength chosen on its own
    held-out fifth) applied to the torch ensemble; (model, its held-out loss)."""
    obs, act, nxt = (x.numpy() for x in transitions(episodes))
    fixed, _, loss = Models(*_runtime_parts(ensemble)).corrected(obs, act, nxt, np.random.default_rng(seed))
    d = ensemble.obs_dim
    weights = torch.zeros(ensemble.members, d + ensemble.act_dim + 1, d) if fixed.correction is None \
        else torch.as_tensor(fixed.correction)
    return ResidualCorrected(ensemble, weights), loss


def _runtime_parts(ensemble: DynamicsEnsemble) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, np.ndarray], str]:
    """The ensemble as the runtime's Models takes it (what a bundle's models.npz holds)."""
    arrays = model_arrays(ensemble)
    n = len(ensemble.layers)
    norms = {k: arrays[k] for k in ("in_mean", "in_std", "out_mean", "out_std")}
    return [arrays[f"w{i}"] for i in range(n)], [arrays[f"b{i}"] for i in range(n)], norms, ensemble.activation_name


def evaluate(task: TaskSpec, params: Params, shift: dict[str, float], seed: int, episodes: int) -> float:
    envs = [task.make_env(task.horizon) for _ in range(episodes)]
    for env in envs:
        apply_perturbations(env, shift)
    eps = run_episodes(task, envs, params, [seed + i for i in range(episodes)], task.horizon, deterministic=True)
    for env in envs:
        env.close()
    return float(np.mean([ep.ret for ep in eps]))


def fresh_episodes(task: TaskSpec, params: Params, shift: dict[str, float], seed: int, n: int) -> list[Episode]:
    envs = [task.make_env(task.horizon) for _ in range(n)]
    for env in envs:
        apply_perturbations(env, shift)
    gen = torch.Generator().manual_seed(seed)
    eps = run_episodes(task, envs, params, [seed + i for i in range(n)], task.horizon, False,
                       np.random.default_rng(seed), gen)
    for env in envs:
        env.close()
    return eps


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--adapt-episodes", type=int, default=4)
    p.add_argument("--fit-steps", type=int, default=300)
    p.add_argument("--fit-lr", type=float, default=3e-4)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 3], help="imagined step counts to evaluate")
    p.add_argument("--shifts", nargs="+", choices=list(SHIFTS), default=list(SHIFTS))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    saved = yaml.safe_load((args.run / "config.yaml").read_text())
    task = get_task(args.task)
    cfg = config_from_dict(saved["config"], source=str(args.run / "config.yaml"))
    ckpt = load_checkpoint(args.run)
    ensemble = DynamicsEnsemble(task.obs_dim, task.act_dim, cfg.model)
    ensemble.load_state_dict(ckpt["ensemble"])
    meta_params = {k: v.detach() for k, v in policy_part(ckpt["params"]).items()}
    print(f"{args.run}: iteration {ckpt['iteration']}, {ckpt['real_steps']:,} real steps, step "
          f"{inner_step(cfg.meta)}, policy std {float(torch.exp(meta_params['log_std']).mean()):.3f}")
    variants = ["real"] + [f"{kind} x{s}" for kind in ("imagined", "corrected", "residual")
                          for s in args.steps]
    rows = []
    for label in ["nominal", *[s for s in args.shifts if s != "nominal"]]:
        shift = SHIFTS[label]
        for seed in range(args.seeds):
            base = 1000 * seed
            gen = torch.Generator().manual_seed(base)
            row: dict = {"dynamics": label, "seed": seed, "before": evaluate(task, meta_params, shift, base, args.episodes)}
            fresh = fresh_episodes(task, meta_params, shift, base + 500, args.adapt_episodes)
            row["real"] = evaluate(task, step_on(meta_params, *pad(fresh), cfg.meta), shift, base, args.episodes)
            starts = (torch.as_tensor(np.stack([ep.obs[0] for ep in fresh])) if cfg.meta.start_states == "reset"
                      else transitions(fresh)[0])  # where training's imagination starts, from the fresh episodes
            data = split(ensemble, fresh, gen)
            row["error_before_fit"] = heldout(lambda x: ensemble(x.expand(ensemble.members, *x.shape)), *data[2:])
            tuned, row["error_after_fit"] = finetuned(ensemble, data, args.fit_steps, args.fit_lr)
            linear, row["error_after_residual"] = residual(ensemble, fresh, base)
            for kind, ens in (("imagined", ensemble), ("corrected", tuned), ("residual", linear)):
                policies = imagined_steps(ens, meta_params, starts, task, cfg.meta, max(args.steps), gen)
                for s in args.steps:
                    row[f"{kind} x{s}"] = evaluate(task, policies[s - 1], shift, base, args.episodes)
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    summarise(rows, variants)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


def summarise(rows: list[dict], variants: list[str]) -> None:
    """A table of mean changes per shift and variant, and the recovery over the shifts per variant."""
    nominal = float(np.mean([r["before"] for r in rows if r["dynamics"] == "nominal"]))
    print("\n| dynamics | model error: before / fine-tuned / residual | before | " + " | ".join(variants) + " |")
    print("|---|---|---|" + "---|" * len(variants))
    recovery: dict[str, list[float]] = {v: [] for v in variants}
    for label in dict.fromkeys(r["dynamics"] for r in rows):
        sub = [r for r in rows if r["dynamics"] == label]
        before = float(np.mean([r["before"] for r in sub]))
        cells = []
        for v in variants:
            change = np.asarray([r[v] - r["before"] for r in sub])
            cells.append(f"{change.mean():+.1f} ({int((change > 0).sum())}/{len(change)})")
            if label != "nominal" and nominal - before > MIN_LOSS * abs(nominal):  # as sim_to_real.recoveries
                recovery[v].append(float(change.mean()) / (nominal - before))
        err = [np.mean([r[k] for r in sub]) for k in ("error_before_fit", "error_after_fit", "error_after_residual")]
        print(f"| {label} | {err[0]:.3f} / {err[1]:.3f} / {err[2]:.3f} | {before:.1f} | " + " | ".join(cells) + " |")
    print("recovery (mean over the shifts that cost more than 5% of the nominal return): "
          + ", ".join(f"{v} {np.mean(r):.3f}" for v, r in recovery.items() if r))


if __name__ == "__main__":
    main()
