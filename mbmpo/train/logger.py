"""Run logging: `progress.csv` (one row per iteration), TensorBoard events, and the learning-curve plot."""

from __future__ import annotations

import csv
from pathlib import Path

from mbmpo.train.progress import ProgressRow, read_progress

PROGRESS = "progress.csv"
CURVE = "learning_curve.png"


class RunLogger:
    """Appends iteration rows to progress.csv and TensorBoard; on resume keeps rows up to `keep_iterations`."""

    def __init__(self, run_dir: Path, keep_iterations: int | None = None, tensorboard: bool = True):
        self.path = run_dir / PROGRESS
        self.rows: list[ProgressRow] = []
        if keep_iterations is not None:
            self.rows = [r for r in read_progress(self.path) if r.iteration < keep_iterations]
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.rows:
            return
        fields = list(self.rows[-1].to_dict())
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(r.to_dict() for r in self.rows)
        tmp.replace(self.path)

    def log(self, row: ProgressRow) -> None:
        self.rows.append(row)
        self._rewrite()
        if self.writer is not None:
            step = row.real_steps
            for key, value in row.to_dict().items():
                if key not in ("iteration", "real_steps") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_learning_curve(run_dir: Path, title: str) -> Path:
    """The learning curve (real returns against real steps) and, beside it, the adaptation diagnostics:
    imagined gain of the inner step, KL(pre || post), the policy's std and the inner step size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_progress(run_dir)
    steps = [r.real_steps for r in rows]
    fig, (ax, diag) = plt.subplots(1, 2, figsize=(11, 4))
    robot = [(s, r.robot_return) for s, r in zip(steps, rows) if r.robot_return is not None]
    where = "MuJoCo evaluation: " if robot else ""  # the ROS graph: the robot's episodes come first
    if robot:
        ax.plot(*zip(*robot), "D-", color="black", lw=2, label="robot: recorded episodes")
    ax.plot(steps, [r.return_pre for r in rows], "o-", label=f"{where}meta-policy (deterministic)")
    ax.plot(steps, [r.return_post for r in rows], "s-", label=f"{where}model-adapted policies (deterministic)")
    collect = [(s, r.return_collect) for s, r in zip(steps, rows) if r.return_collect is not None]
    if collect and not robot:
        ax.plot(*zip(*collect), "^-", alpha=0.7, label="exploration episodes (sampled)")
    ax.set_xlabel("real environment steps")
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    diag.plot(steps, [r.imagined_gain for r in rows], "o-", color="tab:green", label="imagined gain (post - pre)")
    diag.axhline(0.0, color="grey", lw=0.8)
    diag.set_xlabel("real environment steps")
    diag.set_ylabel("imagined return gain")
    right = diag.twinx()
    right.semilogy(steps, [r.kl_pre_post for r in rows], "--", color="tab:red", label="KL(pre || post)")
    right.semilogy(steps, [r.policy_std for r in rows], ":", color="tab:purple", label="policy std")
    right.semilogy(steps, [r.inner_lr for r in rows], "-.", color="tab:brown", label="inner step size")
    lines = diag.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    diag.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
    diag.set_title("inner step diagnostics")
    fig.tight_layout()
    path = run_dir / CURVE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
