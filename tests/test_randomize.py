"""Dynamics randomisation of the simulated collection (`collect.randomize`): each exploration episode's
physics is drawn log-uniformly within the ranges, draws never compound, evaluation stays nominal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mbmpo.config import config_from_dict, load_config
from mbmpo.errors import UserError
from mbmpo.tasks import get_task
from mbmpo.tasks.perturb import Randomizer, parse_ranges
from mbmpo.train.trainer import Trainer

TINY = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


def test_ranges_parse_and_bad_ranges_are_one_clear_line() -> None:
    assert parse_ranges("mass=0.7:1.4, friction=0.5:1.5") == {"mass": (0.7, 1.4), "friction": (0.5, 1.5)}
    assert parse_ranges("") == {}
    for bad, said in [("mass=1.4:0.7", "need 0 < LOW <= HIGH"), ("mass=0.7", "expected KEY=LOW:HIGH"),
                      ("weight=1:2", "expected KEY=LOW:HIGH"), ("mass=a:2", "must be numbers")]:
        with pytest.raises(UserError, match=said):
            config_from_dict({"collect": {"randomize": bad}}, source="preset.yaml")


def test_each_draw_scales_the_nominal_physics_within_its_range() -> None:
    env = get_task("HalfCheetah-v5").make_env(20)
    model = env.unwrapped.model
    mass, friction = model.body_mass.copy(), model.geom_friction.copy()
    randomizer = Randomizer(env, {"mass": (0.5, 2.0), "friction": (0.8, 0.8)})
    rng = np.random.default_rng(0)
    scales = [randomizer.draw(rng)["mass"] for _ in range(200)]
    assert 0.5 <= min(scales) < 0.6 and 1.8 < max(scales) <= 2.0  # log-uniform over the whole range
    assert np.median(np.log(scales)) == pytest.approx(0.0, abs=0.15)  # log-uniform: centred on log 1
    np.testing.assert_allclose(model.body_mass, mass * scales[-1], rtol=1e-6)  # from nominal: never compounds
    np.testing.assert_allclose(model.geom_friction[:, 0], friction[:, 0] * 0.8, rtol=1e-6)
    np.testing.assert_array_equal(model.geom_friction[:, 1:], friction[:, 1:])  # only sliding friction


def test_a_randomised_run_collects_on_drawn_robots_and_evaluates_on_the_nominal_one(tmp_path: Path) -> None:
    cfg = load_config(TINY)
    cfg = config_from_dict({**cfg.to_dict(), "collect": {**cfg.to_dict()["collect"], "randomize": "mass=0.5:2.0"}})
    trainer = Trainer(get_task("InvertedPendulum-v5"), cfg, tmp_path, seed=0, tensorboard=False)
    nominal = trainer.eval_env.unwrapped.model.body_mass.copy()
    trainer.train(100)
    ratios = {round(float(np.max(env.unwrapped.model.body_mass[1:] / nominal[1:])), 6) for env in trainer.envs}
    assert all(0.5 <= r <= 2.0 for r in ratios) and ratios != {1.0}
    np.testing.assert_array_equal(trainer.eval_env.unwrapped.model.body_mass, nominal)
