"""ONNX export and the torch-free runtime: equal to torch, verified on load, safe on bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mbmpo.cli import main
from mbmpo.meta.inner import adapt as torch_adapt
from mbmpo.meta.returns import advantages as torch_advantages
from mbmpo.policy.gaussian import mean_action, select
from mbmpo.runtime import AdaptationRefused, BundleError, load
from mbmpo.runtime.format import sha256

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--task", "HalfCheetah-v5", "--steps", "100", "--out", str(run), "--config", str(TINY),
                 "--no-progress"]) == 0
    out = run.parent / "bundle"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    return out


def _ckpt(bundle: Path) -> dict:
    return torch.load(bundle.parent / "r" / "checkpoint.pt", weights_only=True)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    return dst


def _rehash(pdir: Path, name: str) -> None:
    manifest = json.loads((pdir / "manifest.json").read_text())
    manifest["files"][name] = sha256(pdir / name)
    (pdir / "manifest.json").write_text(json.dumps(manifest))


def test_manifest_is_the_contract(bundle: Path) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["task"] == "HalfCheetah-v5" and m["obs_dim"] == 17 and m["act_dim"] == 6
    assert m["obs_names"][0] == "qpos:rootz" and m["act_names"][0] == "bthigh"
    assert m["control_period_s"] == pytest.approx(0.05) and m["act_low"] == [-1.0] * 6
    assert set(m["files"]) == {"policy.onnx", "adapt.onnx", "params.npz", "reward.py", "models.npz"}  # models: default
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(bundle / "policy.onnx")).metadata_props}
    assert meta["mbmpo.task"] == "HalfCheetah-v5" and meta["mbmpo.obs_dim"] == "17"


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_onnx_forward_equals_torch_policy(bundle: Path, batch: int) -> None:
    ckpt, policy = _ckpt(bundle), load(bundle)
    obs = np.random.default_rng(batch).standard_normal((batch, 17)).astype(np.float32)
    expected = mean_action(ckpt["params"], torch.as_tensor(obs)).numpy()
    mean, log_std = policy.distribution(obs)
    assert np.max(np.abs(mean - expected)) <= 1e-5 * max(1.0, np.max(np.abs(expected)))
    np.testing.assert_allclose(log_std, ckpt["params"]["log_std"].numpy(), rtol=1e-6)
    explore = policy.exploration(1)
    expected = mean_action(select(ckpt["adapted"], 1), torch.as_tensor(obs)).numpy()
    assert np.max(np.abs(explore.distribution(obs)[0] - expected)) <= 1e-5 * max(1.0, np.max(np.abs(expected)))


@pytest.mark.parametrize("batch", [1, 16, 256, 1000])
def test_onnx_adaptation_equals_autograd(bundle: Path, batch: int) -> None:
    policy = load(bundle)
    rng = np.random.default_rng(batch)
    # random parameters, not just the trained ones
    params = {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in policy.params.items()}
    obs = rng.standard_normal((batch, 17)).astype(np.float32)
    act = rng.standard_normal((batch, 6)).astype(np.float32)
    adv = rng.standard_normal(batch).astype(np.float32)
    feed = {**params, "obs": obs, "act": act, "adv": adv, "alpha": np.asarray(0.05, np.float32)}
    out = dict(zip(policy.manifest["param_names"], policy.bundle.adapt_session.run(None, feed)))
    tp = {k: torch.as_tensor(v) for k, v in params.items()}
    ref = torch_adapt(tp, torch.as_tensor(obs)[None, :, None], torch.as_tensor(act)[None, :, None],
                      torch.as_tensor(adv)[None, :, None], torch.ones(1, batch, 1), 0.05, create_graph=False)
    for k, v in out.items():
        r = ref[k][0].detach().numpy()
        step = np.abs(params[k] - r).max()  # compare the update itself, relative to its size
        assert np.abs(v - r).max() <= 1e-5 * max(1.0, np.abs(r).max()), k
        assert np.abs((params[k] - v) - (params[k] - r)).max() <= 1e-4 * max(step, 1e-6) + 1e-7, k


def test_runtime_advantages_equal_the_library(bundle: Path) -> None:
    policy = load(bundle)
    rng = np.random.default_rng(0)
    lengths = [30, 17, 30]
    episodes = [(rng.standard_normal((n, 17)).astype(np.float32), rng.standard_normal((n, 6)).astype(np.float32),
                 rng.standard_normal(n).astype(np.float32)) for n in lengths]
    adv = policy.advantages(episodes)
    obs = torch.zeros(1, 3, 30, 17)
    rew, mask = torch.zeros(1, 3, 30), torch.zeros(1, 3, 30)
    for i, (o, _, r) in enumerate(episodes):
        obs[0, i, :len(r)], rew[0, i, :len(r)], mask[0, i, :len(r)] = torch.as_tensor(o), torch.as_tensor(r), 1.0
    m = policy.manifest
    ref = torch_advantages(obs, rew, mask, m["gamma"], m["gae_lambda"], m["normalize_advantages"])[0].numpy()
    np.testing.assert_allclose(adv, ref, atol=1e-4)


def test_runtime_imports_no_torch(bundle: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import numpy as np, mbmpo.runtime as rt, mbmpo.deploy.controller\n"  # the policy node's whole library
        f"p = rt.load({str(bundle)!r})\n"
        "a = p.act(np.zeros(17)); assert a.shape == (6,)\n"
        "obs = np.random.default_rng(0).standard_normal((11, 17)).astype(np.float32)\n"
        "q = p.adapt([(obs, np.zeros((10, 6), np.float32))]); assert q is not p\n"
        "try: p.adapt_in_models([(obs, np.zeros((10, 6), np.float32))])\n"  # through the models: numpy only
        "except rt.AdaptationRefused: pass\n"
        "assert 'gymnasium' not in sys.modules and 'mujoco' not in sys.modules\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.fault
def test_corrupt_bundles_are_refused(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    with (b / "params.npz").open("ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="params.npz: sha256 .* does not match"):
        load(b)
    shutil.rmtree(b)
    b = _copy(bundle, tmp_path)
    (b / "adapt.onnx").unlink()
    with pytest.raises(BundleError, match="missing file adapt.onnx"):
        load(b)
    shutil.rmtree(b)
    b = _copy(bundle, tmp_path)  # NaN weights with a consistent hash: still refused
    with np.load(b / "params.npz") as data:
        arrays = dict(data)
    arrays["meta/w1"][0, 0] = np.nan
    np.savez(b / "params.npz", **arrays)
    _rehash(b, "params.npz")
    with pytest.raises(BundleError, match=r"non-finite meta parameters \['w1'\]"):
        load(b)
    shutil.rmtree(b)
    b = _copy(bundle, tmp_path)  # sizes that disagree with the manifest
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["obs_dim"], manifest["obs_names"] = 16, manifest["obs_names"][:16]
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest says 16"):
        load(b)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json is unreadable"):
        load(b)


@pytest.mark.badinput
def test_bad_observations_raise_and_never_give_nan_actions(bundle: Path) -> None:
    policy = load(bundle)
    with pytest.raises(ValueError, match=r"shape \(16,\).*expects \(17,\)"):
        policy.act(np.zeros(16))
    obs = np.zeros(17)
    obs[3] = np.nan
    with pytest.raises(ValueError, match="non-finite values at indices"):
        policy.act(obs)
    assert np.isfinite(policy.act(np.full(17, 1e6))).all()  # huge but finite: clipped to the limits


@pytest.mark.fault
def test_adaptation_returns_new_policy_or_refuses(bundle: Path) -> None:
    policy = load(bundle)
    rng = np.random.default_rng(1)
    episodes = [(rng.standard_normal((21, 17)).astype(np.float32), rng.uniform(-1, 1, (20, 6)).astype(np.float32))]
    adapted = policy.adapt(episodes, alpha=0.01)
    assert adapted is not policy and adapted.kl_from_parent > 0
    assert not np.array_equal(adapted.params["w0"], policy.params["w0"])
    before = {k: v.copy() for k, v in policy.params.items()}
    with pytest.raises(AdaptationRefused, match="KL .* > bound"):
        policy.adapt(episodes, alpha=10.0, max_kl=1e-6)
    with pytest.raises(AdaptationRefused, match="not finite"):
        policy.adapt(episodes, alpha=1e38)
    assert all(np.array_equal(before[k], policy.params[k]) for k in before)  # the old policy is untouched


def _episodes(seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((41, 17)).astype(np.float32), rng.uniform(-1, 1, (40, 6)).astype(np.float32))
            for _ in range(3)]


def test_a_kl_normalised_step_moves_the_policy_by_its_kl(bundle: Path, tmp_path: Path) -> None:
    """A bundle trained with `inner_kl` (manifest `adapt_kl`) adapts by that KL at runtime, whatever alpha."""
    pdir = _copy(bundle, tmp_path)
    manifest = json.loads((pdir / "manifest.json").read_text())
    for target, alpha in ((0.02, 1e-4), (0.02, 0.05), (0.002, 0.01)):
        manifest.update(adapt_kl=target, alpha=alpha)
        (pdir / "manifest.json").write_text(json.dumps(manifest))
        adapted = load(pdir).adapt(_episodes(0))
        assert adapted.kl_from_parent == pytest.approx(target, rel=0.15), (target, alpha)
    assert load(pdir).adapt(_episodes(0), alpha=1e-4).kl_from_parent < 0.002  # an explicit alpha is kept


def test_learned_step_sizes_travel_in_the_bundle(bundle: Path, tmp_path: Path) -> None:
    """Per-parameter step sizes learned in training (`learn_inner_lr`) are exported and used at runtime: the
    runtime's step equals the library's inner step with those sizes."""
    from mbmpo.export.bundle import export_policy
    from mbmpo.meta.inner import STEP_PREFIX
    from mbmpo.tasks import get_task

    ckpt = _ckpt(bundle)
    rng = torch.Generator().manual_seed(0)
    params = {**ckpt["params"], **{STEP_PREFIX + k: torch.log(torch.rand(v.shape, generator=rng) * 0.01 + 1e-4)
                                   for k, v in ckpt["params"].items()}}
    export_policy(params, ckpt["adapted"], get_task("HalfCheetah-v5"), ckpt["config"]["meta"], 1, 100, tmp_path / "b")
    policy = load(tmp_path / "b")
    assert set(policy.bundle.step_sizes) == set(policy.manifest["param_names"])
    episodes = _episodes(1)
    adapted = policy.adapt([(o, a) for o, a in episodes], max_kl=10.0)
    obs = torch.as_tensor(np.stack([o[:-1] for o, _ in episodes]))[None]
    act = torch.as_tensor(np.stack([a for _, a in episodes]))[None]
    rew = np.stack([policy.bundle.reward_fn(o[:-1], a, o[1:]) for o, a in episodes]).astype(np.float32)
    adv = torch.as_tensor(policy.advantages([(o[:-1], a, r) for (o, a), r in zip(episodes, rew)]))[None]
    ref = torch_adapt(params, obs, act, adv, torch.ones(1, 3, 40), 123.0, create_graph=False)  # 123: unused
    for k in policy.manifest["param_names"]:
        step, r = adapted.params[k] - policy.params[k], ref[k][0].detach().numpy() - params[k].numpy()
        assert np.abs(step - r).max() <= 1e-3 * np.abs(r).max() + 1e-7, k
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({**manifest, "adapt_kl": 0.01}))
    # training takes the KL-normalised step before any learned sizes (they never move then): so does the runtime
    assert load(tmp_path / "b").adapt([(o, a) for o, a in episodes]).kl_from_parent == pytest.approx(0.01, rel=0.15)


def test_eval_through_runtime_with_perturbation(bundle: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["eval", "--policy", str(bundle), "--task", "HalfCheetah-v5", "--episodes", "1", "--adapt",
                 "--adapt-episodes", "1", "--perturb", "mass=1.3", "friction=0.6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["perturb"] == {"mass": 1.3, "friction": 0.6}
    assert {"return_pre_mean", "return_adapted_mean", "adapt_kl"} <= set(result) and result["adapt_transitions"] == 200
    assert main(["eval", "--policy", str(bundle), "--task", "Hopper-v5", "--episodes", "1"]) == 2
    assert "task 'Hopper-v5' gives" in capsys.readouterr().err
    assert main(["eval", "--policy", str(bundle), "--task", "HalfCheetah-v5", "--perturb", "mass"]) == 2
    assert "expected KEY=SCALE" in capsys.readouterr().err
    assert main(["eval", "--policy", str(bundle), "--task", "HalfCheetah-v5", "--episodes", "1", "--adapt",
                 "--adapt-episodes", "1", "--adapt-through", "models", "--adapt-steps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # through the models: adapted with what it measured, or refused
    assert "adapt_refused" in result or {"model_error_before", "imagined_return_after", "steps"} <= set(result), result
    assert main(["eval", "--policy", str(bundle), "--task", "HalfCheetah-v5", "--adapt", "--adapt-steps", "0"]) == 2
    assert "--adapt-steps must be >= 1" in capsys.readouterr().err


def test_every_parameter_set_acts_with_its_own_std(pendulum_bundle) -> None:
    """policy.onnx outputs the meta log-std as an initialiser, which ONNX Runtime does not override: the
    runtime must take each parameter set's std from its parameters (it once sampled all with the meta's)."""
    from mbmpo.runtime import load

    meta = load(pendulum_bundle)
    params = {k: v.copy() for k, v in meta.params.items()}
    params["log_std"][:] = np.log(5.0)
    wide = type(meta)(meta.bundle, params, "wide")
    obs = np.zeros((4000, meta.bundle.obs_dim), np.float32)
    spread = wide.act(obs, rng=np.random.default_rng(0)) - wide.act(obs, deterministic=True)
    unclipped = np.abs(spread) < 2.9  # pendulum actions clip at +-3
    assert 4.0 < np.std(spread[unclipped]) or unclipped.mean() < 0.6
    assert np.allclose(wide.distribution(obs[:2])[1], np.log(5.0))
