"""The dynamics ensemble: member independence, weight normalisation, normalisers, fitting, the buffer."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mbmpo.config import ModelConfig
from mbmpo.device import compute_dtype, native_bf16
from mbmpo.errors import UserError
from mbmpo.models.buffer import TransitionBuffer
from mbmpo.models.ensemble import DynamicsEnsemble, EnsembleLinear
from mbmpo.models.normalizer import Normalizer
from mbmpo.models.training import fit_ensemble, member_splits
from mbmpo.types import Episode

CFG = ModelConfig(ensemble_size=3, hidden=(16, 16), batch_size=50, max_epochs=25, lr=3e-3)


def test_members_are_independent() -> None:
    ens = DynamicsEnsemble(4, 2, CFG)
    x = torch.randn(3, 10, 6)
    out = ens(x)
    # the gradient of member 0's output touches only member 0's parameters
    out[0].sum().backward()
    for p in ens.parameters():
        assert p.grad[1:].abs().sum() == 0 and p.grad[0].abs().sum() > 0
    # changing member 2's weights leaves members 0 and 1 unchanged
    with torch.no_grad():
        ens.layers[0].v[2] += 1.0
    out2 = ens(x)
    assert torch.equal(out2[:2], out[:2]) and not torch.equal(out2[2], out[2])


def test_weight_norm_by_hand() -> None:
    layer = EnsembleLinear(2, 3, 4, weight_norm=True)
    with torch.no_grad():
        layer.g.mul_(2.0)
    v, g = layer.v[1], layer.g[1, 0]
    expected = torch.stack([g[j] * v[:, j] / v[:, j].norm() for j in range(4)], dim=1)
    assert torch.allclose(layer.weight()[1], expected, atol=1e-6)


def test_normalizer_round_trip() -> None:
    data = torch.randn(100, 5) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1e-9]) + 4.0
    norm = Normalizer(5, min_std=1e-6)
    norm.fit(data)
    z = norm.normalize(data)
    assert torch.allclose(norm.denormalize(z), data, atol=1e-4)
    assert torch.allclose(z[:, :4].mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z[:, :4].std(0, unbiased=False), torch.ones(4), atol=1e-3)


def test_member_splits_differ_and_partition() -> None:
    train, valid = member_splits(50, 3, 0.2, torch.Generator().manual_seed(0))
    assert train.shape == (3, 40) and valid.shape == (3, 10)
    for e in range(3):
        assert sorted(torch.cat([train[e], valid[e]]).tolist()) == list(range(50))
    assert not torch.equal(valid[0], valid[1])


def test_fit_learns_linear_dynamics_and_stops_early() -> None:
    torch.manual_seed(1)
    obs, act = torch.randn(1000, 4), torch.randn(1000, 2)
    nxt = obs + 0.1 * torch.cat([act, act], -1) + 0.05 * obs
    ens = DynamicsEnsemble(4, 2, CFG)
    opt = torch.optim.Adam(ens.parameters(), lr=CFG.lr)
    result = fit_ensemble(ens, opt, obs, act, nxt, CFG, torch.Generator().manual_seed(0))
    assert max(result.val_loss) < 0.05  # normalised MSE; 1.0 would mean no skill
    pred = ens.predict(obs[:100].expand(3, -1, -1), act[:100].expand(3, -1, -1))
    assert (pred - nxt[:100]).abs().mean() < 0.02
    long = ModelConfig(ensemble_size=3, hidden=(16, 16), batch_size=50, max_epochs=300, persistency=0.5, lr=3e-3)
    result = fit_ensemble(ens, opt, obs, act, nxt, long, torch.Generator().manual_seed(1))
    assert max(result.epochs) < 300  # the rolling validation loss stopped every member


def test_fit_step_budget_caps_the_minibatch_steps() -> None:
    torch.manual_seed(2)
    obs, act = torch.randn(1000, 4), torch.randn(1000, 2)
    ens = DynamicsEnsemble(4, 2, CFG)
    opt = torch.optim.Adam(ens.parameters(), lr=CFG.lr)
    capped = ModelConfig(ensemble_size=3, hidden=(16, 16), batch_size=50, max_epochs=25, max_steps=30)
    result = fit_ensemble(ens, opt, obs, act, obs + 0.1, capped, torch.Generator().manual_seed(0))
    # 800 training samples per member = 16 minibatches an epoch: 30 steps end the 2nd epoch early
    assert result.train_samples == 30 * 50 * 3 and result.epochs == [2, 2, 2]


def _episode(n: int, d: int = 3, a: int = 2, value: float = 0.0) -> Episode:
    return Episode(obs=np.full((n + 1, d), value, np.float32), act=np.zeros((n, a), np.float32),
                   rew=np.ones(n, np.float32), terminated=False)


def test_buffer_is_bounded_and_round_trips(tmp_path: Path) -> None:
    buf = TransitionBuffer(3, 2, capacity=25)
    buf.add_episodes([_episode(10, value=i) for i in range(4)])
    assert len(buf) == 25 and buf.total_steps == 40
    assert buf.obs[0, 0] == 1.0  # the oldest 15 transitions (episode 0 and half of 1) were dropped
    buf.save(tmp_path / "data.npz")
    back = TransitionBuffer.load(tmp_path / "data.npz", 3, 2, 25)
    assert back.total_steps == 40 and np.array_equal(back.obs, buf.obs) and np.array_equal(back.starts, buf.starts)
    with pytest.raises(UserError, match="the task expects 4 and 2"):
        TransitionBuffer.load(tmp_path / "data.npz", 4, 2, 25)


def test_buffer_rejects_bad_episodes_without_losing_data() -> None:
    buf = TransitionBuffer(3, 2, capacity=100)
    buf.add_episodes([_episode(5)])
    bad = _episode(5)
    bad.obs[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        buf.add_episodes([_episode(5), bad])
    with pytest.raises(ValueError, match="buffer expects"):
        buf.add_episodes([_episode(5, d=4)])
    assert len(buf) == 5


def test_frozen_weights_give_the_same_predictions_and_are_released() -> None:
    ens = DynamicsEnsemble(4, 2, CFG)
    obs, act = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    expected = ens.predict(obs, act)
    with ens.frozen_weights():
        assert torch.equal(ens.predict(obs, act), expected)
    assert all(layer.cached is None for layer in ens.layers)
    with torch.no_grad():
        ens.layers[0].g.mul_(2.0)
    assert not torch.equal(ens.predict(obs, act), expected)  # training sees live weights again


def test_imagined_states_out_of_the_recorded_range_are_clamped_and_end_their_trajectory() -> None:
    """A model that adds 1 to every state each step, bounds [0, 2.5] on the forward velocity (HalfCheetah's
    obs[8], its reward): by hand, the states 0, 1, 2 are visited, the third step's next state (3) is clamped to
    2.5 and ends the trajectory; rewards are the clamped velocities minus the control cost."""
    from mbmpo.policy.gaussian import init_params
    from mbmpo.rollouts.imagine import imagine, state_bounds
    from mbmpo.tasks import get_task

    task = get_task("HalfCheetah-v5")
    ens = DynamicsEnsemble(17, 6, ModelConfig(ensemble_size=2, hidden=(8,)))
    with torch.no_grad():
        for layer in ens.layers:
            layer.g.zero_()  # type: ignore[union-attr]  # weights 0, biases 0: the network says "mean change"
        ens.out_norm.mean.fill_(1.0)
    recorded = torch.zeros(4, 17)
    recorded[1, 8] = 2.5 / 1.25  # range [0, 2], widened by a quarter of it each side: [-0.5, 2.5]
    low, high = state_bounds(recorded, 0.25)
    assert low[8] == pytest.approx(-0.5) and high[8] == pytest.approx(2.5) and low[0] == high[0] == 0.0
    low, high = torch.full((17,), -10.0), torch.full((17,), 10.0)
    low[8], high[8] = 0.0, 2.5
    params = init_params(17, 6, (4,), 0.5, torch.Generator().manual_seed(0))
    tr = imagine(ens, params, torch.zeros(2, 3, 17), 6, task, 1000.0, torch.Generator().manual_seed(1), (low, high))
    assert tr.mask[0, 0].tolist() == [1, 1, 1, 0, 0, 0]
    assert tr.obs[0, 0, :3, 8].tolist() == [0.0, 1.0, 2.0]
    applied = tr.act[0, 0, :3].clamp(-1, 1)
    expected = torch.tensor([1.0, 2.0, 2.5]) - 0.1 * (applied ** 2).sum(-1)
    torch.testing.assert_close(tr.rew[0, 0, :3], expected)
    free = imagine(ens, params, torch.zeros(2, 3, 17), 6, task, 1000.0, torch.Generator().manual_seed(1))
    assert free.mask.all() and free.obs[0, 0, 5, 8] == 5.0  # no bounds: the states run on


BF16 = dataclasses.replace(CFG, precision="bf16")


def test_precision_resolves_to_a_dtype_and_auto_follows_the_hardware() -> None:
    cpu = torch.device("cpu")
    assert compute_dtype("fp32", cpu) == torch.float32 and compute_dtype("bf16", cpu) == torch.bfloat16
    assert compute_dtype("auto", cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)
    assert ModelConfig().precision == "fp32"  # nothing changes for a config that does not ask


def test_bf16_layers_keep_float32_weights_gradients_and_outputs_and_agree_with_fp32() -> None:
    torch.manual_seed(3)
    full, half = DynamicsEnsemble(4, 2, CFG), DynamicsEnsemble(4, 2, BF16)
    half.load_state_dict(full.state_dict())
    x = torch.randn(3, 64, 6)
    out, ref = half(x), full(x)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)  # it did multiply in bfloat16
    assert ((out - ref).norm() / ref.norm()) < 2e-2  # bfloat16 keeps 8 bits: ~0.4% per product
    out.sum().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in half.parameters())
    obs, act = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    expected = half.predict(obs, act)
    with half.frozen_weights():
        assert half.layers[0].cached is not None and half.layers[0].cached.dtype == torch.bfloat16
        assert torch.equal(half.predict(obs, act), expected)  # cast once or by autocast: the same numbers


def test_the_imagination_may_multiply_in_another_precision_than_the_fit() -> None:
    torch.manual_seed(3)
    full = DynamicsEnsemble(4, 2, CFG)
    split = DynamicsEnsemble(4, 2, dataclasses.replace(BF16, imagine_precision="fp32"))  # bf16 fit, fp32 imagination
    split.load_state_dict(full.state_dict())
    obs, act = torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    assert not torch.equal(split.predict(obs, act), full.predict(obs, act))  # outside the imagination: bf16
    with split.frozen_weights(), full.frozen_weights():
        assert split.layers[0].cached is not None and split.layers[0].cached.dtype == torch.float32
        assert torch.equal(split.predict(obs, act), full.predict(obs, act))  # inside: fp32, the same numbers
    assert not torch.equal(split.predict(obs, act), full.predict(obs, act))  # and bf16 again after it


def test_a_bf16_fit_learns_linear_dynamics_as_well_as_fp32() -> None:
    torch.manual_seed(1)
    obs, act = torch.randn(1000, 4), torch.randn(1000, 2)
    nxt = obs + 0.1 * torch.cat([act, act], -1) + 0.05 * obs
    losses = {}
    for cfg in (CFG, BF16):
        torch.manual_seed(4)
        ens = DynamicsEnsemble(4, 2, cfg)
        opt = torch.optim.Adam(ens.parameters(), lr=cfg.lr, fused=True)
        losses[cfg.precision] = max(fit_ensemble(ens, opt, obs, act, nxt, cfg, torch.Generator().manual_seed(0)).val_loss)
        pred = ens.predict(obs[:100].expand(3, -1, -1), act[:100].expand(3, -1, -1))
        assert (pred - nxt[:100]).abs().mean() < 0.02
    assert losses["bf16"] < 0.05 and losses["bf16"] < 1.5 * losses["fp32"] + 1e-3
