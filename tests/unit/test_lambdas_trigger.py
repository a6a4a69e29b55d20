"""lambdas/trigger.py and lambdas/views.py in the pipeline over in-memory AWS fakes (tests/unit/support/):
the stream trigger's view refresh (a trim between its query and its snapshot read loses nothing, the view
row's watermark moves forward), its partial failures, and its snapshot requests."""

from __future__ import annotations

import copy
from typing import Any

from botocore.exceptions import ClientError

from lambdas import trigger
from lambdas.events import ORDER_SUBMITTED
from lambdas.store import from_item
from tests.unit.support.fake_aws import EVENTS, SNAPQ, TRIMQ, VIEWS
from tests.unit.support.pipeline import START, Context, Pipeline, event


def test_trim_between_the_triggers_query_and_its_snapshot_read_loses_nothing():
    """The trigger's sandwich: a snapshot + trim completes after the trigger queried the events."""
    p = Pipeline(threshold=100)
    for i in range(5):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)

    def snapshot_and_trim(_request: dict) -> None:
        p.request_snapshot("u1")
        p.run_queue(SNAPQ)
        p.run_queue(TRIMQ)

    p.ddb.page_size = 100
    p.ddb.hooks["Query"] = snapshot_and_trim
    p.trigger(100)
    assert p.ddb.tables[EVENTS] == {}  # trimmed after the trigger's query
    assert p.view("u1")["recentOrderCount"] == 5


def test_trigger_ignores_remove_only_batches_without_any_aws_call():
    p = Pipeline()
    removes = [
        {
            "eventName": "REMOVE",
            "dynamodb": {"Keys": {"userId": {"S": "u1"}, "seq": {"S": "0011"}}, "SequenceNumber": "5"},
        }
    ]
    assert trigger.process({"Records": removes}, Context(), p.rt) == {"batchItemFailures": []}
    assert sum(p.ddb.calls.values()) == 0


def test_trigger_reports_the_lowest_sequence_number_of_the_failed_user():
    p = Pipeline()
    for u in ("u1", "u2"):
        p.produce(event(f"e-{u}", ORDER_SUBMITTED, u, START))
        p.produce(event(f"f-{u}", ORDER_SUBMITTED, u, START))
    p.consume(100)
    original_query = p.ddb.query

    def failing_query(**kwargs: Any) -> dict:
        if kwargs["ExpressionAttributeValues"][":u"]["S"] == "u2":
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "Query")
        return original_query(**kwargs)

    p.ddb.query = failing_query  # type: ignore[method-assign]
    records = copy.deepcopy(p.ddb.stream)
    result = trigger.process({"Records": records}, Context(), p.rt)
    lowest_u2 = min(
        (r["dynamodb"]["SequenceNumber"] for r in records if r["dynamodb"]["Keys"]["userId"]["S"] == "u2"), key=int
    )
    assert result == {"batchItemFailures": [{"itemIdentifier": lowest_u2}]}
    assert p.view("u1")["recentOrderCount"] == 2 and p.view("u2") is None


def test_view_row_watermark_moves_forward_even_when_no_new_event_arrives():
    p = Pipeline(threshold=1000)
    for i in range(3):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.drain()
    assert from_item(p.ddb.tables[VIEWS][("u1",)])["snapshotVersion"] == 0
    p.request_snapshot("u1")
    p.drain()
    row = from_item(p.ddb.tables[VIEWS][("u1",)])
    assert row["snapshotVersion"] == 1 and row["eventCount"] == 3


def test_failed_snapshot_request_send_is_asked_again_later():
    p = Pipeline(threshold=2)
    p.produce(event("e1", ORDER_SUBMITTED, "u1", START))
    p.produce(event("e2", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.sqs.fail_entries = 4  # the first call and its 3 retries
    p.trigger(100)
    assert p.sqs.queues[SNAPQ] == [] and p.sqs.fail_entries == 0
    assert "snapshotRequestedAtCount" not in from_item(p.ddb.tables[VIEWS][("u1",)])
    p.produce(event("e3", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.trigger(100)
    assert len(p.sqs.queues[SNAPQ]) == 1
