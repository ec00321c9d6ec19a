"""`mbmpo export`: a run directory -> a self-contained policy bundle.

    PDIR/policy.onnx     obs B x D -> action_mean B x A, action_log_std A, with the meta-parameters as
                         initialisers (the runtime overrides them per session for other parameter sets)
    PDIR/adapt.onnx      the one-step adaptation (params, obs, act, adv, alpha) -> adapted params
    PDIR/params.npz      meta-parameters, the K x m adapted parameter sets of the last iteration, and the
                         learned inner step sizes (step/<name>) when training learned them
    PDIR/reward.py       the task's reward/termination functions (numpy-compatible source)
    PDIR/models.npz      (optional) the dynamics ensemble, for adaptation through the models on the robot
    PDIR/manifest.json   the contract: sizes, joint order, limits, control period, the inner step (alpha, or
                         adapt_kl for training's KL-normalised step), advantage settings, versions, and the
                         sha256 of every other file
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from mbmpo.config import config_from_dict
from mbmpo.errors import UserError
from mbmpo.export.graphs import AdaptGraph, PolicyGraph, param_names
from mbmpo.meta.inner import STEP_PREFIX
from mbmpo.models.buffer import TransitionBuffer
from mbmpo.models.ensemble import DynamicsEnsemble, EnsembleLinear
from mbmpo.policy.gaussian import Params, n_layers
from mbmpo.runtime.format import FILES, FORMAT, function_source, sha256
from mbmpo.tasks.base import TaskSpec
from mbmpo.tasks.mujoco_names import actuator_joints
from mbmpo.train.checkpoint import check_task_matches, load_checkpoint
from mbmpo.train.trainer import DATA

OPSET = 17


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)


def _add_defaults_and_metadata(path: Path, defaults: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Turn the parameter inputs named in `defaults` into initialisers holding those values."""
    model = onnx.load(str(path))
    kept = [i for i in model.graph.input if i.name not in defaults]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    for name, value in defaults.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(value.astype(np.float32), name))
    for key, text in metadata.items():
        model.metadata_props.add(key=key, value=text)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_run(run_dir: Path, task: TaskSpec, out_dir: Path, adapt_max_kl: float = 1.0,
               with_models: bool = True) -> dict[str, Any]:
    """Write the bundle for the run's latest checkpoint (with its dynamics models unless `with_models` is
    False); returns the manifest."""
    ckpt = load_checkpoint(run_dir)
    check_task_matches(ckpt, task.name, task.obs_dim, task.act_dim, run_dir)
    models = None
    if with_models:
        models = DynamicsEnsemble(task.obs_dim, task.act_dim,
                                  config_from_dict(ckpt["config"], source=str(run_dir / "checkpoint.pt")).model)
        models.load_state_dict(ckpt["ensemble"])
    recorded = None
    if models is not None and float(ckpt["config"]["meta"].get("state_bounds", 0.0)) > 0:
        recorded = TransitionBuffer.load(run_dir / DATA, task.obs_dim, task.act_dim,
                                         int(ckpt["config"]["model"]["buffer_size"])).obs
    return export_policy(ckpt["params"], ckpt["adapted"], task, ckpt["config"]["meta"], int(ckpt["iteration"]),
                         int(ckpt["real_steps"]), out_dir, adapt_max_kl, models, recorded,
                         ckpt["config"].get("deploy"))


def model_arrays(ensemble: DynamicsEnsemble) -> dict[str, np.ndarray]:
    """The ensemble as the runtime's models.npz holds it: effective (weight-normalised) weights w{i}
    E x in x out, biases b{i} E x 1 x out, and the normalisers' statistics."""
    with torch.no_grad():
        arrays = {}
        for i, layer in enumerate(ensemble.layers):
            assert isinstance(layer, EnsembleLinear)
            arrays[f"w{i}"] = layer.weight().float().cpu().numpy()
            arrays[f"b{i}"] = layer.b.float().cpu().numpy()
        for name, norm in (("in", ensemble.in_norm), ("out", ensemble.out_norm)):
            arrays[f"{name}_mean"] = norm.mean.float().cpu().numpy()
            arrays[f"{name}_std"] = norm.std.float().cpu().numpy()
    return arrays


def export_policy(params: Params, adapted: Params, task: TaskSpec, meta_cfg: dict[str, Any], iteration: int,
                  real_steps: int, out_dir: Path, adapt_max_kl: float = 1.0,
                  models: DynamicsEnsemble | None = None, recorded_obs: np.ndarray | None = None,
                  deploy_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a bundle for meta-parameters and task-batched exploration parameters, and the dynamics models
    when given (adaptation through the models on the robot); returns the manifest. When training bounded its
    imagination (`meta.state_bounds` > 0), the models carry the range of the states it recorded, `recorded_obs`
    B x D, so that the robot's imagination is bounded alike. `deploy_cfg` (the config's `deploy` section; its
    defaults when None) is the adaptation the bundle ships."""
    params = {k: v.detach().float().cpu() for k, v in params.items()}  # exported from the CPU, whatever trained
    adapted = {k: v.detach().float().cpu() for k, v in adapted.items()}
    layers = n_layers(params)
    names = param_names(layers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    version = f"{task.name}@it{iteration}-{real_steps}steps"
    metadata = {"mbmpo.format": FORMAT, "mbmpo.task": task.name, "mbmpo.obs_dim": str(task.obs_dim),
                "mbmpo.act_dim": str(task.act_dim), "mbmpo.obs_names": ",".join(task.obs_names),
                "mbmpo.act_names": ",".join(task.act_names), "mbmpo.policy_version": version}

    obs = torch.zeros(2, task.obs_dim)
    args = [params[k] for k in names]
    _export(PolicyGraph(layers), (obs, *args), out_dir / "policy.onnx", ["obs", *names], ["action_mean", "action_log_std"],
            {"obs": {0: "batch"}, "action_mean": {0: "batch"}})
    _add_defaults_and_metadata(out_dir / "policy.onnx", {k: params[k].numpy() for k in names}, metadata)
    act, adv, alpha = torch.zeros(2, task.act_dim), torch.zeros(2), torch.tensor(0.0)
    _export(AdaptGraph(layers), (*args, obs, act, adv, alpha), out_dir / "adapt.onnx",
            [*names, "obs", "act", "adv", "alpha"], [f"{k}_new" for k in names],
            {"obs": {0: "batch"}, "act": {0: "batch"}, "adv": {0: "batch"}})
    _add_defaults_and_metadata(out_dir / "adapt.onnx", {}, metadata)

    arrays = {f"meta/{k}": params[k].numpy() for k in names}
    arrays.update({f"explore/{k}": adapted[k].numpy() for k in names})
    arrays.update({f"step/{k}": torch.exp(params[STEP_PREFIX + k]).numpy() for k in names if STEP_PREFIX + k in params})
    np.savez(out_dir / "params.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub types the first kwarg

    reward_file, reward_fn = function_source(task.reward_ref)
    shutil.copyfile(reward_file, out_dir / "reward.py")
    termination = None
    if task.termination_ref:
        term_file, term_fn = function_source(task.termination_ref)
        if term_file.resolve() != reward_file.resolve():
            raise UserError(f"task '{task.name}': reward and termination must live in one module file to export")
        termination = term_fn

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "task": task.name,
        "policy_version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_real_steps": real_steps,
        "iteration": iteration,
        "obs_dim": task.obs_dim,
        "act_dim": task.act_dim,
        "obs_names": list(task.obs_names),
        "act_names": list(task.act_names),
        "act_low": [float(x) for x in task.act_low],
        "act_high": [float(x) for x in task.act_high],
        "actuator_joints": actuator_joints(task.make_env(task.horizon).unwrapped.model),
        "home": task.home,
        "control_period_s": task.dt,
        "horizon": task.horizon,
        "obs_normalization": {"mean": [0.0] * task.obs_dim, "std": [1.0] * task.obs_dim},
        "param_names": names,
        "n_explore": int(adapted["w0"].shape[0]),
        "alpha": float(meta_cfg["inner_lr"]),  # the runtime's step: learned sizes in params.npz (step/) if there,
        "adapt_kl": float(meta_cfg.get("inner_kl", 0.0)),  # else scaled to this KL if > 0, else alpha
        "gamma": float(meta_cfg["discount"]),
        "gae_lambda": float(meta_cfg["gae_lambda"]),
        "normalize_advantages": bool(meta_cfg["normalize_advantages"]),
        "baseline": "linear-feature",
        "adapt_max_kl": adapt_max_kl,
        "reward": {"file": "reward.py", "function": reward_fn},
        "termination": None if termination is None else {"file": "reward.py", "function": termination},
        "deploy": dataclasses.asdict(config_from_dict({"deploy": deploy_cfg or {}}, source="export").deploy),
        "files": {},
    }
    files = list(FILES)
    if models is not None:
        margin = float(meta_cfg.get("state_bounds", 0.0))
        arrays = model_arrays(models)
        if margin > 0:
            if recorded_obs is None or not len(recorded_obs):
                raise UserError(f"task '{task.name}': training bounded its imagination (meta.state_bounds {margin}); "
                                "exporting its models needs the recorded states")
            arrays.update(state_min=recorded_obs.min(0).astype(np.float32),
                          state_max=recorded_obs.max(0).astype(np.float32))
        np.savez(out_dir / "models.npz", **arrays)  # type: ignore[arg-type]
        files.append("models.npz")
        manifest["models"] = {"file": "models.npz", "members": models.members, "activation": models.activation_name,
                              "rollouts_per_task": int(meta_cfg["rollouts_per_task"]),
                              "horizon": int(meta_cfg.get("horizon", 0)) or task.horizon,
                              "start_states": str(meta_cfg.get("start_states", "reset")),
                              "clip_obs": float(meta_cfg.get("clip_obs", 1000.0)), "state_bounds": margin}
    for name in files:
        manifest["files"][name] = sha256(out_dir / name)
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(out_dir / "manifest.json")
    return manifest
