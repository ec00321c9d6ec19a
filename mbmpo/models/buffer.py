"""A bounded store of real transitions, kept by episode so start states are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mbmpo.errors import UserError
from mbmpo.types import Episode


class TransitionBuffer:
    """Real transitions (s, a, r, s', terminated) in arrays; the oldest are dropped past `capacity`.

    Also keeps every episode's start state (for imagined rollouts that start where real ones do).
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        self.obs = np.zeros((0, obs_dim), np.float32)
        self.act = np.zeros((0, act_dim), np.float32)
        self.rew = np.zeros((0,), np.float32)
        self.next_obs = np.zeros((0, obs_dim), np.float32)
        self.terminated = np.zeros((0,), bool)
        self.starts = np.zeros((0, obs_dim), np.float32)
        self.total_steps = 0  # every transition ever added, including dropped ones

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def add_episodes(self, episodes: list[Episode]) -> None:
        """Append whole episodes; checks sizes and finiteness first so nothing half-added remains."""
        for ep in episodes:
            if ep.obs.shape[1:] != (self.obs_dim,) or ep.act.shape[1:] != (self.act_dim,):
                raise ValueError(f"episode has obs {ep.obs.shape[1:]} / act {ep.act.shape[1:]}, "
                                 f"buffer expects ({self.obs_dim},) / ({self.act_dim},)")
            if not (np.isfinite(ep.obs).all() and np.isfinite(ep.act).all() and np.isfinite(ep.rew).all()):
                raise ValueError("episode contains non-finite values")
        if not episodes:
            return
        terms = [np.zeros(ep.length, bool) for ep in episodes]
        for term, ep in zip(terms, episodes):
            term[-1:] = ep.terminated
        cap = self.capacity
        self.obs = np.concatenate([self.obs, *[ep.obs[:-1] for ep in episodes]])[-cap:]
        self.act = np.concatenate([self.act, *[ep.act for ep in episodes]])[-cap:]
        self.rew = np.concatenate([self.rew, *[ep.rew for ep in episodes]])[-cap:]
        self.next_obs = np.concatenate([self.next_obs, *[ep.obs[1:] for ep in episodes]])[-cap:]
        self.terminated = np.concatenate([self.terminated, *terms])[-cap:]
        self.starts = np.concatenate([self.starts, *[ep.obs[:1] for ep in episodes]])[-cap:]
        self.total_steps += sum(ep.length for ep in episodes)

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, then rename), so a kill never leaves a half-written file."""
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, obs=self.obs, act=self.act, rew=self.rew, next_obs=self.next_obs,
                 terminated=self.terminated, starts=self.starts, total_steps=np.int64(self.total_steps))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, obs_dim: int, act_dim: int, capacity: int) -> TransitionBuffer:
        try:
            with np.load(path, allow_pickle=False) as data:
                buf = cls(obs_dim, act_dim, capacity)
                for key in ("obs", "act", "rew", "next_obs", "terminated", "starts"):
                    setattr(buf, key, data[key])
                buf.total_steps = int(data["total_steps"])
        except (OSError, KeyError, ValueError) as err:
            raise UserError(f"cannot read transition data {path}: {err}") from None
        if buf.obs.shape[1:] != (obs_dim,) or buf.act.shape[1:] != (act_dim,):
            raise UserError(f"{path} holds obs of size {buf.obs.shape[1:]} and actions {buf.act.shape[1:]}; "
                            f"the task expects {obs_dim} and {act_dim}")
        return buf
