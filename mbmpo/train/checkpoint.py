"""Checkpoints: tensors and plain values only, written atomically, read with `weights_only=True`.

Every tensor is saved on the CPU and read onto the CPU, so a run trained on a GPU resumes, evaluates and
exports on a machine without one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mbmpo.device import to_cpu
from mbmpo.errors import UserError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `run_dir/checkpoint.pt` via a temporary file and rename, so a kill never corrupts it. Tensors
    on another device are copied to the CPU first."""
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".pt.tmp")
    torch.save(to_cpu(state), tmp)
    tmp.replace(path)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read a checkpoint (onto the CPU) without unpickling arbitrary objects. Raises `UserError` when
    unreadable."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise UserError(f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def check_task_matches(state: dict[str, Any], task_name: str, obs_dim: int, act_dim: int, where: Path) -> None:
    """Refuse a checkpoint trained on other sizes than the task's (the common deployment mistake)."""
    if (state["obs_dim"], state["act_dim"]) != (obs_dim, act_dim):
        raise UserError(f"checkpoint in {where} was trained on '{state['task']}' with obs size {state['obs_dim']} "
                        f"and action size {state['act_dim']}; task '{task_name}' has {obs_dim} and {act_dim}")
