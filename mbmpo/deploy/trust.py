"""Which code a policy node may run from a bundle that arrives over the network.

A bundle carries ONNX graphs and arrays (data, checked by sha256) and one piece of Python: `reward.py`,
the task's reward/termination functions. Its sha256 is in the manifest of the same message, so the hash
proves integrity, not origin. The policy node therefore runs a received `reward.py` only when it is
byte-identical to code the user named: the reward module of the `task` parameter, or the `reward.py` of
the bundle loaded from disk at start. Networks and parameters may change over the wire; code may not.
"""

from __future__ import annotations

from pathlib import Path

from mbmpo.runtime.format import function_source, sha256


class UntrustedCode(ValueError):
    """A received bundle whose Python code is not code the user named."""


def task_code_digest(task_name: str) -> str:
    """sha256 of the reward/termination module of a registered task or task YAML."""
    from mbmpo.tasks import get_task

    try:
        return sha256(function_source(get_task(task_name).reward_ref)[0])
    except ValueError as err:
        raise UntrustedCode(f"task {task_name}: {err}") from None


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
        digest = sha256(file)
        if digest not in self.digests:
            raise UntrustedCode(f"reward.py (sha256 {digest[:12]}...) is not the reward code of "
                                f"{' or '.join(self.sources)}; bundles from the network may change networks "
                                f"and parameters, not code")
