"""Where the trainer's heavy work runs (the `device` setting), and moving tensors there and back.

The trainer keeps the dynamics ensemble and its optimiser on the chosen device for the whole run (the fit
and the imagined rollouts are the heavy phases); the policy's master copy stays on the CPU, where the
real-environment episodes, evaluation and export use it, and is copied to the device for the
meta-optimisation only (a few thousand numbers). Checkpoints always hold CPU tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mbmpo.config import DEVICE_NAMES, is_device_name
from mbmpo.errors import UserError


def resolve_device(name: str, cuda_devices: int | None = None) -> torch.device:
    """The torch device a `device` setting names on this machine. `auto` is cuda when torch sees a CUDA
    device, else cpu. Raises `UserError` (one line naming the setting) for a malformed name, or for cuda
    when there is no such CUDA device. `cuda_devices` overrides torch's count (for tests)."""
    if not is_device_name(name):
        raise UserError(f"device must be {DEVICE_NAMES}, got {name!r}")
    count = cuda_devices if cuda_devices is not None else torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return torch.device("cuda" if count > 0 else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if count == 0:
            raise UserError(f"device {name!r}: torch finds no CUDA device on this machine (a CPU-only torch build, "
                            f"no GPU or no driver); set device to cpu or auto (--device, device:= or the config)")
        if device.index is not None and device.index >= count:
            raise UserError(f"device {name!r}: this machine has {count} CUDA device(s), numbered from 0")
    return device


def to_device(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every tensor of a parameter dict on `device` (the same tensors when they are there already)."""
    return {k: v.to(device) for k, v in tensors.items()}


def to_cpu(value: Any) -> Any:
    """`value` with every tensor inside (nested dicts, lists, tuples) moved to the CPU, e.g. a state dict
    before it is saved, so a checkpoint loads on a machine without the training device."""
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices in hardware (CPU: AVX512-BF16 or AMX; CUDA: compute
    capability 8.0 on, which torch reports); elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the ensemble's matmuls for a `model.precision` setting on `device`: bf16, fp32, or auto
    (bf16 where `native_bf16`, else fp32). Weights, optimiser state and outputs stay float32."""
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32
