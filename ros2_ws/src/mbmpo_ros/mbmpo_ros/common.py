"""Small helpers shared by the nodes: parameter declaration and the Jazzy main() pattern."""

from __future__ import annotations

import sys
from typing import Any, Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare a parameter with a descriptor and return its value."""
    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def run_node(factory: Callable[[], Node], threads: int = 2) -> None:
    """rclpy.init, spin, and the Jazzy try/finally shutdown; configuration errors exit with one line."""
    rclpy.init(args=sys.argv)
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
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
