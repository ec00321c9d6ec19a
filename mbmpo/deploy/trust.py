"""Which code a policy node may run from a bundle that arrives over the network.

A bundle carries ONNX graphs and arrays (data, checked by sha256) and one piece of Python: `reward.py`,
the task's reward/termination functions. Its sha256 is in the manifest of the same message, so the hash
proves integrity, not origin. The policy node therefore runs a received `reward.py` only when it is
byte-identical to code the user named: the reward module of the `task` parameter, or the `reward.py` of
the bundle loaded from disk at start. Networks and parameters may change over the wire; code may not.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


class UntrustedCode(ValueError):
    """A received bundle whose Python code is not code the user named."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reward_source(ref: str) -> Path:
    """The file of a 'module:function' or '/path/file.py:function' reference (without importing it)."""
    target, _, _ = ref.rpartition(":")
    if target.endswith(".py"):
        return Path(target)
    spec = importlib.util.find_spec(target)
    if spec is None or spec.origin is None:
        raise UntrustedCode(f"reward module '{target}' not found")
    return Path(spec.origin)


def task_code_digest(task_name: str) -> str:
    """sha256 of the reward/termination module of a registered task or task YAML."""
    from mbmpo.tasks import get_task

    return _digest(reward_source(get_task(task_name).reward_ref))


class CodeAllowlist:
    """sha256 digests of the `reward.py` files a policy node may execute."""

    def __init__(self) -> None:
        self.digests: set[str] = set()
        self.sources: list[str] = []

    def allow(self, digest: str, source: str) -> None:
        self.digests.add(digest)
        self.sources.append(source)

    def check(self, bundle_dir: Path) -> None:
        """Raise `UntrustedCode` unless `bundle_dir/reward.py` is allowed (call before loading the bundle)."""
        file = Path(bundle_dir) / "reward.py"
        if not file.is_file():
            return  # the bundle loader refuses a bundle without it
        if not self.digests:
            raise UntrustedCode("no trusted reward code: start the policy node with `task` or `bundle` to "
                                "accept bundles from the network")
        digest = _digest(file)
        if digest not in self.digests:
            raise UntrustedCode(f"reward.py (sha256 {digest[:12]}...) is not the reward code of "
                                f"{' or '.join(self.sources)}; bundles from the network may change networks "
                                f"and parameters, not code")
