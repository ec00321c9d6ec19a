"""The bundle's dynamics models on the robot: equal to the trained ensemble, corrected to a shifted robot by a
ridge fit, imagined rollouts by hand, and adaptation through them (or a clear refusal)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mbmpo.cli import main
from mbmpo.config import config_from_dict
from mbmpo.errors import UserError
from mbmpo.models.ensemble import DynamicsEnsemble
from mbmpo.runtime import AdaptationRefused, BundleError, Policy, load
from mbmpo.runtime.models import Models, imagine
from mbmpo.tasks import get_task
from mbmpo.train.evaluate_bundle import evaluate_bundle

TINY = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "run"
    assert main(["train", "--task", "HalfCheetah-v5", "--steps", "100", "--out", str(out), "--config", str(TINY),
                 "--no-progress"]) == 0
    assert main(["export", "--run", str(out), "--out", str(out.parent / "bundle")]) == 0
    return out


def test_the_bundles_models_predict_what_the_trained_ensemble_predicts(run: Path) -> None:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ensemble = DynamicsEnsemble(17, 6, config_from_dict(ckpt["config"]).model)
    ensemble.load_state_dict(ckpt["ensemble"])
    models = load(run.parent / "bundle").bundle.models
    assert models is not None and models.members == ensemble.members
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((ensemble.members, 7, 17)).astype(np.float32)
    act = rng.uniform(-1, 1, (ensemble.members, 7, 6)).astype(np.float32)
    expected = ensemble.predict(torch.as_tensor(obs), torch.as_tensor(act)).numpy()
    np.testing.assert_allclose(models.predict(obs, act), expected, rtol=1e-4, atol=1e-5)


def _models(rng: np.random.Generator, members: int = 2, f: int = 5, d: int = 3, same: bool = True) -> Models:
    w = [rng.standard_normal((1 if same else members, a, b)).astype(np.float32) / np.sqrt(a)
         for a, b in ((f, 16), (16, d))]
    b = [rng.standard_normal((1 if same else members, 1, n)).astype(np.float32) * 0.1 for n in (16, d)]
    if same:
        w, b = [np.repeat(x, members, 0) for x in w], [np.repeat(x, members, 0) for x in b]
    norms = {"in_mean": np.zeros(f, np.float32), "in_std": np.ones(f, np.float32),
             "out_mean": np.zeros(d, np.float32), "out_std": np.full(d, 2.0, np.float32)}
    return Models(w, b, norms, "tanh")


def test_a_correction_fits_a_linear_shift_of_the_dynamics() -> None:
    """A robot whose state change is the models' plus a linear function of (s, a): the ridge fit finds it."""
    rng = np.random.default_rng(3)
    models = _models(rng)
    obs, act = rng.standard_normal((400, 3)).astype(np.float32), rng.uniform(-1, 1, (400, 2)).astype(np.float32)
    shift = rng.standard_normal((6, 3)) * 0.5  # on [x, 1], in normalised units
    x = np.concatenate([obs, act], -1)
    z = models.network(x)[0] + np.concatenate([x, np.ones((400, 1))], -1) @ shift
    nxt = obs + z * 2.0  # out_std 2, out_mean 0
    fixed, before, after = models.corrected(obs, act, nxt, rng)
    assert before > 0.1 and after < 1e-3 * before, (before, after)
    np.testing.assert_allclose(fixed.correction[0], shift, atol=2e-2)  # type: ignore[index]
    unchanged, before, after = models.corrected(obs, act, models.predict(obs[None].repeat(2, 0), act[None].repeat(2, 0))[0], rng)
    assert after <= before < 1e-10  # the models were right: nothing to correct


def test_imagined_rollouts_by_hand() -> None:
    """Zero networks and out_mean 1: every step adds 1 to every state, so from 0 the rewards (next_obs[0]) are
    1, 2, 3 and the termination (next_obs[0] >= 3) ends every episode after 3 steps."""
    d, a, members = 2, 1, 3
    w = [np.zeros((members, d + a, 4), np.float32), np.zeros((members, 4, d), np.float32)]
    b = [np.zeros((members, 1, 4), np.float32), np.zeros((members, 1, d), np.float32)]
    norms = {"in_mean": np.zeros(d + a, np.float32), "in_std": np.ones(d + a, np.float32),
             "out_mean": np.ones(d, np.float32), "out_std": np.ones(d, np.float32)}
    models = Models(w, b, norms, "relu")
    seen = []

    def act_fn(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.shape)
        return np.full((obs.shape[0], a), 5.0, np.float32)  # beyond the limit: recorded as sampled

    eps = imagine(act_fn, models, np.zeros((4, d), np.float32), 2, 10, 1000.0, lambda o, u, n: n[..., 0],
                  lambda o, u, n: n[..., 0] >= 3, np.array([-1.0]), np.array([1.0]), np.random.default_rng(0))
    assert len(eps) == members * 2 and seen == [(6, d)] * 3
    for obs, act, rew in eps:
        np.testing.assert_array_equal(rew, [1, 2, 3])
        np.testing.assert_array_equal(obs[:, 0], [0, 1, 2, 3])
        assert act.shape == (3, 1) and (act == 5.0).all()


def test_imagined_rollouts_bounded_by_hand() -> None:
    """The same models with bounds [-1, 1.5] on state 0: the second step's next state (2) is clamped to 1.5 and
    ends the episode, its reward that of the clamped state."""
    d, a = 2, 1
    w = [np.zeros((1, d + a, 4), np.float32), np.zeros((1, 4, d), np.float32)]
    b = [np.zeros((1, 1, 4), np.float32), np.zeros((1, 1, d), np.float32)]
    norms = {"in_mean": np.zeros(d + a, np.float32), "in_std": np.ones(d + a, np.float32),
             "out_mean": np.ones(d, np.float32), "out_std": np.ones(d, np.float32)}
    bounds = (np.array([-1.0, -9.0], np.float32), np.array([1.5, 9.0], np.float32))
    (obs, act, rew), = imagine(lambda o: np.zeros((o.shape[0], a), np.float32), Models(w, b, norms, "relu"),
                               np.zeros((1, d), np.float32), 1, 10, 1000.0, lambda o, u, n: n[..., 0], None,
                               np.array([-1.0]), np.array([1.0]), np.random.default_rng(0), bounds)
    np.testing.assert_array_equal(rew, [1.0, 1.5])
    np.testing.assert_array_equal(obs[:, 0], [0.0, 1.0, 1.5])


def test_the_robots_imagination_is_bounded_as_trainings_was(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiny.yaml bounds training's imagination (meta.state_bounds 0.1): the export carries the recorded states'
    range, and adaptation through the models bounds its imagination by that range widened to take in the fresh
    states, then by a tenth of it each side (training's rule)."""
    import mbmpo.runtime.policy as runtime_policy
    from mbmpo.runtime.models import widened

    with np.load(run / "data.npz") as data:
        recorded = data["obs"]
    policy = load(run.parent / "bundle")
    models = policy.bundle.models
    assert models is not None and models.recorded is not None
    assert policy.manifest["models"]["state_bounds"] == pytest.approx(0.1)
    np.testing.assert_array_equal(models.recorded[0], recorded.min(0))
    np.testing.assert_array_equal(models.recorded[1], recorded.max(0))
    seen: list[object] = []

    def spy(*args: object) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        seen.append(args[-1])
        return imagine(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime_policy, "imagine", spy)
    rng = np.random.default_rng(0)
    fresh = rng.standard_normal((21, 17)).astype(np.float32) * 0.1
    fresh[5, 8] = recorded[:, 8].max() + 7.0  # the shifted robot runs faster than anything recorded
    try:
        policy.adapt_in_models([(fresh, rng.uniform(-1, 1, (20, 6)).astype(np.float32))], rng=np.random.default_rng(1))
    except AdaptationRefused:
        pass  # refused or not, its imagination was bounded
    low, high = widened(np.minimum(recorded.min(0), fresh.min(0)), np.maximum(recorded.max(0), fresh.max(0)), 0.1)
    assert seen, "no imagined rollouts"
    for bounds in seen:
        assert isinstance(bounds, tuple)
        np.testing.assert_allclose(bounds[0], low, rtol=1e-6)
        np.testing.assert_allclose(bounds[1], high, rtol=1e-6)
    assert high[8] > recorded[:, 8].max() + 7.0


@pytest.mark.fault
def test_adaptation_through_the_models_adapts_or_refuses_and_needs_models(run: Path, tmp_path: Path) -> None:
    bundle = run.parent / "bundle"
    r = evaluate_bundle(bundle, get_task("HalfCheetah-v5"), 1, True, {"mass": 1.3}, adapt_episodes=2, seed=3,
                        adapt_steps=2, through="models")
    if "adapt_refused" in r:
        assert "did not raise the imagined return" in r["adapt_refused"], r
    else:
        assert r["adapt_kl"] > 0 and 1 <= r["steps"] <= 2, r
        assert r["imagined_return_after"] > r["imagined_return_before"], r
        assert r["model_error_after"] <= r["model_error_before"], r
    bare = tmp_path / "bare"
    assert main(["export", "--run", str(run), "--out", str(bare), "--no-models"]) == 0
    policy = load(bare)
    obs = np.random.default_rng(0).standard_normal((11, 17)).astype(np.float32)
    with pytest.raises(AdaptationRefused, match="carries no dynamics models"):
        policy.adapt_in_models([(obs, np.zeros((10, 6), np.float32))])
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    with np.load(broken / "models.npz") as data:
        arrays = dict(data)
    arrays["w1"][0, 0, 0] = np.nan
    np.savez(broken / "models.npz", **arrays)
    with pytest.raises(BundleError, match="models.npz: sha256 does not match"):
        load(broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    from mbmpo.runtime.format import sha256

    manifest["files"]["models.npz"] = sha256(broken / "models.npz")
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"unreadable dynamics models: .*non-finite model arrays \['w1'\]"):
        load(broken)


def test_a_later_step_out_of_bounds_keeps_the_steps_already_taken(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each imagined batch scores one more than the last (so every step 'raises the return'); the second step is
    refused by its KL bound: the first step stands. When the first is refused, the meta-policy is kept."""
    import mbmpo.runtime.policy as runtime_policy

    calls = {"imagine": 0, "adapt": 0}

    def scored_imagine(*args: object, **kwargs: object) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        episodes = imagine(*args, **kwargs)  # type: ignore[arg-type]
        calls["imagine"] += 1
        return [(o, a, np.full_like(r, calls["imagine"])) for o, a, r in episodes]

    real_adapt_once = runtime_policy.Policy._adapt_once

    def refuse_second(self: runtime_policy.Policy, *args: object) -> runtime_policy.Policy:
        calls["adapt"] += 1
        if calls["adapt"] == refused_at:
            raise AdaptationRefused("adaptation moved the policy by KL 9 > bound 0.05")
        return real_adapt_once(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime_policy, "imagine", scored_imagine)
    monkeypatch.setattr(runtime_policy.Policy, "_adapt_once", refuse_second)
    policy = load(run.parent / "bundle")
    rng = np.random.default_rng(0)
    episode = (rng.standard_normal((21, 17)).astype(np.float32) * 0.1, rng.uniform(-1, 1, (20, 6)).astype(np.float32))
    refused_at = 2
    adapted = policy.adapt_in_models([episode], steps=3, rng=np.random.default_rng(1))
    assert adapted is not policy and adapted.adapt_info["steps"] == 1.0 and adapted.kl_from_parent > 0
    assert adapted.adapt_info["imagined_return_after"] > adapted.adapt_info["imagined_return_before"]
    calls["adapt"], refused_at = 0, 1
    with pytest.raises(AdaptationRefused, match="KL 9 > bound"):
        policy.adapt_in_models([episode], steps=3, rng=np.random.default_rng(1))


def test_online_rounds_collect_more_episodes_and_adapt_again(run: Path) -> None:
    task = get_task("HalfCheetah-v5")
    r = evaluate_bundle(run.parent / "bundle", task, 1, True, {"mass": 1.3}, adapt_episodes=1, seed=3,
                        adapt_steps=2, through="models", adapt_rounds=3)
    assert r["adapt_transitions"] == 3 * task.horizon, r
    assert ("adapt_refused" in r) != (1 <= r.get("rounds_adapted", 0) <= 3), r
    with pytest.raises(UserError, match="--adapt-rounds must be >= 1"):
        evaluate_bundle(run.parent / "bundle", task, 1, True, {}, adapt_rounds=0)


def test_evaluation_adapts_as_the_bundle_ships_unless_told(run: Path, tmp_path: Path) -> None:
    """The bundle's deploy section (exported from the config's) sets the adaptation `mbmpo eval` and
    sim_to_real use; an option given wins."""
    task = get_task("HalfCheetah-v5")
    assert load(run.parent / "bundle").manifest["deploy"] == {
        "adapt_through": "episodes", "adapt_episodes": 2, "adapt_steps": 1, "adapt_rounds": 1, "adapt_kl": 0.0,
        "adapt_judge": False, "adapt_margin": 0.0}  # tiny.yaml has no deploy section: the defaults
    shipped = tmp_path / "shipped"
    shutil.copytree(run.parent / "bundle", shipped)
    manifest = json.loads((shipped / "manifest.json").read_text())
    manifest["deploy"] = {"adapt_through": "models", "adapt_episodes": 1, "adapt_steps": 2, "adapt_rounds": 3}
    (shipped / "manifest.json").write_text(json.dumps(manifest))
    r = evaluate_bundle(shipped, task, 1, True, {"mass": 1.3}, seed=3)
    assert r["adaptation"] == {**manifest["deploy"], "adapt_kl": 0.0, "adapt_judge": False, "adapt_margin": 0.0}, r
    assert r["adapt_transitions"] == 3 * task.horizon, r
    r = evaluate_bundle(shipped, task, 1, True, {"mass": 1.3}, seed=3, adapt_rounds=1, through="episodes")
    assert r["adaptation"]["adapt_rounds"] == 1 and r["adaptation"]["adapt_through"] == "episodes"
    assert r["adapt_transitions"] == task.horizon, r
    with pytest.raises(UserError, match=r"--adapt-kl must be >= 0 \(0: training's step"):
        evaluate_bundle(shipped, task, 1, True, {}, adapt_kl=-0.1)
    with pytest.raises(UserError, match=r"--adapt-margin must be >= 0 \(standard errors\), got -1"):
        evaluate_bundle(shipped, task, 1, True, {}, margin=-1.0)


def test_a_judged_adaptation_that_scores_lower_on_the_robot_is_reverted(run: Path) -> None:
    """The online loop with scripted returns: the first adapted policy's episodes score below the meta-policy's
    (reverted, and the next round starts from fresh episodes of the meta-policy), the second's above (kept)."""
    from mbmpo.deploy.online import OnlineAdaptation, Request
    from mbmpo.train.evaluate_bundle import adapt_online

    policy = load(run.parent / "bundle")
    obs = np.zeros((3, 17), np.float32)
    scores = iter([100.0, 90.0, 100.0, 120.0])
    seen: list[str] = []

    def collect(current: Policy, n: int) -> tuple[np.ndarray, np.ndarray, float]:
        seen.append(current.name)
        return obs, np.zeros((2, 6), np.float32), next(scores)

    def adapt_once(request: Request, k: int) -> Policy:
        shift = np.float32(0.01 * (k + 1))
        return Policy(policy.bundle, {n: v + shift for n, v in request.policy.params.items()}, "step")

    online = OnlineAdaptation(policy, 1, rounds=2, judge=True)
    info = adapt_online(online, collect, adapt_once, 10)
    assert seen == ["meta", "meta+adapted", "meta", "meta+adapted2"], seen
    assert online.current.name == "meta+adapted2" and online.finished
    assert info["rounds_adapted"] == 2 and info["rounds_reverted"] == 1 and info["adapt_transitions"] == 8
    assert info["adapt_kl"] > 0 and "adapt_refused" not in info
    scores = iter([100.0, 90.0, 95.0, 99.0])
    online = OnlineAdaptation(policy, 1, rounds=1, judge=True)
    info = adapt_online(online, collect, adapt_once, 10)
    assert online.current is policy and info["rounds_reverted"] == 1 and "scored below" in info["adapt_refused"]
    assert info["adapt_transitions"] == 4  # 1 round judged: done after 2 episodes; the budget is not reached


def test_a_judge_with_a_margin_keeps_only_a_step_that_beats_its_parent_by_that_many_standard_errors(run: Path) -> None:
    """Two episodes each: the parent's returns 100, 110 and the adapted policy's 112, 118. The difference of the
    means is 10; its standard error sqrt(50 / 2 + 18 / 2) = sqrt(34) = 5.83. Kept at margin 1 (bar 110.8), reverted
    at margin 2 (bar 116.7)."""
    from mbmpo.deploy.online import OnlineAdaptation, standard_error
    from mbmpo.train.evaluate_bundle import adapt_online

    assert standard_error([112.0, 118.0], [100.0, 110.0]) == pytest.approx(34 ** 0.5)
    assert standard_error([1.0], [2.0]) == 0.0
    policy = load(run.parent / "bundle")
    obs = np.zeros((3, 17), np.float32)
    for margin, kept in ((0.0, True), (1.0, True), (2.0, False)):
        scores = iter([100.0, 110.0, 112.0, 118.0])
        online = OnlineAdaptation(policy, 2, rounds=1, judge=True, margin=margin)
        info = adapt_online(online, lambda current, n: (obs, np.zeros((2, 6), np.float32), next(scores)),
                            lambda request, k: Policy(policy.bundle, request.policy.params, "step"), 10)
        assert (online.current is not policy) == kept and info["rounds_reverted"] == (not kept), (margin, info)
    with pytest.raises(ValueError, match="margin >= 0"):
        OnlineAdaptation(policy, 2, judge=True, margin=-0.5)
