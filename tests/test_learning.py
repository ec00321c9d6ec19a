"""End to end: MB-MPO solves InvertedPendulum-v5 (200-step episodes) within 10,000 real steps."""

from pathlib import Path

import pytest

from mbmpo.cli import main
from mbmpo.policy.gaussian import init_params
from mbmpo.rollouts.real import run_episodes
from mbmpo.tasks import get_task
from mbmpo.train.progress import read_progress


@pytest.mark.slow
def test_inverted_pendulum_reaches_190_within_10k_steps(tmp_path: Path) -> None:
    task = get_task("InvertedPendulum-v5")
    # the untrained policy falls over quickly: the threshold below is a real bar
    untrained = run_episodes(task, [task.make_env(200)], init_params(4, 1, (32, 32), 1.0), [0], 200,
                             deterministic=True)[0]
    assert untrained.ret < 50
    out = tmp_path / "run"
    assert main(["train", "--task", "InvertedPendulum-v5", "--steps", "10000", "--seed", "1", "--out", str(out),
                 "--target-return", "190", "--no-progress"]) == 0
    rows = read_progress(out)
    solved = [r for r in rows if r.return_pre >= 190.0]
    assert solved, f"never reached 190: {[(r.real_steps, r.return_pre) for r in rows]}"
    assert solved[0].real_steps <= 10_000
    assert solved[0].return_post >= 150.0  # the adapted policies work on the real system too
