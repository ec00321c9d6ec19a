"""Configuration: frozen dataclasses loaded from the YAML presets in `config/`.

Each component receives only its own section (`model`, `policy`, `meta`, `collect`); `device` is a top-level
setting of the trainer as a whole. A file may start from another: `base: <path>` (relative to the file) loads
that file first and the keys given here replace its keys one by one, so a screen states only what it changes.
Unknown keys, wrong types, malformed YAML and a loop of bases raise `UserError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mbmpo.errors import UserError

ACTIVATIONS = ("relu", "tanh", "swish")
PRECISIONS = ("fp32", "bf16", "auto")  # the ensemble's matmuls (mbmpo.device.compute_dtype resolves auto)
DEVICE_NAMES = "cpu, cuda, cuda:N or auto"  # what the `device` setting takes (mbmpo.device resolves it)


def is_device_name(name: str) -> bool:
    """True for the values the `device` setting takes: cpu, cuda, cuda:N, auto."""
    return re.fullmatch(r"cpu|cuda|cuda:\d+|auto", name) is not None


@dataclass(frozen=True)
class ModelConfig:
    """Dynamics ensemble and its training (REFERENCE.md section 1)."""

    ensemble_size: int = 5  # K: number of members, each one a meta-learning task
    hidden: tuple[int, ...] = (512, 512)  # hidden layer widths
    activation: str = "relu"  # relu | tanh | swish
    weight_norm: bool = True  # w = g * v / ||v|| per output unit
    lr: float = 1e-3  # Adam step size
    batch_size: int = 500  # minibatch per member
    valid_fraction: float = 0.2  # each member holds out its own random split
    max_epochs: int = 500  # per iteration; early stopping usually ends sooner
    max_steps: int = 0  # per iteration, minibatch steps at most (0: no cap); bounds the fit as the buffer grows
    persistency: float = 0.99  # rolling-average factor of the validation loss for early stopping
    buffer_size: int = 100_000  # transitions kept (oldest dropped first)
    min_std: float = 1e-6  # floor of the standardisation std (paper: + 1e-10)
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 where the device computes it natively, else fp32)
    imagine_precision: str = ""  # the imagination's matmuls when they differ from the fit's: fp32 | bf16 | auto

    def __post_init__(self) -> None:
        _check(self.ensemble_size >= 1, "model.ensemble_size must be >= 1")
        _check(all(h >= 1 for h in self.hidden), "model.hidden widths must be >= 1")
        _check(self.activation in ACTIVATIONS, f"model.activation must be one of {ACTIVATIONS}")
        _check(self.precision in PRECISIONS, f"model.precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.imagine_precision in ("", *PRECISIONS),
               f"model.imagine_precision must be one of {PRECISIONS} (or unset), got {self.imagine_precision!r}")
        _check(0.0 < self.valid_fraction < 1.0, "model.valid_fraction must be in (0, 1)")
        _check(0.0 <= self.persistency < 1.0, "model.persistency must be in [0, 1)")
        _check(self.batch_size >= 1 and self.max_epochs >= 0 and self.max_steps >= 0,
               "model.batch_size/max_epochs/max_steps out of range")


@dataclass(frozen=True)
class PolicyConfig:
    """Gaussian MLP policy with tanh hidden units and a learned state-independent log-std."""

    hidden: tuple[int, ...] = (32, 32)
    init_std: float = 1.0

    def __post_init__(self) -> None:
        _check(self.init_std > 0.0, "policy.init_std must be > 0")


@dataclass(frozen=True)
class MetaConfig:
    """Meta-policy optimisation over the ensemble (inner VPG step, outer TRPO or PPO step)."""

    inner_lr: float = 0.001  # alpha: step size of the one VPG adaptation step (the start value when learned)
    learn_inner_lr: bool = False  # learn one step size per policy parameter in the outer step (Meta-SGD)
    inner_kl: float = 0.0  # > 0: scale each task's inner step to this KL(pre || post) instead of alpha
    inner_natural: bool = False  # the inner step in the Fisher metric: F_k^-1 g_k instead of g_k (meta/natural.py)
    inner_cg_iters: int = 10  # conjugate-gradient steps of the natural inner direction
    inner_fisher_subsample: float = 1.0  # fraction of each task's rollouts its Fisher matrix is estimated on
    stop_window: int = 0  # > 0: end the outer steps once the imagined post-update return falls (mean of this many)
    min_std: float = 0.0  # > 0: after each outer step the meta-policy's action std is raised to at least this
    outer: str = "trpo"  # trpo | ppo
    first_order: bool = False  # drop the second-order term of the meta-gradient (an extra, not default)
    meta_steps: int = 30  # outer steps per iteration
    tasks_per_model: int = 4  # meta-batch = ensemble_size * tasks_per_model
    rollouts_per_task: int = 50  # imagined trajectories per task, pre- and post-update each
    horizon: int = 0  # imagined horizon; 0 means the task's horizon
    discount: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True  # centre and scale advantages per task
    max_kl: float = 0.01  # TRPO trust region on the post-update policies
    cg_iters: int = 10
    cg_damping: float = 1e-5
    cg_subsample: float = 1.0  # fraction of rollouts used in Fisher-vector products (1.0: all)
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15
    ppo_clip: float = 0.2
    ppo_lr: float = 1e-3
    ppo_epochs: int = 5
    clip_obs: float = 1000.0  # imagined next observations are clipped to +- this
    start_states: str = "reset"  # reset: observed episode starts; buffer: any recorded state
    state_bounds: float = 0.0  # > 0: an imagined state outside the recorded states' range, widened by this fraction
    # of it per dimension, is clamped to it and ends its trajectory (no return where the models have no data)

    def __post_init__(self) -> None:
        _check(self.outer in ("trpo", "ppo"), "meta.outer must be 'trpo' or 'ppo'")
        _check(self.start_states in ("reset", "buffer"), "meta.start_states must be 'reset' or 'buffer'")
        _check(self.meta_steps >= 1 and self.tasks_per_model >= 1, "meta.meta_steps/tasks_per_model >= 1")
        _check(self.rollouts_per_task >= 1 and self.horizon >= 0, "meta.rollouts_per_task >= 1, horizon >= 0")
        _check(0.0 < self.discount <= 1.0 and 0.0 <= self.gae_lambda <= 1.0, "meta.discount/gae_lambda range")
        _check(self.max_kl > 0.0, "meta.max_kl must be > 0")
        _check(self.inner_lr > 0.0 or not self.learn_inner_lr, "meta.inner_lr must be > 0 to be learned")
        _check(self.stop_window >= 0, "meta.stop_window must be >= 0 (0: always meta_steps outer steps)")
        _check(self.min_std >= 0.0, "meta.min_std must be >= 0 (0: no floor on the policy's std)")
        _check(self.inner_kl >= 0.0, "meta.inner_kl must be >= 0 (0: the fixed step size inner_lr)")
        _check(not (self.inner_natural and self.learn_inner_lr),
               "meta.inner_natural and meta.learn_inner_lr do not combine (the natural step has no per-parameter sizes)")
        _check(self.state_bounds >= 0.0, "meta.state_bounds must be >= 0 (0: imagined states are only clipped to "
                                         "+-clip_obs)")
        _check(0.0 < self.cg_subsample <= 1.0, "meta.cg_subsample must be in (0, 1]")
        _check(self.inner_cg_iters >= 1, "meta.inner_cg_iters must be >= 1")
        _check(0.0 < self.inner_fisher_subsample <= 1.0, "meta.inner_fisher_subsample must be in (0, 1]")


@dataclass(frozen=True)
class CollectConfig:
    """Real-environment data collection and evaluation."""

    initial_random_steps: int = 5000  # uniform random actions before the first iteration
    rollouts_per_task: int = 1  # real episodes per adapted policy per iteration
    eval_episodes: int = 5  # deterministic episodes of the meta-policy per iteration (not training data)
    horizon: int = 0  # real episode length; 0 means the task's horizon
    video_every: int = 0  # a rollout video of the meta-policy in TensorBoard every N iterations (0: none)
    # dynamics randomisation of the simulated collection: 'mass=0.7:1.4,friction=0.5:1.5' scales each
    # exploration episode's physics by a log-uniform draw per key ('' = none; evaluation stays nominal)
    randomize: str = ""

    def __post_init__(self) -> None:
        from mbmpo.tasks.perturb import parse_ranges

        parse_ranges(self.randomize)
        _check(self.initial_random_steps >= 0 and self.rollouts_per_task >= 1, "collect sizes out of range")
        _check(self.eval_episodes >= 0 and self.horizon >= 0 and self.video_every >= 0,
               "collect.eval_episodes/horizon/video_every >= 0")


ADAPT_THROUGH = ("episodes", "models")  # what an online adaptation steps on: `Policy.adapt` / `adapt_in_models`


@dataclass(frozen=True)
class DeployConfig:
    """How the deployed meta-policy adapts on the robot unless told otherwise: exported into the bundle's manifest,
    where the deploy graph, `mbmpo eval` and benchmarks/sim_to_real.py take their adaptation defaults from. A task's
    preset sets what measured best for it (BENCHMARKS.md); the policy node's parameters override each."""

    adapt_through: str = "episodes"  # episodes: step on the fresh episodes | models: through the bundle's models
    adapt_episodes: int = 2  # episodes of fresh data per adaptation
    adapt_steps: int = 1  # steps on them (through the models: at most), each under the KL bound
    adapt_rounds: int = 1  # adaptations in all, each of the policy in use after its adapt_episodes episodes
    adapt_kl: float = 0.0  # > 0: each step scaled to this KL(pre || post) (on the episodes: the steps' total)
    adapt_judge: bool = False  # an adapted policy whose own episodes score below its parent's is reverted
    adapt_margin: float = 0.0  # with adapt_judge: kept only if it scores this many standard errors above its parent

    def __post_init__(self) -> None:
        _check(self.adapt_through in ADAPT_THROUGH, f"deploy.adapt_through must be one of {', '.join(ADAPT_THROUGH)}, "
               f"got {self.adapt_through!r}")
        _check(min(self.adapt_episodes, self.adapt_steps, self.adapt_rounds) >= 1,
               "deploy.adapt_episodes, adapt_steps and adapt_rounds must be >= 1")
        _check(self.adapt_kl >= 0.0, "deploy.adapt_kl must be >= 0 (0: training's step)")
        _check(self.adapt_margin >= 0.0, "deploy.adapt_margin must be >= 0 (standard errors of the difference)")


@dataclass(frozen=True)
class Config:
    """The whole run configuration: one section per component."""

    model: ModelConfig = field(default_factory=ModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    # torch device of the model fit and the meta-optimisation: cpu | cuda | cuda:N | auto (cuda when there is
    # one); real episodes, evaluation, export and checkpoints stay on the CPU (mbmpo.device)
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check(is_device_name(self.device), f"device must be {DEVICE_NAMES}, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "policy": PolicyConfig, "meta": MetaConfig, "collect": CollectConfig,
             "deploy": DeployConfig}
_SETTINGS = ("device",)  # top-level keys that are settings, not sections
BASE = "base"  # top-level key of a YAML file: the file it starts from (load_config)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field type hint (int, float, bool, str, tuple[int, ...])."""
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise UserError(f"{where} must be a list of integers, got {value!r}")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint!r} at {where}")


def config_from_dict(data: dict[str, Any] | None, source: str = "<dict>") -> Config:
    """Build a `Config` from nested dicts; missing keys keep their defaults."""
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: top level must be a mapping of sections {sorted(_SECTIONS)}")
    unknown = sorted(set(data) - set(_SECTIONS) - set(_SETTINGS))
    if unknown:
        raise UserError(f"{source}: unknown section(s) {unknown}; expected some of {sorted(_SECTIONS)} "
                        f"(and the setting(s) {list(_SETTINGS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        raw = data.get(name) or {}
        if not isinstance(raw, dict):
            raise UserError(f"{source}: section '{name}' must be a mapping, got {type(raw).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        bad = sorted(set(raw) - known)
        if bad:
            raise UserError(f"{source}: unknown key(s) {bad} in section '{name}'; known keys: {sorted(known)}")
        kwargs = {k: _coerce(v, hints[k], f"{source}: {name}.{k}") for k, v in raw.items()}
        try:
            sections[name] = cls(**kwargs)
        except UserError as err:
            raise UserError(f"{source}: {err}") from None
    hints = typing.get_type_hints(Config)
    settings = {k: _coerce(data[k], hints[k], f"{source}: {k}") for k in _SETTINGS if k in data}
    try:
        return Config(**sections, **settings)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None


def shipped_adaptation(manifest: dict[str, Any], source: str = "manifest.json", **overrides: Any) -> DeployConfig:
    """The adaptation a bundle ships (its manifest's `deploy` section; the defaults for a bundle exported before
    it had one), each of `overrides` that is not None in its place. Raises `UserError` for a bad section."""
    shipped = config_from_dict({"deploy": manifest.get("deploy") or {}}, source=f"{source} deploy").deploy
    given = {k: v for k, v in overrides.items() if v is not None}  # an unknown name: dataclasses' TypeError
    try:
        return dataclasses.replace(shipped, **given)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None


def load_config(path: str | Path) -> Config:
    """Load a YAML preset and the chain of files it names as `base`. Raises `UserError` for a missing file,
    malformed YAML, a bad key (naming the file that holds it) or a loop of bases."""
    return config_from_dict(_load_with_base(Path(path), ()), source=str(path))


def _load_with_base(path: Path, chain: tuple[Path, ...]) -> Any:
    """The file's top-level mapping over its base's (key by key within each section), `base` removed. The base is
    checked whole first, so an error in it names it. `chain`: the files that led here, to catch a loop."""
    data = _read_yaml(path)
    if not isinstance(data, dict) or BASE not in data:
        return data
    data = dict(data)
    base = data.pop(BASE)
    if not isinstance(base, str) or not base:
        raise UserError(f"{path}: {BASE} must be the path of another config file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in (*chain, path.resolve()):
        loop = " -> ".join(str(p) for p in (*chain, path.resolve(), base_path))
        raise UserError(f"{path}: {BASE} {base!r} makes a loop: {loop}")
    if not base_path.is_file():
        raise UserError(f"{path}: {BASE} {base!r} is not a file ({base_path})")
    merged = _load_with_base(base_path, (*chain, path.resolve())) or {}  # an empty base: the defaults
    config_from_dict(merged, source=str(base_path))  # the base's own errors name the base
    for name, value in data.items():
        if value is None and name in merged:  # an empty section changes nothing
            continue
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return merged


def _read_yaml(path: Path) -> Any:
    """The parsed YAML document at `path`. Raises `UserError` for a missing file or malformed YAML."""
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"cannot read config {path}: {err.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise UserError(f"malformed YAML in {path}{where}: {getattr(err, 'problem', err)}") from None


CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
PRESETS = ("small", "medium", "paper")  # config/presets/<name>.yaml; "paper" is the published settings


def default_config_path(task_name: str) -> Path | None:
    """The preset `config/<task>.yaml` shipped with the project, if there is one."""
    path = CONFIG_DIR / f"{task_name}.yaml"
    return path if path.is_file() else None


def choose_config(task_name: str, obs_dim: int, act_dim: int, preset: str = "") -> tuple[Path | None, str]:
    """The configuration a run gets without --config, and one line saying which and why: the task's own
    `config/<task>.yaml`; else the preset the task names; else one sized to the task (small up to 12
    observations and 4 actions, medium up to 40 observations, else the paper's). None means `Config()`."""
    own = default_config_path(task_name)
    if own is not None and not preset:
        return own, f"config {own.relative_to(CONFIG_DIR.parent)}"
    if preset and preset not in PRESETS:
        raise UserError(f"task {task_name}: preset '{preset}' is not one of {', '.join(PRESETS)}")
    reason = "named by the task"
    if not preset:
        preset = "small" if obs_dim <= 12 and act_dim <= 4 else "medium" if obs_dim <= 40 else "paper"
        reason = f"sized to its {obs_dim} observations and {act_dim} actions"
    path = None if preset == "paper" else CONFIG_DIR / "presets" / f"{preset}.yaml"
    return path, f"preset {preset} ({reason}; `preset:` in the task YAML or --config choose another)"
