"""The handlers' decisions, tested without AWS: which events to accept and in which rounds to write
them, which users a stream batch names, what a refresh writes, how far trim may go, what the failure
queue gets, and which identifiers a partial failure reports."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from lambdas.config import SNAPSHOT_MODE_ORIGINAL, SNAPSHOT_MODE_SAFE
from lambdas.consumer import accept, batch_item_failures, dedupe_within_batch, fresh_poison, poison_marker, write_rounds
from lambdas.events import ORDER_SUBMITTED, USER_CREATED, DomainEvent, PoisonRecord, StoredEvent
from lambdas.fold import Snapshot, ViewState
from lambdas.queues import MAX_PAYLOAD_BYTES, OutgoingMessage, failure_message, request_delay_seconds, send_batches
from lambdas.records import KinesisRecord, StreamRecord
from lambdas.sequence import encode_seq
from lambdas.snapshot import SnapshotRun, next_snapshot, trim_watermark
from lambdas.trigger import batch_item_failures as stream_failures
from lambdas.trigger import changed_users
from lambdas.trim import requested_bound, trim_bound
from lambdas.views import plan_view_update
from lambdas.work_requests import TrimRequest

NOW = 1_700_000_000_000


def stored(
    event_id: str,
    user: str,
    seq: int,
    timestamp: int = NOW,
    visible_since: int = NOW - 600_000,
    event_type: str = ORDER_SUBMITTED,
) -> StoredEvent:
    event = DomainEvent(
        event_id=event_id,
        type=event_type,
        timestamp=timestamp,
        user_id=user,
        name="Ann" if event_type == USER_CREATED else None,
        body="{}",
    )
    return StoredEvent(seq=encode_seq(str(seq)), event=event, arrived_at=visible_since, stored_at=visible_since)


# ---------------------------------------------------------------------------------------------
# consumer
# ---------------------------------------------------------------------------------------------


batch_strategy = st.lists(
    st.tuples(st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6"]), st.sampled_from(["a", "b", "c"])),
    max_size=30,
)


@given(batch_strategy, st.randoms(use_true_random=False))
def test_write_rounds_keep_each_users_seq_order_and_hold_one_event_per_user(pairs, rnd):
    events = [stored(f"{i}", user, 10**20 + i) for i, (_, user) in enumerate(pairs)]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    rounds = write_rounds(shuffled)
    assert sorted((e for r in rounds for e in r), key=lambda e: e.seq) == events  # all, once
    for round_events in rounds:
        users = [e.event.user_id for e in round_events]
        assert len(users) == len(set(users))  # a user's next event waits for the next round
    for user in {"a", "b", "c"}:
        order = [e.seq for r in rounds for e in r if e.event.user_id == user]
        assert order == sorted(order)


@given(batch_strategy)
def test_batch_dedupe_keeps_the_lowest_sequence_number_of_each_id(pairs):
    events = [stored(event_id, "a", 10**20 - i * 7) for i, (event_id, _) in enumerate(pairs)]
    kept = dedupe_within_batch(events)
    assert len(kept) == len({e.event.event_id for e in events})
    for event in kept:
        assert event.seq == min(e.seq for e in events if e.event.event_id == event.event.event_id)
    assert [e.seq for e in kept] == sorted(e.seq for e in kept)


def test_accept_new_ids_and_redeliveries_but_not_producer_retries():
    new, redelivered, retried = stored("n", "a", 5), stored("r", "a", 6), stored("p", "a", 9)
    decision = accept([new, redelivered, retried], {"r": redelivered.seq, "p": encode_seq("3")})
    assert decision.accepted == [new, redelivered]
    assert decision.producer_retries == [retried]


def kinesis(seq: str) -> KinesisRecord:
    return KinesisRecord(
        event_id=f"shardId-000000000001:{seq}",
        partition_key="u",
        sequence_number=seq,
        data="eA==",
        approximate_arrival_timestamp=1.0,
        event_source_arn="arn",
    )


def test_poison_already_sent_by_an_earlier_delivery_is_not_sent_again():
    first, second = PoisonRecord(kinesis("11"), "bad"), PoisonRecord(kinesis("12"), "bad")
    assert poison_marker(first.record) == "poison#shardId-000000000001#11"
    assert fresh_poison([first, second], {poison_marker(first.record): ""}) == [second]


def test_consumer_failures_are_reported_lowest_sequence_number_first():
    assert batch_item_failures(["100", "99", "100"]) == [{"itemIdentifier": "99"}, {"itemIdentifier": "100"}]


# ---------------------------------------------------------------------------------------------
# trigger and view refresh
# ---------------------------------------------------------------------------------------------


def stream(name: str, user: str | None, seq: str) -> StreamRecord:
    return StreamRecord(event_name=name, user_id=user, sequence_number=seq)


def test_changed_users_ignore_removes_and_keep_the_lowest_sequence_number():
    records = [
        stream("INSERT", "u1", "300"),
        stream("REMOVE", "u2", "100"),
        stream("MODIFY", "u1", "40"),
        stream("INSERT", "u3", "1000"),
        stream("INSERT", None, "5"),
    ]
    users = changed_users(records)
    assert users == {"u1": "40", "u3": "1000"}
    assert stream_failures(users, ["u3", "u1"]) == [{"itemIdentifier": "40"}, {"itemIdentifier": "1000"}]
    assert changed_users([stream("REMOVE", "u1", "1")]) == {}


def test_refresh_folds_only_events_above_the_snapshot_and_asks_for_a_snapshot_at_the_threshold():
    snapshot = Snapshot("u1", ViewState(order_count=2, event_count=2), encode_seq("20"), 4)
    events = [stored(f"e{i}", "u1", 10 + 5 * i) for i in range(6)]  # seqs 10..35: 3 above the watermark
    plan = plan_view_update("u1", {"snapshotRequestedAtCount": 1}, events, snapshot, threshold=3)
    assert (plan.state.order_count, plan.live_events, plan.request_snapshot) == (5, 3, True)
    row = plan.row(NOW, snapshot_requested=True)
    assert (row["snapshotWatermark"], row["snapshotVersion"], row["snapshotRequestedAtCount"]) == (
        encode_seq("20"),
        4,
        5,
    )
    assert plan.row(NOW, snapshot_requested=False)["snapshotRequestedAtCount"] == 1  # send failed: ask later
    again = plan_view_update("u1", {"snapshotRequestedAtCount": 4}, events, snapshot, threshold=3)
    assert not again.request_snapshot  # requested 1 event ago


# ---------------------------------------------------------------------------------------------
# snapshot and trim
# ---------------------------------------------------------------------------------------------


def test_next_snapshot_folds_the_old_enough_prefix_and_bumps_the_version():
    current = Snapshot("u1", ViewState(order_count=1, event_count=1), encode_seq("5"), 3)
    events = [stored("a", "u1", 6), stored("b", "u1", 7), stored("c", "u1", 8, visible_since=NOW), stored("d", "u1", 9)]
    new = next_snapshot(current, events, NOW, 60_000, SNAPSHOT_MODE_SAFE)
    assert new is not None
    assert (new.watermark, new.version, new.state.order_count, new.updated_at) == (encode_seq("7"), 4, 3, NOW)
    assert next_snapshot(current, events[2:], NOW, 60_000, SNAPSHOT_MODE_SAFE) is None


def test_next_snapshot_in_original_mode_jumps_over_a_recent_event():
    current = Snapshot("u1")
    events = [stored("recent", "u1", 6, timestamp=NOW), stored("late", "u1", 7, timestamp=NOW - 3_600_000)]
    new = next_snapshot(current, events, NOW, 60_000, SNAPSHOT_MODE_ORIGINAL)
    assert new is not None and new.watermark == encode_seq("7") and new.state.event_count == 1  # "recent" lost
    safe = next_snapshot(current, events, NOW, 60_000, SNAPSHOT_MODE_SAFE)
    assert safe is not None and safe.watermark == encode_seq("7") and safe.state.event_count == 2


def test_trim_watermark_is_sent_when_the_snapshot_moved_or_again_on_redelivery():
    before = Snapshot("u1", watermark=encode_seq("5"), version=1)
    after = Snapshot("u1", watermark=encode_seq("9"), version=2)
    assert trim_watermark(SnapshotRun("u1", before, after), redelivered=False) == encode_seq("9")
    assert trim_watermark(SnapshotRun("u1", before), redelivered=False) is None
    assert trim_watermark(SnapshotRun("u1", before), redelivered=True) == encode_seq("5")
    assert trim_watermark(SnapshotRun("u1", Snapshot("u1")), redelivered=True) is None


def test_trim_never_goes_past_the_persisted_watermark():
    assert trim_bound(encode_seq("900"), persisted=encode_seq("50")) == encode_seq("50")
    assert trim_bound(encode_seq("40"), persisted=encode_seq("50")) == encode_seq("40")
    assert trim_bound(None, persisted=encode_seq("50")) == encode_seq("50")
    assert trim_bound(encode_seq("40"), persisted="") == ""
    requests = [TrimRequest("u1", encode_seq("40")), TrimRequest("u1", encode_seq("100"))]
    assert requested_bound(requests) == encode_seq("100")
    assert requested_bound([*requests, TrimRequest("u1")]) is None


# ---------------------------------------------------------------------------------------------
# SQS messages
# ---------------------------------------------------------------------------------------------


def test_send_batches_hold_at_most_10_entries_and_256_kib():
    small = [OutgoingMessage(str(i), "x") for i in range(23)]
    assert [len(b) for b in send_batches(small)] == [10, 10, 3]
    big = [OutgoingMessage(str(i), "y" * 100_000) for i in range(5)]
    assert all(sum(len(m.body) for m in b) <= MAX_PAYLOAD_BYTES for b in send_batches(big))
    assert sum(len(b) for b in send_batches(big)) == 5


def test_snapshot_request_delay_waits_out_the_horizon_within_sqs_limits():
    assert [request_delay_seconds(h) for h in (0, 0.2, 60, 5000)] == [0, 1, 60, 900]


def test_failure_message_keeps_the_record_and_marks_a_cut_when_too_big():
    record = {"sequenceNumber": "7", "data": "QUJD"}
    body = json.loads(failure_message("consumer", "bad JSON", "fn", NOW, "record", record, "data"))
    assert body == {"source": "consumer", "reason": "bad JSON", "function": "fn", "detectedAt": NOW, "record": record}
    huge = {"sequenceNumber": "7", "data": "A" * 600_000}
    text = failure_message("consumer", "too big", "fn", NOW, "record", huge, "data")
    cut = json.loads(text)["record"]
    assert len(text.encode()) <= MAX_PAYLOAD_BYTES
    assert cut["dataTruncated"] is True and cut["dataLength"] == 600_000 and huge["data"].startswith(cut["data"])
