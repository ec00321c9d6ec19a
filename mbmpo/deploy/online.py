"""Online adaptation on the robot, without ROS or threads: when to adapt, from which episodes, and, judged by
the robot's own returns, whether an adapted policy stays.

The policy node's controller drives it from its episodes (the adaptation itself runs on its worker), and
`mbmpo eval` / `benchmarks/sim_to_real.py` drive it in a plain loop, so what is benchmarked is what deploys.

A round: the policy in use runs `episodes` episodes, then is adapted from them (through the models: from
every fresh episode so far, a dynamics fit that any policy's data serves; on the episodes: from its own, the
on-policy data a policy-gradient step needs). `rounds` bounds the adaptations; a refused one is no round
(the next try starts from fresh episodes). With `judge`, an adapted policy is kept only if its own `episodes`
episodes score at least what its parent's did (with `margin` > 0: by that many standard errors of the difference of
the two means, so that an unshifted robot's noise does not keep a step that did not help); otherwise the parent is
back in use and the next round starts from fresh episodes of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbmpo.runtime import Policy

Pieces = list[tuple[np.ndarray, np.ndarray]]  # per piece of an episode: obs (L+1) x D, act L x A


def standard_error(a: list[float], b: list[float]) -> float:
    """Standard error of mean(a) - mean(b) for independent samples (Welch): sqrt(s_a^2 / n_a + s_b^2 / n_b),
    with each sample variance unbiased (ddof 1; a sample of one contributes 0)."""
    return float(np.sqrt(sum(np.var(x, ddof=1) / len(x) if len(x) > 1 else 0.0 for x in (a, b))))


@dataclass(frozen=True)
class Request:
    """An adaptation to run now: `policy` adapted from `episodes`."""

    policy: Policy
    episodes: Pieces


class OnlineAdaptation:
    """The adaptation state of one bundle's meta-policy `base` (a new bundle starts a new one)."""

    def __init__(self, base: Policy, episodes: int, rounds: int = 1, judge: bool = False,
                 through: str = "episodes", margin: float = 0.0):
        if episodes < 1 or rounds < 1 or not margin >= 0:
            raise ValueError(f"adaptation needs episodes >= 1, rounds >= 1 and margin >= 0, got {episodes}, {rounds} "
                             f"and {margin}")
        self.base, self.current = base, base
        self.episodes, self.rounds, self.judge, self.through = episodes, rounds, judge, through
        self.margin = margin
        self.window: Pieces = []  # every fresh piece since `base` was installed
        self.own: Pieces = []  # the current policy's pieces since it came into use
        self.own_returns: list[float] = []
        self.parent: Policy | None = None  # with `judge`: the policy the current one was adapted from, until judged
        self.parent_returns: list[float] = []
        self.adapted_count = self.reverted = 0
        self.waiting = False  # an adaptation was requested and has not come back

    @property
    def finished(self) -> bool:
        """Every round used and the last adapted policy judged: nothing more will change."""
        return self.adapted_count >= self.rounds and self.parent is None and not self.waiting

    def episode_ended(self, policy: Policy, pieces: Pieces, episode_return: float) -> tuple[Request | None, str]:
        """An episode of `policy` ended: its pieces are fresh data. Returns the adaptation to run now (or None)
        and the judge's verdict ('' when it said nothing). When the judge sends the parent back, `current`
        changes: the owner puts it in use. Episodes of a policy no longer current (one that ran while an
        adaptation was on its way) are not counted."""
        if policy is not self.current or self.waiting or self.finished or not pieces:
            return None, ""
        self.window += pieces
        self.own += pieces
        self.own_returns.append(float(episode_return))
        if len(self.own_returns) < self.episodes:
            return None, ""
        verdict = ""
        if self.parent is not None:
            own, parent = float(np.mean(self.own_returns)), float(np.mean(self.parent_returns))
            bar = parent + self.margin * standard_error(self.own_returns, self.parent_returns)
            kept = own >= bar
            verdict = (f"'{self.current.name}' {'kept' if kept else 'reverted'}: mean return {own:.1f} over "
                       f"{len(self.own_returns)} episodes against {parent:.1f} of '{self.parent.name}'"
                       + (f" (bar {bar:.1f})" if self.margin else ""))
            if not kept:
                self.reverted += 1
                self.current, self.own, self.own_returns = self.parent, [], []
                self.parent = None
                return None, verdict  # the next round starts from fresh episodes of the parent
            self.parent = None
        if self.adapted_count >= self.rounds:
            return None, verdict
        self.waiting = True
        return Request(self.current, list(self.window if self.through == "models" else self.own)), verdict

    def adapted(self, step: Policy | None) -> None:
        """The requested adaptation came back: `step`, or None when it was refused or failed (the policy in use
        stays, and the next round starts from fresh episodes of it)."""
        self.waiting = False
        if step is not None:
            self.adapted_count += 1
            step.name = f"{self.base.name}+adapted" + (str(self.adapted_count) if self.adapted_count > 1 else "")
            if self.judge:
                self.parent, self.parent_returns = self.current, self.own_returns
            self.current = step
        self.own, self.own_returns = [], []
