"""Helpers for tests that run real nodes over real DDS on loopback, each test on its own domain."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

ROOT = Path(__file__).resolve().parent.parent
_domains = itertools.count(60 + os.getpid() % 50)


def next_domain() -> int:
    return next(_domains)


def final_counts(output: str, node: str) -> dict:
    """The counters a node prints as its last line (`<node> final {...}`) when it stops; {} if absent."""
    found = re.findall(node + r" final (\{.*\})", output)
    return json.loads(found[-1]) if found else {}


def start_node(module: str, domain: int, params: dict[str, Any], remaps: dict[str, str] | None = None,
               log: Path | None = None) -> subprocess.Popen:
    """`python -m mbmpo_ros.<module>` with parameters, as its own process on `domain`."""
    cmd = [sys.executable, "-m", f"mbmpo_ros.{module}", "--ros-args"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    for k, v in (remaps or {}).items():
        cmd += ["-r", f"{k}:={v}"]
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_node(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Probe:
    """An in-test rclpy node on its own context and domain, spun on demand."""

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
