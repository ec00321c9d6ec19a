"""`mbmpo-bringup`: start a graph from `mbmpo.deploy.graph` without the `launch` package.

    mbmpo-bringup train sim:=mujoco task:=InvertedPendulum-v5 out:=DIR duration:=600
    mbmpo-bringup deploy policy:=DIR/policy sim:=mujoco

Each node runs as its own process (`python -m mbmpo_ros.<node> --ros-args --params-file ...`), with the
launch-argument syntax and defaults of `launch/<graph>.launch.py`. Stops cleanly (SIGINT, then SIGKILL
after a grace period) on Ctrl-C, after `duration:=SECONDS`, or when the trainer finishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mbmpo.deploy.graph import GRAPHS, NodeSpec

USAGE = "usage: mbmpo-bringup {train|deploy} [name:=value ...]   (names: see launch/<graph>.launch.py)"


def parse_arguments(argv: list[str]) -> tuple[str, dict[str, str]]:
    """['train', 'sim:=mujoco', ...] -> ('train', {'sim': 'mujoco'}); raises ValueError with the reason."""
    if not argv or argv[0] not in GRAPHS:
        raise ValueError(USAGE)
    args: dict[str, str] = {}
    for item in argv[1:]:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"argument '{item}' is not of the form name:=value")
        args[name] = value
    return argv[0], args


def node_command(spec: NodeSpec, params_file: Path) -> list[str]:
    """The process that runs one node, as `ros2 run` would, with parameters and remappings."""
    cmd = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}",
           "--params-file", str(params_file)]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def write_params(specs: list[NodeSpec], folder: Path) -> Path:
    """One `node_name: ros__parameters: {...}` YAML for the whole graph."""
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({s.name: {"ros__parameters": s.parameters} for s in specs}, sort_keys=False))
    return path


def stop(procs: dict[str, subprocess.Popen], grace: float = 10.0) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    try:
        graph, args = parse_arguments(sys.argv[1:] if argv is None else argv)
        duration = float(args.pop("duration", "0") or 0)
        build, _ = GRAPHS[graph]
        specs = build(args)
    except ValueError as err:
        print(f"mbmpo-bringup: error: {err}", file=sys.stderr)
        return 2
    env = {**os.environ}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("PYTHONUNBUFFERED", "1")
    folder = Path(tempfile.mkdtemp(prefix="mbmpo_bringup_"))
    params = write_params(specs, folder)
    procs = {s.name: subprocess.Popen(node_command(s, params), env=env) for s in specs}
    print(f"mbmpo-bringup: {graph} graph with {', '.join(procs)}", flush=True)
    start = time.monotonic()
    code = 0
    try:
        while True:
            time.sleep(0.2)
            if duration and time.monotonic() - start >= duration:
                print(f"mbmpo-bringup: duration {duration:g} s reached", flush=True)
                break
            trainer = procs.get("trainer_node")
            if trainer is not None and trainer.poll() is not None:
                code = trainer.returncode
                print(f"mbmpo-bringup: trainer finished ({code})", flush=True)
                break
            failed = [n for n, p in procs.items() if p.poll() not in (None, 0)]
            if failed:
                print(f"mbmpo-bringup: {', '.join(failed)} exited with an error", file=sys.stderr, flush=True)
                code = 1
                break
    except KeyboardInterrupt:
        print("mbmpo-bringup: interrupted", flush=True)
    finally:
        stop(procs)
    return code


if __name__ == "__main__":
    sys.exit(main())
