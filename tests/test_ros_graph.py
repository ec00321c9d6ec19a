"""Whole graphs over real DDS: learning, recording every transition, a foreign robot driver, deploy mode."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
from std_msgs.msg import String  # noqa: E402

from mbmpo.cli import main as cli  # noqa: E402
from mbmpo.deploy.bag import read_messages  # noqa: E402
from mbmpo.deploy.transitions import records_from_msg  # noqa: E402
from mbmpo.train.progress import read_progress  # noqa: E402
from mbmpo_ros.testing import Probe, next_domain, read_report, start_node, stop_node  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
TINY_ROS = ROOT / "tests" / "configs" / "tiny_ros.yaml"


def _bringup(args: list[str], domain: int, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "mbmpo.deploy.bringup", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def _final_counts(out: Path, node: str = "policy_node") -> dict:
    """The counters a train graph's node wrote to OUT/reports when it stopped."""
    counts = read_report(out / "reports" / f"{node}.json")
    assert counts, f"{node} wrote no report in {out}/reports"
    return counts


@pytest.mark.slow
def test_train_graph_learns_inverted_pendulum_and_records_every_transition(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = _bringup(["train", "sim:=mujoco", "task:=InvertedPendulum-v5", f"out:={out}", "steps:=100000",
                  "target_return:=190", "duration:=500"], next_domain(), timeout=600)
    assert "trainer finished (0)" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    rows = (out / "progress.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert float(last[header.index("return_pre")]) >= 190.0
    counts, recorded = _final_counts(out), _final_counts(out, "data_node")
    messages = list(read_messages(out / "bag"))  # rosbags reads the bag
    assert counts["all_acked"] and recorded["rejected"] == {}
    assert counts["transitions"] > 1000 and len(messages) == recorded["durable"] == counts["transitions"]
    assert (out / "policy" / "manifest.json").is_file() and (out / "learning_curve.png").is_file()
    assert "bag:" in r.stdout and "return before adaptation" in r.stdout
    # each bundle: the newest transition it learned from is older than the iteration that made it
    bundles = [line.split(",") for line in (out / "bundles.csv").read_text().splitlines()[1:]]
    assert len(bundles) == len(rows) - 1
    assert all(0 < float(it_s) <= float(data_s) < 500 for _, _, data_s, it_s in bundles), bundles


@pytest.mark.slow
def test_a_fleet_of_three_simulated_robots_trains_one_policy(tmp_path: Path) -> None:
    """robots:=3: three sims and three policy nodes in namespaces robot_0..2, one data node, one trainer; the
    policy nodes send their transitions in batches (batch:=10), as a fleet would."""
    out = tmp_path / "run"
    # real time (25 Hz a robot), as robots run: in lock-step three simulators take every cycle of a 2-core
    # machine and the data node and the trainer starve
    r = _bringup(["train", "sim:=mujoco", "sim_mode:=realtime", "robots:=3", "batch:=10",
                  "task:=InvertedPendulum-v5", f"out:={out}", "steps:=100000", "target_return:=190", "duration:=500"],
                 next_domain(), timeout=600)
    assert "trainer finished (0)" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert read_progress(out)[-1].return_pre >= 190.0
    recorded = _final_counts(out, "data_node")
    robots = [f"robot_{i}" for i in range(3)]
    in_bag: dict[str, int] = {}
    for _, m in read_messages(out / "bag"):
        assert type(m).__name__.endswith("TransitionBatch")
        in_bag[m.robot] = in_bag.get(m.robot, 0) + len(records_from_msg(m))
    assert set(in_bag) == set(robots) and all(n > 200 for n in in_bag.values()), in_bag
    assert recorded["robots"] == in_bag and recorded["rejected"] == {}, recorded
    final = json.loads((out / "policy" / "manifest.json").read_text())["policy_version"]
    for robot in robots:
        counts = read_report(out / "reports" / robot / "policy_node.json")
        assert counts["policy_version"] == final and counts["transitions"] == in_bag[robot], (robot, counts)
        assert f"{robot}: " in r.stdout  # the bringup summary has a line per robot


def test_a_foreign_robot_driver_drives_the_stack_with_sim_none(tmp_path: Path) -> None:
    domain = next_domain()
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONWARNINGS": "ignore"}
    driver = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_robot_driver.py")], env=env, cwd=ROOT)
    try:
        out = tmp_path / "run"
        r = _bringup(["train", "sim:=none", "task:=InvertedPendulum-v5", f"out:={out}", f"config:={TINY_ROS}",
                      "steps:=300", "reset_service:=reset", "duration:=240"], domain, timeout=300)
    finally:
        stop_node(driver)
    assert "trainer finished (0)" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    rows = read_progress(out)
    assert rows and any(r.robot_return is not None and r.robot_episodes > 0 for r in rows), rows
    assert "robot: recorded episodes returned" in r.stdout and "MuJoCo evaluation" in r.stdout
    counts = _final_counts(out)
    assert len(list(read_messages(out / "bag"))) == counts["transitions"] >= 300
    assert counts["trigger"] == "state" and counts["resets"] >= counts["episodes"]  # 25 Hz driver, 25 Hz policy


def test_deploy_mode_adapts_online_and_swaps_at_episode_boundaries(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli(["train", "--task", "InvertedPendulum-v5", "--steps", "60", "--out", str(run), "--config", str(TINY),
                "--no-progress"]) == 0
    assert cli(["export", "--run", str(run), "--out", str(tmp_path / "bundle")]) == 0
    domain = next_domain()
    sim = start_node("sim_node", domain, {"task": "InvertedPendulum-v5", "mode": "realtime"})
    policy = start_node("policy_node", domain, {"bundle": str(tmp_path / "bundle"), "mode": "deploy",
                                                "adapt_episodes": 1, "reset_service": "sim_node/reset"})
    probe = Probe(domain)
    try:
        status: list[dict] = []
        probe.node.create_subscription(String, "policy_node/status", lambda m: status.append(json.loads(m.data)), 10)
        # ONE adaptation step from the meta-policy's fresh episodes, then the adapted policy acts from an
        # episode boundary on (a second step could only come from a race before the swap)
        assert probe.spin_until(lambda: status and status[-1]["adaptations"] >= 1
                                and "+adapted" in (status[-1]["policy"] or ""), 120), status[-1:]
        episodes_at_swap = status[-1]["episodes"]
        assert probe.spin_until(lambda: status[-1]["episodes"] >= episodes_at_swap + 3, 60), status[-1]
        last = status[-1]
        assert last["policy"].endswith("+adapted") and "meta+adapted" in last["mean_return"], last
        assert last["episodes_before_adaptation"] >= 1 and last["episodes_after_adaptation"] >= 3, last
        assert last["return_after_adaptation"] == pytest.approx(last["mean_return"]["meta+adapted"]), last
        assert last["adaptations_refused"] == 0
        # precise timing is a benchmark's business (benchmarks/ros_latency.py); the stated bound here, loose
        # enough for a loaded CI machine: the adaptation and the swaps cost at most 10% of the control periods,
        # counted on the timer and, once acting on states, between states (0-1 missed of ~3,000 with the
        # machine's 2 cores loaded by other jobs; a CI run once counted 8 of the 38 timer ticks before the node
        # acted on states as late: late ticks with no state waiting no longer count, nothing was held back)
        assert last["transitions"] > 0, last
        assert last["missed_periods"] <= 0.1 * (last["transitions"] + last["missed_periods"]), last
        assert last["trigger"] == "state", last  # the sim streams at the control rate: event-driven
        assert last["latency_ms_p50"] is not None, last
    finally:
        probe.close()
        stop_node(policy)
        stop_node(sim)


def _importable(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.mark.slow
@pytest.mark.skipif(not _importable("launch_ros", "ros2launch", "colcon_core"),
                    reason="the real launch/launch_ros/ros2cli are not on PyPI: built from source by hand "
                           "(REFERENCE.md section 4), or on a ROS 2 install")
def test_real_ros2_launch_trains_and_shuts_the_graph_down_when_the_trainer_finishes(tmp_path: Path) -> None:
    """`ros2 launch mbmpo_ros train.launch.py` through the real launch, on the package as colcon installs it."""
    build = subprocess.run([sys.executable, "-m", "colcon", "build", "--base-paths",
                            str(ROOT / "ros2_ws" / "src" / "mbmpo_ros"), "--symlink-install"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    out = tmp_path / "run"
    env = {**os.environ, "ROS_DOMAIN_ID": str(next_domain()), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONWARNINGS": "ignore",
           "AMENT_PREFIX_PATH": f"{tmp_path / 'install' / 'mbmpo_ros'}:{os.environ.get('AMENT_PREFIX_PATH', sys.prefix)}",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # a session of its own: on a timeout the whole launched graph is stopped, not only `ros2 launch`
    launch = subprocess.Popen(["ros2", "launch", "mbmpo_ros", "train.launch.py", "sim:=mujoco",
                               "task:=InvertedPendulum-v5", f"out:={out}", "steps:=20000", "target_return:=190"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        log, _ = launch.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGINT)
        log = launch.communicate(timeout=60)[0]
        raise AssertionError(f"ros2 launch did not finish in 900 s: {log[-3000:]}") from None
    assert launch.returncode == 0 and "shutting down launched system" in log, log[-3000:]
    assert read_progress_rows(out)[-1] >= 190.0
    counts, recorded = _final_counts(out), _final_counts(out, "data_node")
    assert counts["transitions"] == recorded["durable"] > 1000 and recorded["lost"] == 0


def read_progress_rows(out: Path) -> list[float]:
    from mbmpo.train.progress import read_progress

    return [r.return_pre for r in read_progress(out)]
