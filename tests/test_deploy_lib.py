"""The ROS-free deployment logic: observation contract, safety, transition validation, bag, graph."""

import ast
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from mbmpo.deploy.bag import SegmentedBagWriter, read_messages
from mbmpo.deploy.bringup import node_command, parse_arguments
from mbmpo.deploy.contract import ObservationBuilder, ObservationError, joint_state_entries
from mbmpo.deploy.graph import DEPLOY_ARGUMENTS, TRAIN_ARGUMENTS, deploy_graph, train_graph
from mbmpo.deploy.safety import ActionGuard, Watchdog
from mbmpo.deploy.transitions import TransitionRecord, TransitionValidator, assemble_episodes

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.badinput
def test_observation_by_joint_name_in_any_order() -> None:
    builder = ObservationBuilder(["qpos:slider", "qpos:hinge", "qvel:slider", "qvel:hinge"])
    obs = builder.build(["hinge", "slider"], [0.1, 0.2], [1.0, 2.0])
    np.testing.assert_allclose(obs, [0.2, 0.1, 2.0, 1.0])
    with pytest.raises(ObservationError, match="lacks joint 'slider'"):
        builder.build(["hinge", "elbow"], [0.1, 0.2], [1.0, 2.0])
    with pytest.raises(ObservationError, match=r"non-finite values for \['qpos:hinge'\]"):
        builder.build(["hinge", "slider"], [np.nan, 0.2], [1.0, 2.0])
    with pytest.raises(ObservationError, match="2 names, 1 positions"):
        builder.build(["hinge", "slider"], [0.1], [1.0, 2.0])
    with pytest.raises(ObservationError, match="repeats"):
        builder.build(["hinge", "hinge"], [0.1, 0.1], [1.0, 2.0])


def test_joint_state_entries_cover_free_joints() -> None:
    qpos_names = [f"qpos:root:{i}" for i in range(7)] + ["qpos:hip"]
    qvel_names = [f"qvel:root:{i}" for i in range(6)] + ["qvel:hip"]
    names, pos, vel = joint_state_entries(qpos_names, qvel_names, np.arange(8.0), np.arange(7.0) + 10)
    assert names[:7] == [f"root:{i}" for i in range(7)] and names[7] == "hip"
    builder = ObservationBuilder(qpos_names[2:] + qvel_names)
    np.testing.assert_allclose(builder.build(names, pos, vel), [2, 3, 4, 5, 6, 7] + list(range(10, 17)))


@pytest.mark.fault
def test_watchdog_and_action_guard() -> None:
    dog = Watchdog(0.1)
    assert dog.stale(0.0)
    dog.feed(1.0)
    assert not dog.stale(1.05) and dog.stale(1.2) and dog.trips == 1
    assert dog.stale(1.3) and dog.trips == 1  # one trip per stale spell
    guard = ActionGuard(np.array([-1.0, -2.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(guard(np.array([5.0, -5.0])), [1.0, -2.0])
    np.testing.assert_allclose(guard(np.array([np.nan, 0.0])), [0.0, 0.0])
    np.testing.assert_allclose(guard(np.array([1.0])), [0.0, 0.0])
    assert guard.rejected == 2


def _rec(ep: int, step: int, stamp: int, obs_dim: int = 3, value: float = 0.0, done: bool = False) -> TransitionRecord:
    return TransitionRecord(ep, step, "meta", np.full(obs_dim, value, np.float32), np.zeros(2, np.float32), 1.0,
                            np.full(obs_dim, value + 1, np.float32), done, False, stamp)


@pytest.mark.badinput
def test_validator_rejects_with_reasons() -> None:
    v = TransitionValidator(3, 2)
    assert v.check(_rec(0, 0, 10)) is None
    assert "jump: episode 0 step 1" in v.check(_rec(0, 1, 15, value=5.0))  # does not start where step 0 ended
    assert v.check(_rec(0, 1, 20, value=1.0)) is None
    assert "order: step 1" in v.check(_rec(0, 1, 30))  # repeated step
    assert "order: timestamp" in v.check(_rec(0, 2, 20))  # timestamp not increasing
    assert "size" in v.check(_rec(0, 3, 40, obs_dim=4))
    assert "non-finite" in v.check(_rec(0, 3, 40, value=np.inf))
    assert "magnitude" in v.check(_rec(0, 3, 40, value=1e9))
    assert v.check(_rec(0, 3, 40)) is None
    assert v.rejected == {"order": 2, "size": 1, "non-finite": 1, "magnitude": 1, "jump": 1}
    assert v.missing == 1  # step 2 of episode 0 was never accepted
    assert v.check(_rec(5, 2, 50)) is None and v.missing == 3  # episode 5 seen from step 2 on: 0 and 1 missing


def test_assemble_episodes_orders_and_splits_at_gaps() -> None:
    recs = [_rec(1, 1, 2, value=1), _rec(1, 0, 1, value=0), _rec(2, 0, 3), _rec(2, 2, 5, done=True)]
    episodes = assemble_episodes(recs)
    assert [e.length for e in episodes] == [2, 1, 1]
    np.testing.assert_allclose(episodes[0].obs[:, 0], [0, 1, 2])
    assert episodes[2].terminated and not episodes[0].terminated


@pytest.mark.fault
def test_segmented_bag_survives_a_crash_and_reads_back(tmp_path: Path) -> None:
    from rclpy.serialization import serialize_message

    from mbmpo_interfaces.msg import Transition

    def raw(i: int) -> bytes:
        m = Transition()
        m.episode_id, m.step, m.obs = 7, i, [float(i)] * 3
        return serialize_message(m)

    bag = tmp_path / "bag"
    w = SegmentedBagWriter(bag, "/transitions", "mbmpo_interfaces/msg/Transition")
    for i in range(5):
        w.write(raw(i), 100 + i)
    assert w.flush() == "segment_000000.mcap"
    for i in range(5, 8):
        w.write(raw(i), 100 + i)  # never flushed: the process "dies" here
    del w
    w = SegmentedBagWriter(bag, "/transitions", "mbmpo_interfaces/msg/Transition")  # restart appends
    assert w.transitions == 5
    w.write(raw(8), 200)
    w.close()
    steps = [m.step for _, m in read_messages(bag)]
    assert steps == [0, 1, 2, 3, 4, 8]
    assert [m.step for _, m in read_messages(bag, ["segment_000001.mcap"])] == [8]
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:  # an independent reader agrees
        assert reader.message_count == 6 and reader.duration == 200 - 100 + 1


@pytest.mark.badinput
def test_bringup_arguments_and_graph() -> None:
    graph, args = parse_arguments(["train", "sim:=none", "task:=Hopper-v5", "out:=/tmp/x", "duration:=5"])
    assert graph == "train" and args["sim"] == "none"
    with pytest.raises(ValueError, match="name:=value"):
        parse_arguments(["train", "sim=mujoco"])
    with pytest.raises(ValueError, match="usage"):
        parse_arguments(["fly"])
    with pytest.raises(ValueError, match=r"unknown launch argument\(s\) \['tsk'\]"):
        train_graph({"tsk": "x"})
    with pytest.raises(ValueError, match="sim:=gazebo"):
        train_graph({"sim": "gazebo"})
    names = [s.name for s in train_graph({"sim": "none"})]
    assert names == ["policy_node", "data_node", "trainer_node"]
    spec = train_graph({"joint_states": "/robot/joint_states"})[0]
    cmd = node_command(spec, Path("p.yaml"))
    assert cmd[1:3] == ["-m", "mbmpo_ros.sim_node"] and "joint_states:=/robot/joint_states" in cmd
    policy = deploy_graph({"adapt_through": "models", "adapt_rounds": "3", "adapt_judge": "true"})[-1]
    assert {k: policy.parameters[k] for k in ("adapt_through", "adapt_rounds", "adapt_judge")} == \
        {"adapt_through": "models", "adapt_rounds": 3, "adapt_judge": True}
    with pytest.raises(ValueError, match="adapt_judge:=yes is not true or false"):
        deploy_graph({"adapt_judge": "yes"})


def test_bringup_shows_every_argument_with_its_default(capsys: pytest.CaptureFixture) -> None:
    from mbmpo.deploy.bringup import main

    for graph, table in (("train", TRAIN_ARGUMENTS), ("deploy", DEPLOY_ARGUMENTS)):
        assert main([graph, "--show-args"]) == 0
        out = capsys.readouterr().out
        for name, (default, _) in table.items():
            assert f"    '{name}':\n" in out and f"(default: '{default}')" in out, name


def test_the_deploy_graph_adapts_as_the_bundle_ships_unless_told(tmp_path: Path) -> None:
    """adapt_* arguments left out take the bundle's manifest deploy section (the training preset's); those given
    win; without a readable manifest, the defaults; a bad section is one line naming the manifest."""
    (tmp_path / "manifest.json").write_text(json.dumps({"deploy": {"adapt_through": "models", "adapt_episodes": 4,
                                                                    "adapt_rounds": 3, "adapt_judge": True}}))
    keys = ("adapt_through", "adapt_episodes", "adapt_steps", "adapt_rounds", "adapt_kl", "adapt_judge",
            "adapt_margin")

    def adaptation(**args: str) -> dict:
        return {k: deploy_graph({"policy": str(tmp_path), **args})[-1].parameters[k] for k in keys}

    assert adaptation() == {"adapt_through": "models", "adapt_episodes": 4, "adapt_steps": 1, "adapt_rounds": 3,
                            "adapt_kl": 0.0, "adapt_judge": True, "adapt_margin": 0.0}
    assert adaptation(adapt_rounds="1", adapt_judge="false", adapt_kl="0.05", adapt_margin="1") == {
        "adapt_through": "models", "adapt_episodes": 4, "adapt_steps": 1, "adapt_rounds": 1, "adapt_kl": 0.05,
        "adapt_judge": False, "adapt_margin": 1.0}
    with pytest.raises(ValueError, match="adapt_rounds:=two is not an integer"):
        adaptation(adapt_rounds="two")
    assert deploy_graph({"policy": str(tmp_path / "none")})[-1].parameters["adapt_episodes"] == 2  # the defaults
    (tmp_path / "manifest.json").write_text(json.dumps({"deploy": {"adapt_through": "magic"}}))
    with pytest.raises(ValueError, match=r"manifest.json deploy: deploy.adapt_through must be one of"):
        adaptation()
    (tmp_path / "manifest.json").write_text(json.dumps({"deploy": {"adapt_speed": 3}}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['adapt_speed'\] in section 'deploy'"):
        adaptation()


class _Recorder:
    """Stands in for the `launch` API (not on PyPI) to read what a launch file would start."""

    def __init__(self, **kw):
        self.kw = kw


def _launch_nodes(path: Path, args: dict[str, str]) -> tuple[list[str], list[dict]]:
    fake = {
        "launch": types.SimpleNamespace(LaunchDescription=lambda items: items),
        "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=lambda n, **kw: ("arg", n, kw),
                                                OpaqueFunction=lambda function: ("fn", function),
                                                RegisterEventHandler=lambda handler: ("handler", handler),
                                                Shutdown=lambda **kw: ("shutdown", kw),
                                                TimerAction=lambda **kw: ("timer", kw)),
        "launch.event_handlers": types.SimpleNamespace(OnProcessExit=lambda **kw: kw),
        "launch.substitutions": types.SimpleNamespace(
            LaunchConfiguration=lambda n: types.SimpleNamespace(perform=lambda ctx: ctx[n])),
        "launch_ros": types.SimpleNamespace(), "launch_ros.actions": types.SimpleNamespace(Node=_Recorder),
    }
    saved = {k: sys.modules.get(k) for k in fake}
    sys.modules.update(fake)  # type: ignore[arg-type]
    try:
        namespace: dict = {}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        items = namespace["generate_launch_description"]()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    declared = {n: kw["default_value"] for kind, n, kw in [i for i in items if i[0] == "arg"]}
    context = {**declared, **args}
    actions = [i for i in items if i[0] == "fn"][0][1](context)
    nodes = [a.kw for a in actions if isinstance(a, _Recorder)]
    for a in actions:  # an exit handler: the node whose exit shuts the graph down
        if isinstance(a, tuple) and a[0] == "handler":
            target = a[1]["target_action"].kw
            assert a[1]["on_exit"][0][0] == "shutdown"
            target["ends_graph"] = True
    return list(declared), nodes


@pytest.mark.parametrize("name, table, build", [("train", TRAIN_ARGUMENTS, train_graph),
                                                ("deploy", DEPLOY_ARGUMENTS, deploy_graph)])
def test_launch_files_and_bringup_start_the_same_graph(name, table, build) -> None:
    path = ROOT / "launch" / f"{name}.launch.py"
    ast.parse(path.read_text())
    for args in ({}, {"sim": "mujoco", "task": "Hopper-v5"}, {"sim": "none"}):
        declared, nodes = _launch_nodes(path, args)
        assert declared == list(table)
        specs = build(args)
        assert [(n["executable"], n["name"], n["parameters"][0], n["remappings"], n.get("ends_graph", False))
                for n in nodes] == \
               [(s.executable, s.name, s.parameters, list(s.remappings), s.ends_graph) for s in specs]
        assert all(n["package"] == "mbmpo_ros" and float(n["sigterm_timeout"]) > 10 for n in nodes)  # time to flush


COLCON = ROOT / ".venv-colcon" / "bin" / "colcon"


@pytest.mark.skipif(not COLCON.exists(), reason="colcon is installed by `make setup` into .venv-colcon")
@pytest.mark.parametrize("symlink", [False, True], ids=["copy", "symlink-install"])
def test_colcon_builds_the_ros_package_with_launch_and_config_installed(tmp_path: Path, symlink: bool) -> None:
    """`colcon build` of mbmpo_ros (what the Dockerfile does on a ROS install): nodes under lib/, launch files
    and presets under share/, the package in the ament index, with and without --symlink-install."""
    import subprocess

    cmd = [str(COLCON), "build", "--base-paths", str(ROOT / "ros2_ws" / "src" / "mbmpo_ros"),
           "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")]
    r = subprocess.run(cmd + (["--symlink-install"] if symlink else []), capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    pkg = tmp_path / "install" / "mbmpo_ros"
    for node in ("sim_node", "policy_node", "data_node", "trainer_node"):
        assert (pkg / "lib" / "mbmpo_ros" / node).is_file(), node
    share = pkg / "share" / "mbmpo_ros"
    for name in ("train", "deploy"):
        launch = share / "launch" / f"{name}.launch.py"
        assert "generate_launch_description" in launch.read_text()  # a link that resolves, or a copy
    assert (share / "config" / "HalfCheetah-v5.yaml").is_file()
    assert (share / "config" / "paper" / "HalfCheetah-v5.yaml").is_file()
    assert (share / "config" / "presets" / "small.yaml").is_file() and (share / "package.xml").is_file()
    assert (pkg / "share" / "ament_index" / "resource_index" / "packages" / "mbmpo_ros").is_file()


def test_the_deploy_summary_shows_the_return_before_and_after_adaptation(tmp_path: Path) -> None:
    from mbmpo.deploy.bringup import deploy_summary

    report = tmp_path / "policy_node.json"
    report.write_text(json.dumps({"episodes": 9, "transitions": 1800, "faults": 0, "resets": 9, "adaptations": 1,
                                  "adaptations_refused": 0, "return_before_adaptation": 88.25,
                                  "episodes_before_adaptation": 4, "return_after_adaptation": None,
                                  "episodes_after_adaptation": 0}))
    text = deploy_summary(report)
    assert "9 episodes" in text and "return before adaptation 88.2 (mean of 4), after none yet" in text
    assert "no policy node report" in deploy_summary(tmp_path / "missing.json")


def test_the_train_graph_gives_the_trainer_its_threads_and_names_a_bad_number() -> None:
    assert train_graph({})[-1].parameters["threads"] == 1  # the robot-side nodes keep the other cores
    assert train_graph({"threads": "8"})[-1].parameters["threads"] == 8
    for bad, said in [({"threads": "0"}, "threads:=0: must be at least 1"),
                      ({"threads": "two"}, "threads:=two is not an integer"),
                      ({"steps": "1e5"}, "steps:=1e5 is not an integer"),
                      ({"seed": "-1"}, "seed:=-1: must be at least 0"),
                      ({"batch": "0"}, "batch:=0: must be at least 1"),
                      ({"target_return": "high"}, "target_return:=high is not a number"),
                      ({"sim_mode": "fast", "speedup": "0"}, "speedup:=0: must be a finite positive number"),
                      ({"speedup": "nan"}, "speedup:=nan: must be a finite positive number")]:
        with pytest.raises(ValueError, match=said):
            train_graph(bad)


def test_a_fleet_graph_has_a_sim_and_a_policy_node_per_robot_and_one_data_node_and_trainer() -> None:
    specs = train_graph({"sim": "mujoco", "robots": "3", "seed": "5", "perturb": "mass=1.2||mass=0.8", "out": "o"})
    assert [s.key for s in specs] == ["robot_0/sim_node", "robot_0/policy_node", "robot_1/sim_node",
                                      "robot_1/policy_node", "robot_2/sim_node", "robot_2/policy_node",
                                      "data_node", "trainer_node"]
    policies = [s for s in specs if s.name == "policy_node"]
    assert [p.parameters["robot"] for p in policies] == ["robot_0", "robot_1", "robot_2"]
    assert [p.parameters["explore_offset"] for p in policies] == [0, 1, 2]  # the K policies spread over robots
    assert len({p.parameters["seed"] for p in policies}) == 3
    assert [s.parameters["perturb"] for s in specs if s.name == "sim_node"] == ["mass=1.2", "", "mass=0.8"]
    assert ("transitions", "/transitions") in policies[0].remappings  # one data node records the fleet
    assert policies[2].parameters["report"] == "o/reports/robot_2/policy_node.json"
    cmd = node_command(policies[1], Path("p.yaml"))
    assert "__ns:=/robot_1" in cmd and "__node:=policy_node" in cmd
    real = train_graph({"sim": "none", "robots": "arm_a,arm_b"})
    assert [s.key for s in real][:2] == ["arm_a/policy_node", "arm_b/policy_node"]
    one = train_graph({"sim": "mujoco"})
    assert [s.key for s in one] == ["sim_node", "policy_node", "data_node", "trainer_node"]  # no namespace
    for bad, said in [({"robots": "0"}, "at least one robot"), ({"robots": "a,a"}, "distinct ROS names"),
                      ({"robots": "2", "perturb": "mass=1|mass=2|mass=3"}, "3 robots' perturbations for 2")]:
        with pytest.raises(ValueError, match=said):
            train_graph(bad)
