"""`mbmpo` command line: `mbmpo train ...` and `mbmpo eval ...`.

User errors print one line `mbmpo: error: ...` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mbmpo.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbmpo", description="Model-Based Meta-Policy Optimization")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train MB-MPO on a task")
    train.add_argument("--task", required=True, help="registered task name or a task .yaml path")
    train.add_argument("--steps", type=int, required=True, help="real environment steps to collect")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, type=Path, help="run directory")
    train.add_argument("--config", type=Path, help="YAML preset (default: config/<task>.yaml if present)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--target-return", type=float, help="stop once the meta-policy's return reaches this")
    train.add_argument("--init", type=Path, metavar="RUN_DIR",
                       help="fine-tune: start from that run's models, normalisers and policies (and its config "
                            "unless --config is given)")
    train.add_argument("--keep-init-data", action="store_true",
                       help="with --init: also train on that run's transitions (not counted in --steps)")
    train.add_argument("--perturb", nargs="*", metavar="KEY=SCALE",
                       help="train on a shifted robot: scale mass, inertia, friction, gear, damping")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar: one line per iteration instead (for log files)")
    train.add_argument("--threads", type=int, default=0,
                       help="torch CPU threads (0: torch's default). Use 1 when other busy processes share the cores")
    train.add_argument("--device", metavar="cpu|cuda|cuda:N|auto",
                       help="torch device of the model fit and the meta-optimisation (default: the config's `device`, "
                            "cpu); auto: cuda when there is one. Collection, evaluation and checkpoints stay on the CPU")
    ev = sub.add_parser("eval", help="evaluate a trained run in the real environment")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run directory (evaluates the checkpoint with torch)")
    source.add_argument("--policy", type=Path, help="exported bundle (evaluates through the ONNX runtime)")
    ev.add_argument("--task", required=True)
    ev.add_argument("--adapt", action="store_true", help="with --policy: adapt online from fresh episodes, as the "
                    "bundle ships it (its manifest's deploy section) unless the --adapt-* options below say otherwise")
    ev.add_argument("--adapt-episodes", type=int, help="episodes of fresh data per adaptation")
    ev.add_argument("--adapt-through", choices=["episodes", "models"],
                    help="adapt on the fresh episodes, or through the bundle's models corrected to them")
    ev.add_argument("--adapt-steps", type=int, help="steps per adaptation (through the models: at most)")
    ev.add_argument("--adapt-rounds", type=int,
                    help="adaptations online: each adapts the policy in use after its own --adapt-episodes")
    ev.add_argument("--adapt-judge", action=argparse.BooleanOptionalAction,
                    help="revert an adapted policy whose own episodes score below its parent's")
    ev.add_argument("--adapt-margin", type=float, metavar="Z",
                    help="with --adapt-judge: keep an adapted policy only if its episodes' mean beats its parent's by Z "
                         "standard errors of the difference")
    ev.add_argument("--adapt-kl", type=float, default=None,
                    help="scale each step to this KL(pre || post) (on the episodes: --adapt-steps' total; "
                         "through the models: each step's)")
    ev.add_argument("--perturb", nargs="*", metavar="KEY=SCALE", help="scale mass, inertia, friction, gear, damping")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--seed", type=int, default=12345)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--video", type=Path, metavar="FILE.mp4",
                    help="also render one deterministic episode of the meta-policy to this MP4 (offscreen; "
                         "MUJOCO_GL=egl is used when there is no display)")
    ex = sub.add_parser("export", help="export a run's policy as an ONNX bundle")
    ex.add_argument("--run", required=True, type=Path, help="run directory")
    ex.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    ex.add_argument("--task", help="task of the run (default: the one recorded in the run)")
    ex.add_argument("--no-models", action="store_true",
                    help="leave the dynamics models out (the policy node then cannot adapt through them)")
    return parser


def _run_task(run: Path, task: str | None):
    """The task named on the command line, or the one the run recorded."""
    import yaml

    from mbmpo.tasks import get_task

    if task is None:
        config = run / "config.yaml"
        if not config.is_file():
            raise UserError(f"{run} has no config.yaml; pass --task")
        saved = yaml.safe_load(config.read_text())
        task = str(saved.get("task_source") or saved["task"])  # a task YAML's path, or the registered name
    return get_task(task)


def _export(args: argparse.Namespace) -> int:
    from mbmpo.export.bundle import export_run

    manifest = export_run(args.run, _run_task(args.run, args.task), args.out, with_models=not args.no_models)
    models = f", dynamics models {manifest['models']['members']} members" if "models" in manifest else ""
    print(f"wrote bundle {args.out} ({manifest['policy_version']}, {manifest['n_explore']} exploration policies"
          f"{models})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mbmpo.config import Config, choose_config, load_config
    from mbmpo.tasks import get_task
    from mbmpo.tasks.perturb import parse_perturbations
    from mbmpo.train.init import init_config
    from mbmpo.train.logger import plot_learning_curve
    from mbmpo.train.progress import ProgressRow
    from mbmpo.train.trainer import Trainer

    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    if args.keep_init_data and args.init is None:
        raise UserError("--keep-init-data needs --init RUN_DIR")
    perturb = parse_perturbations(args.perturb)
    if args.init is not None and not args.config:
        cfg, chosen = init_config(args.init), f"config of the run {args.init} (--init)"
    else:
        config_path, chosen = (args.config, f"config {args.config}") if args.config else \
            choose_config(task.name, task.obs_dim, task.act_dim, task.preset)
        cfg = load_config(config_path) if config_path else Config()
    print(f"mbmpo: {task.name}: {chosen}" + (f"; robot shifted {perturb}" if perturb else ""), flush=True)
    trainer = Trainer(task, cfg, args.out, args.seed, resume=args.resume, init=args.init,
                      keep_init_data=args.keep_init_data, perturb=perturb, device=args.device)
    if trainer.device.type != "cpu":
        print(f"mbmpo: model fit and meta-optimisation on {trainer.device}", flush=True)
    bar = tqdm(total=args.steps, initial=min(trainer.buffer.total_steps, args.steps), unit="step",
               desc=f"MB-MPO {task.name}", disable=args.no_progress, dynamic_ncols=True)

    def report(row: ProgressRow) -> None:
        if args.no_progress:
            collect = "" if row.return_collect is None else f", collect {row.return_collect:.1f}"
            print(f"iteration {row.iteration}: {row.real_steps} real steps, return pre {row.return_pre:.1f}, "
                  f"post {row.return_post:.1f}{collect}, {row.wall_s:.0f} s", flush=True)
            return
        bar.update(max(0, min(row.real_steps, args.steps) - bar.n))
        bar.set_postfix(ret_pre=f"{row.return_pre:.1f}", ret_post=f"{row.return_post:.1f}")

    rows = trainer.train(args.steps, report, target_return=args.target_return)
    bar.close()
    curve = plot_learning_curve(args.out, f"MB-MPO on {task.name}")
    if rows:
        last = rows[-1]
        print(f"{task.name}: {last.real_steps} real steps, return pre {last.return_pre:.1f}, "
              f"post {last.return_post:.1f}, {last.wall_s:.0f} s; curve {curve}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.video is not None and not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is imported: offscreen rendering
    from mbmpo.tasks import get_task
    from mbmpo.tasks.perturb import parse_perturbations

    perturb = parse_perturbations(args.perturb)
    if args.policy is not None:
        from mbmpo.train.evaluate_bundle import evaluate_bundle

        result = evaluate_bundle(args.policy, get_task(args.task), args.episodes, args.adapt, perturb,
                                 args.adapt_episodes, args.seed, adapt_kl=args.adapt_kl, adapt_steps=args.adapt_steps,
                                 through=args.adapt_through, adapt_rounds=args.adapt_rounds, judge=args.adapt_judge,
                                 margin=args.adapt_margin)
    else:
        from mbmpo.train.evaluate import evaluate_run

        if args.adapt or perturb:
            raise UserError("--adapt and --perturb evaluate an exported bundle: use --policy PDIR")
        result = evaluate_run(args.run, get_task(args.task), args.episodes, args.seed)
    if args.video is not None:
        result.update(_video(args, get_task(args.task), perturb))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def _video(args: argparse.Namespace, task: Any, perturb: dict) -> dict[str, Any]:
    """--video: one deterministic episode of the meta-policy (the bundle's through ONNX Runtime, or the run's)."""
    import numpy as np

    from mbmpo.train.video import render_episode, write_mp4

    if perturb:
        raise UserError("--video renders the nominal robot; drop --perturb")
    if args.policy is not None:
        from mbmpo.runtime import load

        policy = load(args.policy)
        act = lambda obs: policy.act(np.asarray(obs, np.float32), deterministic=True)  # noqa: E731
    else:
        import torch

        from mbmpo.policy.gaussian import mean_action
        from mbmpo.train.checkpoint import load_checkpoint

        params = load_checkpoint(args.run)["params"]
        act = lambda obs: mean_action(params, torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()  # noqa: E731
    frames, ret = render_episode(task, act, args.seed)
    path = write_mp4(frames, args.video, 1.0 / task.dt)
    return {"video": str(path), "video_frames": len(frames), "video_return": round(ret, 3)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"train": _train, "eval": _eval, "export": _export}[args.command](args)
    except UserError as err:
        print(f"mbmpo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mbmpo: interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
