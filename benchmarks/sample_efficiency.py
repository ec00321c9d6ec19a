"""Sample efficiency side by side: MB-MPO and Stable-Baselines3 PPO on the same environment.

    python benchmarks/sample_efficiency.py --task InvertedPendulum-v5 --threshold 190 --seeds 0 1 2 \
        --mbmpo-steps 10000 --ppo-steps 300000
    python benchmarks/sample_efficiency.py --task HalfCheetah-v5 --threshold 100 --seeds 0 \
        --mbmpo-run runs/hc100k --ppo-steps 1000000

Both learners see the same Gymnasium MuJoCo v5 environment with the paper's 200-step episodes and are scored
the same way: the mean return of 5 deterministic evaluation episodes (not counted as training data), against
the real environment steps used for learning so far. MB-MPO's figure is its meta-policy before adaptation
(`return_pre`), the policy one would deploy without any adaptation. PPO runs with SB3's defaults
(`PPO("MlpPolicy", env)`: 2,048 steps per update, 10 epochs of 64-sample minibatches, lr 3e-4, GAE 0.95).

Writes `benchmarks/plots/<task>_sample_efficiency.png`, the curves as JSON beside it, and records the steps
each needs to reach `--threshold` and their ratio (PPO / MB-MPO, medians over seeds) in benchmarks/results.json.

Each PPO seed's curve is kept in `benchmarks/plots/ppo/<task>_s<seed>.json` and reused by later calls that ask
for no more steps than it has (`--rerun-ppo` trains again), so the seeds of a 1M-step comparison can be trained
in separate calls or sessions (`--ppo-only`) and scored together at the end:

    python benchmarks/sample_efficiency.py --task Walker2d-v5 --seeds 1 --ppo-steps 1000000 --ppo-only
    python benchmarks/sample_efficiency.py --task Walker2d-v5 --threshold 400 --seeds 0 1 2 \
        --ppo-steps 1000000 --mbmpo-run runs/w2d_s0 runs/w2d_s1 runs/w2d_s2

`--ppo-gamma G` gives PPO the discount G (kept as `<task>_g<G>_s<seed>.json`, plotted and recorded with the suffix
`_gamma<G>`): the like-for-like peer of an MB-MPO preset that changes its discount from 0.99.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from mbmpo.train.progress import read_progress
from results import record  # beside this script

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ROOT / "benchmarks" / "plots"
PPO_CURVES = PLOTS / "ppo"
SHORT = {"InvertedPendulum-v5": "invpendulum", "HalfCheetah-v5": "halfcheetah", "Hopper-v5": "hopper",
         "Walker2d-v5": "walker2d", "Ant-v5": "ant", "Swimmer-v5": "swimmer"}
Curve = list[tuple[int, float]]  # (real steps, mean evaluation return)


def mbmpo_curve(run: Path) -> Curve:
    """(real_steps, return_pre) per iteration from a run's progress.csv (its folder, or the copy `seeds.py --keep`
    kept under benchmarks/progress/), or from a curve kept before as a .json file under benchmarks/plots/curves/."""
    if run.suffix == ".json":
        return [(int(row[0]), float(row[1])) for row in json.loads(run.read_text())["curve"]]
    return [(r.real_steps, r.return_pre) for r in read_progress(run)]


def run_mbmpo(task: str, seed: int, steps: int, out: Path, config: Path | None, threads: int,
              stop_at: float | None) -> Curve:
    from mbmpo.cli import main as cli

    args = ["train", "--task", task, "--steps", str(steps), "--seed", str(seed), "--out", str(out),
            "--threads", str(threads), "--no-progress"]
    if config:
        args += ["--config", str(config)]
    if stop_at is not None:
        args += ["--target-return", str(stop_at)]
    if cli(args) != 0:
        raise SystemExit(f"mbmpo train failed for seed {seed}")
    return mbmpo_curve(out)


def evaluate(model, env, episodes: int, seed: int) -> float:
    """Mean return of deterministic episodes of an SB3 model."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def run_ppo(task: str, seed: int, steps: int, horizon: int, eval_every: int, stop_at: float | None,
            gamma: float | None = None) -> Curve:
    """SB3 PPO with its defaults, but the discount `gamma` where given; evaluated every `eval_every` steps
    (rounded up to whole updates)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from mbmpo.tasks import get_task

    torch.set_num_threads(1)
    spec = get_task(task)
    env, eval_env = spec.make_env(horizon), spec.make_env(horizon)
    curve: Curve = []

    class Evaluate(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = 0

        def _on_step(self) -> bool:  # False ends learn() (once the threshold is reached, with --stop-at-threshold)
            return not (stop_at is not None and curve and curve[-1][1] >= stop_at)

        def _on_rollout_end(self) -> None:
            if self.num_timesteps >= self.next_eval:
                self.next_eval = self.num_timesteps + eval_every
                curve.append((self.num_timesteps, evaluate(self.model, eval_env, 5, 10_000)))

    model = PPO("MlpPolicy", env, gamma=0.99 if gamma is None else gamma, seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, callback=Evaluate())
    if not curve or curve[-1][0] < model.num_timesteps:
        curve.append((model.num_timesteps, evaluate(model, eval_env, 5, 10_000)))
    print(f"PPO seed {seed}: {curve[-1][0]} steps, return {curve[-1][1]:.1f}, {time.perf_counter() - t0:.0f} s",
          flush=True)
    return curve


def ppo_curve(task: str, seed: int, steps: int, eval_every: int, stop_at: float | None, rerun: bool,
              gamma: float | None = None) -> Curve:
    """A PPO seed's curve to `steps`: the kept one when it reaches that far, else trained now and kept (a
    discount other than SB3's default is kept apart, as `<task>_g<gamma>_s<seed>.json`)."""
    path = PPO_CURVES / (f"{task}_s{seed}.json" if gamma is None else f"{task}_g{gamma:g}_s{seed}.json")
    if path.exists() and not rerun:
        kept = json.loads(path.read_text())
        curve = [(int(s), float(r)) for s, r in kept["curve"]]
        if curve and curve[-1][0] >= steps:
            print(f"PPO seed {seed}: kept curve {path.relative_to(ROOT)} ({curve[-1][0]} steps, {kept['date']})")
            return [(s, r) for s, r in curve if s <= steps] or curve[:1]
    curve = run_ppo(task, seed, steps, 200, eval_every, stop_at, gamma)
    if stop_at is None:  # a curve cut at a threshold says nothing about later steps: not kept
        PPO_CURVES.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"task": task, "seed": seed, "eval_every": eval_every, "gamma": gamma,
                                    "date": time.strftime("%Y-%m-%d"), "curve": curve}))
    return curve


def steps_to(curve: Curve, threshold: float) -> int | None:
    """Real steps at the first evaluation at or above `threshold` (None: never reached)."""
    return next((s for s, r in curve if r >= threshold), None)


def steps_for_good(curve: Curve, threshold: float) -> int | None:
    """Real steps at the evaluation from which the curve stays at or above `threshold` to its end (None: it
    ends below)."""
    below = [i for i, (_, r) in enumerate(curve) if r < threshold]
    first = below[-1] + 1 if below else 0
    return curve[first][0] if first < len(curve) else None


def plot(task: str, curves: dict[str, list[Curve]], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (method, runs), color in zip(curves.items(), ("tab:blue", "tab:orange")):
        for i, curve in enumerate(runs):
            s, r = zip(*curve)
            ax.plot(s, r, color=color, alpha=0.85, lw=1.4, label=method if i == 0 else None)
    ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xscale("log")
    ax.set_xlabel("real environment steps (log)")
    ax.set_ylabel("mean evaluation return (200-step episodes)")
    ax.set_title(f"{task}: MB-MPO vs SB3 PPO")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--threshold", type=float, help="common return threshold (required unless --ppo-only)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--mbmpo-steps", type=int, default=10_000)
    p.add_argument("--mbmpo-config", type=Path)
    p.add_argument("--mbmpo-run", type=Path, nargs="*", default=[],
                   help="existing run folders (or those seeds.py --keep kept) instead of training")
    p.add_argument("--ppo-steps", type=int, default=300_000)
    p.add_argument("--eval-every", type=int, default=4096, help="PPO evaluation interval in steps")
    p.add_argument("--stop-at-threshold", action="store_true", help="stop each run once it reaches the threshold")
    p.add_argument("--ppo-only", action="store_true", help="train and keep the PPO seeds' curves, score nothing")
    p.add_argument("--rerun-ppo", action="store_true", help="train PPO again even where a kept curve reaches far enough")
    p.add_argument("--ppo-gamma", type=float,
                   help="PPO's discount (default: SB3's, 0.99); for a task whose MB-MPO preset changes it")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "sample_efficiency")
    p.add_argument("--no-record", action="store_true", help="smoke runs: do not touch results.json")
    args = p.parse_args()
    if args.ppo_only:
        for seed in args.seeds:
            ppo_curve(args.task, seed, args.ppo_steps, args.eval_every, None, args.rerun_ppo, args.ppo_gamma)
        return
    if args.threshold is None:
        p.error("--threshold is required unless --ppo-only")

    stop_at = args.threshold if args.stop_at_threshold else None
    ppo = "PPO (SB3 defaults)" if args.ppo_gamma is None else f"PPO (SB3 defaults, gamma {args.ppo_gamma:g})"
    tag = "" if args.ppo_gamma is None else f"_gamma{args.ppo_gamma:g}"  # names the plot and the records apart
    curves: dict[str, list[Curve]] = {"MB-MPO": [], ppo: []}
    if args.mbmpo_run:
        curves["MB-MPO"] = [mbmpo_curve(run) for run in args.mbmpo_run]
    else:
        for seed in args.seeds:
            out = args.work / f"{args.task}_mbmpo_s{seed}"
            curves["MB-MPO"].append(run_mbmpo(args.task, seed, args.mbmpo_steps, out, args.mbmpo_config,
                                              args.threads, stop_at))
    png, curves_json = (PLOTS / f"{args.task}_sample_efficiency{tag}.{ext}" for ext in ("png", "json"))
    curves[ppo] = [ppo_curve(args.task, seed, args.ppo_steps, args.eval_every, stop_at, args.rerun_ppo,
                             args.ppo_gamma) for seed in args.seeds]
    PLOTS.mkdir(parents=True, exist_ok=True)
    plot(args.task, curves, args.threshold, png)
    reached = {m: [steps_to(c, args.threshold) for c in runs] for m, runs in curves.items()}
    curves_json.write_text(json.dumps({"threshold": args.threshold, "curves": curves,
                                       "steps_to_threshold": reached}, indent=1))
    stays = {m: [steps_for_good(c, args.threshold) for c in runs] for m, runs in curves.items()}
    for method in curves:
        print(f"{method}: steps to {args.threshold:g}: first {reached[method]}, for good {stays[method]}")
    name = SHORT.get(args.task, args.task.lower())
    for suffix, steps, what in (("", reached, "first evaluation at or above"),
                                ("_sustained", stays, "evaluation from which every later one is at or above")):
        if any(s is None for m in curves for s in steps[m]):
            print(f"no ratio{suffix}: a run never reached (or ended below) the threshold")
            if not suffix and all(s is not None for s in steps["MB-MPO"]):
                # PPO runs that never got there count at their last step: the true ratio is at least this (not
                # for the sustained steps: a run that got there and dipped at its end is no lower bound)
                ppo_at_least = [s if s is not None else c[-1][0] for s, c in zip(steps[ppo], curves[ppo])]
                bound = statistics.median(ppo_at_least) / statistics.median(steps["MB-MPO"])
                print(f"ratio PPO / MB-MPO (medians) at least {bound:.1f}x: PPO runs that never got there "
                      f"counted at their last step {ppo_at_least}")
                if not args.no_record:
                    record(f"{name}_ppo_steps_ratio_at_least{tag}", bound,
                           f"PPO steps / MB-MPO steps ({what} return {args.threshold:g}, medians of "
                           f"{len(ppo_at_least)} seeds), a lower bound: PPO runs below it at their last "
                           f"evaluation counted at that step")
            continue
        mb_median, ppo_median = (statistics.median([s for s in steps[m] if s is not None]) for m in curves)
        print(f"ratio{suffix} PPO / MB-MPO (medians): {ppo_median / mb_median:.1f}x")
        if not args.no_record:
            unit = f"real steps to the {what} return {args.threshold:g}, median of {len(curves['MB-MPO'])} seeds"
            record(f"{name}_mbmpo_steps_to_threshold{suffix}{tag}", mb_median, unit)
            record(f"{name}_ppo_steps_to_threshold{suffix}{tag}", ppo_median, unit)
            record(f"{name}_ppo_steps_ratio{suffix}{tag}", ppo_median / mb_median,
                   f"{ppo} steps / MB-MPO steps ({what})")
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
