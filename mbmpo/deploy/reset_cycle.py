"""Between episodes: the phases of one robot's reset, and when the next episode may start.

A `ResetCycle` is owned by the `Controller` and driven from its control thread. Phases (`phase`):
None (in an episode) | `request` (the reset service is to be called, or was and has not answered) |
`after` (the episode starts from the first state stamped at or after `after_ns`) | `home` (the PD law
drives the joints home) | `operator` (the safe command is held until a person says go). The modes are
described in `mbmpo.deploy.reset`.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import numpy as np

from mbmpo.deploy.reset import HomeSpec
from mbmpo.deploy.safety import ActionGuard
from mbmpo.runtime import BundleError

Log = Callable[[str, str], None]  # (level: info | warning | error, message)
RETRY_S = 1.0  # a failed or missing reset service is asked again this long after


class ResetCycle:
    """One robot's resets in mode `mode` (service | home | operator | none). `counts` is the controller's
    counter table: `resets` and `reset_failures` are kept in it."""

    def __init__(self, mode: str, lockstep: bool, counts: MutableMapping[str, int], log: Log,
                 clock_ns: Callable[[], int]):
        self.mode, self.lockstep, self.counts, self.log, self.clock_ns = mode, lockstep, counts, log, clock_ns
        self.phase: str | None = None
        self.due = False  # a service call to hand out with the next decision
        self.requested_ns = 0  # when the service was last called (wall clock, ns)
        self.after_ns = 0  # the episode starts from the first state stamped at or after this
        self.retry_at: float | None = None  # when to call a failed service again (monotonic)
        self.began = 0.0  # when the robot was sent home / the operator was asked (monotonic)
        self.warned = False  # home: the timeout was reported for this reset
        self.warned_none = False  # none: said once
        self.failures_in_row = 0
        self.home: HomeSpec | None = None  # home: set from the bundle by the controller
        self.joints: tuple[dict[str, float], dict[str, float]] = ({}, {})  # positions, velocities by joint

    def see_joints(self, names: Sequence[str], positions: Sequence[float], velocities: Sequence[float]) -> None:
        """Remember the newest joint state (home mode reads it by joint name)."""
        if self.mode == "home":
            self.joints = (dict(zip(names, map(float, positions))), dict(zip(names, map(float, velocities))))

    def begin(self, now: float) -> None:
        """The episode ended (or the first is about to start): enter the mode's first phase."""
        self.began, self.warned, self.retry_at = now, False, None
        if self.mode == "none":
            if not self.warned_none:
                self.warned_none = True
                self.log("info", "reset none: each episode continues from where the last one ended")
            return
        if self.mode == "service":
            self.phase, self.due = "request", True
        elif self.mode == "home":
            self.phase = "home"
        else:
            self.phase = "operator"
            self.log("info", "episode ready: waiting for the operator (Enter in the mbmpo-bringup terminal, or "
                             "the policy node's ~/start_episode Trigger service)")

    def step(self, now: float, last_stamp: int | None, guard: ActionGuard) -> tuple[np.ndarray | None, bool]:
        """One state between episodes: (the command to send, whether to call the reset service now). Clears
        `phase` when the state at hand may start the episode."""
        if self.phase == "request":
            call, self.due = self.due, False
            if call:
                self.requested_ns = self.clock_ns()
            return None, call
        if self.phase == "after":
            if last_stamp is not None and last_stamp >= self.after_ns:
                self.phase = None
            return None, False
        if self.phase == "home":
            return self._drive_home(now, guard), False
        # operator: hold still (in lock-step a command would step the simulator: send none)
        return (None if self.lockstep else guard.safe.copy()), False

    def _drive_home(self, now: float, guard: ActionGuard) -> np.ndarray | None:
        """home: the bounded PD command toward home, or None (and the phase cleared) once there."""
        assert self.home is not None
        positions, velocities = self.joints
        if self.home.reached(positions, velocities):
            self.phase = None
            self.counts["resets"] += 1
            return None
        if now - self.began > self.home.timeout_s and not self.warned:
            self.warned = True
            errors = {j: round(e, 3) for j, e in self.home.errors(positions, velocities).items()}
            self.log("warning", f"home not reached in {self.home.timeout_s:g} s (errors {errors}): still "
                                f"driving; check the home gains or the robot")
        return self.home.command(positions, velocities, guard.low, guard.high, guard.safe)

    def retry_due(self, now: float) -> bool:
        """Whether a failed service call is to be repeated now (then it counts as requested now)."""
        if self.phase != "request" or self.retry_at is None or now < self.retry_at:
            return False
        self.retry_at = None
        self.requested_ns = self.clock_ns()
        return True

    def finished(self, ok: bool, message: str, now: float) -> bool:
        """The reset service answered (`ok`) or could not be called. True when the episode may now start, from
        the first state stamped after the response (after the request in lock-step: the simulator publishes
        its reset state while answering). On failure the call is repeated `RETRY_S` later."""
        if self.phase != "request":
            return False
        if not ok:  # a service still being discovered at start is normal: warn from the third failure in a row
            self.counts["reset_failures"] += 1
            self.failures_in_row += 1
            self.log("warning" if self.failures_in_row >= 3 else "info",
                     f"reset failed: {message}; asking again in {RETRY_S:g} s")
            self.retry_at = now + RETRY_S
            return False
        self.failures_in_row = 0
        self.counts["resets"] += 1
        self.phase = "after"
        self.after_ns = self.requested_ns if self.lockstep else self.clock_ns()
        return True

    def operator_go(self, last_stamp: int | None) -> bool:
        """The operator says the robot is ready: True when something waited, and the episode starts from the
        next state (in lock-step from the state at hand)."""
        if self.phase != "operator":
            return False
        self.counts["resets"] += 1
        self.phase, self.after_ns = "after", self.clock_ns()
        if self.lockstep and last_stamp is not None:
            self.after_ns = last_stamp
        return True

    def may_start(self, last_stamp: int | None) -> bool:
        """Whether a state stamped `last_stamp` is late enough to start the episode."""
        return last_stamp is not None and last_stamp >= self.after_ns


def home_spec(parameter: str, manifest: dict[str, Any]) -> HomeSpec:
    """reset:=home: the policy node's `home` parameter, else the bundle's (the task YAML's `home`), driving the
    joints the manifest names per action. Raises BundleError saying what is missing."""
    actuators = manifest.get("actuator_joints")
    if not actuators:
        raise BundleError("reset:=home needs the joint each action drives (manifest 'actuator_joints'); "
                          "re-export the bundle with this version")
    try:
        if parameter:
            return HomeSpec.parse(parameter, actuators)
        if manifest.get("home"):
            return HomeSpec.from_config(manifest["home"], actuators)
    except ValueError as err:
        raise BundleError(str(err)) from None
    raise BundleError("reset:=home needs a home configuration: `home:` in the task YAML or the policy node's "
                      "home parameter (joint=position,...)")
