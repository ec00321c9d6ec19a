"""`mbmpo-bringup`: start a graph from `mbmpo.deploy.graph` without the `launch` package.

    mbmpo-bringup train sim:=mujoco task:=InvertedPendulum-v5 out:=DIR duration:=600
    mbmpo-bringup deploy policy:=DIR/policy sim:=mujoco
    mbmpo-bringup deploy --show-args     # every argument, its default and what it does (as `ros2 launch -s`)

Each node runs as its own process (`python -m mbmpo_ros.<node> --ros-args --params-file ...`), with the
launch-argument syntax and defaults of `launch/<graph>.launch.py`. Stops cleanly (SIGINT, then SIGKILL
after a grace period) on Ctrl-C, after `duration:=SECONDS`, or when the trainer finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mbmpo.deploy.graph import GRAPHS, NodeSpec
from mbmpo.deploy.recording import recording_summary

USAGE = "usage: mbmpo-bringup {train|deploy} [name:=value ...] | {train|deploy} --show-args"
SHOW = ("--show-args", "-s", "--help", "-h")


def show_arguments(graph: str) -> str:
    """The graph's launch arguments, one block each: name, default, description."""
    _, table = GRAPHS[graph]
    return "\n".join(f"    '{name}':\n        {text}\n        (default: '{default}')"
                     for name, (default, text) in table.items())


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
    if spec.namespace:
        cmd += ["-r", f"__ns:=/{spec.namespace}"]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def write_params(specs: list[NodeSpec], folder: Path) -> Path:
    """One `node_name: ros__parameters: {...}` YAML for the whole graph."""
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({s.fully_qualified_name: {"ros__parameters": s.parameters} for s in specs},
                                   sort_keys=False))
    return path


ROBOT_SIDE = ("sim_node", "policy_node")


def stop(procs: dict[str, subprocess.Popen], grace: float = 10.0, drain: float = 1.5) -> None:
    """Stop the robot side first, let the data node receive what is in flight, then stop the rest:
    every transition the policy node published reaches the bag."""
    first = {n: p for n, p in procs.items() if n.split("/")[-1] in ROBOT_SIDE}
    rest = {n: p for n, p in procs.items() if n not in first}
    for group in (first, rest):
        for p in group.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for p in group.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if group is first and first and rest:
            time.sleep(drain)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] in GRAPHS and argv[1] in SHOW:
        print(f"Arguments (pass arguments as '<name>:=<value>'):\n\n{show_arguments(argv[0])}")
        return 0
    try:
        graph, args = parse_arguments(argv)
        build, _ = GRAPHS[graph]
        specs = build(args)
        try:
            duration = float(args.get("duration", "0") or 0)
        except ValueError:
            raise ValueError(f"duration:={args['duration']} is not a number of seconds") from None
    except ValueError as err:
        print(f"mbmpo-bringup: error: {err}", file=sys.stderr)
        return 2
    env = {**os.environ}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("PYTHONUNBUFFERED", "1")
    folder = Path(tempfile.mkdtemp(prefix="mbmpo_bringup_"))
    params = write_params(specs, folder)
    procs = {s.key: subprocess.Popen(node_command(s, params), env=env) for s in specs}
    print(f"mbmpo-bringup: {graph} graph with {', '.join(procs)}", flush=True)
    if args.get("reset") == "operator":
        start_operator_key(env, [f"/{s.key}/start_episode" for s in specs if s.name == "policy_node"])
    start = time.monotonic()
    code = 0
    try:
        while True:
            time.sleep(0.2)
            if duration and time.monotonic() - start >= duration:
                print(f"mbmpo-bringup: duration {duration:g} s reached", flush=True)
                break
            ended = [s.key for s in specs if s.ends_graph and procs[s.key].poll() is not None]
            if ended:  # the trainer: training is done, so is the graph (the launch files do the same)
                code = procs[ended[0]].returncode
                print(f"mbmpo-bringup: {ended[0].removesuffix('_node')} finished ({code})", flush=True)
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
    if graph == "train":
        print(summary(Path(specs[-1].parameters["out"])), flush=True)
    elif args.get("reports"):
        print(deploy_summary(Path(args["reports"]) / "policy_node.json"), flush=True)
    return code


def start_operator_key(env: dict[str, str], services: list[str]) -> None:
    """reset:=operator: each Enter in this terminal calls every policy node's ~/start_episode (a fleet's robots
    that wait for the operator start; the others answer that nothing waits)."""
    import threading

    def serve() -> None:
        import rclpy
        from std_srvs.srv import Trigger

        os.environ.update(env)  # the graph's discovery settings
        rclpy.init()
        node = rclpy.create_node("mbmpo_bringup_operator")
        clients = {name: node.create_client(Trigger, name) for name in services}
        print("mbmpo-bringup: reset:=operator: put the robot at its start, then press Enter to start each episode",
              flush=True)
        for _ in sys.stdin:
            for name, client in clients.items():
                if not client.wait_for_service(timeout_sec=5.0):
                    print(f"mbmpo-bringup: {name} is not there", flush=True)
                    continue
                future = client.call_async(Trigger.Request())
                rclpy.spin_until_future_complete(node, future, timeout_sec=5.0)
                answer = future.result()
                print(f"mbmpo-bringup: {name}: {answer.message if answer else 'no answer'}", flush=True)

    threading.Thread(target=serve, daemon=True, name="operator-key").start()


def summary(out: Path) -> str:
    """What a training run left in its output folder."""
    from mbmpo.train.progress import read_progress

    lines = [f"mbmpo-bringup: output in {out}"]
    rows = read_progress(out)
    if rows:
        last = rows[-1]
        robot = next((r for r in reversed(rows) if r.robot_return is not None), None)
        lines.append(f"  {len(rows)} iterations, {last.real_steps} real steps used, {last.wall_s} s")
        if robot is not None:
            lines.append(f"  robot: recorded episodes returned {robot.robot_return:.1f} (mean of "
                         f"{robot.robot_episodes}, iteration {robot.iteration})")
        lines.append(f"  MuJoCo evaluation: return before adaptation {last.return_pre:.1f}, after "
                     f"{last.return_post:.1f}")
    lines += fleet_lines(out / "reports")
    bag = recording_summary(out / "bag")
    if bag["parts"]:
        lines.append(f"  bag: {bag['transitions']} transitions in {bag['segments']} MCAP segments"
                     + (f" ({bag['parts']} parts)" if bag["parts"] > 1 else ""))
    for name in ("policy/manifest.json", "learning_curve.png"):
        if (out / name).exists():
            lines.append(f"  {out / name}")
    return "\n".join(lines)


def fleet_lines(reports: Path) -> list[str]:
    """Per robot of a fleet (reports/<robot>/policy_node.json): episodes, transitions sent and recorded, and
    the bundle it ended on."""
    files = sorted(reports.glob("*/policy_node.json"))
    if not files:
        return []
    try:
        recorded = json.loads((reports / "data_node.json").read_text()).get("robots", {})
    except (OSError, ValueError):
        recorded = {}
    lines = []
    for file in files:
        try:
            r = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            lines.append(f"  {file.parent.name}: no report ({err})")
            continue
        lines.append(f"  {file.parent.name}: {r.get('episodes')} episodes, {r.get('transitions')} transitions sent, "
                     f"{recorded.get(file.parent.name, 0)} recorded, on policy {r.get('policy_version')}")
    return lines


def deploy_summary(report: Path) -> str:
    """What the policy node reported when it stopped: episodes, and the return before and after adaptation."""
    try:
        r = json.loads(report.read_text())
    except (OSError, ValueError) as err:
        return f"mbmpo-bringup: no policy node report ({report}: {err})"

    def mean(key: str) -> str:
        value = r.get(f"return_{key}_adaptation")
        return "none yet" if value is None else f"{value:.1f} (mean of {r.get(f'episodes_{key}_adaptation')})"

    lines = [f"mbmpo-bringup: policy node: {r.get('episodes')} episodes, {r.get('transitions')} transitions, "
             f"{r.get('faults')} faults, {r.get('resets')} resets",
             f"  adaptations {r.get('adaptations')} applied, {r.get('adaptations_refused')} refused"]
    if "return_before_adaptation" in r:
        lines.append(f"  return before adaptation {mean('before')}, after {mean('after')}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
