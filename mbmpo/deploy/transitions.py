"""Transitions as the data node validates them and the trainer turns them back into episodes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mbmpo.types import Episode


@dataclass(frozen=True)
class TransitionRecord:
    """The fields of `mbmpo_interfaces/msg/Transition` the library uses."""

    episode_id: int
    step: int
    policy_id: str
    obs: np.ndarray  # D
    action: np.ndarray  # A
    reward: float
    next_obs: np.ndarray  # D
    terminated: bool
    truncated: bool
    stamp_ns: int
    robot: str = ""  # which robot of a fleet ("" for one)

    @property
    def key(self) -> tuple[str, int]:
        """The episode it belongs to: (robot, episode id)."""
        return self.robot, self.episode_id

    @classmethod
    def from_msg(cls, msg: object) -> TransitionRecord:
        """From an rclpy or rosbags Transition message."""
        stamp = msg.stamp  # type: ignore[attr-defined]
        return cls(int(msg.episode_id), int(msg.step), str(msg.policy_id),  # type: ignore[attr-defined]
                   np.asarray(msg.obs, np.float32), np.asarray(msg.action, np.float32),  # type: ignore[attr-defined]
                   float(msg.reward), np.asarray(msg.next_obs, np.float32),  # type: ignore[attr-defined]
                   bool(msg.terminated), bool(msg.truncated),  # type: ignore[attr-defined]
                   int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
                   str(getattr(msg, "robot", "")))


class TransitionValidator:
    """Rejects malformed transitions with a reason: sizes, non-finite or absurd values, steps or
    timestamps that do not move forward within an episode (repeats, reordering), and a step that does not
    start where the episode's previous step ended (the state jumped: a reset or a lost state inside an
    episode; the episode is split there, so no transition spans the jump)."""

    def __init__(self, obs_dim: int, act_dim: int, max_abs: float = 1e6):
        self.obs_dim, self.act_dim, self.max_abs = obs_dim, act_dim, max_abs
        self.last: dict[tuple[str, int], tuple[int, int, np.ndarray]] = {}  # episode -> (step, stamp, next_obs)
        self.rejected: dict[str, int] = {}
        self.missing = 0  # steps skipped within an episode (lost upstream), among the accepted transitions

    def check(self, t: TransitionRecord) -> str | None:
        """None if valid (and remembered), else the reason (also counted in `rejected`)."""
        reason = self._reason(t)
        if reason is None:
            previous = self.last.get(t.key)
            self.missing += t.step - (previous[0] + 1 if previous else 0)
            self.last[t.key] = (t.step, t.stamp_ns, t.next_obs)
            if len(self.last) > 10_000:  # bounded memory over long runs
                self.last.pop(next(iter(self.last)))
        else:
            key = reason.split(":")[0]
            self.rejected[key] = self.rejected.get(key, 0) + 1
        return reason

    def _reason(self, t: TransitionRecord) -> str | None:
        if t.obs.shape != (self.obs_dim,) or t.next_obs.shape != (self.obs_dim,):
            return f"size: obs {t.obs.shape[0]} / next_obs {t.next_obs.shape[0]} values, expected {self.obs_dim}"
        if t.action.shape != (self.act_dim,):
            return f"size: action has {t.action.shape[0]} values, expected {self.act_dim}"
        values = np.concatenate([t.obs, t.action, t.next_obs, [t.reward]])
        if not np.isfinite(values).all():
            return "non-finite: NaN or Inf in obs, action, next_obs or reward"
        if np.abs(values).max() > self.max_abs:
            return f"magnitude: |value| {np.abs(values).max():.3g} exceeds {self.max_abs:g}"
        previous = self.last.get(t.key)
        if previous is not None:
            if t.step <= previous[0]:
                return f"order: step {t.step} of episode {t.episode_id} after step {previous[0]}"
            if t.stamp_ns <= previous[1]:
                return f"order: timestamp of episode {t.episode_id} step {t.step} does not increase"
            if t.step == previous[0] + 1 and not np.allclose(t.obs, previous[2], rtol=1e-5, atol=1e-6):
                jump = float(np.abs(t.obs - previous[2]).max())
                return (f"jump: episode {t.episode_id} step {t.step} starts {jump:.3g} away from where step "
                        f"{previous[0]} ended (a reset or a lost state inside the episode)")
        return None


def assemble_episodes(records: Iterable[TransitionRecord]) -> list[Episode]:
    """Group transitions into episodes (by robot and id, in step order); a gap in steps starts a new piece."""
    by_episode: dict[tuple[str, int], list[TransitionRecord]] = {}
    for r in records:
        by_episode.setdefault(r.key, []).append(r)
    episodes: list[Episode] = []
    for recs in by_episode.values():
        recs.sort(key=lambda r: r.step)
        piece: list[TransitionRecord] = []
        for r in recs:
            if piece and r.step != piece[-1].step + 1:
                episodes.append(_episode(piece))
                piece = []
            piece.append(r)
        if piece:
            episodes.append(_episode(piece))
    return episodes


def _episode(piece: list[TransitionRecord]) -> Episode:
    obs = np.stack([r.obs for r in piece] + [piece[-1].next_obs])
    return Episode(obs=obs, act=np.stack([r.action for r in piece]),
                   rew=np.asarray([r.reward for r in piece], np.float32), terminated=piece[-1].terminated)
