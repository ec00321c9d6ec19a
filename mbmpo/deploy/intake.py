"""Recorded transitions on their way into the trainer, with exactly-once bookkeeping across restarts.

The bag is the source of truth. `Intake` holds the transitions of segments read but not yet trained on,
hands out complete episodes, and records which segments (and, for segments whose later episodes are
still open, which episodes) were used. That record is written *before* the trainer saves its data, with
the trainer's data size after the save, in two versions: the new one and the previous one. A restarted
trainer keeps the new version only if its saved data reached that size. A kill at any point therefore
neither drops transitions (an episode still open when a segment closed is re-read) nor trains on any
twice (episodes already in the saved data are skipped).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mbmpo.deploy.transitions import TransitionRecord


class Intake:
    """Segments -> complete episodes, persisted in `state_file` (JSON)."""

    def __init__(self, state_file: Path, saved_steps: int):
        """`saved_steps`: transitions in the trainer's saved data (decides which state version holds)."""
        self.path = Path(state_file)
        self.consumed: list[str] = []  # segments all of whose transitions are in the trainer's data
        self.consumed_set: set[str] = set()  # the same, looked up at every notice for every listed segment
        self.taken: set[tuple[str, int]] = set()  # episodes (robot, id) in the trainer's data, of open segments
        self.records: list[tuple[str, TransitionRecord]] = []  # (segment, transition) not yet taken
        self.open_segments: dict[str, set[tuple[str, int]]] = {}  # segment read, not consumed -> its episodes
        if self.path.is_file():
            state = json.loads(self.path.read_text())
            if saved_steps < state["saved_steps"]:  # killed before the data was saved: the old version
                state = state["previous"]
            self.consumed = list(state["segments"])
            self.consumed_set = set(self.consumed)
            self.taken = {_episode_key(e) for e in state["episodes"]}

    def known(self, segment: str) -> bool:
        return segment in self.open_segments or segment in self.consumed_set

    def add(self, segment: str, records: list[TransitionRecord]) -> int:
        """Transitions of a newly read segment (episodes already trained on are skipped); returns how many."""
        if self.known(segment):
            return 0
        fresh = [r for r in records if r.key not in self.taken]
        self.open_segments[segment] = {r.key for r in fresh}
        self.records += [(segment, r) for r in fresh]
        return len(fresh)

    def waiting(self) -> int:
        return len(self.records)

    def take(self, min_transitions: int = 0, min_episodes: int = 0) -> list[TransitionRecord] | None:
        """The transitions of complete episodes (ended, or followed by a later episode), once there are at
        least `min_transitions` of them in at least `min_episodes` episodes; None otherwise."""
        if not self.records:
            return None
        latest: dict[str, int] = {}  # per robot: its newest episode may still be running
        for _, r in self.records:
            latest[r.robot] = max(latest.get(r.robot, r.episode_id), r.episode_id)
        done = {r.key for _, r in self.records if r.terminated or r.truncated or r.episode_id < latest[r.robot]}
        ready = [r for _, r in self.records if r.key in done]
        if not ready or len(ready) < min_transitions or len(done) < min_episodes:
            return None
        self.records = [(s, r) for s, r in self.records if r.key not in done]
        return ready

    def commit(self, taken: list[TransitionRecord], saved_steps_after: int) -> None:
        """Record `taken` as used, atomically, before the trainer saves data of `saved_steps_after` steps."""
        previous = self._state(0)
        self.taken |= {r.key for r in taken}
        for segment, episodes in list(self.open_segments.items()):
            if episodes <= self.taken:
                self.consumed.append(segment)
                self.consumed_set.add(segment)
                del self.open_segments[segment]
        still_open = set().union(*self.open_segments.values()) if self.open_segments else set()
        self.taken &= still_open  # only episodes that a re-read could bring back need remembering
        state = self._state(saved_steps_after)
        state["previous"] = previous
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def _state(self, saved_steps: int) -> dict[str, Any]:
        return {"saved_steps": saved_steps, "segments": sorted(self.consumed),
                "episodes": [[robot, e] for robot, e in sorted(self.taken)]}


def _episode_key(saved: Any) -> tuple[str, int]:
    """An episode as intake.json holds it: [robot, id] (or a bare id, written before fleets)."""
    return (str(saved[0]), int(saved[1])) if isinstance(saved, list) else ("", int(saved))
