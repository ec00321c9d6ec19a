"""Small helpers shared by the nodes: parameter declaration and the Jazzy main() pattern."""

from __future__ import annotations

import array
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from mbmpo.deploy.transitions import TransitionBatch
from mbmpo.errors import UserError

# Subscriptions to the control streams (`joint_states`, `commands`): best effort, so that a lost sample costs one
# period instead of stalling every later one until the reliable repair at the writer's next heartbeat (3 s in
# Fast DDS). A best-effort subscription matches a reliable publisher; the nodes still publish reliable, which
# a ros2_control driver's default (reliable) subscription needs.
CONTROL_SUB_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)

# what a user can fix: bad parameter values or types, unknown tasks, malformed YAML
CONFIGURATION_ERRORS = (ValueError, UserError, ParameterException)


_DTYPES = {"f": "float32", "q": "int64", "Q": "uint64", "I": "uint32"}  # array.array typecode -> numpy dtype


def _column(typecode: str, values: Any) -> array.array:
    """A numpy column as the array.array an rclpy sequence field takes without checking each value."""
    column = array.array(typecode)
    column.frombytes(values.astype(_DTYPES[typecode]).tobytes())
    return column


def fill_batch(msg: Any, batch: TransitionBatch) -> Any:
    """`msg` (mbmpo_interfaces/TransitionBatch) holding `batch`; returns it."""
    msg.robot, msg.policy_id = batch.robot, list(batch.policy_id)
    msg.stamp_ns, msg.episode_id, msg.step = (_column("q", batch.stamp_ns), _column("Q", batch.episode_id),
                                              _column("I", batch.step))
    msg.obs, msg.action, msg.next_obs, msg.reward = (_column("f", batch.obs), _column("f", batch.action),
                                                     _column("f", batch.next_obs), _column("f", batch.reward))
    msg.terminated, msg.truncated = batch.terminated.tolist(), batch.truncated.tolist()
    return msg


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare a parameter with a descriptor and return its value."""
    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def make_executor(kind: str, threads: int) -> Executor:
    """`multi` (rclpy's MultiThreadedExecutor with `threads`) or `single`. (Jazzy's experimental
    EventsExecutor was tried: it never ran the status timer and ignored SIGINT, so it is not offered.)"""
    if kind not in ("single", "multi"):
        raise ValueError(f"executor '{kind}' is not multi or single")
    return MultiThreadedExecutor(num_threads=threads) if kind == "multi" and threads > 1 else SingleThreadedExecutor()


def write_report(node: str, counters: dict[str, Any], path: str = "") -> None:
    """A node's final counters: printed as its last line (`<node> final {...}`) and, when `path` is given,
    written there as JSON (atomically) for scripts and tests to read."""
    text = json.dumps(counters)
    try:
        print(f"{node} final {text}", flush=True)
    except (OSError, ValueError):  # the launcher that read our output is gone (closed pipe): the file still counts
        pass
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


_STOP = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    """The first SIGINT/SIGTERM asks the spin loop to stop between callbacks; a second one aborts at once
    (e.g. an operator's second Ctrl-C while the policy node waits for acknowledgements)."""
    if _STOP.is_set():
        raise KeyboardInterrupt
    _STOP.set()


def run_node(factory: Callable[[], Node], threads: int = 2) -> None:
    """rclpy.init, spin, and the Jazzy try/finally shutdown. Configuration errors while the node is built
    (bad parameters, a malformed parameter file, an unknown task) print one line and exit 2, never a
    traceback; an error while it runs is a runtime fault, not a configuration error (a robot-facing node
    catches its own: the policy node's callbacks send the safe command).

    rclpy's own signal handlers are off: SIGINT/SIGTERM set a flag that the spin loop reads between
    callbacks (at most 0.1 s later), so no callback is cut off half-way (a KeyboardInterrupt raised inside
    a callback once left the policy node unable to report its final counters) and `node.close()` runs
    while the context is still valid (the policy node waits there until the data node has acknowledged
    every transition; the data node flushes its bag).
    """
    name = Path(getattr(sys.modules.get(factory.__module__), "__file__", None) or "node").stem  # data_node, ...
    try:
        rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as err:  # rcl's own argument parsing: e.g. a --params-file that is not YAML
        print(f"{name}: error: {str(err).split(', at ')[0]}", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    try:
        try:
            node = factory()
            executor = make_executor(getattr(node, "executor_kind", "multi"), threads)
        except CONFIGURATION_ERRORS as err:  # say what is wrong and exit non-zero
            print(f"{name}: error: {err}", file=sys.stderr)
            sys.exit(2)
        executor.add_node(node)
        while not _STOP.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None and rclpy.ok():
                try:
                    close()
                except Exception as err:  # shutting down: report, never hang or mask the exit
                    print(f"{node.get_name()}: close failed: {type(err).__name__}: {err}", file=sys.stderr)
                    traceback.print_exc()
            node.destroy_node()
        rclpy.try_shutdown()
