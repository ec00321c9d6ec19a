"""A recording that runs for hours: a folder of rosbag2 bags (parts) of at most N segments each.

Every flush rewrites the open bag's `metadata.yaml`, and the trainer re-reads it at every notice; both cost
time linear in the segments it lists (about 0.2 ms a segment each way with libyaml: at one flush a second a
single bag spent most of every second on its metadata after an hour). `RollingBagWriter` starts a new part
every `segments_per_part` segments, so that cost stays bounded however long the robot runs:

    BAG/part_0000/{metadata.yaml, segment_000000.mcap, ...}   a complete rosbag2 bag (`ros2 bag info` it)
    BAG/part_0001/...

Segments are named by their path relative to BAG (`part_0001/segment_000004.mcap`). A folder that is one
bag itself (recorded before parts, or by `SegmentedBagWriter` alone) is read and appended to as it is.
`read_messages` and `bag_parts` (bag.py) read both layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbmpo.deploy.bag import SegmentedBagWriter, bag_parts, bag_transitions, load_metadata


def _part_name(index: int) -> str:
    return f"part_{index:04d}"  # part_9999, then part_10000 (bag_parts sorts by number)


class RollingBagWriter:
    """`SegmentedBagWriter`'s interface over a recording in parts (topics: the first, then `add_topic`)."""

    def __init__(self, bag_dir: Path, topic: str, msgtype: str, segments_per_part: int = 600):
        if segments_per_part < 1:
            raise ValueError(f"segments_per_part must be >= 1, got {segments_per_part}")
        self.bag_dir, self.per_part = Path(bag_dir), segments_per_part
        self.topics = {topic: msgtype}
        single = (self.bag_dir / "metadata.yaml").is_file()  # a bag recorded before parts: append to it
        parts = bag_parts(self.bag_dir) if not single else []
        self.closed_transitions = sum(bag_transitions(load_metadata(p / "metadata.yaml")) for p in parts[:-1])
        self.closed_segments = sum(len(load_metadata(p / "metadata.yaml")["relative_file_paths"]) for p in parts[:-1])
        if single:
            self.index, self.prefix = -1, ""
            self.writer = SegmentedBagWriter(self.bag_dir, topic, msgtype)
        else:
            self.index = int(parts[-1].name.split("_")[1]) if parts else 0
            self.writer = self._open(self.index)
            if len(self.writer.segments) >= self.per_part:
                self._next_part()

    def _open(self, index: int) -> SegmentedBagWriter:
        self.prefix = f"{_part_name(index)}/"
        (first, msgtype), *rest = self.topics.items()
        writer = SegmentedBagWriter(self.bag_dir / _part_name(index), first, msgtype)
        for topic, other in rest:
            writer.add_topic(topic, other)
        return writer

    def _next_part(self) -> None:
        """Start the next part (OSError if it cannot be made: nothing changes, the next flush tries again)."""
        prefix, writer = self.prefix, self.writer
        try:
            self.writer = self._open(self.index + 1)
        except OSError:
            self.prefix = prefix
            raise
        self.closed_transitions += writer.transitions
        self.closed_segments += len(writer.segments)
        self.index += 1

    def add_topic(self, topic: str, msgtype: str) -> None:
        self.topics[topic] = msgtype
        self.writer.add_topic(topic, msgtype)

    @property
    def pending(self) -> int:
        """Transitions in the open segment."""
        return self.writer.pending

    @property
    def transitions(self) -> int:
        """Transitions in closed (durable) segments of every part."""
        return self.closed_transitions + self.writer.transitions

    @property
    def segment_count(self) -> int:
        return self.closed_segments + len(self.writer.segments)

    def write(self, raw: bytes, stamp_ns: int, topic: str = "", count: int = 1) -> None:
        self.writer.write(raw, stamp_ns, topic, count)

    def flush(self) -> str | None:
        """Close the open segment; its path relative to the recording (None if nothing was pending). A part
        that has reached its size is followed by a new one from the next segment on."""
        name = self.writer.flush()
        if name is None:
            return None
        closed = self.prefix + name
        if self.index >= 0 and len(self.writer.segments) >= self.per_part:
            try:
                self._next_part()
            except OSError:  # the segment is durable and listed; the part grows by one until a roll succeeds
                pass
        return closed


class RecordingListing:
    """The segments a recording lists, read as the recording grows: a part that a newer one follows is
    complete and read once; only the newest part's metadata is read again at each call."""

    def __init__(self, bag_dir: Path):
        self.bag_dir = Path(bag_dir)
        self.complete: dict[Path, list[str]] = {}  # part -> its segments, relative to the recording

    def segments(self) -> list[str]:
        """Every listed segment, in order. Raises what reading a metadata.yaml raises (OSError, YAMLError,
        KeyError, TypeError)."""
        parts = bag_parts(self.bag_dir)
        listed: list[str] = []
        for i, part in enumerate(parts):
            if part in self.complete:
                listed += self.complete[part]
                continue
            prefix = "" if part == self.bag_dir else f"{part.name}/"
            names = [prefix + n for n in load_metadata(part / "metadata.yaml")["relative_file_paths"]]
            if i < len(parts) - 1:
                self.complete[part] = names
            listed += names
        return listed


def recording_summary(bag_dir: Path) -> dict[str, Any]:
    """Transitions, segments and parts of a recording (either layout)."""
    infos = [load_metadata(p / "metadata.yaml") for p in bag_parts(bag_dir)]
    return {"transitions": sum(bag_transitions(i) for i in infos), "parts": len(infos),
            "segments": sum(len(i["relative_file_paths"]) for i in infos)}
