"""Bad input: malformed transitions, robot messages, YAML, launch arguments and task names.

Property-based (hypothesis) where the input space is large: every input is either accepted and well-formed
or rejected with a reason; nothing raises anything else. Node tests check the same over real DDS: the
rejection is counted and logged, the node keeps running, and nothing recorded before is lost.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbmpo.config import load_config
from mbmpo.deploy.bringup import parse_arguments
from mbmpo.deploy.contract import ObservationBuilder, ObservationError
from mbmpo.deploy.graph import deploy_graph, train_graph
from mbmpo.deploy.transitions import TransitionRecord, TransitionValidator
from mbmpo.errors import UserError
from mbmpo.tasks import get_task

pytestmark = pytest.mark.badinput
ROOT = Path(__file__).resolve().parent.parent
NAMES = ["qpos:slider", "qpos:hinge", "qvel:slider", "qvel:hinge"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10))


# ---- transitions ----------------------------------------------------------------------------------

def _rec(episode: int, step: int, stamp: int, obs: list, act: list, next_obs: list, reward: float) -> TransitionRecord:
    with np.errstate(over="ignore"):  # float32 fields, as in the message: huge values become inf
        return TransitionRecord(episode, step, "meta", np.asarray(obs, np.float32), np.asarray(act, np.float32),
                                reward, np.asarray(next_obs, np.float32), False, False, stamp)


@FAST
@given(obs=st.lists(values, max_size=6), act=st.lists(values, max_size=3), next_obs=st.lists(values, max_size=6),
       reward=values)
def test_validator_accepts_exactly_the_well_formed_transitions(obs, act, next_obs, reward) -> None:
    validator = TransitionValidator(obs_dim=4, act_dim=1)
    reason = validator.check(_rec(1, 0, 1, obs, act, next_obs, reward))
    with np.errstate(over="ignore"):
        flat = np.asarray(obs + act + next_obs + [reward], np.float32)
    well_formed = (len(obs) == 4 and len(next_obs) == 4 and len(act) == 1 and np.isfinite(flat).all()
                   and np.abs(flat).max() <= 1e6)
    assert (reason is None) == well_formed, reason
    if reason is not None:
        assert reason.split(":")[0] in ("size", "non-finite", "magnitude") and sum(validator.rejected.values()) == 1


@FAST
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 6), st.integers(1, 8)), min_size=1, max_size=30))
def test_validator_never_accepts_a_step_or_stamp_that_does_not_move_forward(seq) -> None:
    """Any order of (episode, step, stamp): what is accepted strictly increases per episode."""
    validator = TransitionValidator(obs_dim=1, act_dim=1)
    accepted: dict[int, list[tuple[int, int]]] = {}
    for episode, step, stamp in seq:
        if validator.check(_rec(episode, step, stamp, [0.0], [0.0], [0.0], 0.0)) is None:
            accepted.setdefault(episode, []).append((step, stamp))
        else:
            assert validator.rejected.get("order", 0) > 0
    for kept in accepted.values():
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(kept, kept[1:]))
    assert sum(len(k) for k in accepted.values()) + sum(validator.rejected.values()) == len(seq)


# ---- robot messages -------------------------------------------------------------------------------

@FAST
@given(names=st.lists(st.sampled_from(["slider", "hinge", "cart", "pole", ""]), max_size=4),
       positions=st.lists(values, max_size=5), velocities=st.lists(values, max_size=5))
def test_observation_builder_gives_a_finite_plausible_observation_or_a_reason(names, positions, velocities) -> None:
    builder = ObservationBuilder(NAMES)
    try:
        obs = builder.build(names, positions, velocities)
    except ObservationError as err:
        assert str(err)
        return
    assert obs.shape == (4,) and np.isfinite(obs).all() and np.abs(obs).max() <= 1e6
    assert set(names) >= {"slider", "hinge"} and len(set(names)) == len(names)


@FAST
@given(st.permutations(["slider", "hinge", "extra"]), st.lists(st.floats(-5, 5), min_size=6, max_size=6))
def test_observation_builder_matches_joints_by_name_in_any_order(order, vals) -> None:
    by_name = {"slider": (vals[0], vals[1]), "hinge": (vals[2], vals[3]), "extra": (vals[4], vals[5])}
    obs = ObservationBuilder(NAMES).build(order, [by_name[n][0] for n in order], [by_name[n][1] for n in order])
    np.testing.assert_allclose(obs, np.float32([vals[0], vals[2], vals[1], vals[3]]))


def test_absurd_magnitudes_are_refused_with_the_joint_named() -> None:
    with pytest.raises(ObservationError, match="qpos:hinge.*beyond"):
        ObservationBuilder(NAMES).build(["slider", "hinge"], [0.0, 3e9], [0.0, 0.0])


# ---- YAML, launch arguments, task names ----------------------------------------------------------

@FAST
@given(st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz_:{}[]-, \n\t'\"!&*#|>0123456789.")),
               max_size=80))
def test_malformed_config_yaml_is_a_user_error_never_a_crash(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except UserError as err:
        assert str(path) in str(err) or "config" in str(err)


@FAST
@given(st.lists(st.text(alphabet=st.sampled_from(list("abc:=_-/ .x1")), max_size=12), max_size=5))
def test_malformed_launch_arguments_are_a_value_error_never_a_crash(argv: list[str]) -> None:
    for graph, build in (("train", train_graph), ("deploy", deploy_graph)):
        try:
            build(parse_arguments([graph, *argv])[1])
        except ValueError as err:
            assert str(err)


@pytest.mark.parametrize("name", ["", "Pendulum", "halfcheetah-v5", "HalfCheetah-v5 ", "../../etc/passwd",
                                  "/nonexistent/task.yaml", "__import__('os').system('true')"])
def test_unknown_task_names_are_refused_by_name(name: str) -> None:
    with pytest.raises(UserError, match="task"):
        get_task(name)


def test_config_never_executes_code(tmp_path: Path) -> None:
    """YAML tags that construct Python objects are refused by the loader, not run."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError):
        load_config(path)
    assert not marker.exists()


def test_no_unsafe_loading_anywhere_in_the_code() -> None:
    """No pickle, no yaml.load/unsafe_load, no eval/exec, torch.load only with weights_only=True."""
    import re

    sources = [p for folder in ("mbmpo", "ros2_ws/src/mbmpo_ros/mbmpo_ros", "benchmarks", "scripts")
               for p in (ROOT / folder).rglob("*.py")]
    found = []
    for path in sources:
        text = path.read_text()
        for pattern in (r"\bpickle\b", r"yaml\.(unsafe_)?load\(", r"(?<![\w.])(eval|exec)\(", r"allow_pickle=True",
                        r"torch\.load\((?![^)]*weights_only=True)"):
            found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not found, found


# ---- nodes: bad parameters exit 2 with one line --------------------------------------------------

def _node_error(module: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROS_DOMAIN_ID": "0", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", f"mbmpo_ros.{module}", "--ros-args", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("module, args, says", [
    ("data_node", ["-p", "task:=NoSuchTask"], "unknown task 'NoSuchTask'"),
    ("sim_node", ["-p", "task:=NoSuchTask"], "unknown task 'NoSuchTask'"),
    ("sim_node", ["-p", "mode:=warp"], "mode 'warp'"),
    ("data_node", ["-p", "obs_dim:=four", "-p", "act_dim:=1"], "obs_dim"),
    ("data_node", ["--params-file", "{malformed}"], "params file"),
    ("policy_node", ["-p", "bundle:=/nonexistent"], "no manifest.json"),
])
def test_nodes_refuse_bad_parameters_with_one_line_and_exit_2(module: str, args: list[str], says: str,
                                                              tmp_path: Path) -> None:
    if "{malformed}" in args:
        bad = tmp_path / "params.yaml"
        bad.write_text("data_node:\n  ros__parameters: {obs_dim: [4\n")
        args = [str(bad) if a == "{malformed}" else a for a in args]
    r = _node_error(module, args)
    assert r.returncode == 2, r.stderr[-2000:]
    assert says in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


# ---- nodes over DDS: bad robot messages -----------------------------------------------------------

def test_policy_node_refuses_each_bad_joint_state_counts_it_and_keeps_acting(pendulum_bundle: Path,
                                                                             tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String

    from mbmpo_ros.testing import Probe, next_domain, start_node, stop_node

    domain = next_domain()
    node = start_node("policy_node", domain, {"bundle": str(pendulum_bundle), "mode": "explore", "reset": "none"},
                      log=tmp_path / "policy.log")
    probe = Probe(domain)
    nan, inf = float("nan"), float("inf")
    bad = [(["slider", "hinge"], [nan, 0.0], [0.0, 0.0]), (["slider", "hinge"], [0.0, 0.0], [inf, 0.0]),
           (["slider"], [0.0], [0.0]), (["slider", "hinge"], [0.0], [0.0, 0.0]),  # missing joint, short
           (["slider", "hinge", "hinge"], [0.0] * 3, [0.0] * 3), (["cart", "pole"], [0.0, 0.0], [0.0, 0.0]),
           (["slider", "hinge"], [0.0, 0.0], [0.0]), (["slider", "hinge"], [1e12, 0.0], [0.0, 0.0]), ([], [], [])]
    try:
        cmds: list[list] = []
        probe.node.create_subscription(Float64MultiArray, "commands", lambda m: cmds.append(list(m.data)), 100)
        status: list[dict] = []
        probe.node.create_subscription(String, "policy_node/status", lambda m: status.append(json.loads(m.data)), 10)
        pub = probe.node.create_publisher(JointState, "joint_states", 10)
        assert probe.spin_until(lambda: pub.get_subscription_count() > 0 and status, 20)

        def send(names: list, pos: list, vel: list, stamp: object = None) -> object:
            msg = JointState()
            msg.header.stamp = stamp or probe.node.get_clock().now().to_msg()
            msg.name, msg.position, msg.velocity = names, pos, vel
            pub.publish(msg)
            probe.spin_for(0.04)
            return msg.header.stamp

        for _ in range(10):
            send(["hinge", "slider"], [0.01, 0.0], [0.0, 0.0])
        for names, pos, vel in bad:
            send(names, pos, vel)
        old = send(["slider", "hinge"], [0.0, 0.0], [0.0, 0.0])
        send(["slider", "hinge"], [0.0, 0.0], [0.0, 0.0])
        send(["slider", "hinge"], [0.0, 0.0], [0.0, 0.0], stamp=old)  # out of order (older than the last used)
        n = len(cmds)
        for _ in range(10):
            send(["hinge", "slider"], [0.01, 0.0], [0.0, 0.0])
        assert probe.spin_until(lambda: status[-1]["bad_states"] == len(bad) + 1, 5), status[-1]
        assert node.poll() is None and len(cmds) > n
    finally:
        probe.close()
        stop_node(node)
    assert all(len(c) == 1 and math.isfinite(c[0]) and abs(c[0]) <= 3.0 for c in cmds)
    log = (tmp_path / "policy.log").read_text()
    assert "state rejected" in log and "Traceback" not in log
    print(f"\nRELIABILITY bad-joint-states: {len(bad) + 1} bad states refused and counted, {len(cmds)} commands, "
          f"all finite and within limits")


def test_episodes_of_different_robots_are_told_apart_by_the_validator_and_the_intake(tmp_path: Path) -> None:
    """A fleet: two robots may use the same episode id; their transitions never mix."""
    from mbmpo.deploy.intake import Intake
    from mbmpo.deploy.transitions import TransitionRecord, TransitionValidator, assemble_episodes

    def rec(robot: str, step: int, start: float, done: bool = False) -> TransitionRecord:
        o = np.full(2, start + step, np.float32)
        return TransitionRecord(7, step, "meta", o, np.zeros(1, np.float32), 1.0, o + 1, False, done,
                                1000 + step, robot)

    v = TransitionValidator(2, 1)
    records = [rec(r, s, start, s == 2) for s in range(3) for r, start in (("a", 0.0), ("b", 50.0))]
    assert [v.check(r) for r in records] == [None] * 6 and v.missing == 0
    episodes = assemble_episodes(records)
    assert sorted(float(e.obs[0, 0]) for e in episodes) == [0.0, 50.0] and all(len(e.act) == 3 for e in episodes)
    intake = Intake(tmp_path / "intake.json", 0)
    intake.add("s1", records[:4])  # robot a's episode 7 and robot b's are both still open
    assert intake.take() is None
    intake.add("s2", records[4:])
    taken = intake.take()
    assert taken is not None and len(taken) == 6
    intake.commit(taken, 6)
    assert Intake(tmp_path / "intake.json", 6).known("s2")
