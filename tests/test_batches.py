"""Transitions sent in batches (mbmpo_interfaces/TransitionBatch): the same verdicts as one by one, bags that
hold both kinds, and the count of transitions (not messages) a bag holds."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mbmpo.deploy import transitions
from mbmpo.deploy.bag import SegmentedBagWriter, load_metadata, read_messages
from mbmpo.deploy.transitions import TransitionBatch, TransitionRecord, TransitionValidator, records_from_msg


def _stream(robot: str = "r") -> list[TransitionRecord]:
    """Three episodes of a robot whose state counts up, with the defects a data node meets."""
    recs = []
    for ep in range(3):
        for step in range(12):
            obs = np.array([step, ep, 0.0], np.float32)
            recs.append(TransitionRecord(ep, step, f"explore{ep}", obs, np.array([0.1, -0.1], np.float32), 1.0,
                                         obs + np.array([1, 0, 0], np.float32), False, step == 11,
                                         1_000 * (ep * 100 + step + 1), robot))
    return recs


def _defective(recs: list[TransitionRecord]) -> list[TransitionRecord]:
    bad = list(recs)
    r = bad[5]
    bad[5] = TransitionRecord(r.episode_id, r.step, r.policy_id, r.obs, r.action, float("nan"), r.next_obs,
                              False, False, r.stamp_ns, r.robot)  # non-finite reward
    bad[14] = TransitionRecord(1, 2, "x", np.full(3, 7.0, np.float32), r.action, 1.0, np.zeros(3, np.float32),
                               False, False, bad[14].stamp_ns, r.robot)  # the state jumped
    del bad[20]  # a step lost upstream
    bad.insert(30, bad[29])  # a repeat
    return bad


def _row_by_row(recs: list[TransitionRecord]) -> tuple[list[bool], TransitionValidator]:
    v = TransitionValidator(3, 2)
    return [v.check(r) is None for r in recs], v


def _batched(recs: list[TransitionRecord], size: int) -> tuple[list[bool], TransitionValidator]:
    v = TransitionValidator(3, 2)
    kept: list[bool] = []
    for i in range(0, len(recs), size):
        keep, _ = v.check_batch(TransitionBatch.from_records(recs[i:i + size]))
        kept += keep.tolist()
    return kept, v


@pytest.mark.badinput
@pytest.mark.parametrize("size", [1, 5, 12, 50])
def test_batches_get_the_verdicts_of_one_by_one(size: int) -> None:
    for recs in (_stream(), _defective(_stream())):
        one, v1 = _row_by_row(recs)
        many, v2 = _batched(recs, size)
        assert many == one
        assert v2.rejected == v1.rejected and v2.missing == v1.missing
    assert v1.rejected == {"non-finite": 1, "jump": 1, "order": 1} and v1.missing == 3  # 2 rejected, 1 lost


@pytest.mark.parametrize("remembered", [2, 3, 5])
def test_batches_forget_old_episodes_as_one_by_one_does(remembered: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the bound on remembered episodes, a batch that brings new ones gets the verdicts, counts and memory of
    one by one (which forgets the oldest episode as each new one comes)."""
    monkeypatch.setattr(transitions, "MAX_EPISODES", remembered)
    recs = _stream()
    mixed = [recs[0], recs[12], recs[24], recs[1], recs[13], recs[25], recs[2], recs[14]]  # episodes interleaved
    stream = [r for i in range(3) for r in (recs[12 * i + 3], recs[12 * i + 4])] + mixed
    for size in (2, 4, 8):
        one, v1 = _row_by_row(stream)
        many, v2 = _batched(stream, size)
        assert many == one and v2.rejected == v1.rejected and v2.missing == v1.missing
        assert list(v2.last) == list(v1.last)


def test_a_clean_batch_is_checked_without_going_row_by_row() -> None:
    v = TransitionValidator(3, 2)
    v.check = None  # type: ignore[assignment]  # the row-by-row path would fail here
    keep, reason = v.check_batch(TransitionBatch.from_records(_stream()[:30]))
    assert keep.all() and reason is None and v.missing == 0
    keep, _ = v.check_batch(TransitionBatch.from_records(_stream()[31:]))  # step 6 of episode 2 lost
    assert keep.all() and v.missing == 1


def _columns(n: int, **override: object) -> SimpleNamespace:
    fields = {"robot": "", "stamp_ns": list(range(1, n + 1)), "episode_id": [0] * n, "step": list(range(n)),
              "policy_id": ["meta"] * n, "obs": [0.0] * 3 * n, "action": [0.0] * 2 * n, "reward": [1.0] * n,
              "next_obs": [0.0] * 3 * n, "terminated": [False] * n, "truncated": [False] * n}
    return SimpleNamespace(**{**fields, **override})


@pytest.mark.badinput
def test_a_batch_whose_columns_disagree_is_refused_with_the_sizes() -> None:
    assert len(TransitionBatch.from_msg(_columns(4))) == 4
    with pytest.raises(ValueError, match="size: batch of 4 steps has reward 3 values"):
        TransitionBatch.from_msg(_columns(4, reward=[1.0] * 3))
    with pytest.raises(ValueError, match="not whole rows"):
        TransitionBatch.from_msg(_columns(4, obs=[0.0] * 13))
    with pytest.raises(ValueError, match="not whole rows"):
        TransitionBatch.from_msg(_columns(4, next_obs=[0.0] * 16))
    with pytest.raises(ValueError, match="size: batch of 0 steps"):
        TransitionBatch.from_msg(_columns(0, obs=[0.0]))


def test_a_bag_of_single_and_batched_transitions_counts_transitions(tmp_path: Path) -> None:
    from rclpy.serialization import serialize_message

    from mbmpo_interfaces.msg import Transition
    from mbmpo_interfaces.msg import TransitionBatch as TransitionBatchMsg
    from mbmpo_ros.common import fill_batch

    recs = _stream("arm_a")
    bag = tmp_path / "bag"
    w = SegmentedBagWriter(bag, "/transitions", "mbmpo_interfaces/msg/Transition")
    w.add_topic("/transition_batches", "mbmpo_interfaces/msg/TransitionBatch")
    single = Transition(episode_id=9, step=0, policy_id="meta", obs=[1.0, 2.0, 3.0], action=[0.5, 0.5], reward=2.0,
                        next_obs=[1.0, 2.0, 4.0], robot="arm_b")
    w.write(serialize_message(single), 5)
    w.write(serialize_message(fill_batch(TransitionBatchMsg(), TransitionBatch.from_records(recs[:20]))), 10,
            "/transition_batches", 20)
    w.flush()
    w = SegmentedBagWriter(bag, "/transitions", "mbmpo_interfaces/msg/Transition")  # a restart appends
    w.add_topic("/transition_batches", "mbmpo_interfaces/msg/TransitionBatch")
    assert w.transitions == 21
    w.write(serialize_message(fill_batch(TransitionBatchMsg(), TransitionBatch.from_records(recs[20:]))), 20,
            "/transition_batches", len(recs) - 20)
    w.close()
    info = load_metadata(bag / "metadata.yaml")
    assert info["message_count"] == 3 and int(info["custom_data"]["mbmpo_transitions"]) == 1 + len(recs)
    back = [r for _, m in read_messages(bag) for r in records_from_msg(m)]
    assert [(r.robot, r.episode_id, r.step) for r in back] == [("arm_b", 9, 0)] + [r.key + (r.step,) for r in recs]
    np.testing.assert_array_equal(np.stack([r.next_obs for r in back[1:]]), np.stack([r.next_obs for r in recs]))
    assert [r.truncated for r in back[1:]] == [r.truncated for r in recs] and back[0].reward == 2.0
    assert len([r for _, m in read_messages(bag, ["segment_000001.mcap"]) for r in records_from_msg(m)]) == 16
