"""The progress row: one per training iteration, the schema of `progress.csv` and its one reader.

Returns, all real-environment, 200-step episodes as the task defines them:
- `return_pre`: the meta-policy, deterministic (mean action);
- `return_post`: the model-adapted policies (one inner step per ensemble member, taken in imagination),
  deterministic;
- `return_collect`: the exploration episodes those adapted policies collected, sampled actions: the
  authors' `EnvTrajs-AverageReturn` and RLlib's `episode_reward_mean` (REFERENCE.md);
(an adaptation from *real* data is the runtime's business: `return_adapted` in `mbmpo eval --adapt`).
In the ROS train graph the episodes come from the robot (or the sim node): `robot_return` is what they
returned, the robot's own learning curve; the three returns above are then an evaluation in the task's
MuJoCo model, which with `sim:=none` is not the robot.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

VAL_LOSS_PREFIX = "val_loss_m"  # per-member columns val_loss_m0, val_loss_m1, ...


@dataclass(frozen=True)
class ProgressRow:
    iteration: int
    real_steps: int  # training transitions collected so far (evaluation episodes not counted)
    return_pre: float  # meta-policy, deterministic, real environment
    return_post: float  # model-adapted policies, deterministic, real environment
    wall_s: float  # seconds since the run started (across resumes)
    return_collect: float | None  # sampled exploration episodes of the adapted policies (None: random data)
    imagined_return_pre: float  # meta-policy in the models
    imagined_return_post: float  # adapted policies in the models
    imagined_gain: float  # imagined_return_post - imagined_return_pre: what the inner step buys in the models
    real_gain: float  # return_post - return_pre
    kl_pre_post: float  # mean KL(pre || post) of the inner step
    policy_std: float  # mean action std of the meta-policy
    inner_lr: float  # mean inner step size (fixed unless learned)
    kl_outer: float  # KL of the last outer step
    rejected_steps: int  # outer steps whose line search found nothing
    outer_steps: int  # outer steps taken this iteration
    model_val_loss: float  # mean validation loss over members
    model_epochs: int
    disagreement: float  # ensemble std on the fresh real data, in target-standardised units
    t_collect: float
    t_fit: float
    t_meta: float
    t_eval: float
    robot_return: float | None = None  # ROS graph: mean return of the complete episodes recorded this iteration
    robot_episodes: int = 0  # how many there were
    val_loss: tuple[float, ...] = ()  # per member

    def to_dict(self) -> dict[str, Any]:
        """The CSV columns (None as an empty cell; per-member losses as val_loss_m<k>)."""
        row = {k: ("" if v is None else v) for k, v in asdict(self).items() if k != "val_loss"}
        row.update({f"{VAL_LOSS_PREFIX}{k}": v for k, v in enumerate(self.val_loss)})
        return row

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProgressRow:
        """From CSV cells (strings) or `to_dict` values; columns a run of an older version lacks are NaN."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "val_loss":
                continue
            cell = raw.get(f.name, "")
            if f.name in ("return_collect", "robot_return"):
                values[f.name] = None if cell in ("", None) else float(cell)
            elif f.type in ("int", int):
                values[f.name] = int(float(cell)) if cell not in ("", None) else 0
            else:
                values[f.name] = float(cell) if cell not in ("", None) else math.nan
        members = sorted((int(k[len(VAL_LOSS_PREFIX):]), float(v)) for k, v in raw.items()
                         if k.startswith(VAL_LOSS_PREFIX) and v not in ("", None))
        return cls(**values, val_loss=tuple(v for _, v in members))


def read_progress(path: Path) -> list[ProgressRow]:
    """Every row of a `progress.csv` (a run folder's, or the file itself); [] when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / "progress.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [ProgressRow.from_dict(r) for r in csv.DictReader(f)]
