"""Checks of a task's reward and termination functions, run when the task loads: a function that returns the
wrong shape, a non-number or a non-finite value is named at once, in one line, instead of failing minutes
into a run (in the models, where torch batches reach it) or on the robot (numpy, one transition)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from mbmpo.errors import UserError
from mbmpo.tasks.base import TaskSpec


def _batch(task: TaskSpec, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    obs = (0.1 * rng.standard_normal((*shape, task.obs_dim))).astype(np.float32)
    act = rng.uniform(task.act_low, task.act_high, (*shape, task.act_dim)).astype(np.float32)
    nxt = (obs + 0.01 * rng.standard_normal(obs.shape)).astype(np.float32)
    return obs, act, nxt


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None:
        return f"{type(value).__name__} {value!r}"[:80]
    return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"


def _check(task: TaskSpec, kind: str, fn: Any, ref: str | None, args: tuple[Any, ...], shape: tuple[int, ...],
           backend: str) -> None:
    where = f"task {task.name}: {kind} function {ref}"
    what = f"a {backend} batch of shape {shape}" if shape else f"one {backend} transition"
    try:
        out = fn(*args)
    except Exception as err:
        raise UserError(f"{where} raised {type(err).__name__}: {err} on {what}") from None
    got = tuple(getattr(out, "shape", ()))
    if backend == "torch" and not hasattr(out, "shape"):
        raise UserError(f"{where} returned {_describe(out)} for {what}; it must return a tensor of shape "
                        f"{shape} (use array operations, not Python floats)")
    if got != shape:
        raise UserError(f"{where} returned {_describe(out)} for {what}; expected shape {shape} (one value per "
                        f"transition: reduce over the last axis)")
    values = np.asarray(out.detach().numpy() if backend == "torch" else out)
    if kind == "reward":
        if values.dtype.kind not in "fiu":
            raise UserError(f"{where} returned {_describe(out)} for {what}; expected numbers")
        if not np.isfinite(values.astype(np.float64)).all():
            raise UserError(f"{where} returned non-finite values for {what} of small random states")
    elif values.dtype.kind not in "biu":
        raise UserError(f"{where} returned {_describe(out)} for {what}; expected booleans")


def check_task_functions(task: TaskSpec, torch_batches: bool | None = None) -> None:
    """Call the reward (and termination) function on one numpy transition, a numpy batch of shape (4,) and,
    with `torch_batches` (default: when torch is already imported), a torch batch of shape (2, 3) like the
    imagined T x N batches. Raises `UserError` naming the function and what it returned."""
    rng = np.random.default_rng(0)
    cases: list[tuple[tuple[int, ...], str]] = [((), "numpy"), ((4,), "numpy")]
    if torch_batches if torch_batches is not None else "torch" in sys.modules:
        cases.append(((2, 3), "torch"))
    for shape, backend in cases:
        args: tuple[Any, ...] = _batch(task, shape, rng)
        if backend == "torch":
            import torch

            args = tuple(torch.as_tensor(a) for a in args)
        _check(task, "reward", task.reward_fn, task.reward_ref, args, shape, backend)
        if task.termination_fn is not None:
            _check(task, "termination", task.termination_fn, task.termination_ref, args, shape, backend)
