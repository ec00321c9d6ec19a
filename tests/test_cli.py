"""The `mbmpo` command line: the train/eval contract, resume, and one-line user errors."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mbmpo.cli import main
from mbmpo.tasks import TASK_NAMES

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
EXAMPLE = ROOT / "examples" / "point_mass" / "task.yaml"
ARM = ROOT / "examples" / "arm2" / "task.yaml"  # a forward-kinematics reward (cos/sin on both backends)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbmpo.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)


def _rows(run: Path) -> list[dict]:
    with (run / "progress.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("task", [*TASK_NAMES, str(EXAMPLE), str(ARM)])
def test_every_task_trains_on_a_tiny_budget(task: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--task", task, "--steps", "100", "--out", str(out), "--config", str(TINY),
                 "--no-progress"]) == 0
    rows = _rows(out)
    assert rows and {"iteration", "real_steps", "return_pre", "return_post", "wall_s"} <= set(rows[0])
    assert int(rows[-1]["real_steps"]) >= 100
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert (out / "checkpoint.pt").is_file() and list((out / "tb").iterdir())
    assert main(["export", "--run", str(out), "--out", str(tmp_path / "bundle")]) == 0  # finds a YAML task itself


def test_a_seed_makes_a_run_reproducible(tmp_path: Path) -> None:
    """Two trainings of one seed on one machine log the same figures, iteration by iteration (the times aside),
    and another seed does not."""
    def figures(seed: int, name: str) -> list[dict]:
        out = tmp_path / name
        assert main(["train", "--task", "HalfCheetah-v5", "--steps", "200", "--seed", str(seed), "--out", str(out),
                     "--config", str(TINY), "--no-progress"]) == 0
        return [{k: v for k, v in row.items() if k != "wall_s" and not k.startswith("t_")} for row in _rows(out)]

    first = figures(5, "a")
    assert len(first) >= 3 and figures(5, "b") == first
    assert figures(6, "c") != first


def test_a_floor_on_the_policy_std_holds_through_training(tmp_path: Path) -> None:
    config = tmp_path / "floor.yaml"
    config.write_text(TINY.read_text().replace("meta: {", "meta: {min_std: 1.5, "))  # init_std 1.0: below it
    out = tmp_path / "run"
    assert main(["train", "--task", "Hopper-v5", "--steps", "150", "--seed", "0", "--out", str(out), "--config",
                 str(config), "--no-progress"]) == 0
    stds = [float(row["policy_std"]) for row in _rows(out)]  # the mean over the action's dimensions
    assert len(stds) >= 3 and min(stds) >= 1.5 - 1e-4, stds


def test_train_then_eval_json_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["train", "--task", "InvertedPendulum-v5", "--seed", "3", "--out", str(out), "--config", str(TINY),
            "--no-progress"]
    assert main([*args, "--steps", "60"]) == 0
    steps_before = int(_rows(out)[-1]["real_steps"])
    assert f"iteration 0: {steps_before} real steps, return pre" in capsys.readouterr().out  # a log line each
    assert main([*args, "--steps", "60"]) == 2  # refuses to overwrite a run
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args, "--steps", "200", "--resume"]) == 0
    rows = _rows(out)
    assert [int(r["iteration"]) for r in rows] == list(range(len(rows)))
    assert int(rows[0]["real_steps"]) == steps_before and int(rows[-1]["real_steps"]) >= 200
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--task", "InvertedPendulum-v5", "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"return_pre_mean", "return_pre_std", "return_post_mean", "return_post_std"} <= set(result)


@pytest.mark.fault
def test_resume_after_kill_between_collection_and_checkpoint(tmp_path: Path) -> None:
    """Data saved right after collection survives a kill before the checkpoint and is trained on."""
    import torch

    from mbmpo.config import load_config
    from mbmpo.tasks import get_task
    from mbmpo.train.trainer import Trainer

    task, cfg = get_task("InvertedPendulum-v5"), load_config(TINY)
    trainer = Trainer(task, cfg, tmp_path, seed=0, tensorboard=False)
    trainer.train(60)
    episodes = trainer.collect(1)  # the next iteration's collection ...
    trainer.buffer.add_episodes(episodes)
    trainer.buffer.save(tmp_path / "data.npz")  # ... is on disk, then the process dies
    collected = trainer.buffer.total_steps
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for group in ckpt["optimizer"]["param_groups"]:
        group["fused"] = None  # as a checkpoint written before the fit used Adam's fused kernel
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    resumed = Trainer(task, cfg, tmp_path, seed=0, resume=True, tensorboard=False)
    assert resumed.buffer.total_steps == collected
    assert all(g["fused"] for g in resumed.optimizer.param_groups)
    row = resumed.iterate()  # trains on the saved data instead of collecting again
    assert row.real_steps == collected and row.iteration == 1


@pytest.mark.badinput
def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    r = _run("train", "--task", "NoSuchTask-v9", "--steps", "10", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown task 'NoSuchTask-v9'" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta: {inner_lr: [oops\n")
    r = _run("train", "--task", "InvertedPendulum-v5", "--steps", "10", "--out", str(tmp_path / "y"),
             "--config", str(bad))
    assert r.returncode == 2 and "malformed YAML" in r.stderr and "Traceback" not in r.stderr


def test_eval_refuses_a_checkpoint_of_other_sizes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["train", "--task", "InvertedPendulum-v5", "--steps", "60", "--out", str(out),
                 "--config", str(TINY), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--task", "Hopper-v5", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "obs size 4 and action size 1" in err and "'Hopper-v5' has 11 and 3" in err
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", "--run", str(out), "--task", "InvertedPendulum-v5"]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(["train", "--task", "InvertedPendulum-v5", "--steps", "60", "--out", str(out), "--config", str(TINY),
          "--no-progress"])
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["task"] == "InvertedPendulum-v5" and state["adapted"]["w0"].shape[0] == 2
