"""The bundle format's one home: its name, its files, file digests and where a task's code lives.

Export writes bundles with these, the runtime verifies them, and the policy node's trust check compares
reward code by the same digest. Standard library only (the robot side imports it without torch or numpy).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

FORMAT = "mbmpo-bundle/1"
FILES = ("policy.onnx", "adapt.onnx", "params.npz", "reward.py")  # each listed with its sha256 in manifest.json


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def function_source(ref: str) -> tuple[Path, str]:
    """(source file, function name) of a 'package.module:function' or '/path/file.py:function' reference,
    found without importing the module. Raises ValueError when the module cannot be found."""
    target, sep, function = ref.rpartition(":")
    if not sep or not target or not function:
        raise ValueError(f"'{ref}' is not of the form module:function or file.py:function")
    if target.endswith(".py"):
        return Path(target), function
    spec = importlib.util.find_spec(target)
    if spec is None or spec.origin is None:
        raise ValueError(f"module '{target}' of '{ref}' not found")
    return Path(spec.origin), function
