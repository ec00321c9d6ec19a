"""A recording in parts (mbmpo/deploy/recording.py): bounded metadata however long it runs, read as one."""

from pathlib import Path

import pytest

from mbmpo.deploy import recording
from mbmpo.deploy.bag import SegmentedBagWriter, read_messages
from mbmpo.deploy.recording import RecordingListing, RollingBagWriter, recording_summary

TOPIC, MSGTYPE = "/transitions", "mbmpo_interfaces/msg/Transition"


def _raw(step: int) -> bytes:
    from rclpy.serialization import serialize_message

    from mbmpo_interfaces.msg import Transition

    return serialize_message(Transition(episode_id=1, step=step, obs=[float(step)], next_obs=[float(step + 1)]))


def _segment(w: RollingBagWriter | SegmentedBagWriter, first: int, n: int = 2) -> str | None:
    for step in range(first, first + n):
        w.write(_raw(step), 1000 + step)
    return w.flush()


def test_a_recording_rolls_over_into_parts_and_reads_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bag = tmp_path / "bag"
    w = RollingBagWriter(bag, TOPIC, MSGTYPE, segments_per_part=3)
    names = [_segment(w, 2 * i) for i in range(7)]
    assert names[:4] == ["part_0000/segment_000000.mcap", "part_0000/segment_000001.mcap",
                         "part_0000/segment_000002.mcap", "part_0001/segment_000000.mcap"]
    assert names[-1] == "part_0002/segment_000000.mcap" and w.transitions == 14 and w.segment_count == 7
    assert [m.step for _, m in read_messages(bag)] == list(range(14))
    assert [m.step for _, m in read_messages(bag, ["part_0001/segment_000002.mcap"])] == [10, 11]
    assert recording_summary(bag) == {"transitions": 14, "segments": 7, "parts": 3}
    from rosbags.rosbag2 import Reader

    with Reader(bag / "part_0001") as reader:  # each part is a bag of its own
        assert reader.message_count == 6

    reads: list[Path] = []
    load = recording.load_metadata
    monkeypatch.setattr(recording, "load_metadata", lambda path: reads.append(path) or load(path))
    listing = RecordingListing(bag)
    assert listing.segments() == names and len(reads) == 3
    _segment(w, 14)
    assert listing.segments() == names + ["part_0002/segment_000001.mcap"]
    assert reads[3:] == [bag / "part_0002" / "metadata.yaml"]  # complete parts are not read again


def test_a_restarted_recording_appends_to_its_last_part(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    w = RollingBagWriter(bag, TOPIC, MSGTYPE, segments_per_part=2)
    for i in range(3):
        _segment(w, 2 * i)
    w.write(_raw(99), 2000)  # never flushed: the process dies here
    again = RollingBagWriter(bag, TOPIC, MSGTYPE, segments_per_part=2)
    assert again.transitions == 6 and again.segment_count == 3
    assert _segment(again, 6) == "part_0001/segment_000001.mcap"
    assert _segment(again, 8) == "part_0002/segment_000000.mcap"
    assert RollingBagWriter(bag, TOPIC, MSGTYPE, segments_per_part=2).transitions == 10
    assert [m.step for _, m in read_messages(bag)] == list(range(10))


def test_a_bag_recorded_before_parts_is_appended_to_as_it_is(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    _segment(SegmentedBagWriter(bag, TOPIC, MSGTYPE), 0)
    w = RollingBagWriter(bag, TOPIC, MSGTYPE, segments_per_part=1)
    assert w.transitions == 2 and _segment(w, 2) == "segment_000001.mcap" and _segment(w, 4) == "segment_000002.mcap"
    assert RecordingListing(bag).segments() == [f"segment_00000{i}.mcap" for i in range(3)]
    assert recording_summary(bag) == {"transitions": 6, "segments": 3, "parts": 1}
    with pytest.raises(ValueError, match="segments_per_part must be >= 1"):
        RollingBagWriter(tmp_path / "other", TOPIC, MSGTYPE, segments_per_part=0)


def test_a_part_that_cannot_be_made_keeps_the_counts_and_is_tried_again(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    w = RollingBagWriter(bag, TOPIC, MSGTYPE, segments_per_part=2)
    _segment(w, 0)
    (bag / "part_0001").write_text("in the way")  # the next part's folder cannot be made
    assert _segment(w, 2) == "part_0000/segment_000001.mcap"  # durable and listed all the same
    assert w.transitions == 4 and w.segment_count == 2
    (bag / "part_0001").unlink()
    assert _segment(w, 4) == "part_0000/segment_000002.mcap"  # the part grew by one, then rolled
    assert _segment(w, 6) == "part_0001/segment_000000.mcap" and w.transitions == 8
    assert [m.step for _, m in read_messages(bag)] == list(range(8))


def test_parts_are_ordered_by_number_past_part_9999(tmp_path: Path) -> None:
    from mbmpo.deploy.bag import bag_parts

    for name in ("part_10000", "part_9999", "part_0002", "part_x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metadata.yaml").write_text("")
    assert [p.name for p in bag_parts(tmp_path)] == ["part_0002", "part_9999", "part_10000"]
