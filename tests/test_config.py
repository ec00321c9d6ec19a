"""Configuration loading: presets load; broken YAML, unknown keys and wrong types are clear errors."""

from pathlib import Path

import pytest

from mbmpo.config import Config, default_config_path, load_config
from mbmpo.errors import UserError
from mbmpo.tasks import TASK_NAMES


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_registered_task_has_a_preset_that_loads(name: str) -> None:
    path = default_config_path(name)
    assert path is not None, f"config/{name}.yaml missing"
    assert isinstance(load_config(path), Config)
    paper = path.parent / "paper" / path.name  # the published settings beside the default budget
    assert name == "InvertedPendulum-v5" or isinstance(load_config(paper), Config)


SHIPPED = sorted((Path(__file__).resolve().parent.parent / "config").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads(path: Path) -> None:
    """Presets, the published settings, the size presets and the screens a note tells users to run."""
    assert isinstance(load_config(path), Config)


def test_the_shipped_configs_include_the_screens() -> None:
    assert {p.parent.name for p in SHIPPED} >= {"config", "paper", "presets", "screens"}


BAD_CONFIGS = [  # (YAML, the error it must give)
    ("model:\n  hidden: [64, 64\n", r"malformed YAML in .*c.yaml line"),
    ("model:\n  hiden: [64]\n", r"unknown key\(s\) \['hiden'\] in section 'model'"),
    ("meta:\n  inner_lr: fast\n", "meta.inner_lr must be a number"),
    ("meta:\n  outer: sgd\n", "meta.outer must be 'trpo' or 'ppo'"),
    ("meta:\n  state_bounds: -0.1\n", "meta.state_bounds must be >= 0"),
    ("deploy:\n  adapt_through: magic\n", "deploy.adapt_through must be one of episodes, models, got 'magic'"),
    ("deploy:\n  adapt_rounds: 0\n", "deploy.adapt_episodes, adapt_steps and adapt_rounds must be >= 1"),
    ("model:\n  precision: fp16\n", "model.precision must be one of \\('fp32', 'bf16', 'auto'\\), got 'fp16'"),
    ("model:\n  imagine_precision: half\n", "model.imagine_precision must be one of .*got 'half'"),
    ("modle: {}\n", "unknown section"),
]


@pytest.mark.badinput
def test_errors_name_the_problem(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    for text, message in BAD_CONFIGS:
        f.write_text(text)
        with pytest.raises(UserError, match=message):
            load_config(f)
    with pytest.raises(UserError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_a_task_without_a_preset_file_gets_one_sized_to_it_and_the_choice_is_said() -> None:
    from mbmpo.config import choose_config
    from mbmpo.errors import UserError

    path, said = choose_config("arm2", obs_dim=6, act_dim=2)
    assert path is not None and path.name == "small.yaml" and "sized to its 6 observations" in said
    assert choose_config("quadruped", obs_dim=30, act_dim=12)[0].name == "medium.yaml"
    assert choose_config("humanoid", obs_dim=300, act_dim=20)[0] is None  # the paper's settings
    assert choose_config("arm2", 6, 2, preset="medium")[0].name == "medium.yaml"
    assert choose_config("HalfCheetah-v5", 17, 6)[0].name == "HalfCheetah-v5.yaml"  # a task's own preset first
    for preset in ("small", "medium"):
        load_config(choose_config("x", 1, 1, preset)[0])  # the shipped presets load
    with pytest.raises(UserError, match="preset 'huge' is not one of small, medium, paper"):
        choose_config("arm2", 6, 2, preset="huge")


def test_a_config_states_only_what_it_changes_from_its_base(tmp_path: Path) -> None:
    """`base:` loads the named file first (relative to the naming file, chains allowed); each key given replaces
    its key alone, an empty section keeps the base's."""
    (tmp_path / "root.yaml").write_text("model:\n  hidden: [64, 64]\n  max_epochs: 7\nmeta:\n  max_kl: 0.03\n")
    (tmp_path / "screens").mkdir()
    (tmp_path / "screens" / "mid.yaml").write_text("base: ../root.yaml\nmodel:\n  max_epochs: 9\nmeta:\n")
    (tmp_path / "screens" / "leaf.yaml").write_text("base: mid.yaml\npolicy:\n  init_std: 0.5\n")
    cfg = load_config(tmp_path / "screens" / "leaf.yaml")
    assert (cfg.model.hidden, cfg.model.max_epochs, cfg.meta.max_kl, cfg.policy.init_std) == ((64, 64), 9, 0.03, 0.5)
    assert cfg.model.batch_size == Config().model.batch_size  # what no file names keeps its default
    (tmp_path / "root.yaml").write_text("")  # an empty base is the defaults
    assert load_config(tmp_path / "screens" / "mid.yaml").model.max_epochs == 9


@pytest.mark.badinput
def test_a_bad_base_is_a_clear_error_that_names_the_file_at_fault(tmp_path: Path) -> None:
    (tmp_path / "root.yaml").write_text("model:\n  hiden: [64]\n")
    (tmp_path / "a.yaml").write_text("base: root.yaml\n")
    with pytest.raises(UserError, match=r"root.yaml: unknown key\(s\) \['hiden'\]"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "root.yaml").write_text("model:\n  hidden: [64]\n")
    (tmp_path / "a.yaml").write_text("base: root.yaml\nmeta:\n  max_kl: -1\n")
    with pytest.raises(UserError, match=r"a.yaml: meta.max_kl"):
        load_config(tmp_path / "a.yaml")
    for text, message in [("base: nope.yaml\n", r"a.yaml: base 'nope.yaml' is not a file"),
                          ("base: [root.yaml]\n", r"a.yaml: base must be the path of another config file"),
                          ("base: b.yaml\n", r"b.yaml: base 'a.yaml' makes a loop: .*a.yaml -> .*b.yaml -> .*a.yaml")]:
        (tmp_path / "a.yaml").write_text(text)
        (tmp_path / "b.yaml").write_text("base: a.yaml\n")
        with pytest.raises(UserError, match=message):
            load_config(tmp_path / "a.yaml")
