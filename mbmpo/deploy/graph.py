"""The one source of truth for the ROS graphs: which nodes run, with which parameters and remappings.

`launch/*.launch.py` (a real ROS 2 install) and `mbmpo-bringup` (the PyPI wheels here, which lack the
`launch` package) both build their processes from `train_graph` / `deploy_graph`, so they cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbmpo.config import DEVICE_NAMES, is_device_name, shipped_adaptation
from mbmpo.deploy.reset import RESET_MODES
from mbmpo.errors import UserError

# launch argument -> (default, description); shared by the launch files and mbmpo-bringup
TRAIN_ARGUMENTS: dict[str, tuple[str, str]] = {
    "sim": ("mujoco", "mujoco: simulate the robot with MuJoCo; none: a real robot driver provides the topics"),
    "task": ("InvertedPendulum-v5", "registered task name or path of a task YAML"),
    "config": ("", "training preset YAML (default: config/<task>.yaml)"),
    "out": ("runs/ros_train", "output folder: progress.csv, bag/, policy/, learning_curve.png"),
    "seed": ("0", "random seed"),
    "steps": ("10000", "real transitions to collect before training stops"),
    "target_return": ("0", "stop once the meta-policy's evaluation return reaches this (0: never)"),
    "init": ("", "fine-tune: a finished run (e.g. trained in simulation) whose models and policies start this one"),
    "keep_init_data": ("false", "with init: also train on that run's transitions (true | false)"),
    "device": ("", "torch device of the trainer's fit and meta-optimisation: cpu | cuda | cuda:N | auto "
                   "('' = the config's device, cpu by default)"),
    "threads": ("1", "torch CPU threads of the trainer: 1 leaves the other cores to the robot-side nodes; a "
                     "workstation training a fleet: its free cores"),
    "sim_mode": ("lockstep", "sim timing: lockstep (steps on each command), realtime, or fast"),
    "speedup": ("1.0", "sim_mode fast: simulated seconds per wall second"),
    "perturb": ("", "sim physics scales, e.g. mass=1.3,friction=0.6; per robot of a fleet: 'mass=1.2|mass=0.9|'"),
    "robots": ("1", "a fleet: N robots (sim:=mujoco: N sims, namespaces robot_0..) or the namespaces of real "
                    "robots' drivers, e.g. arm_a,arm_b; each robot gets its own policy node in its namespace"),
    "batch": ("1", "transitions a message from each policy node: 1 sends a Transition each step; N > 1 sends "
                   "TransitionBatch messages of up to N (fast robots, fleets: the data node records far more a second)"),
    "joint_states": ("joint_states", "topic of the robot's sensor_msgs/JointState"),
    "commands": ("commands", "topic of the std_msgs/Float64MultiArray commands"),
    "reset_service": ("sim_node/reset", "std_srvs/Trigger that resets the robot between episodes"),
    "reset": ("service", "between episodes: service (call reset_service, wait for it) | home (drive the joints to "
                         "the task's home) | operator (Enter in mbmpo-bringup or ~/start_episode) | none (continue)"),
    "home": ("", "reset:=home: 'joint=position,...' (default: the task YAML's home)"),
    "duration": ("0", "seconds until the graph is shut down (0: until the trainer finishes)"),
}
DEPLOY_ARGUMENTS: dict[str, tuple[str, str]] = {
    "sim": ("none", "mujoco to test the deploy side against the simulator, none on the robot"),
    "task": ("InvertedPendulum-v5", "task (for sim:=mujoco)"),
    "policy": ("runs/ros_train/policy", "exported policy bundle folder"),
    "mode": ("deploy", "deploy: meta-policy + online one-step adaptation; explore: cycle the K adapted policies"),
    "adapt_episodes": ("", "episodes of fresh data per online adaptation ('' = as the bundle ships it, its "
                           "manifest's deploy section: so for every adapt_* argument)"),
    "adapt_steps": ("", "gradient steps on those episodes, each under the KL bound (MB-MPO's premise: 1)"),
    "adapt_through": ("", "episodes: step on the fresh episodes | models: correct the bundle's dynamics "
                          "models to them and step on imagined rollouts (up to adapt_steps, each kept only "
                          "if the imagined return rises)"),
    "adapt_rounds": ("", "adaptations in all: each further one adapts the policy in use again after its own "
                         "adapt_episodes episodes (through the models: from every fresh episode so far)"),
    "adapt_judge": ("", "true: an adapted policy whose own episodes score below its parent's is reverted"),
    "adapt_margin": ("", "with adapt_judge: an adapted policy is kept only if its episodes' mean beats its parent's "
                         "by this many standard errors of the difference (0: no lower)"),
    "adapt_kl": ("", "the step scaled to this KL(pre || post) (on the episodes: adapt_steps' total; through the "
                     "models: each step's); 0 takes training's step"),
    "sim_mode": ("realtime", "sim timing when sim:=mujoco"),
    "perturb": ("", "sim physics scales when sim:=mujoco"),
    "joint_states": ("joint_states", "topic of the robot's sensor_msgs/JointState"),
    "commands": ("commands", "topic of the std_msgs/Float64MultiArray commands"),
    "reset_service": ("sim_node/reset", "std_srvs/Trigger that resets the robot between episodes"),
    "reset": ("service", "between episodes: service (call reset_service, wait for it) | home (drive the joints to "
                         "the task's home) | operator (Enter in mbmpo-bringup or ~/start_episode) | none (continue)"),
    "home": ("", "reset:=home: 'joint=position,...' (default: the task YAML's home)"),
    "duration": ("0", "seconds until the graph is shut down (0: until Ctrl-C)"),
    "reports": ("", "folder for the nodes' final counters as JSON files ('' = none)"),
}


@dataclass(frozen=True)
class NodeSpec:
    """One node process: `ros2 run mbmpo_ros <executable>` or `python -m <module>`."""

    name: str
    executable: str
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    ends_graph: bool = False  # its exit shuts the whole graph down (the trainer, when training is done)
    namespace: str = ""  # a robot of a fleet: its nodes and relative topics live under /<namespace>

    @property
    def module(self) -> str:
        return f"mbmpo_ros.{self.executable}"

    @property
    def key(self) -> str:
        """Unique within a graph: `robot_0/policy_node`, or the name alone outside a namespace."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def fully_qualified_name(self) -> str:
        return f"/{self.key}"


def _with_defaults(args: dict[str, str], table: dict[str, tuple[str, str]]) -> dict[str, str]:
    unknown = sorted(set(args) - set(table))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown}; known: {sorted(table)}")
    return {k: args.get(k, default) for k, (default, _) in table.items()}


def _robot_io(a: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return (("joint_states", a["joint_states"]), ("commands", a["commands"]))


def _reset(a: dict[str, str]) -> dict[str, str]:
    """The policy node's reset parameters."""
    if a["reset"] not in RESET_MODES:
        raise ValueError(f"reset:={a['reset']} is not one of {', '.join(RESET_MODES)}")
    return {"reset": a["reset"], "home": a["home"], "reset_service": a["reset_service"]}


def _flag(a: dict[str, str], name: str) -> bool:
    value = a[name].strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"{name}:={a[name]} is not true or false")
    return value == "true"


def _integer(a: dict[str, str], name: str, minimum: int) -> int:
    """An integer launch argument, with the argument named in the error."""
    try:
        value = int(a[name].strip())
    except ValueError:
        raise ValueError(f"{name}:={a[name]} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}:={a[name]}: must be at least {minimum}")
    return value


def _number(a: dict[str, str], name: str, positive: bool = False) -> float:
    """A finite number launch argument, with the argument named in the error."""
    try:
        value = float(a[name].strip())
    except ValueError:
        raise ValueError(f"{name}:={a[name]} is not a number") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name}:={a[name]}: must be a finite{' positive' if positive else ''} number")
    return value


def _device(a: dict[str, str]) -> str:
    """The trainer's `device` ('' leaves the config's); whether the machine has that GPU, the trainer checks."""
    if a["device"] and not is_device_name(a["device"]):
        raise ValueError(f"device:={a['device']} is not one of {DEVICE_NAMES} (or '' for the config's)")
    return a["device"]


def _robots(a: dict[str, str]) -> list[str]:
    """The fleet's namespaces: [''] for one robot, robot_0.. for robots:=N, or the names listed."""
    value = a.get("robots", "1").strip()
    if value.isdigit():
        n = int(value)
        if n < 1:
            raise ValueError(f"robots:={value}: need at least one robot")
        return [""] if n == 1 else [f"robot_{i}" for i in range(n)]
    names = [v.strip() for v in value.split(",")]
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n)]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"robots:={value}: expected a count or distinct ROS names (letters, digits, _), got {bad or names}")
    return names


def _perturb(a: dict[str, str], robots: int) -> list[str]:
    """Each robot's perturb: one for all, or one per robot separated by '|'."""
    parts = a["perturb"].split("|")
    if len(parts) == 1:
        return parts * robots
    if len(parts) != robots:
        raise ValueError(f"perturb:={a['perturb']} gives {len(parts)} robots' perturbations for {robots} robots")
    return parts


def _sim(a: dict[str, str], namespace: str = "", index: int = 0, perturb: str | None = None) -> list[NodeSpec]:
    if a["sim"] == "none":
        return []
    if a["sim"] != "mujoco":
        raise ValueError(f"sim:={a['sim']} is not one of mujoco, none")
    seed = _integer(a, "seed", 0) if "seed" in a else 0  # the deploy graph has no seed
    return [NodeSpec("sim_node", "sim_node",
                     {"task": a["task"], "mode": a["sim_mode"], "speedup": _number(a, "speedup", positive=True),
                      "perturb": a["perturb"] if perturb is None else perturb, "seed": seed + index},
                     _robot_io(a), namespace=namespace)]


def train_graph(args: dict[str, str]) -> list[NodeSpec]:
    """Per robot: sim (optional) + policy node (explore); then one data node and one trainer for the fleet."""
    a = _with_defaults(args, TRAIN_ARGUMENTS)
    out = a["out"]
    lockstep = a["sim"] == "mujoco" and a["sim_mode"] == "lockstep"
    robots = _robots(a)
    perturbs = _perturb(a, len(robots))
    # one data node for the fleet: one bag, one validator, one intake for the trainer (its recording rate,
    # BENCHMARKS.md, bounds the fleet's total); the policy nodes publish to the global topics
    to_fleet = (("transitions", "/transitions"), ("transition_batches", "/transition_batches"),
                ("policy_bundle", "/policy_bundle")) if len(robots) > 1 else ()
    nodes: list[NodeSpec] = []
    for i, robot in enumerate(robots):
        report = f"{out}/reports/{robot}/policy_node.json" if robot else f"{out}/reports/policy_node.json"
        nodes += _sim(a, robot, i, perturbs[i]) + [NodeSpec(
            "policy_node", "policy_node",
            {"mode": "explore", "bundle": "", "task": a["task"], "lockstep": lockstep, **_reset(a),
             "wait_for_recorder": True, "report": report, "robot": robot, "explore_offset": i,
             "seed": _integer(a, "seed", 0) + i, "batch": _integer(a, "batch", 1),
             "speedup": _number(a, "speedup", positive=True) if a["sim"] == "mujoco" and a["sim_mode"] == "fast" else 1.0},
            _robot_io(a) + to_fleet, namespace=robot)]
    return nodes + [
        NodeSpec("data_node", "data_node", {"task": a["task"], "bag_dir": f"{out}/bag",
                                            "report": f"{out}/reports/data_node.json"}),
        NodeSpec("trainer_node", "trainer_node",
                 {"task": a["task"], "config": a["config"], "out": out, "seed": _integer(a, "seed", 0),
                  "steps": _integer(a, "steps", 1), "target_return": _number(a, "target_return"), "init": a["init"],
                  "keep_init_data": _flag(a, "keep_init_data"), "device": _device(a),
                  "threads": _integer(a, "threads", 1)}, ends_graph=True),
    ]


def deploy_graph(args: dict[str, str]) -> list[NodeSpec]:
    """The robot side: the policy node with a bundle (and the simulator for a dry run)."""
    a = _with_defaults(args, DEPLOY_ARGUMENTS)
    a["speedup"] = "1.0"
    lockstep = a["sim"] == "mujoco" and a["sim_mode"] == "lockstep"
    return _sim(a) + [
        NodeSpec("policy_node", "policy_node",
                 {"mode": a["mode"], "bundle": a["policy"], "lockstep": lockstep, **_adaptation(a), **_reset(a),
                  "report": f"{a['reports']}/policy_node.json" if a["reports"] else ""},
                 _robot_io(a)),
    ]


def _adaptation(a: dict[str, str]) -> dict[str, Any]:
    """The policy node's adapt_* parameters: each argument given, else what the bundle ships (its manifest's
    deploy section; the defaults when the manifest cannot be read: the policy node then says why)."""
    try:
        manifest = json.loads((Path(a["policy"]) / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    given: dict[str, Any] = {}
    for name, kind in (("adapt_episodes", int), ("adapt_steps", int), ("adapt_rounds", int), ("adapt_kl", float),
                       ("adapt_margin", float), ("adapt_through", str)):
        if a[name].strip():
            try:
                given[name] = kind(a[name].strip())
            except ValueError:
                raise ValueError(f"{name}:={a[name]} is not {'an integer' if kind is int else 'a number'}") from None
    if a["adapt_judge"].strip():
        given["adapt_judge"] = _flag(a, "adapt_judge")
    source = str(Path(a["policy"]) / "manifest.json") if manifest else "defaults"
    try:
        return dataclasses.asdict(shipped_adaptation(manifest if isinstance(manifest, dict) else {}, source, **given))
    except UserError as err:
        raise ValueError(str(err)) from None


GRAPHS = {"train": (train_graph, TRAIN_ARGUMENTS), "deploy": (deploy_graph, DEPLOY_ARGUMENTS)}
