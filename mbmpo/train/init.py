"""Fine-tuning: a new run that starts from a finished one (`mbmpo train --init RUN_DIR`, `init:=RUN_DIR`).

The usual sim-to-real workflow: train in simulation, then keep learning on the robot. The new run takes the
old run's dynamics ensemble (weights and input/output normalisers), the optimiser's state, the meta-policy
and its K adapted exploration policies, so the robot's first episodes are collected by the simulation's
adapted policies (no uniform random data), and the first fit starts from the simulation's models. The old
run's transitions are dropped by default (they are another robot's dynamics); `keep_data` puts them in the
new run's buffer without counting them as the new run's real steps.

Sizes must match: the task (name, observation and action sizes) and every setting that shapes a network
(`SIZE_KEYS`). Without --config the new run takes the old run's configuration, so they match by
construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mbmpo.config import Config, config_from_dict
from mbmpo.errors import UserError
from mbmpo.train.checkpoint import check_task_matches, load_checkpoint

# (section, key): the settings whose values fix a tensor's shape in the checkpoint
SIZE_KEYS = (("model", "ensemble_size"), ("model", "hidden"), ("model", "activation"), ("model", "weight_norm"),
             ("policy", "hidden"), ("meta", "tasks_per_model"), ("meta", "learn_inner_lr"))


def saved_run(run_dir: Path) -> tuple[dict[str, Any], Config]:
    """A run directory's config.yaml: its fields (task, seed, init, perturb, ...) and its configuration.
    Raises UserError naming the file."""
    path = Path(run_dir) / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text())
        return saved, config_from_dict(saved["config"], source=str(path))
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def init_config(init_dir: Path) -> Config:
    """The configuration the run in `init_dir` was trained with (its config.yaml)."""
    if not (Path(init_dir) / "config.yaml").is_file():
        raise UserError(f"--init {init_dir}: no config.yaml there (not a run directory)")
    return saved_run(init_dir)[1]


def load_init(init_dir: Path, task_name: str, obs_dim: int, act_dim: int, cfg: Config) -> dict[str, Any]:
    """The checkpoint of the run in `init_dir`, after checking that it fits the new run; raises UserError with
    one line naming what differs."""
    init_dir = Path(init_dir)
    if not init_dir.is_dir():
        raise UserError(f"--init {init_dir}: no such run directory")
    ckpt = load_checkpoint(init_dir)
    if ckpt["task"] != task_name:
        raise UserError(f"--init {init_dir}: that run trained task '{ckpt['task']}', not '{task_name}'")
    check_task_matches(ckpt, task_name, obs_dim, act_dim, init_dir)
    theirs, ours = ckpt["config"], cfg.to_dict()
    for section, key in SIZE_KEYS:
        a, b = _norm(theirs.get(section, {}).get(key)), _norm(ours[section][key])
        if a is not None and a != b:
            raise UserError(f"--init {init_dir}: {section}.{key} is {a} there and {b} here; fine-tuning keeps the "
                            f"networks' sizes (drop --config to take that run's configuration)")
    if ckpt.get("adapted") is None:
        raise UserError(f"--init {init_dir}: the run has not finished an iteration (no adapted policies yet)")
    return ckpt


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
