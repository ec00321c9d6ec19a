"""Resets between episodes (mbmpo.deploy.reset) in the controller, without ROS: a reset service answered
late, a failing or missing one, lock-step, homing with the bounded PD law (also in MuJoCo physics), the
operator, and continuing episodes. No transition may span a reset."""

from __future__ import annotations

import time
from pathlib import Path

import mujoco
import numpy as np
import pytest
from test_controller import NAMES, Robot, make_controller

from mbmpo.deploy.controller import Controller, ControllerSettings
from mbmpo.deploy.reset import HomeSpec
from mbmpo.deploy.reset_cycle import home_spec
from mbmpo.deploy.transitions import TransitionValidator
from mbmpo.deploy.worker import Worker
from mbmpo.runtime import BundleError
from mbmpo.tasks import get_task
from mbmpo.tasks.mujoco_names import actuator_joints


def test_a_service_reset_starts_the_episode_from_the_first_state_stamped_after_the_response(
        pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="explore", horizon=5, reset="service")
    robot = Robot(c, answer_resets=False)
    first = robot.state(0.3)
    assert first is not None and first.reset and first.command is None  # before the first episode too
    for _ in range(3):  # the driver is still resetting: old states are not acted on
        d = robot.state(0.3)
        assert d is not None and d.command is None and not d.reset and d.transition is None
    assert c.status()["state"] == "reset" and c.status()["resetting"] == "request"
    c.reset_finished(True, "done", time.monotonic())
    started = robot.state(0.0)
    assert started is not None and started.command is not None  # the first state stamped after the answer
    decisions = robot.run(5)
    records = [d.transition for d in decisions if d.transition is not None]
    assert records[0].step == 0 and records[0].obs[0] == pytest.approx(0.0)  # starts from the reset state
    assert decisions[-1].reset and c.counts["resets"] == 1


def test_a_failed_or_missing_reset_service_is_asked_again_and_nothing_acts_meanwhile(pendulum_bundle: Path) -> None:
    said: list[str] = []
    c = make_controller(pendulum_bundle, mode="explore", horizon=5, reset="service")
    c.log = lambda level, message: said.append(message)
    robot = Robot(c, answer_resets=False)
    assert robot.state().reset
    now = time.monotonic()
    c.reset_finished(False, "reset service 'robot/reset' not available", now)
    assert c.counts["reset_failures"] == 1 and any("not available" in m for m in said)
    early = c.on_watchdog(now + 0.5, lockstep=False)  # states are stale by then: the safe command, no call
    assert early is not None and not early.reset
    again = c.on_watchdog(now + 1.1, lockstep=False)
    assert again is not None and again.reset and again.command is None
    assert robot.state().command is None  # still no episode


def test_in_lockstep_the_reset_state_published_while_answering_starts_the_episode(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="explore", horizon=5, reset="service", lockstep=True)
    robot = Robot(c, answer_resets=False)
    assert robot.state(0.3).reset
    robot.stamp += 1_000
    c.on_state(NAMES, [0.0, 0.01], [0.0, 0.0], robot.stamp, time.monotonic())  # the simulator's reset state
    decision = c.reset_finished(True, "reset 1", time.monotonic())  # then the answer: act on that state now
    assert decision is not None and decision.command is not None and c.reset_phase is None


def test_reset_home_drives_the_joints_home_with_a_bounded_pd_law_then_starts(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="explore", horizon=5, reset="home", home="slider=0,kp=2,kd=1")
    robot, position, velocity, dt = Robot(c), 0.5, 0.0, 0.04
    homing = []
    for _ in range(400):  # a unit mass on the slider, integrated at the control period
        d = robot.state(position, velocity)
        if c.reset_phase is None:
            break
        homing.append(d.command[0])
        velocity += d.command[0] * dt
        position += velocity * dt
    assert c.reset_phase is None and abs(position) <= 0.05, position
    low, high = c.guard.low[0], c.guard.high[0]
    assert homing[0] < 0 and max(abs(u) for u in homing) <= 0.5 * (high - low) / 2 + 1e-9  # bounded, toward home
    decisions = robot.run(6)
    first = next(d.transition for d in decisions if d.transition is not None)
    assert first.step == 0 and abs(first.obs[0]) <= 0.05  # the episode starts at home


def test_home_configuration_errors_are_one_clear_line(pendulum_bundle: Path) -> None:
    manifest = {"actuator_joints": ["slider"], "home": None}
    with pytest.raises(BundleError, match="driven by no actuator"):
        home_spec("hinge=0", manifest)
    with pytest.raises(BundleError, match="needs a home configuration"):
        home_spec("", manifest)
    with pytest.raises(BundleError, match="'slider=up' is not of the form joint=number"):
        home_spec("slider=up", manifest)
    with pytest.raises(BundleError, match="actuator_joints"):
        home_spec("slider=0", {"home": None})
    with pytest.raises(ValueError, match="reset 'teleport'"):
        ControllerSettings(reset="teleport")
    with pytest.raises(ValueError, match="home is given but reset is 'service'"):
        ControllerSettings(home="slider=0")


def test_the_pd_law_brings_a_mujoco_arm_home_within_tolerance() -> None:
    task = get_task("examples/arm2/task.yaml")
    env = task.make_env(10_000).unwrapped
    env.reset(seed=3)
    model, data = env.model, env.data
    data.qpos[:] = [1.2, -1.0]
    mujoco.mj_forward(model, data)
    spec = HomeSpec.from_config(task.home, actuator_joints(model))
    names = ["shoulder", "elbow"]
    steps = 0
    while steps < 2000:  # 100 s of control at 20 Hz
        positions, velocities = dict(zip(names, data.qpos)), dict(zip(names, data.qvel))
        if spec.reached(positions, velocities):
            break
        u = spec.command(positions, velocities, task.act_low, task.act_high, np.zeros(2))
        assert np.all(np.abs(u) <= spec.limit * task.act_high + 1e-9)
        env.step(u)
        steps += 1
    assert spec.reached(dict(zip(names, data.qpos)), dict(zip(names, data.qvel))), (data.qpos, steps)
    assert steps * task.dt < 30.0


def test_the_operator_holds_the_safe_command_until_told_to_go(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="explore", horizon=5, reset="operator")
    robot = Robot(c)
    waiting = [robot.state() for _ in range(3)]
    assert all(d.command is not None and d.command[0] == 0.0 and d.transition is None for d in waiting)
    assert c.status()["resetting"] == "operator"
    ok, decision = c.operator_go(time.monotonic())
    assert ok and decision is None  # timer control: the next state starts the episode
    assert robot.state().transition is None and c.reset_phase is None and c.counts["resets"] == 1
    assert c.operator_go(time.monotonic()) == (False, None)  # nothing waits any more


def test_reset_none_continues_each_episode_from_where_the_last_ended(pendulum_bundle: Path) -> None:
    said: list[str] = []
    c = Controller(ControllerSettings(mode="explore", horizon=5, reset="none"), Worker(),
                   log=lambda level, message: said.append(message))
    c.start_with(pendulum_bundle)
    decisions = Robot(c).run(20)
    records = [d.transition for d in decisions if d.transition is not None]
    assert not any(d.reset for d in decisions) and c.counts["episodes"] >= 3
    ends = [r for r in records if r.truncated]
    starts = [r for r in records if r.step == 0][1:]
    assert all(np.array_equal(e.next_obs, s.obs) for e, s in zip(ends, starts))  # continuing, not reset
    assert sum("reset none" in m for m in said) == 1  # said once
    one_step = Controller(ControllerSettings(mode="explore", horizon=1, reset="none"), Worker(),
                          log=lambda level, message: said.append(message))
    one_step.start_with(pendulum_bundle)
    Robot(one_step).run(12)  # a robot that stays in a terminal state ends every episode at once
    assert sum("ended after one step" in m for m in said) == 1


def test_states_sent_while_a_robot_resets_do_not_count_in_its_streaming_rate() -> None:
    from mbmpo.deploy.rate import RateMonitor

    rate, t = RateMonitor(window=20), 0.0
    for _ in range(10):  # 25 Hz states, and after each 4-step episode a reset state 2 ms later
        for _step in range(4):
            t += 0.04
            rate.feed(t)
        rate.gap()
        t += 0.002
        rate.feed(t)  # the first state of the next chain
    assert rate.hz == pytest.approx(25.0, rel=0.01) and rate.matches(0.04)


def test_a_gap_inside_an_episode_starts_a_new_piece_that_the_data_node_accepts(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="explore", horizon=50)
    robot = Robot(c)
    before = robot.run(6)
    assert c.on_watchdog(time.monotonic() + 10, lockstep=False) is not None  # stale: safe command, a gap
    after = robot.run(6)
    records = [d.transition for d in before + after if d.transition is not None]
    validator = TransitionValidator(obs_dim=4, act_dim=1)
    assert all(validator.check(r) is None for r in records) and validator.missing == 0
    ids = sorted({r.episode_id for r in records})
    assert len(ids) == 2 and [r.step for r in records if r.episode_id == ids[1]][0] == 0
    assert c.counts["episodes"] == 0 and c.step == len(records)  # one episode goes on, its horizon counting on
