"""The sim-to-real claim, in simulation: a bundle trained on nominal dynamics, deployed on perturbed
dynamics through the torch-free runtime, before and after ONE online adaptation step from fresh episodes.

    python benchmarks/sim_to_real.py --policy PDIR --task HalfCheetah-v5 [--seeds 3] [--episodes 5]

For each perturbation and seed: mean return of the meta-policy, then of the policy adapted once from
`--adapt-episodes` fresh episodes collected with the meta-policy (deterministic evaluation both times).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mbmpo.tasks import get_task
from mbmpo.train.evaluate_bundle import evaluate_bundle

PERTURBATIONS = {"nominal": {}, "mass x1.3": {"mass": 1.3}, "friction x0.6": {"friction": 0.6},
                 "gear x0.8": {"gear": 0.8}, "mass x1.3 + friction x0.6": {"mass": 1.3, "friction": 0.6}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--adapt-episodes", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    task = get_task(args.task)
    rows = []
    print("| dynamics | return before adaptation | after one step | change | KL(pre||post), accepted steps | refused |")
    print("|---|---|---|---|---|---|")
    for label, perturb in PERTURBATIONS.items():
        pre, post, kls, refused = [], [], [], 0
        for seed in range(args.seeds):
            r = evaluate_bundle(args.policy, task, args.episodes, True, perturb, args.adapt_episodes, seed=1000 * seed)
            pre.append(r["return_pre_mean"])
            post.append(r["return_adapted_mean"])
            kls.append(r.get("adapt_kl", float("nan")))
            refused += "adapt_refused" in r  # a refused step keeps the meta-policy: change 0
        change = np.asarray(post) - np.asarray(pre)
        print(f"| {label} | {np.mean(pre):.1f} +- {np.std(pre):.1f} | {np.mean(post):.1f} +- {np.std(post):.1f} | "
              f"{np.mean(change):+.1f} ({int((change > 0).sum())}/{len(change)} seeds up) | {np.nanmean(kls):.2e} | {refused} |")
        rows.append({"dynamics": label, "perturb": perturb, "pre": pre, "post": post, "kl": kls, "refused": refused})
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
