"""Run logging: `progress.csv` (one row per iteration), TensorBoard events, and the learning-curve plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

PROGRESS = "progress.csv"
CURVE = "learning_curve.png"


class RunLogger:
    """Appends iteration rows to progress.csv and TensorBoard; on resume keeps rows up to `keep_iterations`."""

    def __init__(self, run_dir: Path, keep_iterations: int | None = None, tensorboard: bool = True):
        self.path = run_dir / PROGRESS
        self.rows: list[dict[str, Any]] = []
        if keep_iterations is not None and self.path.is_file():
            with self.path.open() as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["iteration"]) < keep_iterations]
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.rows:
            return
        fields = list(self.rows[-1].keys())
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._rewrite()
        if self.writer is not None:
            step = int(row["real_steps"])
            for key, value in row.items():
                if key not in ("iteration", "real_steps") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_learning_curve(run_dir: Path, title: str) -> Path:
    """Return before and after adaptation against real steps, from progress.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (run_dir / PROGRESS).open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["real_steps"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [float(r["return_pre"]) for r in rows], "o-", label="meta-policy (pre-update)")
    ax.plot(steps, [float(r["return_post"]) for r in rows], "s-", label="adapted policies (post-update)")
    ax.set_xlabel("real environment steps")
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = run_dir / CURVE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
