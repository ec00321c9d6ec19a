"""The `device` setting (config `device:`, `mbmpo train --device`, the train graph's `device:=`): checked with one
line naming it, recorded in the run's config.yaml, and checkpoints that hold CPU tensors only, so a run trained on
a GPU resumes and exports on a machine without one. Runs on the CPU; on a machine with CUDA the tiny run is
trained on it too."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mbmpo.cli import main
from mbmpo.config import Config, config_from_dict, load_config
from mbmpo.device import resolve_device, to_cpu
from mbmpo.errors import UserError
from mbmpo.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
NO_CUDA = not torch.cuda.is_available()
DEVICES = ["cpu"] + ([] if NO_CUDA else ["cuda"])


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _train(out: Path, *args: str) -> int:
    return main(["train", "--task", "InvertedPendulum-v5", "--out", str(out), "--no-progress", *args])


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def auto_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset with `device: auto`, so that what --device writes differs from the file's value."""
    path = tmp_path_factory.mktemp("cfg") / "tiny_auto.yaml"
    path.write_text(TINY.read_text() + "device: auto\n")
    return path


@pytest.fixture(scope="module", params=DEVICES)
def device_run(request: pytest.FixtureRequest, auto_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run trained with `--device <param>` over a config that says `device: auto`."""
    out = tmp_path_factory.mktemp("run") / request.param
    assert _train(out, "--steps", "100", "--config", str(auto_config), "--device", request.param) == 0
    return out


# ---- the setting --------------------------------------------------------------------------------------
def test_device_setting_accepts_cpu_cuda_cuda_n_auto_and_defaults_to_cpu() -> None:
    assert Config().device == "cpu" and load_config(TINY).device == "cpu"  # nothing changes for current users
    for name in ("cpu", "cuda", "cuda:1", "auto"):
        assert config_from_dict({"device": name}).device == name


@pytest.mark.badinput
@pytest.mark.parametrize("value, message", [("gpu", "device must be cpu, cuda, cuda:N or auto, got 'gpu'"),
                                            ("cuda:x", "got 'cuda:x'"), ("CPU", "got 'CPU'"),
                                            (0, "device must be a string, got 0")])
def test_a_bad_device_is_one_line_naming_the_file_and_the_setting(tmp_path: Path, value: Any, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"device": value, "model": {"hidden": [8]}}))
    with pytest.raises(UserError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_auto_is_cuda_only_when_torch_sees_one_and_cuda_needs_one() -> None:
    assert resolve_device("auto", cuda_devices=0) == torch.device("cpu")
    assert resolve_device("auto", cuda_devices=2) == torch.device("cuda")
    assert resolve_device("cuda:1", cuda_devices=2) == torch.device("cuda", 1)
    assert resolve_device("cpu", cuda_devices=0) == torch.device("cpu")
    with pytest.raises(UserError, match=r"device 'cuda': torch finds no CUDA device on this machine"):
        resolve_device("cuda", cuda_devices=0)
    with pytest.raises(UserError, match=r"device 'cuda:2': this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:2", cuda_devices=2)
    with pytest.raises(UserError, match="device must be"):
        resolve_device("tpu", cuda_devices=0)
    if NO_CUDA:
        assert resolve_device("auto") == torch.device("cpu")  # this machine, as torch reports it


@pytest.mark.badinput
@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_training(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert _train(tmp_path / "run", "--steps", "60", "--config", str(TINY), "--device", "cuda") == 2
    assert "device 'cuda': torch finds no CUDA device" in _one_line_error(capsys)
    assert not (tmp_path / "run" / CHECKPOINT).exists() and not (tmp_path / "run" / "data.npz").exists()
    assert _train(tmp_path / "run", "--steps", "60", "--config", str(TINY), "--device", "gpu") == 2
    assert "device must be cpu, cuda, cuda:N or auto, got 'gpu'" in _one_line_error(capsys)


# ---- a run ------------------------------------------------------------------------------------------------
def test_device_flag_is_recorded_in_config_yaml_and_checkpoints_hold_cpu_tensors(device_run: Path) -> None:
    saved = yaml.safe_load((device_run / "config.yaml").read_text())
    assert saved["config"]["device"] == device_run.name  # --device, not the config file's `auto`
    ckpt = load_checkpoint(device_run)
    assert ckpt["config"]["device"] == device_run.name
    tensors = _tensors(ckpt)
    assert len(tensors) > 10 and {t.device.type for t in tensors} == {"cpu"}
    raw = torch.load(device_run / CHECKPOINT, weights_only=True)  # without map_location: CPU as written
    assert {t.device.type for t in _tensors(raw)} == {"cpu"}


class _OnAnotherDevice(torch.Tensor):
    """Stands for a tensor on a GPU in a CPU-only test: `.cpu()` gives a plain CPU tensor, and a checkpoint that
    kept the tensor itself would not load with weights_only=True (an unknown class)."""

    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)


def test_a_checkpoint_is_written_from_cpu_copies_of_every_tensor(tmp_path: Path) -> None:
    on_device = lambda *shape: torch.ones(*shape).as_subclass(_OnAnotherDevice)
    state = {"iteration": 3, "params": {"w0": on_device(2, 3)}, "adapted": None,
             "optimizer": {"state": {0: {"step": on_device(()), "exp_avg": on_device(4)}},
                           "param_groups": [{"lr": 1e-3, "params": [0]}]}, "shapes": (on_device(1), 7)}
    assert type(to_cpu(state)["shapes"]) is tuple and to_cpu(state)["shapes"][1] == 7
    save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(tmp_path)  # UserError (an unknown tensor class) if a device tensor had been saved
    assert loaded["iteration"] == 3 and loaded["adapted"] is None and loaded["optimizer"]["param_groups"][0]["params"] == [0]
    assert all(type(t) is torch.Tensor and t.device.type == "cpu" for t in _tensors(loaded))
    assert torch.equal(loaded["params"]["w0"], torch.ones(2, 3))


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
def test_a_run_trained_on_cuda_resumes_and_exports_here_with_device_cpu(device_run: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    from mbmpo.export.bundle import export_run
    from mbmpo.tasks import get_task

    run = tmp_path / "run"
    shutil.copytree(device_run, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["config"]["device"] = "cuda"  # as config.yaml reads after `--device cuda` on a GPU machine
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    steps = int(load_checkpoint(run)["real_steps"])
    capsys.readouterr()
    assert _train(run, "--steps", str(steps + 1), "--resume") == 2  # the saved setting, on a machine without CUDA
    assert "device 'cuda'" in _one_line_error(capsys) and load_checkpoint(run)["real_steps"] == steps
    assert _train(run, "--steps", str(steps + 1), "--resume", "--device", "cpu") == 0
    ckpt = load_checkpoint(run)
    assert ckpt["real_steps"] > steps and ckpt["config"]["device"] == "cpu"
    manifest = export_run(run, get_task("InvertedPendulum-v5"), tmp_path / "bundle")
    assert (tmp_path / "bundle" / "policy.onnx").is_file() and manifest["n_explore"] >= 1


# ---- the ROS train graph ------------------------------------------------------------------------------
def test_the_train_graph_passes_device_to_the_trainer() -> None:
    from mbmpo.deploy.graph import train_graph

    assert train_graph({"device": "cuda:1"})[-1].parameters["device"] == "cuda:1"
    assert train_graph({})[-1].parameters["device"] == ""  # the config's device
    with pytest.raises(ValueError, match="device:=gpu is not one of cpu, cuda, cuda:N or auto"):
        train_graph({"device": "gpu"})


def test_the_gpu_benchmark_runs_every_section_at_quick_sizes_on_the_cpu() -> None:
    """benchmarks/gpu.py waits for a GPU lease; this keeps it working meanwhile (tiny sizes, seconds)."""
    from gpu import main as gpu_benchmark

    rows = {label: (value, unit) for label, value, unit in gpu_benchmark(["--device", "cpu", "--quick", "--threads", "1"])}
    assert rows["imagination throughput"][0] > 0 and 0 < rows["imagination fraction of the matmul peak"][0] <= 1
    phases = [label for label in rows if "iteration 1, meta_steps 3 (paper: 30): t_" in label]
    assert len(phases) == 5 and all(rows[label][0] > 0 for label in phases)  # 4 phases + t_meta scaled to 30 steps
