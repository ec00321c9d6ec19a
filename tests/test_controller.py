"""The policy node's controller without ROS: episodes, explore/deploy, hand-offs and faults."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from mbmpo.deploy.controller import Controller, ControllerSettings, Decision, ReceivedBundle
from mbmpo.deploy.worker import Worker
from mbmpo.runtime import load
from mbmpo_ros.testing import bundle_variant

NAMES = ["slider", "hinge"]


class Robot:
    """Feeds a controller pendulum-like states with increasing stamps (its clock is the robot's) and answers
    its reset requests at once, as a reset service would; records decisions."""

    def __init__(self, controller: Controller, answer_resets: bool = True):
        self.c, self.stamp, self.decisions = controller, 0, []
        self.answer_resets = answer_resets
        controller.clock_ns = lambda: self.stamp

    def state(self, position: float = 0.0, velocity: float = 0.0) -> Decision | None:
        self.stamp += 10_000_000
        obs = self.c.on_state(NAMES, [position, 0.01], [velocity, 0.0], self.stamp, time.monotonic())
        if obs is None:
            return None
        self.c.latest = None
        decision = self.c.control(obs, time.monotonic())
        self.decisions.append(decision)
        if decision.reset and self.answer_resets:
            self.stamp += 1_000_000  # the service answers a millisecond later
            self.c.reset_finished(True, "reset", time.monotonic())
        return decision

    def run(self, steps: int) -> list[Decision]:
        return [d for d in (self.state(0.001 * (i % 5)) for i in range(steps)) if d is not None]


def make_controller(bundle: Path, **settings: object) -> Controller:
    """A controller on `bundle`; no resets between episodes unless `reset` is given."""
    c = Controller(ControllerSettings(**{"reset": "none", **settings}), Worker())
    c.start_with(bundle)
    return c


def _wait_for_worker(c: Controller, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while c.worker.busy and time.monotonic() < end:
        time.sleep(0.01)
        c.collect()


def test_explore_builds_every_session_before_control_and_cycles_policies_per_episode(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="explore", horizon=5, reset="service")
    assert sorted(c.base.bundle.explore_cache) == list(range(c.base.manifest["n_explore"]))  # warmed at start
    decisions = Robot(c).run(30)
    records = [d.transition for d in decisions if d.transition is not None]
    resets = [d for d in decisions if d.reset]
    assert len(resets) == c.counts["resets"] == c.counts["episodes"] + 1 >= 5  # one before the first episode
    first = [r for r in records if r.episode_id == records[0].episode_id]
    assert [r.step for r in first] == list(range(5)) and first[-1].truncated
    assert all(np.array_equal(a.next_obs, b.obs) for a, b in zip(first, first[1:]))  # a chain of steps
    used = [records[i].policy_id for i in range(0, len(records), 5)]
    assert used[:3] == ["explore0", "explore1", "explore0"]


def test_a_non_finite_policy_output_gives_the_safe_command_and_control_goes_on(pendulum_bundle: Path,
                                                                                 tmp_path: Path) -> None:
    meta = load(pendulum_bundle)
    explore = {k: v.copy() for k, v in meta.bundle.explore_params.items()}
    explore["log_std"][:] = 100.0  # exp(100) overflows float32: every sampled action is infinite
    bad = bundle_variant(pendulum_bundle, tmp_path / "nan", explore_params=explore)
    c = make_controller(bad, mode="explore", horizon=5)
    decisions = Robot(c).run(10)
    assert len(decisions) == 10 and all(d.fault and "non-finite" in d.fault for d in decisions)
    assert all(d.command is not None and np.array_equal(d.command, [0.0]) for d in decisions)
    assert c.counts["faults"] == 10 and c.counts["transitions"] == 0  # no transition spans a fault
    assert c.status()["state"] == "safe"


def test_a_reward_function_that_raises_or_returns_nonsense_is_a_fault_not_a_crash(pendulum_bundle: Path,
                                                                                    tmp_path: Path) -> None:
    code = (pendulum_bundle / "reward.py").read_text() + (
        "\n_n = 0\n_good = inverted_pendulum_reward\n"
        "def inverted_pendulum_reward(obs, act, next_obs):\n"
        "    global _n\n    _n += 1\n"
        "    if _n % 7 == 0:\n        raise RuntimeError('sensor table missing')\n"
        "    if _n % 7 == 3:\n        return [1.0, 2.0]\n"
        "    return _good(obs, act, next_obs)\n")
    bad = bundle_variant(pendulum_bundle, tmp_path / "reward", reward_code=code)
    c = make_controller(bad, mode="explore", horizon=50)
    decisions = Robot(c).run(40)
    faults = [d for d in decisions if d.fault]
    assert faults and any("sensor table missing" in d.fault for d in faults)
    assert any("shape (2,)" in d.fault for d in faults)
    assert all(np.array_equal(d.command, [0.0]) for d in faults)
    records = [d.transition for d in decisions if d.transition is not None]
    assert len(records) >= 10 and all(np.isfinite(r.reward) for r in records)
    by_episode_step = {(r.episode_id, r.step) for r in records}
    assert len(by_episode_step) == len(records)  # steps never repeat across a fault


def test_deploy_adapts_on_the_worker_and_swaps_at_the_next_episode(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="deploy", horizon=5, adapt_episodes=2, adapt_max_kl=1e9)
    robot = Robot(c)
    robot.run(12)  # two episodes of the meta-policy, then the adaptation is submitted
    _wait_for_worker(c)
    assert c.counts["adaptations"] == 1 and c.pending is not None and c.policy is c.base
    robot.run(7)
    assert c.policy.name == "meta+adapted"
    robot.run(6)  # an episode of the adapted policy ends: ~/status shows the returns before and after
    effect = {k: v for k, v in c.status().items() if "adaptation" in k and k.startswith(("return", "episodes"))}
    meta, adapted = c.returns["meta"], c.returns["meta+adapted"]
    assert effect == {"return_before_adaptation": pytest.approx(np.mean(meta)), "episodes_before_adaptation": len(meta),
                      "return_after_adaptation": pytest.approx(np.mean(adapted)),
                      "episodes_after_adaptation": len(adapted)} and len(adapted) >= 1


def test_several_adaptation_steps_each_under_the_bound(pendulum_bundle: Path) -> None:
    """adapt_steps 3: three steps on the same episodes, reported as one adapted policy that moved further from
    the meta-policy than one step does."""
    one = make_controller(pendulum_bundle, mode="deploy", horizon=5, adapt_episodes=2, adapt_max_kl=1e9)
    three = make_controller(pendulum_bundle, mode="deploy", horizon=5, adapt_episodes=2, adapt_max_kl=1e9,
                            adapt_steps=3)
    for c in (one, three):
        Robot(c).run(12)
        _wait_for_worker(c)
        assert c.counts["adaptations"] == 1 and c.pending is not None and c.pending.name == "meta+adapted"
    assert three.pending.kl_from_parent > one.pending.kl_from_parent > 0
    with pytest.raises(ValueError, match="adapt_steps must be >= 1"):
        ControllerSettings(adapt_steps=0)


def test_deploy_step_scaled_to_the_kl_asked_for(pendulum_bundle: Path) -> None:
    """adapt_kl: the step is scaled to that KL(pre || post) on the step's own states instead of the bundle's
    (a bundle meta-trained with a fixed step size may move the policy too little to matter on the robot)."""
    for target in (0.01, 0.1):
        c = make_controller(pendulum_bundle, mode="deploy", horizon=5, adapt_episodes=2, adapt_max_kl=1e9,
                            adapt_kl=target)
        Robot(c).run(12)
        _wait_for_worker(c)
        assert c.counts["adaptations"] == 1 and c.pending is not None
        assert c.pending.kl_from_parent == pytest.approx(target, rel=0.05)
    with pytest.raises(ValueError, match="adapt_kl must be >= 0"):
        ControllerSettings(adapt_kl=-0.1)


def test_deploy_adapts_through_the_models_or_refuses_and_keeps_acting(pendulum_bundle: Path) -> None:
    """adapt_through models: the bundle's ensemble corrected to the fresh episodes, steps on imagined rollouts;
    an adapted policy (with what the correction measured) or a refusal, never a fault."""
    c = make_controller(pendulum_bundle, mode="deploy", horizon=5, adapt_episodes=2, adapt_max_kl=1e9, adapt_steps=2,
                        adapt_through="models")
    robot = Robot(c)
    robot.run(12)
    _wait_for_worker(c)
    assert c.counts["adaptations"] + c.counts["adaptations_refused"] == 1 and c.counts["adaptations_failed"] == 0
    if c.counts["adaptations"]:
        info = c.pending.adapt_info
        assert 1 <= info["steps"] <= 2 and info["imagined_return_after"] > info["imagined_return_before"]
        assert info["model_error_after"] <= info["model_error_before"]
    assert all(np.isfinite(d.command).all() for d in robot.run(10))
    with pytest.raises(ValueError, match="adapt_through 'model' is not one of episodes, models"):
        ControllerSettings(adapt_through="model")


def test_online_rounds_judged_by_the_robot_revert_a_worse_policy_and_keep_a_better(pendulum_bundle: Path) -> None:
    """adapt_rounds 2, adapt_judge: the first adapted policy's episode falls (the pole tilted past the task's
    0.2 rad: terminated at once) and scores below the meta-policy's: reverted; the meta-policy runs again, is
    adapted again, and that policy's episode scores as well as the meta-policy's: kept, and no further round."""
    c = make_controller(pendulum_bundle, mode="deploy", horizon=5, adapt_episodes=1, adapt_max_kl=1e9,
                        adapt_rounds=2, adapt_judge=True)
    robot = Robot(c)
    seen: list[str] = []
    fall = {"meta+adapted"}

    def episodes(n: int) -> None:
        for _ in range(n):
            start = c.counts["episodes"]
            seen.append(c.policy.name)
            while c.counts["episodes"] == start:
                hinge = 0.5 if c.policy.name in fall else 0.01
                robot.stamp += 10_000_000
                obs = c.on_state(NAMES, [0.0, hinge], [0.0, 0.0], robot.stamp, time.monotonic())
                if obs is not None:
                    c.control(obs, time.monotonic())
            _wait_for_worker(c)

    episodes(7)  # each adapted policy comes in at the end of the episode during which it was computed
    assert seen == ["meta", "meta", "meta+adapted", "meta", "meta", "meta+adapted2", "meta+adapted2"], seen
    assert c.counts["adaptations"] == 2 and c.counts["adaptations_reverted"] == 1 and c.online.finished
    assert c.returns["meta+adapted"] == [0.0] and c.returns["meta+adapted2"] == [5.0, 5.0]
    with pytest.raises(ValueError, match="adapt_rounds must be >= 1"):
        ControllerSettings(adapt_rounds=0)


def test_a_failing_adaptation_keeps_the_meta_policy_acting(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="deploy", horizon=5, adapt_episodes=1)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    c.base.adapt = broken  # type: ignore[method-assign]
    robot = Robot(c)
    robot.run(8)
    _wait_for_worker(c)
    assert c.counts["adaptations_failed"] == 1 and c.counts["adaptations"] == 0 and not c.adapting
    decisions = robot.run(10)
    assert c.policy is c.base and not any(d.fault for d in decisions)
    _wait_for_worker(c)
    assert c.counts["adaptations_failed"] >= 2  # it tries again with the next fresh episodes


def test_an_adaptation_of_a_replaced_bundle_is_dropped(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="deploy", horizon=5, adapt_episodes=1, adapt_max_kl=1e9)
    robot = Robot(c)
    robot.run(6)
    c.install(load(pendulum_bundle))  # a new bundle while the adaptation is in flight
    _wait_for_worker(c)
    assert c.counts["adaptations"] == 0 and c.pending is not None and c.pending.name == "meta"


def test_received_bundles_are_loaded_on_the_worker_and_refused_when_altered(pendulum_bundle: Path,
                                                                               tmp_path: Path) -> None:
    c = make_controller(pendulum_bundle, mode="explore", horizon=5)
    manifest = (pendulum_bundle / "manifest.json").read_text()
    files = [(name, (pendulum_bundle / name).read_bytes()) for name in json.loads(manifest)["files"]]  # models too
    c.receive(ReceivedBundle("good", files, manifest, time.time_ns()), tmp_path / "b0")
    tampered = [(n, d + b"\0" if n == "params.npz" else d) for n, d in files]
    c.receive(ReceivedBundle("tampered", tampered, manifest, time.time_ns()), tmp_path / "b1")
    other_code = [(n, b"def f(): pass\n" if n == "reward.py" else d) for n, d in files]
    rehashed = json.loads(manifest)
    c.receive(ReceivedBundle("other code", other_code, json.dumps(rehashed), time.time_ns()), tmp_path / "b2")
    _wait_for_worker(c)
    assert c.counts["bundles_loaded"] == 2 and c.counts["bundles_refused"] == 2
    assert len(c.deliveries_ms) == 1 and sorted(c.base.bundle.explore_cache) == [0, 1]  # warmed on the worker


def test_stale_states_give_the_safe_command_and_old_stamps_are_refused(pendulum_bundle: Path) -> None:
    c = make_controller(pendulum_bundle, mode="deploy", horizon=50)
    robot = Robot(c)
    robot.run(3)
    assert c.on_watchdog(time.monotonic(), lockstep=False) is None  # fresh
    later = time.monotonic() + 10 * c.period
    stale = c.on_watchdog(later, lockstep=False)
    assert stale is not None and np.array_equal(stale.command, [0.0]) and c.prev is None
    assert c.on_watchdog(later, lockstep=True) is None  # lock-step: nothing to hold
    assert c.on_state(NAMES, [0.0, 0.0], [0.0, 0.0], robot.stamp - 1, later) is None
    assert c.counts["bad_states"] == 1


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="mode 'dance'"):
        ControllerSettings(mode="dance")
    with pytest.raises(ValueError, match="watchdog_periods"):
        ControllerSettings(watchdog_periods=0.0)
    with pytest.raises(ValueError, match="speedup must be > 0"):
        ControllerSettings(speedup=0.0)


def test_a_simulator_at_a_speedup_divides_the_control_period(pendulum_bundle: Path) -> None:
    nominal = make_controller(pendulum_bundle).period
    fast = make_controller(pendulum_bundle, speedup=4.0)
    assert fast.period == pytest.approx(nominal / 4) and fast.watchdog.timeout == pytest.approx(2 * nominal / 4)
    assert make_controller(pendulum_bundle, control_period=0.1, speedup=2.0).period == pytest.approx(0.05)


def test_a_driver_slower_than_the_control_rate_is_named_once_and_empty_ticks_are_counted(
        pendulum_bundle: Path) -> None:
    said: list[str] = []
    c = Controller(ControllerSettings(mode="deploy", control_period=0.02, reset="none"), Worker(),
                   log=lambda level, message: said.append(message))
    c.start_with(pendulum_bundle)
    now, stamp = 100.0, 0
    for _ in range(100):  # a driver at 25 Hz against a 50 Hz control loop
        now += 0.04
        stamp += 40_000_000
        c.on_state(NAMES, [0.0, 0.01], [0.0, 0.0], stamp, now)
        for tick in (0.0, 0.02):  # two control ticks per state: the second finds nothing new
            c.on_tick(now + tick)
    rate = [m for m in said if "Hz" in m]
    assert len(rate) == 1 and "25.0 Hz" in rate[0] and "50.0 Hz" in rate[0], said  # both figures, once
    status = c.status()
    assert status["state_rate_hz"] == pytest.approx(25.0) and 95 <= status["ticks_without_state"] <= 101, status


def test_missed_periods_count_commands_the_robot_went_without(pendulum_bundle: Path) -> None:
    """Timer: a late tick that finds a state waiting misses periods; a late one with nothing to act on (before
    the first state) does not. On states: a gap between states outside a reset misses periods."""
    timer = make_controller(pendulum_bundle, reset="none", trigger="timer")
    p = timer.period
    timer.on_tick(100.0)
    timer.on_tick(100.0 + 5 * p)  # late, but no state has come yet: no command was held back
    assert timer.counts["missed_periods"] == 0 and timer.counts["ticks_without_state"] == 2
    timer.on_state(NAMES, [0.0, 0.01], [0.0, 0.0], 1, 100.0 + 8.5 * p)
    timer.on_tick(100.0 + 9 * p)  # 4 periods after the last tick, a state waiting: 3 missed
    assert timer.counts["missed_periods"] == 3
    states = make_controller(pendulum_bundle, reset="none")
    now, stamp = 100.0, 0
    for gap in [1.0] * 40 + [4.0, 1.0, 1.0]:  # at the control rate, then one state 4 periods late
        now, stamp = now + gap * p, stamp + 1
        states.on_state(NAMES, [0.0, 0.01], [0.0, 0.0], stamp, now)
    assert states.trigger == "state" and states.counts["missed_periods"] == 3


def test_a_driver_at_the_control_rate_is_acted_on_as_each_state_arrives(pendulum_bundle: Path) -> None:
    said: list[str] = []
    c = Controller(ControllerSettings(mode="deploy", reset="none"), Worker(), log=lambda level, m: said.append(m))
    c.start_with(pendulum_bundle)
    now, stamp = 100.0, 0
    assert not c.acts_on_states and c.trigger == "timer"  # until the rate is measured
    for _ in range(40):  # 25 Hz, the bundle's control rate
        now += 0.04
        stamp += 40_000_000
        c.on_state(NAMES, [0.0, 0.01], [0.0, 0.0], stamp, now)
    assert c.acts_on_states and c.status()["trigger"] == "state"
    assert c.on_tick(now + 0.01) is None and c.counts["ticks"] == 0
    assert sum("acting on each state" in m for m in said) == 1
    timer = Controller(ControllerSettings(mode="deploy", reset="none", trigger="timer"), Worker())
    timer.start_with(pendulum_bundle)
    for i in range(40):
        timer.on_state(NAMES, [0.0, 0.01], [0.0, 0.0], (i + 1) * 40_000_000, 100.0 + 0.04 * i)
    assert not timer.acts_on_states and timer.trigger == "timer"
