"""What tests and benchmarks share: nodes as processes on their own DDS domain, an in-process probe node,
the nodes' final reports, and bundles made for a test (a tiny trained one, and variants of it).

Imported as `mbmpo_ros.testing` by `tests/` and `benchmarks/` alike (the package is installed, so no
`sys.path` edits are needed).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from mbmpo.runtime.format import sha256

ROOT = Path(__file__).resolve().parents[4]  # the repository (ros2_ws/src/mbmpo_ros/mbmpo_ros/testing.py)
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.yaml"
_domains = itertools.count(60 + os.getpid() % 50)


def next_domain() -> int:
    """A ROS_DOMAIN_ID of its own for each graph a process starts (concurrent runs do not cross-talk)."""
    return next(_domains)


def node_env(domain: int) -> dict[str, str]:
    return {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}


def start_node(module: str, domain: int, params: dict[str, Any], remaps: dict[str, str] | None = None,
               log: Path | None = None) -> subprocess.Popen:
    """`python -m mbmpo_ros.<module>` with parameters, as its own process on `domain`. Pass a `report`
    parameter to have the node write its final counters there (`read_report`)."""
    cmd = [sys.executable, "-m", f"mbmpo_ros.{module}", "--ros-args"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    for k, v in (remaps or {}).items():
        cmd += ["-r", f"{k}:={v}"]
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=node_env(domain), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_node(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
    """Signal a node (SIGINT by default), wait, kill it if it does not stop; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def read_report(path: Path) -> dict[str, Any]:
    """The final counters a node wrote to its `report` file; {} when it wrote none."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


class Probe:
    """An in-process rclpy node on its own context and domain, spun on demand."""

    def __init__(self, domain: int, name: str = "probe"):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


# ---- bundles -----------------------------------------------------------------------------------------
def make_bundle(folder: Path, task: str = "InvertedPendulum-v5", steps: int = 60, config: Path = TINY_CONFIG) -> Path:
    """Train a tiny run of `task` in `folder/run` and export it to `folder/bundle` (seconds); the bundle."""
    from mbmpo.cli import main as cli

    run, bundle = Path(folder) / "run", Path(folder) / "bundle"
    if cli(["train", "--task", task, "--steps", str(steps), "--out", str(run), "--config", str(config),
            "--no-progress"]) != 0:
        raise RuntimeError(f"training the {task} test bundle failed")
    if cli(["export", "--run", str(run), "--out", str(bundle)]) != 0:
        raise RuntimeError(f"exporting the {task} test bundle failed")
    return bundle


def bundle_variant(source: Path, target: Path, reward_code: str | None = None,
                   explore_params: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of a bundle with another reward.py and/or other exploration parameters (K x ...), its
    manifest re-hashed: a consistent bundle that behaves badly, for fault tests. (The meta-parameters
    also live in policy.onnx, so they are not offered here.)"""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    if reward_code is not None:
        (target / "reward.py").write_text(reward_code)
    if explore_params:
        with np.load(target / "params.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        arrays.update({f"explore/{k}": np.asarray(v, np.float32) for k, v in explore_params.items()})
        np.savez(target / "params.npz", **arrays)
    for name in manifest["files"]:
        manifest["files"][name] = sha256(target / name)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target
