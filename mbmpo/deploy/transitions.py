"""Transitions as the data node validates them and the trainer turns them back into episodes.

A transition travels alone (`mbmpo_interfaces/Transition`, one message a step) or with the ones after it
(`mbmpo_interfaces/TransitionBatch`, columns of N rows, for high rates and fleets); both validate the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class TransitionBatch:
    """Consecutive transitions of one robot, column by column: `mbmpo_interfaces/TransitionBatch`."""

    robot: str
    stamp_ns: np.ndarray  # N int64
    episode_id: np.ndarray  # N int64
    step: np.ndarray  # N int64
    policy_id: list[str]  # N
    obs: np.ndarray  # N x D float32
    action: np.ndarray  # N x A float32
    reward: np.ndarray  # N float32
    next_obs: np.ndarray  # N x D float32
    terminated: np.ndarray  # N bool
    truncated: np.ndarray  # N bool

    def __len__(self) -> int:
        return len(self.step)

    @classmethod
    def from_msg(cls, msg: object) -> TransitionBatch:
        """From an rclpy or rosbags TransitionBatch; ValueError("size: ...") if its columns disagree."""
        m: Any = msg
        n = len(m.step)
        columns = {"stamp_ns": len(m.stamp_ns), "episode_id": len(m.episode_id), "policy_id": len(m.policy_id),
                   "reward": len(m.reward), "terminated": len(m.terminated), "truncated": len(m.truncated)}
        short = [f"{name} {length}" for name, length in columns.items() if length != n]
        if short:
            raise ValueError(f"size: batch of {n} steps has {', '.join(short)} values")
        flat = {name: np.asarray(getattr(m, name), np.float32) for name in ("obs", "action", "next_obs")}
        if n == 0 or any(len(v) % n for v in flat.values()) or len(flat["obs"]) != len(flat["next_obs"]):
            sizes = ", ".join(f"{name} {len(v)}" for name, v in flat.items())
            raise ValueError(f"size: batch of {n} steps has {sizes} values (not whole rows)")
        rows = {name: v.reshape(n, -1) for name, v in flat.items()}
        return cls(str(m.robot), np.asarray(m.stamp_ns, np.int64), np.asarray(m.episode_id, np.int64),
                   np.asarray(m.step, np.int64), [str(p) for p in m.policy_id], rows["obs"], rows["action"],
                   np.asarray(m.reward, np.float32), rows["next_obs"], np.asarray(m.terminated, bool),
                   np.asarray(m.truncated, bool))

    @classmethod
    def from_records(cls, records: list[TransitionRecord]) -> TransitionBatch:
        """Records of one robot, in the order they happened (at least one)."""
        return cls(records[0].robot, np.array([r.stamp_ns for r in records], np.int64),
                   np.array([r.episode_id for r in records], np.int64), np.array([r.step for r in records], np.int64),
                   [r.policy_id for r in records], np.stack([r.obs for r in records]),
                   np.stack([r.action for r in records]), np.array([r.reward for r in records], np.float32),
                   np.stack([r.next_obs for r in records]), np.array([r.terminated for r in records]),
                   np.array([r.truncated for r in records]))

    def records(self) -> list[TransitionRecord]:
        return [TransitionRecord(int(self.episode_id[i]), int(self.step[i]), self.policy_id[i], self.obs[i],
                                 self.action[i], float(self.reward[i]), self.next_obs[i], bool(self.terminated[i]),
                                 bool(self.truncated[i]), int(self.stamp_ns[i]), self.robot) for i in range(len(self))]

    def rows(self, keep: np.ndarray) -> TransitionBatch:
        """The rows where `keep` (N bool) is true."""
        return TransitionBatch(self.robot, self.stamp_ns[keep], self.episode_id[keep], self.step[keep],
                               [p for p, k in zip(self.policy_id, keep) if k], self.obs[keep], self.action[keep],
                               self.reward[keep], self.next_obs[keep], self.terminated[keep], self.truncated[keep])


def records_from_msg(msg: object) -> list[TransitionRecord]:
    """The transitions of a Transition or a TransitionBatch message (rclpy or rosbags)."""
    if type(msg).__name__.endswith("TransitionBatch"):
        return TransitionBatch.from_msg(msg).records()
    return [TransitionRecord.from_msg(msg)]


MAX_EPISODES = 10_000  # episodes whose last step a validator remembers (the oldest is forgotten first)


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
            self.last[t.key] = (t.step, t.stamp_ns, t.next_obs.copy())  # not a view of a whole message
            self._bound()
        else:
            self.reject(reason)
        return reason

    def reject(self, reason: str, count: int = 1) -> None:
        """Count `count` transitions rejected for `reason` (its kind is the text before the first ':')."""
        key = reason.split(":")[0]
        self.rejected[key] = self.rejected.get(key, 0) + count

    def _bound(self) -> None:
        while len(self.last) > MAX_EPISODES:  # bounded memory over long runs
            self.last.pop(next(iter(self.last)))

    def check_batch(self, b: TransitionBatch) -> tuple[np.ndarray, str | None]:
        """(accepted rows: N bool, the first reason a row was rejected or None): the verdicts of `check` row by
        row, taken with a few array operations when every row is valid (the usual case), else row by row."""
        if self._batch_valid(b):
            starts = np.flatnonzero(np.r_[True, b.episode_id[1:] != b.episode_id[:-1]])
            ends = np.r_[starts[1:], len(b)] - 1
            for first, last in zip(starts, ends):
                key = (b.robot, int(b.episode_id[first]))
                previous = self.last.get(key)
                self.missing += int(b.step[last] - b.step[first] - (last - first))  # gaps inside the run
                self.missing += int(b.step[first]) - (previous[0] + 1 if previous else 0)
                self.last[key] = (int(b.step[last]), int(b.stamp_ns[last]), b.next_obs[last].copy())
            self._bound()
            return np.ones(len(b), bool), None
        reasons = [self.check(r) for r in b.records()]
        return np.array([r is None for r in reasons]), next((r for r in reasons if r is not None), None)

    def _batch_valid(self, b: TransitionBatch) -> bool:
        """Every row of `b` passes `check` (episodes in one contiguous run each; otherwise False: row by row)."""
        n = len(b)
        if b.obs.shape != (n, self.obs_dim) or b.next_obs.shape != (n, self.obs_dim) or b.action.shape != (n, self.act_dim):
            return False
        for values in (b.obs, b.action, b.next_obs, b.reward):
            if not np.isfinite(values).all() or np.abs(values).max(initial=0.0) > self.max_abs:
                return False
        same = b.episode_id[1:] == b.episode_id[:-1]
        if (same & (b.step[1:] <= b.step[:-1])).any() or (same & (b.stamp_ns[1:] <= b.stamp_ns[:-1])).any():
            return False
        follows = same & (b.step[1:] == b.step[:-1] + 1)
        if follows.any() and not np.allclose(b.obs[1:][follows], b.next_obs[:-1][follows], rtol=1e-5, atol=1e-6):
            return False
        starts = np.flatnonzero(np.r_[True, ~same])
        if len(np.unique(b.episode_id[starts])) != len(starts):
            return False
        new = sum((b.robot, int(b.episode_id[i])) not in self.last for i in starts)
        if len(self.last) + new > MAX_EPISODES:  # row by row would forget old episodes between the rows
            return False
        for i in starts:
            previous = self.last.get((b.robot, int(b.episode_id[i])))
            if previous is not None and (b.step[i] <= previous[0] or b.stamp_ns[i] <= previous[1] or (
                    b.step[i] == previous[0] + 1 and not np.allclose(b.obs[i], previous[2], rtol=1e-5, atol=1e-6))):
                return False
        return True

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
