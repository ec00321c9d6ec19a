"""Tiny-budget smoke runs of the benchmark scripts' pieces (the long runs are benchmarks, not tests)."""

import json
from pathlib import Path

import numpy as np
import pytest

import results  # benchmarks/ is on the test path (pyproject: pythonpath)


def test_record_replaces_a_figure_of_the_same_name(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    results.record("x_per_s", 1.0, "1/s", "cmd a", path=path)
    results.record("y", 2.0, "s", "cmd b", path=path)
    results.record("x_per_s", 3.0, "1/s", "cmd c", path=path)
    records = json.loads(path.read_text())
    assert [(r["name"], r["value"], r["command"]) for r in records] == [("x_per_s", 3.0, "cmd c"), ("y", 2.0, "cmd b")]
    assert all({"name", "value", "unit", "command", "date", "machine"} <= r.keys() for r in records)


def test_steps_to_threshold_is_the_first_evaluation_at_or_above_it() -> None:
    from sample_efficiency import steps_for_good, steps_to

    curve = [(1000, 10.0), (2000, 195.0), (3000, 150.0), (4000, 199.0)]
    assert steps_to(curve, 190.0) == 2000 and steps_to(curve, 198.0) == 4000 and steps_to(curve, 250.0) is None
    assert steps_for_good(curve, 190.0) == 4000 and steps_for_good(curve, 140.0) == 2000
    assert steps_for_good(curve, 5.0) == 1000 and steps_for_good(curve, 250.0) is None


def test_a_kept_ppo_curve_is_reused_up_to_the_steps_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sample_efficiency

    monkeypatch.setattr(sample_efficiency, "PPO_CURVES", tmp_path)
    monkeypatch.setattr(sample_efficiency, "ROOT", tmp_path.parent)
    kept = {"task": "Swimmer-v5", "seed": 3, "eval_every": 2048, "date": "2026-12-05",
            "curve": [[2048, 1.0], [4096, 2.0], [6144, 3.0]]}
    (tmp_path / "Swimmer-v5_s3.json").write_text(json.dumps(kept))
    trained: list[int] = []
    monkeypatch.setattr(sample_efficiency, "run_ppo", lambda *a: trained.append(a[2]) or [(a[2], 9.0)])

    assert sample_efficiency.ppo_curve("Swimmer-v5", 3, 4096, 2048, None, False) == [(2048, 1.0), (4096, 2.0)]
    assert trained == []
    assert sample_efficiency.ppo_curve("Swimmer-v5", 3, 8192, 2048, None, False) == [(8192, 9.0)]  # too short
    assert trained == [8192] and json.loads((tmp_path / "Swimmer-v5_s3.json").read_text())["curve"] == [[8192, 9.0]]


def test_data_node_records_a_short_stream_with_zero_loss(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from data_node_throughput import offer

    r = offer(500.0, 2.0, tmp_path)
    assert r["sent"] >= 500 and r["read_back"] == r["sent"] == r["durable"], r


def test_sim_to_real_reports_every_perturbation_before_and_after_one_step(pendulum_bundle: Path, tmp_path: Path) -> None:
    from sim_to_real import PERTURBATIONS, main

    rows = main(["--policy", str(pendulum_bundle), "--task", "InvertedPendulum-v5", "--seeds", "1", "--episodes", "1",
                 "--adapt-episodes", "2", "--out", str(tmp_path / "s2r.json"), "--plot", str(tmp_path / "s2r.png")])
    assert (tmp_path / "s2r.png").stat().st_size > 1000
    assert [r["dynamics"] for r in rows] == list(PERTURBATIONS)
    assert json.loads((tmp_path / "s2r.json").read_text()) == rows
    for r in rows:  # returns are finite; a refused step counts (the meta-policy's return stands)
        assert all(0 < x <= 1000 for x in r["pre"] + r["post"]) and r["refused"] in (0, 1), r


@pytest.mark.badinput
def test_sim_to_real_refuses_bundles_that_would_adapt_differently_before_measuring(pendulum_bundle: Path,
                                                                                    tmp_path: Path) -> None:
    import shutil

    from mbmpo.errors import UserError
    from sim_to_real import main

    other = tmp_path / "other"
    shutil.copytree(pendulum_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["deploy"] = {**manifest.get("deploy", {}), "adapt_rounds": 3}
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=f"ship different adaptations .*{other}: .*\"adapt_rounds\": 3"):
        main(["--policy", str(pendulum_bundle), str(other), "--task", "InvertedPendulum-v5", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()  # refused before anything ran
    with pytest.raises(UserError, match="cannot read"):
        main(["--policy", str(tmp_path / "nope"), "--task", "InvertedPendulum-v5"])


def test_finetune_runs_init_and_scratch_on_the_shifted_robot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from finetune import main, steps_to
    from mbmpo.cli import main as cli
    from mbmpo.train.progress import read_progress

    sim = tmp_path / "sim"
    tiny = Path(__file__).resolve().parent / "configs" / "tiny.yaml"
    assert cli(["train", "--task", "InvertedPendulum-v5", "--steps", "100", "--out", str(sim), "--config", str(tiny),
                "--no-progress"]) == 0
    main(["--sim-run", str(sim), "--task", "InvertedPendulum-v5", "--perturb", "mass=1.3", "--steps", "60",
          "--scratch-steps", "60", "--out", str(tmp_path / "ft")])
    text = capsys.readouterr().out
    assert "the sim policy as it is on the shifted robot" in text and "| fine-tune (--init) |" in text
    assert read_progress(tmp_path / "ft" / "init")[0].return_collect is not None  # explored with sim's policies
    assert read_progress(tmp_path / "ft" / "scratch")[0].return_collect is None  # random actions first
    assert steps_to(read_progress(sim), -1.0) == read_progress(sim)[0].real_steps


def test_sim_to_real_recovery_is_the_share_of_the_loss_won_back() -> None:
    from sim_to_real import recoveries

    rows = [{"perturb": {}, "pre": [100.0, 200.0], "post": [101.0, 198.0]},  # 2 bundles x 1 seed
            {"perturb": {"mass": 1.3}, "pre": [40.0, 100.0], "post": [70.0, 100.0]},  # recovers half, none
            {"perturb": {"gear": 0.8}, "pre": [80.0, 150.0], "post": [80.0, 200.0]}]  # none, all
    recovery, change = recoveries(rows, bundles=2)
    assert recovery == pytest.approx((0.5 + 0.0 + 0.0 + 1.0) / 4)
    assert change == pytest.approx((0.01 - 0.01) / 2)
    rows.append({"perturb": {"friction": 0.6}, "pre": [97.0, 201.0], "post": [50.0, 150.0]})  # costs < 5%: left out
    assert recoveries(rows, bundles=2)[0] == pytest.approx(recovery)


def test_sim_to_real_means_combine_the_tasks_adapted_as_their_presets_ship(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    import results
    from mbmpo.config import DeployConfig
    from sim_to_real import preset_adaptation, record_figures

    store = tmp_path / "results.json"
    monkeypatch.setattr(results, "RESULTS", store)
    monkeypatch.setattr(results, "record", functools.partial(results.record, path=store))

    def saved() -> dict[str, float]:
        return {r["name"]: r["value"] for r in json.loads(store.read_text())}

    cheetah, hopper = preset_adaptation("HalfCheetah-v5"), preset_adaptation("Hopper-v5")
    assert cheetah != hopper  # each task's preset ships its own
    record_figures("HalfCheetah-v5", 0.3, -0.01, 3, 5, cheetah)
    record_figures("Hopper-v5", 0.1, 0.02, 3, 5, DeployConfig())  # not Hopper's preset: no mean
    assert "sim_to_real_recovery_mean" not in saved()
    record_figures("Hopper-v5", 0.2, 0.01, 3, 5, hopper)
    assert saved()["sim_to_real_recovery_mean"] == pytest.approx(0.25)
    assert saved()["sim_to_real_nominal_change"] == pytest.approx(0.0)


def test_model_adapt_corrects_the_ensemble_and_steps_in_imagination(tmp_path: Path) -> None:
    """The screen of online adaptation through the models: every variant is evaluated on every shift, and the
    correction never raises the held-out model error (it keeps the best held-out weights, the start included)."""
    from mbmpo.cli import main as cli
    from model_adapt import main

    run = tmp_path / "run"
    tiny = Path(__file__).resolve().parent / "configs" / "tiny.yaml"
    assert cli(["train", "--task", "InvertedPendulum-v5", "--steps", "100", "--out", str(run), "--config", str(tiny),
                "--no-progress"]) == 0
    rows = main(["--run", str(run), "--task", "InvertedPendulum-v5", "--seeds", "1", "--episodes", "1",
                 "--adapt-episodes", "2", "--fit-steps", "5", "--steps", "1", "2", "--out", str(tmp_path / "rows.json"),
                 "--shifts", "nominal", "mass x1.3"])
    assert [r["dynamics"] for r in rows] == ["nominal", "mass x1.3"]
    for r in rows:
        assert {"real", "imagined x1", "imagined x2", "corrected x1", "corrected x2", "residual x2"} <= r.keys()
        assert all(0 < r[k] <= 1000 for k in ("before", "real", "corrected x2")), r
        assert r["error_after_fit"] <= r["error_before_fit"], r  # the start is a candidate: never worse


def test_seeds_records_each_seed_and_aggregates_only_over_several(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """seeds.py: per run a `_seedS` record (the seed read from the run's config), mean/min/max only for N >= 2; each
    run kept as a folder (progress.csv, config.yaml) that gives the same records once the run is gone."""
    import seeds
    from mbmpo.cli import main as cli

    tiny = Path(__file__).resolve().parent / "configs" / "tiny.yaml"
    runs = []
    for seed in (3, 5):
        runs.append(tmp_path / f"run{seed}")
        assert cli(["train", "--task", "InvertedPendulum-v5", "--steps", "100", "--seed", str(seed), "--out",
                    str(runs[-1]), "--config", str(tiny), "--no-progress"]) == 0
    said: dict[str, float] = {}
    monkeypatch.setattr(seeds, "record", lambda name, value, *a, **k: said.__setitem__(name, value))
    monkeypatch.setattr(seeds, "PLOTS", tmp_path / "plots")
    monkeypatch.setattr(seeds, "KEPT", tmp_path / "kept")
    seeds.main(["--task", "InvertedPendulum-v5", "--runs", str(runs[0]), "--steps", "100", "--record"])
    assert {"invpendulum_return_at_100k_seed3", "invpendulum_collect_return_at_100k_seed3"} <= said.keys()
    assert not any("mean" in k or "_min" in k for k in said if "return_at" in k), said
    said.clear()
    seeds.main(["--task", "InvertedPendulum-v5", "--runs", *map(str, runs), "--steps", "100", "--record"])
    assert said["invpendulum_return_at_100k_mean2"] == pytest.approx(
        (said["invpendulum_return_at_100k_seed3"] + said["invpendulum_return_at_100k_seed5"]) / 2)
    assert said["invpendulum_return_at_100k_min2"] <= said["invpendulum_return_at_100k_max2"]
    from sample_efficiency import mbmpo_curve

    kept = [tmp_path / "kept" / f"InvertedPendulum-v5_s{seed}" for seed in (3, 5)]  # a run outlives its folder
    assert sorted(p.name for p in kept[1].iterdir()) == ["config.yaml", "progress.csv"]
    assert mbmpo_curve(kept[1]) == mbmpo_curve(runs[1]) and len(mbmpo_curve(kept[1])) >= 1
    first = dict(said)
    said.clear()  # the kept folders give the same records as the runs they came from
    seeds.main(["--task", "InvertedPendulum-v5", "--runs", *map(str, kept), "--steps", "100", "--record"])
    assert said == first
    said.clear()
    seeds.main(["--task", "InvertedPendulum-v5", "--runs", str(runs[0]), "--steps", "100", "--keep", "--label", "x"])
    assert not said and (tmp_path / "kept" / "InvertedPendulum-v5_x_s3" / "progress.csv").is_file()


def test_precision_times_both_dtypes_side_by_side_fits_a_runs_data_and_imagines_its_models(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mbmpo.cli import main as cli
    from precision import main

    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(600, 17)).astype(np.float32), rng.normal(size=(600, 6)).astype(np.float32)
    np.savez(tmp_path / "data.npz", obs=obs, act=act, next_obs=obs + 0.1 * act @ rng.normal(size=(6, 17)))
    run = tmp_path / "run"
    tiny = Path(__file__).resolve().parent / "configs" / "tiny.yaml"
    assert cli(["train", "--task", "InvertedPendulum-v5", "--steps", "100", "--out", str(run), "--config", str(tiny),
                "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["--repeats", "1", "--data", str(tmp_path / "data.npz"), "--transitions", "600", "--steps", "3",
                 "--run", str(run), "--width", "32", "--matmul", "64", "--horizon", "5"]) == 0  # bf16 may be emulated
    out = capsys.readouterr().out
    assert "| fit step, ms |" in out and "| imagination pass 20 x 20 x 5, s |" in out, out
    losses = out.split("| its validation loss per member | ")[1].split(" | ")[:2]
    assert all(0 < float(v) < 10 for member in losses for v in member.split(", ")), out
    for precision in ("fp32", "bf16"):  # one imagined return per member of the tiny run's 2, each a pendulum's
        line = out.split(f"models, {precision}: per member | ")[1].split(" | ")[0]
        assert len(line.split(", ")) == 2 and all(0 < float(v) <= 200 for v in line.split(", ")), out
    assert "mean abs state difference" in out and "step 1:" in out, out


def test_posture_counts_states_on_their_back_per_chunk_of_a_runs_data(tmp_path: Path) -> None:
    """posture.py: |pitch| wrapped to (-pi, pi], share over pi/2 per chunk, by hand; a run's data.npz read by name."""
    import posture
    from mbmpo.errors import UserError
    from mbmpo.models.buffer import TransitionBuffer
    from mbmpo.tasks.registry import get_task
    from mbmpo.types import Episode

    pitch = np.array([0.0, 0.0, 3.1, -3.1, 2 * np.pi + 0.1, 4.0, 0.2])
    rows = posture.posture_by_chunk(pitch, first_step=1000, chunk=3)  # the last, 1 state, joins the second
    assert [r[0] for r in rows] == [1003, 1007]
    assert rows[0][1:] == pytest.approx((3.1 / 3, 1 / 3))
    assert rows[1][1:] == pytest.approx(((3.1 + 0.1 + (2 * np.pi - 4.0) + 0.2) / 4, 2 / 4))

    task = get_task("HalfCheetah-v5")
    buf = TransitionBuffer(task.obs_dim, task.act_dim, capacity=6)
    obs = np.zeros((9, task.obs_dim), np.float32)
    obs[:, task.obs_names.index("qpos:rooty")] = [0, 0, 0, 0, 3, 3, 3, -3, 0]
    buf.add_episodes([Episode(obs=obs, act=np.zeros((8, task.act_dim), np.float32), rew=np.zeros(8, np.float32),
                              terminated=False)])  # 8 steps, the oldest 2 dropped
    buf.save(tmp_path / "data.npz")
    assert [(end, back) for end, _, back in posture.run_posture(tmp_path, "HalfCheetah-v5", chunk=3)] == [
        (5, pytest.approx(1 / 3)), (8, pytest.approx(1.0))]
    with pytest.raises(UserError, match="no observation named qpos:rooty"):
        posture.run_posture(tmp_path, "Swimmer-v5", chunk=3)


def test_posture_noise_probe_of_a_near_zero_std_is_the_zero_action_episode() -> None:
    """posture.py --noise: std 1e-6 acts as zero torque (its return is that of zero actions, by hand in the sim,
    upright throughout); uniform noise costs control; a level that is not a std is a usage error."""
    import posture
    from mbmpo.tasks.registry import get_task

    task = get_task("HalfCheetah-v5")
    env = task.make_env(20)
    env.reset(seed=0)
    still = sum(float(env.step(np.zeros(task.act_dim, np.float32))[1]) for _ in range(20))
    env.close()
    back, flipped, ret = posture.noise_posture("HalfCheetah-v5", 1e-6, episodes=1, horizon=20)
    assert (back, flipped) == (0.0, 0.0) and ret == pytest.approx(still, abs=1e-3)
    back, flipped, ret = posture.noise_posture("HalfCheetah-v5", None, episodes=2, horizon=20)
    assert 0.0 <= back <= flipped <= 1.0 and ret < still - 1.0  # 0.1 x E[a^2] = 1/30 per actuator-step of control
    with pytest.raises(SystemExit):
        posture.main(["--task", "HalfCheetah-v5", "--noise", "-1"])


def test_inner_step_sweep_pairs_every_setting_with_the_first_on_the_same_batches(tmp_path: Path) -> None:
    """Each setting adapts on the same pre-update batch as the zero step, so its paired figure is its gain minus
    the zero step's; each KL-scaled step (plain and natural) moves the policy by about its KL."""
    from inner_step import main
    from mbmpo.cli import main as cli

    run = tmp_path / "run"
    tiny = Path(__file__).resolve().parent / "configs" / "tiny.yaml"
    assert cli(["train", "--task", "InvertedPendulum-v5", "--steps", "100", "--out", str(run), "--config", str(tiny),
                "--no-progress"]) == 0
    rows = main(["--run", str(run), "--alphas", "0", "--kls", "0.001", "--natural-kls", "0.001", "--rollouts", "3",
                 "--repeats", "2"])
    assert [r["setting"] for r in rows] == ["alpha 0", "KL 0.001", "natural KL 0.001"]
    assert rows[0]["kl"] == 0.0 and rows[0]["paired"] == 0.0
    for r in rows:
        assert abs(r["paired"] - (r["gain"] - rows[0]["gain"])) < 1e-6 * max(1.0, abs(r["gain"])), r
    for r in rows[1:]:
        assert 0.0005 < r["kl"] < 0.002, r
