"""Crash-safe rosbag2 (MCAP) recording of raw CDR messages, and reading them back, without ROS.

`SegmentedBagWriter` writes each flush interval as its own MCAP file (rosbags' writer, in a scratch
folder) and, when the interval ends, moves the closed file into the bag and rewrites `metadata.yaml`
atomically. A crash therefore loses at most the open segment; every listed file is complete, and
`ros2 bag` and `rosbags` read the bag as one. Reopening the same folder appends new segments. A write
that fails (disk full, folder gone read-only) raises `OSError` and leaves the listed segments and
`metadata.yaml` as they were.

A bag may hold single transitions and batches of them (one message, many transitions) on two topics; the
number of transitions is kept in the metadata's `custom_data` (`mbmpo_transitions`), beside rosbag2's count
of messages.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

PACKAGE = "mbmpo_interfaces"
_REPO_MSG = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / PACKAGE / "msg"


def interface_typestore() -> Any:
    """A rosbags typestore with ROS 2 Jazzy types plus this project's messages."""
    store = get_typestore(Stores.ROS2_JAZZY)
    for folder in (Path(sys.prefix) / "share" / PACKAGE / "msg", _REPO_MSG):
        if folder.is_dir():
            types: dict = {}
            for file in sorted(folder.glob("*.msg")):
                types.update(get_types_from_msg(file.read_text(), f"{PACKAGE}/msg/{file.stem}"))
            store.register(types)
            return store
    raise FileNotFoundError(f"message definitions of {PACKAGE} not found")


# libyaml when PyYAML has it: the metadata lists every segment, and it is rewritten at each flush and re-read by
# the trainer at each notice; the pure-Python YAML grew to most of the data node's time on long runs
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load_metadata(path: Path) -> dict[str, Any]:
    """A rosbag2 metadata.yaml's `rosbag2_bagfile_information` (safe loading, libyaml when there)."""
    loader = _LOADER(Path(path).read_text())  # a safe loader: plain data only
    try:
        return loader.get_single_data()["rosbag2_bagfile_information"]
    finally:
        loader.dispose()


TRANSITIONS_KEY = "mbmpo_transitions"  # custom_data entry: transitions in the bag (a batch counts its rows)


def bag_transitions(info: dict[str, Any]) -> int:
    """Transitions in a bag of metadata `info` (its message count for bags written before batches)."""
    custom = info.get("custom_data") or {}
    return int(custom.get(TRANSITIONS_KEY, info["message_count"]))


class SegmentedBagWriter:
    """Append-only, crash-safe rosbag2 directory of raw CDR messages, on `topic` and any added with `add_topic`."""

    def __init__(self, bag_dir: Path, topic: str, msgtype: str, typestore: Any | None = None):
        self.bag_dir, self.topic = Path(bag_dir), topic
        self.msgtypes = {topic: msgtype}
        self.typestore = typestore or interface_typestore()
        self.bag_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.bag_dir):  # unwritable (read-only, no permission): fail now
            pass
        self.scratch = self.bag_dir / ".open_segment"
        shutil.rmtree(self.scratch, ignore_errors=True)  # a segment a crash left open is incomplete
        self.info = self._read_metadata()
        self.writer: Writer | None = None
        self.connections: dict[str, Any] = {}  # topic -> connection in the open segment
        self.pending = 0  # transitions in the open segment
        self.first = self.last = 0

    @property
    def segments(self) -> list[str]:
        return list(self.info["relative_file_paths"])

    @property
    def transitions(self) -> int:
        """Transitions in closed (durable) segments."""
        return bag_transitions(self.info)

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Also record `topic` (messages of `msgtype`) into the same bag."""
        self.msgtypes[topic] = msgtype

    def _read_metadata(self) -> dict[str, Any]:
        path = self.bag_dir / "metadata.yaml"
        if path.is_file():
            return load_metadata(path)
        return {"version": 9, "storage_identifier": "mcap", "relative_file_paths": [], "files": [],
                "duration": {"nanoseconds": 0}, "starting_time": {"nanoseconds_since_epoch": 0},
                "message_count": 0, "topics_with_message_count": [], "compression_format": "",
                "compression_mode": "", "custom_data": None, "ros_distro": "jazzy"}

    def write(self, raw: bytes, stamp_ns: int, topic: str = "", count: int = 1) -> None:
        """Append one serialised message of `count` transitions on `topic` ('' the first) to the open segment
        (kept there until `flush`)."""
        topic = topic or self.topic
        if self.writer is None:
            self.writer = Writer(self.scratch, version=9, storage_plugin=StoragePlugin.MCAP)
            self.writer.open()
            self.connections = {}
            self.first = stamp_ns
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, self.msgtypes[topic], typestore=self.typestore)
        self.writer.write(self.connections[topic], stamp_ns, raw)
        self.pending += count
        self.last = stamp_ns

    def flush(self) -> str | None:
        """Close the open segment into the bag; returns its file name (None if nothing was pending)."""
        if self.writer is None:
            return None
        self.writer.close()
        seg_info = load_metadata(self.scratch / "metadata.yaml")
        name = self._next_name()
        closed = self.scratch / seg_info["relative_file_paths"][0]
        with closed.open("rb") as f:  # on disk before the metadata lists it (power loss, not just a crash)
            os.fsync(f.fileno())
        closed.replace(self.bag_dir / name)
        shutil.rmtree(self.scratch, ignore_errors=True)
        self._add_segment(name, seg_info, self.pending)
        self.writer, self.pending = None, 0
        return name

    def _next_name(self) -> str:
        """The next free segment name: never overwrites a file a failed metadata write left unlisted."""
        index = len(self.info["relative_file_paths"])
        while (self.bag_dir / f"segment_{index:06d}.mcap").exists():
            index += 1
        return f"segment_{index:06d}.mcap"

    def _add_segment(self, name: str, seg: dict[str, Any], transitions: int) -> None:
        """List a closed segment of `transitions`: the new metadata is written atomically, then (only then)
        kept in memory."""
        info = copy.deepcopy(self.info)
        info["custom_data"] = {**(info.get("custom_data") or {}), TRANSITIONS_KEY: str(bag_transitions(info) + transitions)}
        entry = seg["files"][0]
        entry["path"] = name
        info["relative_file_paths"].append(name)
        info["files"].append(entry)
        info["message_count"] += seg["message_count"]
        start = seg["starting_time"]["nanoseconds_since_epoch"]
        end = start + seg["duration"]["nanoseconds"]
        old_start = info["starting_time"]["nanoseconds_since_epoch"]
        old_end = old_start + info["duration"]["nanoseconds"]
        new_start = start if len(info["files"]) == 1 else min(start, old_start)
        info["starting_time"]["nanoseconds_since_epoch"] = new_start
        info["duration"]["nanoseconds"] = max(end, old_end if len(info["files"]) > 1 else end) - new_start
        for topic in seg["topics_with_message_count"]:
            known = [t for t in info["topics_with_message_count"]
                     if t["topic_metadata"]["name"] == topic["topic_metadata"]["name"]]
            if known:
                known[0]["message_count"] += topic["message_count"]
            else:
                info["topics_with_message_count"].append(topic)
        tmp = self.bag_dir / "metadata.yaml.tmp"
        try:
            with tmp.open("w") as f:
                f.write(yaml.dump({"rosbag2_bagfile_information": info}, Dumper=_DUMPER, sort_keys=False))
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.bag_dir / "metadata.yaml")
        self.info = info

    def close(self) -> None:
        self.flush()


PART_GLOB = "part_[0-9]*"  # a recording in parts: BAG/part_0000, BAG/part_0001, ... (recording.py)


def bag_parts(bag_dir: Path) -> list[Path]:
    """The rosbag2 bags a recording is made of, in order: the folder itself when it is one bag, else its
    parts that list anything (a part's metadata.yaml is written when its first segment closes)."""
    bag_dir = Path(bag_dir)
    if (bag_dir / "metadata.yaml").is_file():
        return [bag_dir]
    parts = [p for p in bag_dir.glob(PART_GLOB) if p.name[5:].isdigit() and (p / "metadata.yaml").is_file()]
    return sorted(parts, key=lambda p: int(p.name[5:]))


def read_messages(bag_dir: Path, segments: list[str] | None = None, typestore: Any | None = None
                  ) -> Iterator[tuple[int, Any]]:
    """(timestamp ns, deserialised message) of a bag or a recording in parts (`bag_parts`), or of only the
    named segment files (paths relative to `bag_dir`)."""
    store = typestore or interface_typestore()
    bag_dir = Path(bag_dir)
    if segments is None:
        for part in bag_parts(bag_dir):
            with Reader(part) as reader:
                for conn, stamp, raw in reader.messages():
                    yield stamp, store.deserialize_cdr(raw, conn.msgtype)
        return
    from mcap.reader import make_reader  # rosbags' own reader needs a whole bag; one file is read directly

    for name in segments:
        with (bag_dir / name).open("rb") as f:
            mcap: Any = make_reader(f)  # mcap's McapReader
            schemas: dict[int, str] = {}
            for schema, channel, message in mcap.iter_messages():
                schemas.setdefault(channel.id, schema.name)
                yield message.log_time, store.deserialize_cdr(message.data, schemas[channel.id])
