"""lambdas/snapshot.py in the pipeline over in-memory AWS fakes (tests/unit/support/): concurrent
snapshot writers, late events and the horizon (and the loss SNAPSHOT_MODE=original shows), bounded runs
with follow-up requests, and partial failures per user."""

from __future__ import annotations

import json

from botocore.exceptions import ClientError

from lambdas import snapshot
from lambdas.events import ORDER_SUBMITTED, USER_LOGGED_IN
from tests.unit.support.fake_aws import EVENTS, SNAPQ, SNAPS, TRIMQ, VIEWS
from tests.unit.support.pipeline import START, Context, Pipeline, event


def test_concurrent_snapshot_writer_is_detected_and_the_loser_retries():
    p = Pipeline()
    for i in range(4):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.tick(10_000)

    def other_writer(_request: dict) -> None:
        p.request_snapshot("u1")
        p.run_queue(SNAPQ)  # completes first: version 1

    p.ddb.hooks["PutItem:" + SNAPS] = other_writer
    p.request_snapshot("u1")
    p.run_queue(SNAPQ)
    versions = [w["version"] for w in p.ddb.snapshot_writes]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert p.rt.store.get_snapshot("u1").state.event_count == 4  # nothing folded twice
    p.drain()
    assert p.view("u1")["recentOrderCount"] == 4


def test_late_event_is_never_skipped_by_the_safe_snapshot():
    p = Pipeline(horizon_seconds=60)
    p.produce(event("new", ORDER_SUBMITTED, "u1", START))
    p.produce(event("late", USER_LOGGED_IN, "u1", START - 3_600_000))  # timestamp an hour old
    p.consume(100)
    p.request_snapshot("u1", horizon_seconds=None)
    p.run_queue(SNAPQ)
    assert p.rt.store.get_snapshot("u1").version == 0  # both arrived just now: too young
    p.drain()
    assert p.view("u1") == p.expected("u1")


def test_original_mode_loses_the_event_below_a_late_events_watermark():
    """SNAPSHOT_MODE=original exists to show this loss; the safe mode keeps the event."""
    outcomes = {}
    for mode in ("original", "safe"):
        p = Pipeline(mode=mode, horizon_seconds=60)
        p.produce(event("recent", ORDER_SUBMITTED, "u1", START))
        p.produce(event("late", ORDER_SUBMITTED, "u1", START - 3_600_000))
        p.consume(100)
        p.trigger(100)
        p.request_snapshot("u1", horizon_seconds=None)
        p.run_queue(SNAPQ)
        p.run_queue(TRIMQ)
        p.ddb.tables[VIEWS].clear()  # rebuild the view from storage
        p.request_snapshot("u1", horizon_seconds=None)
        p.run_queue(SNAPQ)
        outcomes[mode] = (p.view("u1")["recentOrderCount"], p.stored_state("u1")["recentOrderCount"])
    assert outcomes == {"original": (1, 1), "safe": (2, 2)}


def test_snapshot_runs_are_bounded_and_continue_with_a_follow_up_request():
    p = Pipeline(max_events=4, threshold=1000)
    for i in range(10):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.request_snapshot("u1")
    p.run_queue(SNAPQ)
    assert p.rt.store.get_snapshot("u1").state.event_count == 4
    [follow_up] = [json.loads(m.body) for m in p.sqs.queues[SNAPQ]]
    assert follow_up["horizonSeconds"] == 0
    p.drain()
    assert p.rt.store.get_snapshot("u1").state.event_count == 10
    assert p.ddb.tables[EVENTS] == {}


def test_snapshot_failure_is_a_batch_item_failure_for_that_users_messages_only():
    p = Pipeline()
    p.produce(event("e1", ORDER_SUBMITTED, "u1", START))
    p.produce(event("e2", ORDER_SUBMITTED, "u2", START))
    p.consume(100)
    p.tick(5000)
    original_get = p.ddb.get_item

    def failing_get(TableName: str, Key: dict, ConsistentRead: bool = False) -> dict:
        if Key.get("userId", {}).get("S") == "u1":
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "GetItem")
        return original_get(TableName, Key, ConsistentRead)

    p.ddb.get_item = failing_get  # type: ignore[method-assign]
    records = [
        {"messageId": f"m-{u}", "body": json.dumps({"type": "snapshot", "userId": u}), "attributes": {}}
        for u in ("u1", "u2")
    ]
    result = snapshot.process({"Records": records}, Context(), p.rt)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-u1"}]}
    assert p.rt.store.get_snapshot("u2").version == 1
