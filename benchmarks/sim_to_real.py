"""The sim-to-real claim, in simulation: a bundle trained on nominal dynamics, deployed on perturbed
dynamics through the torch-free runtime, before and after ONE online adaptation step from fresh episodes.

    python benchmarks/sim_to_real.py --policy PDIR [PDIR ...] --task HalfCheetah-v5 [--seeds 5] [--episodes 5] \
        [--record]

For each perturbation, bundle (one per training seed) and evaluation seed: mean return of the meta-policy,
then of the policy adapted online from fresh episodes, as the bundle ships it (its manifest's deploy section)
unless the --adapt-* options say otherwise (deterministic evaluation both times). Recovery of a shift =
(after - before) / (nominal - before), nominal being the same bundle's unshifted return before adaptation;
`--record` stores the mean recovery over the four shifts and the bundles as `sim_to_real_recovery_<task>`, the
relative change on the unshifted robot as `sim_to_real_nominal_change_<task>`, and, once both tasks' latest
figures were measured with the adaptation their presets ship (config/<task>.yaml's deploy section), their
means `sim_to_real_recovery_mean` and `sim_to_real_nominal_change`. Plot: benchmarks/plots/<task>_sim_to_real.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from mbmpo.config import DeployConfig, default_config_path, load_config, shipped_adaptation
from mbmpo.errors import UserError
from mbmpo.tasks import get_task
from mbmpo.train.evaluate_bundle import evaluate_bundle

PLOTS = Path(__file__).resolve().parent / "plots"

PERTURBATIONS = {"nominal": {}, "mass x1.3": {"mass": 1.3}, "friction x0.6": {"friction": 0.6},
                 "gear x0.8": {"gear": 0.8}, "mass x1.3 + friction x0.6": {"mass": 1.3, "friction": 0.6}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, nargs="+", required=True, help="bundles, one per training seed")
    parser.add_argument("--task", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--adapt-episodes", type=int, help="each --adapt-* option left out is the bundle's own "
                        "(its manifest's deploy section, from the training config's)")
    parser.add_argument("--adapt-kl", type=float, help="scale each step to this KL")
    parser.add_argument("--adapt-steps", type=int, help="steps on the same fresh episodes (with --through "
                        "models: at most this many steps in the corrected models)")
    parser.add_argument("--adapt-rounds", type=int,
                        help="online rounds: each further one collects --adapt-episodes more with the policy adapted "
                             "so far and adapts it again (through the models: corrected to all fresh episodes)")
    parser.add_argument("--adapt-judge", action=argparse.BooleanOptionalAction,
                        help="each adapted policy runs --adapt-episodes of its own and is kept only if they score at "
                             "least what the episodes of the policy it came from scored (one collection more)")
    parser.add_argument("--adapt-margin", type=float, metavar="Z",
                        help="with --adapt-judge: kept only if the mean beats the parent's by Z standard errors")
    parser.add_argument("--through", choices=["episodes", "models"],
                        help="adapt on the fresh episodes (the step's data), or through the bundle's dynamics models "
                             "corrected to them")
    parser.add_argument("--shifts", nargs="+", choices=list(PERTURBATIONS), default=list(PERTURBATIONS),
                        help="dynamics to evaluate (nominal is always kept: recoveries are relative to it)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--plot", type=Path, help="plot file (default: benchmarks/plots/<task>_sim_to_real.png)")
    args = parser.parse_args(argv)
    if args.record and set(PERTURBATIONS) - {"nominal"} - set(args.shifts):
        parser.error("--record measures every shift (no --shifts)")
    task = get_task(args.task)
    overrides = {"adapt_episodes": args.adapt_episodes, "adapt_kl": args.adapt_kl, "adapt_steps": args.adapt_steps,
                 "adapt_through": args.through, "adapt_rounds": args.adapt_rounds, "adapt_judge": args.adapt_judge,
                 "adapt_margin": args.adapt_margin}
    check_one_adaptation(args.policy, overrides)
    rows = []
    print("| dynamics | return before adaptation | after one step | change | KL(pre||post), accepted steps | refused |")
    print("|---|---|---|---|---|---|")
    for label, perturb in PERTURBATIONS.items():
        if label != "nominal" and label not in args.shifts:
            continue
        pre, post, kls, refused = [], [], [], 0
        adaptations = []
        for bundle in args.policy:
            for seed in range(args.seeds):
                r = evaluate_bundle(bundle, task, args.episodes, True, perturb, args.adapt_episodes, seed=1000 * seed,
                                    adapt_kl=args.adapt_kl, adapt_steps=args.adapt_steps, through=args.through,
                                    adapt_rounds=args.adapt_rounds, judge=args.adapt_judge,
                                    margin=args.adapt_margin)
                adaptations.append(r["adaptation"])
                pre.append(r["return_pre_mean"])
                post.append(r["return_adapted_mean"])
                kls.append(r.get("adapt_kl", float("nan")))
                refused += "adapt_refused" in r  # a refused step keeps the meta-policy: change 0
        change = np.asarray(post) - np.asarray(pre)
        print(f"| {label} | {np.mean(pre):.1f} +- {np.std(pre):.1f} | {np.mean(post):.1f} +- {np.std(post):.1f} | "
              f"{np.mean(change):+.1f} ({int((change > 0).sum())}/{len(change)} seeds up) | {np.nanmean(kls):.2e} | {refused} |")
        rows.append({"dynamics": label, "perturb": perturb, "pre": pre, "post": post, "kl": kls, "refused": refused,
                     "adaptation": adaptations})
    recovery, nominal_change = recoveries(rows, len(args.policy))
    print(f"recovery over the shifts (mean): {recovery:.3f}; change on the unshifted robot: {nominal_change:+.4f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    plot(args.task, rows, args.plot or PLOTS / f"{args.task}_sim_to_real.png")
    if args.record:
        record_figures(args.task, recovery, nominal_change, len(args.policy), args.seeds,
                       DeployConfig(**rows[0]["adaptation"][0]))
    return rows


def check_one_adaptation(bundles: list[Path], overrides: dict) -> None:
    """Raises `UserError` before anything runs when the bundles, with the options given, would adapt differently
    (bundles exported from other presets, or before the manifest had a deploy section): one figure over them
    would mix adaptations."""
    used: dict[str, list[str]] = {}
    for bundle in bundles:
        try:
            manifest = json.loads((Path(bundle) / "manifest.json").read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read {Path(bundle) / 'manifest.json'}: {err}") from None
        how = shipped_adaptation(manifest, str(Path(bundle) / "manifest.json"), **overrides)
        used.setdefault(json.dumps(dataclasses.asdict(how), sort_keys=True), []).append(str(bundle))
    if len(used) > 1:
        which = "; ".join(f"{', '.join(b)}: {h}" for h, b in used.items())
        raise UserError(f"the bundles ship different adaptations ({which}); give every --adapt-* option and "
                        "--through to measure one")


def describe(how: DeployConfig) -> str:
    """One line for a record's unit: what the adaptation was."""
    text = (f"adapted through the {how.adapt_through}, up to {how.adapt_steps} step(s) from {how.adapt_episodes} "
            "episodes")
    text += f" x {how.adapt_rounds} rounds" if how.adapt_rounds > 1 else ""
    text += f", each step scaled to KL {how.adapt_kl}" if how.adapt_kl else ", the bundle's step"
    if how.adapt_judge and how.adapt_margin:
        return text + f", each kept only if its own episodes score {how.adapt_margin:g} standard errors higher"
    return text + (", each kept only if its own episodes score no lower" if how.adapt_judge else "")


MIN_LOSS = 0.05  # a shift that costs a bundle less than this share of its nominal return has nothing to recover


def recoveries(rows: list[dict], bundles: int) -> tuple[float, float]:
    """(mean recovery over the shifted rows and the bundles, mean relative change on the unshifted robot).
    Each row's `pre`/`post` hold bundles x seeds values in bundle order. A (shift, bundle) whose loss is below
    MIN_LOSS of that bundle's nominal return is left out: its ratio divides noise by nearly nothing (a HalfCheetah
    bundle scored 677 on low friction against 686 nominal, and -1.6 on it would swamp the mean)."""
    nominal = next(r for r in rows if not r["perturb"])
    per_bundle = np.asarray(nominal["pre"]).reshape(bundles, -1).mean(1)
    values = []
    for r in rows:
        if not r["perturb"]:
            continue
        before = np.asarray(r["pre"]).reshape(bundles, -1).mean(1)
        after = np.asarray(r["post"]).reshape(bundles, -1).mean(1)
        loss = per_bundle - before
        lost = loss > MIN_LOSS * np.abs(per_bundle)
        values += list((after - before)[lost] / loss[lost])
    pre, post = np.asarray(nominal["pre"]), np.asarray(nominal["post"])
    recovery = float(np.mean(values)) if values else float("nan")
    return recovery, float(np.mean((post - pre) / np.maximum(np.abs(pre), 1e-6)))


def plot(task: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(rows))
    for offset, key, label in ((-0.2, "pre", "before adaptation"), (0.2, "post", "after one step")):
        ax.bar(x + offset, [np.mean(r[key]) for r in rows], 0.4, yerr=[np.std(r[key]) for r in rows], label=label)
    ax.set_xticks(x, [r["dynamics"] for r in rows], rotation=15)
    ax.set_ylabel("return (deterministic, 200 steps)")
    ax.set_title(f"{task}: online adaptation on shifted robots")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def record_figures(task: str, recovery: float, nominal_change: float, bundles: int, seeds: int,
                   how: DeployConfig) -> None:
    """Records the task's figures and, once every task's latest figures were measured with the adaptation
    its preset ships (config/<task>.yaml's deploy section: what a user deploys by default), their means."""
    from results import RESULTS, record

    preset = PRESET_MARK if how == preset_adaptation(task) else ""
    what = f"{task}, {bundles} training seeds x {seeds} evaluation seeds, 4 shifts, {describe(how)}{preset}"
    record(f"sim_to_real_recovery_{task}", recovery, f"(after - before) / (nominal - before), mean; {what}")
    record(f"sim_to_real_nominal_change_{task}", nominal_change, f"(after - before) / before unshifted; {what}")
    saved = {r["name"]: r for r in json.loads(RESULTS.read_text())}
    names = [f"sim_to_real_recovery_{t}" for t in TASKS]
    if all(n in saved and saved[n]["unit"].endswith(PRESET_MARK) for n in names):
        for metric, name in (("recovery", "sim_to_real_recovery_mean"), ("nominal_change", "sim_to_real_nominal_change")):
            value = float(np.mean([saved[f"sim_to_real_{metric}_{t}"]["value"] for t in TASKS]))
            record(name, value, f"mean of sim_to_real_{metric}_{' and _'.join(TASKS)}, each adapted as its preset ships")


TASKS = ("HalfCheetah-v5", "Hopper-v5")
PRESET_MARK = " (the preset's adaptation)"


def preset_adaptation(task: str) -> DeployConfig:
    """The adaptation the task's default preset ships (its deploy section; the defaults without a preset)."""
    path = default_config_path(task)
    return load_config(path).deploy if path is not None else DeployConfig()


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        raise SystemExit(f"sim_to_real: {err}") from None
