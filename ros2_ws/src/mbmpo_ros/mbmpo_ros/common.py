"""Small helpers shared by the nodes: parameter declaration and the Jazzy main() pattern."""

from __future__ import annotations

import signal
import sys
from typing import Any, Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare a parameter with a descriptor and return its value."""
    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_node(factory: Callable[[], Node], threads: int = 2) -> None:
    """rclpy.init, spin, and the Jazzy try/finally shutdown; configuration errors exit with one line.

    rclpy's own signal handlers are off: SIGINT/SIGTERM raise KeyboardInterrupt in the spinning thread,
    so `node.close()` runs while the context is still valid (the policy node waits there until the data
    node has acknowledged every transition; the data node flushes its bag).
    """
    rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as err:  # bad parameters: say what is wrong and exit non-zero
        print(f"{getattr(node, 'get_name', lambda: 'node')()}: error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None and rclpy.ok():
                try:
                    close()
                except Exception as err:  # shutting down: report, never hang or mask the exit
                    print(f"{node.get_name()}: close failed: {err}", file=sys.stderr)
            node.destroy_node()
        rclpy.try_shutdown()
