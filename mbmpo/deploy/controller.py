"""The policy node's logic without ROS: episodes, transitions, explore/deploy selection, bundle and
adaptation hand-off, and every safe-command decision.

A `Controller` is driven by its owner's control thread: `on_state` for each robot state, `on_tick` for
each control period (timer control), `on_watchdog` a few times per period, `collect` when the worker has
finished something. Each returns a `Decision`: the command to send, the transition to publish, whether the
episode ended (ask the robot for a reset), and the runtime fault, if one forced the safe command.

Modes: `explore` cycles the K adapted policies of the bundle, one per episode (MB-MPO's data collection);
`deploy` runs the meta-policy for `adapt_episodes` episodes, adapts it with ONE gradient step on the
worker, and swaps the adapted policy in at the next episode boundary; `adapt_rounds` > 1 goes on adapting
the policy in use, and `adapt_judge` keeps an adapted policy only if its own episodes score at least its
parent's (`mbmpo.deploy.online`).

Resets (`reset`, see `mbmpo.deploy.reset` and `mbmpo.deploy.reset_cycle`): between episodes, and before the
first, the robot is reset through a service, driven home, held for the operator, or not reset at all; states
that arrive meanwhile are not acted on, and the episode starts from the first state that qualifies, so no
transition spans a reset.

Faults: a runtime error inside a decision (a non-finite action, a reward function that raises or returns
nonsense) never propagates: the decision is the safe command, `faults` counts it, and no transition spans
it. Slow work (bundle loading and warming every exploration session, adaptation) runs on a `Worker`; its
results are applied by `collect` on the control thread, so nothing the control loop reads is written by
another thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbmpo.config import ADAPT_THROUGH
from mbmpo.deploy.contract import ObservationBuilder, ObservationError
from mbmpo.deploy.online import OnlineAdaptation, Request
from mbmpo.deploy.rate import RateMonitor
from mbmpo.deploy.reset import RESET_MODES
from mbmpo.deploy.reset_cycle import ResetCycle, home_spec
from mbmpo.deploy.safety import ActionGuard, Mode, Watchdog
from mbmpo.deploy.transitions import TransitionRecord
from mbmpo.deploy.trust import CodeAllowlist, task_code_digest
from mbmpo.deploy.worker import JobResult, Worker
from mbmpo.runtime import AdaptationRefused, BundleError, Policy, load

MODES = ("explore", "deploy")
TRIGGERS = ("auto", "timer", "state")
Log = Callable[[str, str], None]  # (level: info | warning | error, message)


def _python_log(level: str, message: str) -> None:
    getattr(logging.getLogger("mbmpo.controller"), level)(message)


@dataclass(frozen=True)
class ControllerSettings:
    """What the policy node's parameters say about control (0 values take the bundle's)."""

    mode: str = "explore"  # explore | deploy
    adapt_episodes: int = 2  # deploy: episodes of fresh data per adaptation
    adapt_steps: int = 1  # deploy: gradient steps on those episodes, each from the last and under the KL bound
    adapt_max_kl: float = 0.0  # deploy: KL bound of an adaptation; 0 takes the bundle's
    adapt_kl: float = 0.0  # deploy: the step scaled to this KL(pre || post) (on the episodes: adapt_steps' total;
    # through the models: each step's); 0 takes the bundle's step (training's)
    adapt_through: str = "episodes"  # deploy: step on the fresh episodes, or through the bundle's models corrected to them
    adapt_rounds: int = 1  # deploy: adaptations in all, each of the policy in use after its adapt_episodes episodes
    adapt_judge: bool = False  # deploy: an adapted policy whose episodes score below its parent's is reverted
    adapt_margin: float = 0.0  # deploy, with adapt_judge: kept only if it scores this many standard errors higher
    deterministic: bool = False  # act with the mean action
    horizon: int = 0  # episode length; 0 takes the bundle's
    control_period: float = 0.0  # seconds; 0 takes the bundle's
    speedup: float = 1.0  # a simulator running this many times faster than real time: the period is divided by it
    watchdog_periods: float = 2.0  # states older than this many periods are stale
    lockstep: bool = False  # act on each state (a simulator that steps on each command): no rate to keep
    trigger: str = "auto"  # act on: auto (each state when the driver streams at the control rate) | timer | state
    reset: str = "service"  # service | home | operator | none (mbmpo.deploy.reset)
    home: str = ""  # reset home: 'joint=position,...' ('' takes the bundle's, from the task YAML)
    seed: int = 0  # action noise
    robot: str = ""  # which robot of a fleet: stamped on every transition ("" for one robot)
    explore_offset: int = 0  # explore: the first of the K adapted policies (robot i of a fleet starts at i)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode '{self.mode}' is not explore or deploy")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger '{self.trigger}' is not one of {', '.join(TRIGGERS)}")
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset '{self.reset}' is not one of {', '.join(RESET_MODES)}")
        if self.home and self.reset != "home":
            raise ValueError(f"home is given but reset is '{self.reset}', not home")
        if self.explore_offset < 0:
            raise ValueError(f"explore_offset must be >= 0, got {self.explore_offset}")
        for name in ("adapt_episodes", "adapt_steps", "adapt_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.adapt_through not in ADAPT_THROUGH:
            raise ValueError(f"adapt_through '{self.adapt_through}' is not one of {', '.join(ADAPT_THROUGH)}")
        for name in ("horizon", "control_period", "adapt_max_kl", "adapt_kl", "adapt_margin"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.speedup > 0:
            raise ValueError(f"speedup must be > 0, got {self.speedup}")
        if not self.watchdog_periods > 0:
            raise ValueError(f"watchdog_periods must be > 0, got {self.watchdog_periods}")


@dataclass(frozen=True)
class Decision:
    """What the owner does now."""

    command: np.ndarray | None  # A: the command to send (None: send nothing)
    transition: TransitionRecord | None = None  # the step that ended in this state, to publish
    reset: bool = False  # call the robot's reset service now; answer with `Controller.reset_finished`
    fault: str | None = None  # the runtime fault that forced the safe command


@dataclass(frozen=True)
class ReceivedBundle:
    """A bundle as it arrives over the wire: files (name, bytes), manifest text and publication stamp."""

    version: str
    files: Sequence[tuple[str, bytes]]
    manifest_json: str
    stamp_ns: int


class Controller:
    """Episodes, policies and safe commands for one robot (see the module docstring)."""

    def __init__(self, settings: ControllerSettings, worker: Worker, log: Log = _python_log,
                 clock_ns: Callable[[], int] = time.time_ns):
        self.settings, self.worker, self.log, self.clock_ns = settings, worker, log, clock_ns
        self.rng = np.random.default_rng(settings.seed)
        self.state_mode = Mode.IDLE
        self.base: Policy | None = None  # the meta-policy of the current bundle
        self.policy: Policy | None = None  # what acts now
        self.pending: Policy | None = None  # swapped in at the next episode boundary
        self.period = settings.control_period / settings.speedup
        self.horizon = settings.horizon
        self.builder: ObservationBuilder | None = None
        self.guard: ActionGuard | None = None
        self.watchdog = Watchdog(1.0)
        self.rate = RateMonitor()
        self.trusted = CodeAllowlist()  # the reward code received bundles may run: only what the user named
        self.recorder_present = True  # the owner clears it while nothing records transitions (explore)
        self.counts = {"transitions": 0, "episodes": 0, "ticks": 0, "ticks_without_state": 0, "missed_periods": 0,
                       "bad_states": 0,
                       "bundles_loaded": 0, "bundles_refused": 0, "adaptations": 0, "adaptations_refused": 0,
                       "adaptations_failed": 0, "adaptations_reverted": 0, "faults": 0, "resets": 0,
                       "reset_failures": 0}
        self.last_fault: str | None = None
        self.latencies: list[float] = []
        self.deliveries_ms: list[float] = []  # bundle publication -> installed, per received bundle
        self.returns: dict[str, list[float]] = {}
        # episode ids unique across restarts (microseconds at start): a restarted node's episodes are new
        # episodes to the data node and the trainer, not repeats of the old ones
        self.episode_id, self.step, self.episode_return = time.time_ns() // 1000, 0, 0.0
        self.piece_step = 0  # the step within the recorded piece: a gap inside an episode starts a new piece
        self.pieces: list[tuple[np.ndarray, np.ndarray]] = []  # deploy: the episode's pieces before its last gap
        self.explore_index = 0
        self.prev: tuple[np.ndarray, np.ndarray] | None = None  # (obs, applied action) awaiting its next state
        self.online: OnlineAdaptation | None = None  # deploy: the current bundle's adaptation state
        self.episode_obs: list[np.ndarray] = []
        self.episode_act: list[np.ndarray] = []
        self.adapting = False
        self.latest: np.ndarray | None = None  # the newest accepted state not acted on yet (timer control)
        self.event_driven = settings.trigger == "state"  # act on each state as it arrives (else on the timer)
        self.last_stamp: int | None = None
        self.last_tick: float | None = None
        self.last_arrival: float | None = None  # the last state's arrival outside a reset (event-driven misses)
        # logs and reads the clock through the controller: an owner (or a test) may set `log`, `clock_ns` later
        self.resets = ResetCycle(settings.reset, settings.lockstep, self.counts,
                                 lambda level, message: self.log(level, message), lambda: self.clock_ns())
        self.short_episodes = 0  # episodes of at most one step in a row
        self.newest: np.ndarray | None = None  # the newest accepted state (an episode may start from it)

    # ---- bundles ----------------------------------------------------------------------------------
    def trust_task(self, task: str) -> None:
        """Accept received bundles whose reward code is the registered task's (or task YAML's)."""
        self.trusted.allow(task_code_digest(task), f"task {task}")

    def start_with(self, path: str | Path) -> None:
        """Load, warm and install a bundle from disk now (at start, before any control). Raises BundleError."""
        meta = self._prepare(load(path))
        self.trusted.allow(meta.manifest["files"]["reward.py"], f"bundle {path}")
        self.install(meta)

    def receive(self, bundle: ReceivedBundle, folder: Path) -> None:
        """A bundle from the network: written, trust- and sha256-checked, loaded and warmed on the worker;
        installed by `collect` (or refused there, keeping the current policy)."""
        layout = None if self.base is None else list(self.base.manifest["obs_names"])
        self.worker.submit("bundle", lambda: self._load_received(bundle, folder, layout),
                           context=(bundle.version, bundle.stamp_ns))

    def _load_received(self, bundle: ReceivedBundle, folder: Path, layout: list[str] | None) -> Policy:
        """Worker thread: files -> a warmed meta-policy. Raises BundleError/OSError/ValueError."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in bundle.files:
            if "/" in name or name.startswith("."):
                raise BundleError(f"file name {name!r} is not allowed")
            (folder / name).write_bytes(data)
        (folder / "manifest.json").write_text(bundle.manifest_json)
        self.trusted.check(folder)  # before load() imports reward.py
        meta = load(folder)
        if layout is not None and meta.manifest["obs_names"] != layout:
            raise BundleError("observation layout differs from the running policy's")
        return self._prepare(meta)

    def _prepare(self, meta: Policy) -> Policy:
        """Build and prime every session the control loop will use (explore: all K exploration policies;
        deploy: the meta-policy), so that no first run allocates on the control path."""
        return meta.warm() if self.settings.mode == "explore" else meta.prime()

    def install(self, meta: Policy) -> None:
        """Make a verified, warmed bundle current: contract, limits, period; it acts from the next episode."""
        m = meta.manifest
        self.builder = ObservationBuilder(m["obs_names"])
        self.guard = ActionGuard(np.asarray(m["act_low"]), np.asarray(m["act_high"]))
        self.horizon = self.settings.horizon or int(m["horizon"])
        if not self.period:
            self.period = float(m["control_period_s"]) / self.settings.speedup
        self.watchdog.timeout = self.settings.watchdog_periods * self.period
        if self.settings.reset == "home":
            self.resets.home = home_spec(self.settings.home, m)
        self.base = meta
        self.explore_index = self.settings.explore_offset
        st = self.settings
        self.online = OnlineAdaptation(meta, st.adapt_episodes, st.adapt_rounds, st.adapt_judge,
                                       st.adapt_through, st.adapt_margin) if st.mode == "deploy" else None
        first = self.policy is None
        self.pending = self.next_policy()
        if first:  # the first episode starts like every other: after a reset
            self.policy, self.pending = self.pending, None
            self.state_mode = Mode.RESET
            self.resets.begin(time.monotonic())
        self.counts["bundles_loaded"] += 1
        self.log("info", f"policy {m['policy_version']} ready ({m['n_explore']} exploration sets)")

    def next_policy(self) -> Policy:
        assert self.base is not None
        if self.settings.mode == "explore":
            k = self.explore_index % self.base.manifest["n_explore"]
            self.explore_index += 1
            return self.base.exploration(k)  # built by `_prepare`: a cache lookup
        return self.base

    def collect(self) -> None:
        """Apply what the worker finished: install bundles, take adaptations, count refusals and failures."""
        for result in self.worker.drain():
            if result.kind == "bundle":
                self._bundle_done(result)
            elif result.kind == "adapt":
                self._adaptation_done(result)

    def _bundle_done(self, result: JobResult) -> None:
        version, published_ns = result.context
        if result.error is not None:
            self.counts["bundles_refused"] += 1
            self.log("error", f"bundle {version!r} refused: {result.error}; keeping the current policy")
            return
        self.install(result.value)
        self.deliveries_ms.append((time.time_ns() - published_ns) / 1e6)

    def _adaptation_done(self, result: JobResult) -> None:
        self.adapting = False
        online, err = self.online, result.error
        if isinstance(err, (AdaptationRefused, ValueError)):
            self.counts["adaptations_refused"] += 1
            self.log("warning", f"adaptation refused: {err}")
        elif err is not None:
            self.counts["adaptations_failed"] += 1
            self.log("error", f"adaptation failed: {type(err).__name__}: {err}; keeping the policy in use")
        if online is None or result.context is not online:  # a bundle that arrived meanwhile: stale
            return
        if err is not None:
            online.adapted(None)
        else:
            adapted, seconds = result.value
            online.adapted(adapted)
            self.pending = adapted
            self.counts["adaptations"] += 1
            info = adapted.adapt_info
            through = (f", {info['steps']:.0f} step(s) in the models corrected to the robot (model error "
                       f"{info['model_error_before']:.3g} -> {info['model_error_after']:.3g}, imagined return "
                       f"{info['imagined_return_before']:.1f} -> {info['imagined_return_after']:.1f})") if info else ""
            self.log("info", f"adapted in {1e3 * seconds:.1f} ms (KL {adapted.kl_from_parent:.2e}{through}); "
                             f"swapping at the next episode")

    # ---- states and control -----------------------------------------------------------------------
    def on_state(self, names: Sequence[str], positions: Sequence[float], velocities: Sequence[float],
                 stamp_ns: int, now: float) -> np.ndarray | None:
        """Accept a robot state: the observation, or None (a repeat, no policy yet, or refused and counted)."""
        if stamp_ns == self.last_stamp or self.builder is None:
            return None  # a re-sent state already used, or no policy yet
        if self.last_stamp is not None and stamp_ns < self.last_stamp:  # late or replayed: never act on the past
            self._bad_state("stamped before the last state used")
            return None
        try:
            obs = self.builder.build(names, positions, velocities)
        except ObservationError as err:
            self._bad_state(str(err))
            return None
        self.last_stamp = stamp_ns
        self.newest = obs
        self.resets.see_joints(names, positions, velocities)
        self.watchdog.feed(now)
        if self.resets.phase is None:
            self.rate.feed(now)
            if self.event_driven:  # acting on states: a gap between them is periods without a command
                self._count_missed(self.last_arrival, now)
            self.last_arrival = now
        else:  # a driver may publish extra states while it resets: not its streaming rate
            self.rate.gap()
            self.last_arrival = None
        mismatch = None if self.settings.lockstep else self.rate.mismatch(self.period)
        if mismatch:
            self.log("warning", mismatch)
        if self.settings.trigger == "auto" and not self.settings.lockstep:
            # hysteresis: within 10% to start acting on states, beyond 25% to go back to the timer (a loaded
            # machine's jitter made a 25 Hz driver flap between 22 and 28 Hz)
            matched = self.rate.matches(self.period, 0.25 if self.event_driven else None)
            if matched is not None and matched != self.event_driven:
                self.event_driven = matched
                self.log("info", f"robot states at {self.rate.hz:.1f} Hz "
                                 f"{'match' if matched else 'no longer match'} the control rate: acting on "
                                 f"{'each state as it arrives' if matched else 'the control timer'}")
        self.latest = obs
        return obs

    def _bad_state(self, why: str) -> None:
        """Count and log a refused state."""
        self.counts["bad_states"] += 1
        self.log("warning", f"state rejected: {why}")
        return None

    @property
    def acts_on_states(self) -> bool:
        """Whether the owner calls `control` on each accepted state (lock-step, or event-driven) rather than
        on each tick."""
        return self.settings.lockstep or self.event_driven

    @property
    def trigger(self) -> str:
        return "lockstep" if self.settings.lockstep else "state" if self.event_driven else "timer"

    def _count_missed(self, since: float | None, now: float) -> None:
        """Count the control periods missed between two controls `since` and `now` (s) more than 1.5
        periods apart: periods the robot went without a fresh command."""
        if since is not None and self.period:
            late = (now - since) / self.period - 1.0
            if late > 0.5:
                self.counts["missed_periods"] += int(round(late))

    def on_tick(self, now: float) -> Decision | None:
        """Timer control: act on the newest fresh state. A tick later than 1.5 periods that finds a state
        waiting counts the periods it missed (`ticks` is the denominator of the timer's miss rate; a late tick
        with nothing to act on, as before the robot's first state, kept no command back). Nothing while
        acting on states."""
        if self.event_driven:
            self.last_tick = None
            return None
        self.counts["ticks"] += 1
        since, self.last_tick = self.last_tick, now
        if self.latest is None or self.watchdog.stale(now):
            self.counts["ticks_without_state"] += 1
            return None
        self._count_missed(since, now)
        obs, self.latest = self.latest, None
        return self.control(obs, now)

    def on_watchdog(self, now: float, lockstep: bool) -> Decision | None:
        """Stale states: the safe command within one control period. In lock-step the robot (a simulator)
        moves only on commands, so there is nothing to hold and a command would step it: none is sent."""
        if self.resets.retry_due(now):
            return Decision(None, reset=True)  # the reset service failed or was missing: ask again
        if lockstep or self.policy is None or not self.watchdog.stale(now):
            return None
        if self.state_mode is not Mode.SAFE:
            self.log("warning", "robot states stale: sending the safe command")
            self._break_chain()  # the applied action is unknown: no transition across the gap
        self.state_mode = Mode.SAFE
        return Decision(self.safe_command())

    def safe_command(self) -> np.ndarray | None:
        return None if self.guard is None else self.guard.safe.copy()

    def control(self, obs: np.ndarray, received: float) -> Decision:
        """The decision for a fresh state. A runtime fault gives the safe command, never an exception; a
        transition already scored is still handed over, and none spans the fault."""
        if self.policy is None or self.guard is None:
            return Decision(None)
        if not self.recorder_present:
            # transitions published before the data node matched are never delivered (volatile QoS):
            # explore only while something records
            if self.state_mode is not Mode.SAFE:
                self.log("warning", "no data node subscribes to transitions: holding the safe command")
            self.state_mode = Mode.SAFE
            self._break_chain()
            return Decision(self.safe_command())
        transition = None
        try:
            if self.prev is not None:
                transition = self._transition(obs)
                if transition.terminated or transition.truncated:
                    self._end_episode(obs)
                    self.resets.begin(received)
            if self.resets.phase is not None:
                command, call = self.resets.step(received, self.last_stamp, self.guard)
                if self.resets.phase is not None:  # still resetting: nothing acts, no transition spans it
                    self.state_mode = Mode.RESET
                    return Decision(command, transition, reset=call)
            self.state_mode = Mode.POLICY
            action = self.guard(self.policy.act(obs, deterministic=self.settings.deterministic, rng=self.rng))
        except Exception as err:
            self.counts["faults"] += 1
            self.last_fault = f"{type(err).__name__}: {err}"
            self.state_mode = Mode.SAFE
            self._break_chain()
            return Decision(self.safe_command(), transition, fault=self.last_fault)
        self.latencies.append(time.monotonic() - received)
        if len(self.latencies) > 5000:
            del self.latencies[:2500]
        self.prev = (obs, action.astype(np.float32))
        self.episode_obs.append(obs)
        self.episode_act.append(self.prev[1])
        return Decision(action, transition)

    def _break_chain(self) -> None:
        """A gap inside an episode (stale states, a fault): the next transition cannot start where the last one
        ended, so what follows is recorded as a new piece (a new episode id from step 0). The episode itself,
        its horizon and its return, go on."""
        if self.prev is not None and self.piece_step > 0:
            self.episode_id += 1
            self.piece_step = 0
            # the last action's outcome is unknown: the piece is the steps recorded so far
            self.pieces.append((np.stack(self.episode_obs), np.stack(self.episode_act[:-1])))
        self.episode_obs, self.episode_act = [], []
        self.prev = None

    def _transition(self, obs: np.ndarray) -> TransitionRecord:
        """The step that ends in `obs`, scored by the bundle's reward and termination functions."""
        assert self.prev is not None and self.base is not None and self.policy is not None
        prev_obs, prev_act = self.prev
        bundle = self.base.bundle
        reward = _scalar(bundle.reward_fn(prev_obs, prev_act, obs), "reward")
        terminated = bool(_scalar(bundle.termination_fn(prev_obs, prev_act, obs), "termination")) \
            if bundle.termination_fn else False
        truncated = not terminated and self.step + 1 >= self.horizon
        record = TransitionRecord(self.episode_id, self.piece_step, self.policy.name, prev_obs, prev_act, reward, obs,
                                  terminated, truncated, self.clock_ns(), self.settings.robot)
        self.counts["transitions"] += 1
        self.step += 1
        self.piece_step += 1
        self.episode_return += reward
        return record

    def _end_episode(self, last_obs: np.ndarray) -> None:
        assert self.policy is not None and self.base is not None
        self.episode_obs.append(last_obs)
        self.returns.setdefault(self.policy.name, []).append(self.episode_return)
        self.counts["episodes"] += 1
        self._check_episode_length(self.step)
        if self.episode_act:
            self.pieces.append((np.stack(self.episode_obs), np.stack(self.episode_act)))
        if self.online is not None and self.pieces:
            reverted = self.online.reverted
            request, verdict = self.online.episode_ended(self.policy, self.pieces, self.episode_return)
            if self.online.reverted > reverted:  # the judge sent the parent back
                self.counts["adaptations_reverted"] += 1
                self.pending = self.online.current
            if verdict:
                self.log("warning" if self.online.reverted > reverted else "info", verdict)
            if request is not None:
                self._adapt(request, self.online)
        if self.pending is not None:
            self.policy, self.pending = self.pending, None
        elif self.settings.mode == "explore":
            self.policy = self.next_policy()
        self.episode_id += 1
        self.step, self.piece_step, self.episode_return, self.prev, self.pieces = 0, 0, 0.0, None, []
        self.episode_obs, self.episode_act = [], []

    def _check_episode_length(self, steps: int) -> None:
        """Said once: with reset:=none, episodes of one step in a row mean the robot stays in a terminal
        state (e.g. a pendulum that fell) and the data says nothing; a reset mode is needed."""
        self.short_episodes = self.short_episodes + 1 if steps <= 1 else 0
        if self.short_episodes == 5 and self.settings.reset == "none":
            self.log("warning", "5 episodes in a row ended after one step: with reset none the robot stays where "
                                "it ended (a terminal state?); use reset service, home or operator")

    # ---- resets between episodes (mbmpo.deploy.reset_cycle) ------------------------------------------
    @property
    def reset_phase(self) -> str | None:
        """None in an episode; else the reset's phase (request | after | home | operator)."""
        return self.resets.phase

    def reset_finished(self, ok: bool, message: str, now: float) -> Decision | None:
        """The reset service answered (`ok`) or could not be called (then it is asked again a second later).
        In lock-step the decision for the state at hand, when it may start the episode."""
        return self._start_from_newest(now) if self.resets.finished(ok, message, now) else None

    def operator_go(self, now: float) -> tuple[bool, Decision | None]:
        """The operator says the robot is ready: the episode starts from the next state (lock-step: from the
        state at hand, the decision returned). (False, None) when nothing waits for the operator."""
        if not self.resets.operator_go(self.last_stamp):
            return False, None
        return True, self._start_from_newest(now)

    def _start_from_newest(self, now: float) -> Decision | None:
        """Lock-step: no new state comes before a command, so the newest one, if it qualifies, starts now."""
        if not self.settings.lockstep or self.newest is None or not self.resets.may_start(self.last_stamp):
            return None
        return self.control(self.newest, now)

    def _adapt(self, request: Request, online: OnlineAdaptation) -> None:
        """deploy: ONE adaptation step of the policy in use from fresh episodes (or `adapt_steps`, each from the
        last and under the KL bound: one refused keeps the policy in use), on the worker."""
        max_kl, kl, steps = self.settings.adapt_max_kl or None, self.settings.adapt_kl or None, self.settings.adapt_steps
        rng = np.random.default_rng([self.settings.seed, self.counts["adaptations"] + self.counts["adaptations_refused"]])
        policy, episodes = request.policy, request.episodes

        def job() -> tuple[Policy, float]:
            t0 = time.perf_counter()
            if self.settings.adapt_through == "models":
                adapted = policy.adapt_in_models(episodes, steps=steps, max_kl=max_kl, rng=rng, kl=kl)
            else:
                adapted = policy.adapt(episodes, max_kl=max_kl, kl=kl, steps=steps)
            return adapted.prime(), time.perf_counter() - t0  # primed here: the swap allocates nothing

        self.adapting = True
        self.worker.submit("adapt", job, context=online)

    # ---- reports ----------------------------------------------------------------------------------
    def adaptation_effect(self) -> dict[str, Any]:
        """deploy: the mean return of the meta-policy's episodes (before adaptation) and of the adapted
        policy's (after), over the last 10 of each; None where there is none yet."""
        if self.settings.mode != "deploy" or self.base is None:
            return {}
        before = self.returns.get(self.base.name, [])[-10:]
        after = [g for name, values in self.returns.items() if name.startswith(f"{self.base.name}+adapted")
                 for g in values][-10:]
        return {"return_before_adaptation": _mean(before), "episodes_before_adaptation": len(before),
                "return_after_adaptation": _mean(after), "episodes_after_adaptation": len(after)}

    def status(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies[-2000:]) * 1e3
        return {
            "robot": self.settings.robot, "mode": self.settings.mode, "state": self.state_mode.value,
            "policy": None if self.policy is None else self.policy.name,
            "policy_version": None if self.base is None else self.base.manifest["policy_version"],
            "episode": self.episode_id, "watchdog_trips": self.watchdog.trips,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "bundle_delivery_ms": self.deliveries_ms[-1] if self.deliveries_ms else None,
            "mean_return": {k: float(np.mean(v[-10:])) for k, v in self.returns.items()},
            **self.adaptation_effect(),
            "last_fault": self.last_fault,
            "state_rate_hz": self.rate.hz,
            "reset": self.settings.reset, "resetting": self.resets.phase, "trigger": self.trigger,
            **self.counts,
        }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _scalar(value: Any, what: str) -> float:
    """A reward or termination value as a finite float; raises ValueError naming what it got."""
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"the bundle's {what} function returned shape {arr.shape}, expected one value")
    x = float(arr.reshape(()))
    if not math.isfinite(x):
        raise ValueError(f"the bundle's {what} function returned {x}")
    return x
