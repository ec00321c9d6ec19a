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


@pytest.mark.badinput
def test_errors_name_the_problem(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  hidden: [64, 64\n")
    with pytest.raises(UserError, match=r"malformed YAML in .*c.yaml line"):
        load_config(f)
    f.write_text("model:\n  hiden: [64]\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) \['hiden'\] in section 'model'"):
        load_config(f)
    f.write_text("meta:\n  inner_lr: fast\n")
    with pytest.raises(UserError, match="meta.inner_lr must be a number"):
        load_config(f)
    f.write_text("meta:\n  outer: sgd\n")
    with pytest.raises(UserError, match="meta.outer must be 'trpo' or 'ppo'"):
        load_config(f)
    f.write_text("modle: {}\n")
    with pytest.raises(UserError, match="unknown section"):
        load_config(f)
    with pytest.raises(UserError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
