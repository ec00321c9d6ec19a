"""Fine-tuning from a finished run (`mbmpo train --init RUN_DIR`): every part is warm-started, the new run
explores with the old run's adapted policies from its first episode, and a run of another task or of other
network sizes is refused with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mbmpo.cli import main
from mbmpo.config import load_config
from mbmpo.tasks import get_task
from mbmpo.train.checkpoint import load_checkpoint
from mbmpo.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny InvertedPendulum run: the 'simulation' run to fine-tune from."""
    out = tmp_path_factory.mktemp("sim") / "run"
    assert main(["train", "--task", "InvertedPendulum-v5", "--steps", "100", "--out", str(out), "--config", str(TINY),
                 "--no-progress"]) == 0
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_warm_starts_models_normalisers_optimiser_and_policies(sim_run: Path, tmp_path: Path) -> None:
    task, cfg = get_task("InvertedPendulum-v5"), load_config(TINY)
    ckpt = load_checkpoint(sim_run)
    robot = Trainer(task, cfg, tmp_path / "robot", seed=1, init=sim_run, perturb={"mass": 1.3}, tensorboard=False)
    state = robot.ensemble.state_dict()
    assert _same(state, ckpt["ensemble"])
    assert any("norm" in k for k in state)  # the input/output normalisers are part of it
    assert _same(robot.state.params, ckpt["params"]) and _same(robot.state.adapted, ckpt["adapted"])
    assert robot.optimizer.state_dict()["state"].keys() == ckpt["optimizer"]["state"].keys()
    assert robot.state.iteration == 0 and len(robot.buffer) == 0 and robot.buffer.total_steps == 0  # data dropped
    nominal = get_task("InvertedPendulum-v5").make_env(20).unwrapped.model.body_mass
    assert torch.allclose(torch.as_tensor(robot.envs[0].unwrapped.model.body_mass), 1.3 * torch.as_tensor(nominal))

    row = robot.iterate()  # the first episodes come from the simulation's adapted policies, not random actions
    episodes = robot.n_tasks * cfg.collect.rollouts_per_task
    assert row.return_collect is not None and row.real_steps <= episodes * 20 < cfg.collect.initial_random_steps + 20
    resumed = Trainer(task, cfg, tmp_path / "robot", seed=1, resume=True, tensorboard=False)
    assert resumed.perturb == {"mass": 1.3} and resumed.state.iteration == 1  # the shift is part of the run

    kept = Trainer(task, cfg, tmp_path / "kept", seed=1, init=sim_run, keep_init_data=True, tensorboard=False)
    assert len(kept.buffer) == ckpt["real_steps"] and kept.buffer.total_steps == 0  # kept, not counted as steps


@pytest.mark.badinput
def test_init_refuses_another_task_other_sizes_and_missing_runs_with_one_line(
        sim_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def refused(*args: str) -> str:
        capsys.readouterr()
        assert main(["train", "--steps", "60", "--out", str(tmp_path / "x"), "--no-progress", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    assert "trained task 'InvertedPendulum-v5', not 'Hopper-v5'" in refused(
        "--task", "Hopper-v5", "--init", str(sim_run), "--config", str(TINY))
    wider = tmp_path / "wider.yaml"
    wider.write_text(TINY.read_text().replace("hidden: [16, 16]", "hidden: [32, 32]"))
    assert "model.hidden is [16, 16] there and [32, 32] here" in refused(
        "--task", "InvertedPendulum-v5", "--init", str(sim_run), "--config", str(wider))
    assert "no config.yaml there" in refused("--task", "InvertedPendulum-v5", "--init", str(tmp_path / "nope"))
    assert "--keep-init-data needs --init" in refused("--task", "InvertedPendulum-v5", "--keep-init-data")
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


def test_the_train_graph_passes_init_to_the_trainer() -> None:
    from mbmpo.deploy.graph import train_graph

    trainer = train_graph({"init": "runs/sim", "keep_init_data": "true"})[-1]
    assert trainer.parameters["init"] == "runs/sim" and trainer.parameters["keep_init_data"] is True
    assert train_graph({})[-1].parameters["init"] == ""
    with pytest.raises(ValueError, match="keep_init_data:=maybe is not true or false"):
        train_graph({"keep_init_data": "maybe"})
