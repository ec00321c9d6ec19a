"""Loading a policy bundle: every file's sha256 and the contract are checked before anything runs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mbmpo.runtime.format import FILES, FORMAT, sha256
from mbmpo.runtime.models import Models


class BundleError(ValueError):
    """A bundle that must not be used: missing or altered files, or a broken contract."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: manifest, ONNX sessions, parameter sets and the task's reward function."""

    path: Path
    manifest: dict[str, Any]
    policy_session: ort.InferenceSession  # runs the meta-parameters stored in policy.onnx
    policy_bytes: bytes  # policy.onnx, for sessions with other parameter sets
    adapt_session: ort.InferenceSession
    meta_params: dict[str, np.ndarray]
    explore_params: dict[str, np.ndarray]  # each K x ...
    reward_fn: Callable[..., Any]
    termination_fn: Callable[..., Any] | None
    step_sizes: dict[str, np.ndarray] = field(default_factory=dict)  # learned inner step sizes (alpha per parameter)
    models: Models | None = None  # the dynamics ensemble (models.npz), when the bundle carries it
    explore_cache: dict[int, Any] = field(default_factory=dict)  # k -> the runtime's Policy, built once

    @property
    def obs_dim(self) -> int:
        return int(self.manifest["obs_dim"])

    @property
    def act_dim(self) -> int:
        return int(self.manifest["act_dim"])


def _session(path: Path | bytes, initializers: dict[str, np.ndarray] | None = None) -> ort.InferenceSession:
    """A one-thread CPU session; `initializers` replace the model's stored values of the same names."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one observation at a time: threads only add latency
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    values = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v, np.float32))
              for k, v in (initializers or {}).items()}
    for name, value in values.items():
        options.add_initializer(name, value)
    source = path if isinstance(path, bytes) else str(path)
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        session._mbmpo_values = values  # the OrtValues must outlive the session
        return session
    except Exception as err:
        where = "policy.onnx (bytes)" if isinstance(path, bytes) else path
        raise BundleError(f"{where}: not a loadable ONNX model: {str(err).splitlines()[0]}") from None


def _load_function(file: Path, name: str) -> Callable[..., Any]:
    spec = importlib.util.spec_from_file_location(f"mbmpo_bundle_{hashlib.sha1(str(file).encode()).hexdigest()}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise BundleError(f"{file} has no function '{name}'")
    return fn


def load_bundle(path: str | Path) -> Bundle:
    """Verify and load. Raises `BundleError` saying which file or field is wrong."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest.json (not a policy bundle)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"{path}/manifest.json is unreadable: {err}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for name in FILES:
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path}: missing file {name}")
        digest = sha256(file)
        if digest != manifest.get("files", {}).get(name):
            raise BundleError(f"{path}/{name}: sha256 {digest[:12]}... does not match the manifest")
    obs_dim, act_dim = int(manifest["obs_dim"]), int(manifest["act_dim"])
    if len(manifest["obs_names"]) != obs_dim or len(manifest["act_names"]) != act_dim:
        raise BundleError(f"{path}: manifest names {len(manifest['obs_names'])} observations / "
                          f"{len(manifest['act_names'])} actions but sizes {obs_dim} / {act_dim}")
    with np.load(path / "params.npz", allow_pickle=False) as data:
        meta = {k: data[f"meta/{k}"] for k in manifest["param_names"]}
        explore = {k: data[f"explore/{k}"] for k in manifest["param_names"]}
        steps = {k: data[f"step/{k}"] for k in manifest["param_names"] if f"step/{k}" in data}
    for label, params in (("meta", meta), ("explore", explore), ("step size", steps)):
        bad = [k for k, v in params.items() if not np.isfinite(v).all()]
        if bad:
            raise BundleError(f"{path}/params.npz: non-finite {label} parameters {bad}")
    if meta["w0"].shape[0] != obs_dim or meta["log_std"].shape != (act_dim,):
        raise BundleError(f"{path}/params.npz: parameters take {meta['w0'].shape[0]} observations and give "
                          f"{meta['log_std'].shape[0]} actions; the manifest says {obs_dim} and {act_dim}")
    policy_bytes = (path / "policy.onnx").read_bytes()
    policy_session = _session(policy_bytes)
    declared = policy_session.get_inputs()[0].shape[-1]
    if declared != obs_dim:
        raise BundleError(f"{path}/policy.onnx takes {declared} observations; the manifest says {obs_dim}")
    reward = _load_function(path / "reward.py", manifest["reward"]["function"])
    term = manifest.get("termination")
    termination = _load_function(path / "reward.py", term["function"]) if term else None
    return Bundle(path, manifest, policy_session, policy_bytes, _session(path / "adapt.onnx"), meta, explore, reward,
                  termination, steps, _load_models(path, manifest))


def _load_models(path: Path, manifest: dict[str, Any]) -> Models | None:
    """The optional models.npz, verified like every other file and checked against the manifest's sizes."""
    spec = manifest.get("models")
    if not spec:
        return None
    file = path / "models.npz"
    if not file.is_file():
        raise BundleError(f"{path}: the manifest lists dynamics models but models.npz is missing")
    if sha256(file) != manifest.get("files", {}).get("models.npz"):
        raise BundleError(f"{file}: sha256 does not match the manifest")
    try:
        models = Models.load(file, spec["activation"])
    except (KeyError, ValueError, OSError) as err:
        raise BundleError(f"{file}: unreadable dynamics models: {err}") from None
    obs_dim, act_dim = int(manifest["obs_dim"]), int(manifest["act_dim"])
    if models.weights[0].shape[1] != obs_dim + act_dim or models.obs_dim != obs_dim:
        raise BundleError(f"{file}: models map {models.weights[0].shape[1]} inputs to {models.obs_dim} states; the "
                          f"manifest says {obs_dim} observations + {act_dim} actions -> {obs_dim}")
    return models


def policy_session(bundle: Bundle, params: dict[str, np.ndarray]) -> ort.InferenceSession:
    """A session of the policy graph with `params` in place of the stored meta-parameters."""
    if params is bundle.meta_params:
        return bundle.policy_session
    return _session(bundle.policy_bytes, params)
