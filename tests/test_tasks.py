"""Each task's reward and termination, computed on observations, against the environment's own."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mbmpo.errors import UserError
from mbmpo.rollouts.real import random_episodes
from mbmpo.tasks import TASK_NAMES, get_task

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "point_mass" / "task.yaml"

# The forward reward uses the next observation's root velocity where the env uses the finite
# difference of the root position; these bound the mean |difference| per step seen on random data.
# Ant's env reward also carries a contact cost the observation cannot see.
REWARD_TOLERANCE = {"HalfCheetah-v5": 0.3, "Hopper-v5": 0.06, "Walker2d-v5": 0.15, "Ant-v5": 0.25,
                    "Swimmer-v5": 0.12, "InvertedPendulum-v5": 0.0, "point_mass": 1e-6}


def _check(task_name_or_path: str, key: str) -> None:
    task = get_task(task_name_or_path)
    env = task.make_env(task.horizon)
    episodes = random_episodes(task, env, 600, task.horizon, seed=3)
    obs = np.concatenate([e.obs[:-1] for e in episodes])
    nxt = np.concatenate([e.obs[1:] for e in episodes])
    act = np.concatenate([e.act for e in episodes])
    rew = np.concatenate([e.rew for e in episodes])
    model_rew = task.reward(obs, act, nxt)
    assert np.mean(np.abs(model_rew - rew)) <= REWARD_TOLERANCE[key] + 1e-6
    # termination exactly as the environment: True on the last step of terminated episodes only
    term = np.concatenate([np.arange(e.length) == e.length - 1 if e.terminated else np.zeros(e.length, bool)
                           for e in episodes])
    np.testing.assert_array_equal(task.terminated(obs, act, nxt), term)
    # the same functions on torch tensors give the same values (imagination uses torch)
    t = [torch.as_tensor(x) for x in (obs, act, nxt)]
    np.testing.assert_allclose(task.reward(*t).numpy(), model_rew, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(task.terminated(*t).numpy(), task.terminated(obs, act, nxt))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_builtin_reward_and_termination_match_env(name: str) -> None:
    _check(name, name)


def test_user_task_yaml_reward_and_termination_match_env() -> None:
    task = get_task(str(EXAMPLE))
    assert task.name == "point_mass" and task.obs_dim == 4 and task.act_dim == 2
    assert task.obs_names == ("qpos:x", "qpos:y", "qvel:x", "qvel:y")
    _check(str(EXAMPLE), "point_mass")


@pytest.mark.badinput
def test_unknown_task_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown task 'Cheetah'.*HalfCheetah-v5"):
        get_task("Cheetah")


@pytest.mark.badinput
def test_broken_task_yaml_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("mjcf: missing.xml\nreward: fns:reward\n")
    with pytest.raises(UserError, match="cannot load MJCF"):
        get_task(str(bad))
    bad.write_text("mjcf: [unclosed\n")
    with pytest.raises(UserError, match="malformed YAML"):
        get_task(str(bad))
    (tmp_path / "pm.xml").write_text(EXAMPLE.with_name("point_mass.xml").read_text())
    bad.write_text("mjcf: pm.xml\nreward: nofile:reward\n")
    with pytest.raises(UserError, match="module file .*nofile.py not found"):
        get_task(str(bad))


@pytest.mark.badinput
@pytest.mark.parametrize("body, says", [
    ("return 1.0", "returned float 1.0 for a numpy batch of shape (4,)"),
    ("return (next_obs[..., :2] ** 2).sum(-1, keepdims=True)", "returned ndarray of shape (1,)"),
    ("return next_obs[..., 0] / 0.0", "non-finite values"),
    ("raise KeyError('goal')", "raised KeyError"),
    ("return next_obs[..., 0].tolist() if hasattr(next_obs, 'detach') else next_obs[..., 0]",
     "it must return a tensor of shape (2, 3)"),
])
def test_a_reward_that_returns_the_wrong_thing_is_named_when_the_task_loads(tmp_path, body: str, says: str) -> None:
    """One clear line naming the function and what it returned, before any run folder exists."""
    import shutil

    from mbmpo.config import Config
    from mbmpo.errors import UserError
    from mbmpo.tasks import get_task
    from mbmpo.tasks.checks import check_task_functions
    from mbmpo.train.trainer import Trainer

    example = Path(__file__).resolve().parent.parent / "examples" / "point_mass"
    for f in example.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "point_mass_fns.py").write_text((example / "point_mass_fns.py").read_text() +
                                                f"\n\ndef reward(obs, act, next_obs):\n    {body}\n")
    with pytest.raises(UserError, match=r"point_mass_fns\.py:reward") as err:
        check_task_functions(get_task(str(tmp_path / "task.yaml")), torch_batches=True)  # at load; and as the trainer
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)
    if "tensor" in says:  # the trainer refuses it before writing anything
        from mbmpo.tasks.custom import load_task_yaml

        with pytest.raises(UserError, match="tensor"):
            Trainer(load_task_yaml(tmp_path / "task.yaml"), Config(), tmp_path / "run", seed=0, tensorboard=False)
        assert not (tmp_path / "run").exists()


def test_forward_kinematics_reward_matches_mujoco_and_runs_on_numpy_and_torch() -> None:
    """examples/arm2: cos/sin through array-api-compat; the fingertip it computes is MuJoCo's own site."""
    import importlib.util

    import mujoco

    example = Path(__file__).resolve().parent.parent / "examples" / "arm2"
    spec = importlib.util.spec_from_file_location("arm2_fns_test", example / "arm2_fns.py")
    fns = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fns)
    model = mujoco.MjModel.from_xml_path(str(example / "arm2.xml"))
    data = mujoco.MjData(model)
    rng = np.random.default_rng(3)
    for _ in range(5):
        data.qpos[:] = rng.uniform(-2.5, 2.5, 2)
        mujoco.mj_forward(model, data)
        x, y = fns.fingertip(np.concatenate([data.qpos, data.qvel])[None])
        np.testing.assert_allclose([x[0], y[0]], data.site("tip").xpos[:2], atol=1e-6)
    obs = rng.standard_normal((6, 4)).astype(np.float32)
    act = rng.uniform(-0.5, 0.5, (6, 2)).astype(np.float32)
    r_np = fns.reward(obs, act, obs)
    r_torch = fns.reward(torch.as_tensor(obs), torch.as_tensor(act), torch.as_tensor(obs))
    assert isinstance(r_torch, torch.Tensor) and r_np.shape == (6,)
    np.testing.assert_allclose(r_np, r_torch.numpy(), atol=1e-6)


def test_making_an_env_prints_no_mujoco_deprecation_but_other_mujoco_warnings_reach_stderr(capfd) -> None:
    import mujoco

    get_task("HalfCheetah-v5").make_env(200).close()  # Gymnasium's half_cheetah.xml uses `settotalmass`
    assert "settotalmass" not in capfd.readouterr().err
    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><body><freejoint/><geom size='.1'/></body>"
                                           "</worldbody></mujoco>")
    data = mujoco.MjData(model)
    data.qacc[0] = float("nan")  # MuJoCo warns of a bad qacc and resets the data
    data.qpos[0] = float("nan")
    mujoco.mj_step(model, data)
    assert "MuJoCo warning:" in capfd.readouterr().err
