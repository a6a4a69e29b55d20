"""store.py and queues.py against moto's in-process backends (mock_aws: no server, no network).

The fakes in test_lambdas_pipeline.py only know the expressions store.py sends; this checks that
DynamoDB (as moto implements it) accepts them: key conditions, projections, the conditional writes,
pagination with Limit, batch limits, and SQS batches.
"""

from __future__ import annotations

import base64
import json
import logging

import boto3
import pytest
from moto import mock_aws

from lambdas import consumer, snapshot, trigger, trim
from lambdas.config import Settings
from lambdas.dependencies import Runtime
from lambdas.events import StoredEvent, parse_body
from lambdas.fold import Snapshot, ViewState, render_view
from lambdas.queues import OutgoingMessage, Queues
from lambdas.retry import Backoff
from lambdas.sequence import encode_seq
from lambdas.store import SnapshotConflict, Store

REGION = "us-east-1"
NOW = 1_700_000_000_000


class Context:
    function_name = "esjoin-moto-test"


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)

        def table(name, pk, sk=None, stream=False):
            keys = [{"AttributeName": pk, "KeyType": "HASH"}]
            attributes = [{"AttributeName": pk, "AttributeType": "S"}]
            if sk:
                keys.append({"AttributeName": sk, "KeyType": "RANGE"})
                attributes.append({"AttributeName": sk, "AttributeType": "S"})
            extra = (
                {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}}
                if stream
                else {}
            )
            return ddb.create_table(
                TableName=name, KeySchema=keys, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST", **extra
            )

        table("events", "userId", "seq", stream=True)
        table("views", "id")
        table("snapshots", "userId")
        table("event-ids", "eventId")
        urls = {n: sqs.create_queue(QueueName=n)["QueueUrl"] for n in ("snapshot", "trim", "failure")}
        settings = Settings(
            events_table="events",
            views_table="views",
            snapshots_table="snapshots",
            event_ids_table="event-ids",
            snapshot_queue_url=urls["snapshot"],
            trim_queue_url=urls["trim"],
            failure_queue_url=urls["failure"],
            snapshot_horizon_seconds=0,
            snapshot_threshold=3,
        )
        clock = iter(range(NOW, NOW + 10**9, 1000))
        rt = Runtime(
            settings=settings,
            store=Store(settings, ddb, Backoff(sleep=lambda _s: None)),
            queues=Queues(sqs),
            logger=logging.getLogger("esjoin.tests"),
            clock=lambda: next(clock),
        )
        yield rt, ddb, sqs, urls


def kinesis_record(seq: int, payload) -> dict:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {
        "kinesis": {
            "partitionKey": "u1",
            "sequenceNumber": str(seq),
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": NOW / 1000 - 600,
        },
        "eventID": f"shardId-000000000000:{seq}",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:1:stream/s",
    }


def order(i: int, user: str = "u1") -> dict:
    return {"id": f"e{i}", "type": "order-submitted", "timestamp": NOW + i, "order": {"userId": user}}


def stream_records(rt: Runtime) -> list[dict]:
    """INSERT records for the stored events, as the events table's stream delivers them."""
    return [
        {
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "dynamodb": {"Keys": {"userId": {"S": "u1"}, "seq": {"S": e.seq}}, "SequenceNumber": str(100 + i)},
        }
        for i, e in enumerate(rt.store.query_events("u1"))
    ]


def receive(sqs, url: str) -> list[dict]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [
        {"messageId": m["MessageId"], "body": m["Body"], "attributes": {"ApproximateReceiveCount": "1"}}
        for m in messages
    ]


def test_the_whole_flow_on_moto(aws):
    rt, _ddb, sqs, urls = aws
    records = [kinesis_record(100 + i, order(i)) for i in range(30)] + [kinesis_record(200, b"{oops")]
    records.append(
        kinesis_record(201, {"id": "c", "type": "user-created", "timestamp": NOW, "user": {"id": "u1", "name": "Ann"}})
    )
    assert consumer.process({"Records": records}, Context(), rt) == {"batchItemFailures": []}
    assert consumer.process({"Records": records[:5]}, Context(), rt) == {"batchItemFailures": []}  # redelivery
    assert len(rt.store.query_events("u1")) == 31
    assert len(rt.store.query_events("u1", limit=7)) == 7
    assert len(rt.store.query_events("u1", after=encode_seq("120"))) == 10  # 121..129 and 201
    failures = receive(sqs, urls["failure"])
    assert [json.loads(m["body"])["record"]["sequenceNumber"] for m in failures] == ["200"]  # once

    assert trigger.process({"Records": stream_records(rt)}, Context(), rt) == {"batchItemFailures": []}
    view = rt.store.get_views(["u1"])["u1"]
    assert (view["name"], view["recentOrderCount"], view["eventCount"], view["lastLogin"]) == ("Ann", 30, 31, None)

    requests = receive(sqs, urls["snapshot"])
    assert [json.loads(m["body"])["userId"] for m in requests] == ["u1"]
    assert snapshot.process({"Records": requests}, Context(), rt) == {"batchItemFailures": []}
    assert rt.store.get_snapshot("u1").state.event_count == 31
    trims = receive(sqs, urls["trim"])
    assert trim.process({"Records": trims}, Context(), rt) == {"batchItemFailures": []}
    assert rt.store.query_events("u1") == []
    view = rt.store.get_views(["u1"])["u1"]
    assert (view["recentOrderCount"], view["snapshotVersion"]) == (30, 1)


def test_conditional_writes_on_moto(aws):
    rt, *_ = aws
    rt.store.put_snapshot(Snapshot("u1", ViewState(order_count=1, event_count=1), encode_seq("5"), 1, NOW), 0)
    with pytest.raises(SnapshotConflict):
        rt.store.put_snapshot(Snapshot("u1", version=1), expected_version=0)
    assert rt.store.get_snapshot("u1").watermark == encode_seq("5")

    newer = render_view("u1", ViewState(order_count=2, event_count=2), "", 0, NOW, None)
    older = render_view("u1", ViewState(order_count=1, event_count=1), "", 0, NOW, None)
    same_set_newer_snapshot = render_view("u1", ViewState(order_count=2, event_count=2), encode_seq("5"), 1, NOW, 2)
    assert rt.store.put_view(newer)
    assert not rt.store.put_view(older)
    assert not rt.store.put_view(newer)
    assert rt.store.put_view(same_set_newer_snapshot)
    assert rt.store.get_views(["u1"])["u1"]["snapshotVersion"] == 1


def test_batch_helpers_respect_limits_on_moto(aws):
    rt, _ddb, _sqs, urls = aws
    events = [StoredEvent(encode_seq(str(1000 + i)), parse_body(json.dumps(order(i))), NOW, NOW) for i in range(130)]
    requests = [r for e in events for r in rt.store.event_write_requests(e, 1)]
    rt.store.batch_write(requests)  # 260 requests: 11 calls
    seen = rt.store.seen_event_ids([f"e{i}" for i in range(150)])  # 2 BatchGetItem calls
    assert len(seen) == 130 and seen["e7"] == encode_seq("1007")
    keys = rt.store.event_keys_up_to("u1", encode_seq("1099"))
    assert len(keys) == 100
    rt.store.delete_events(keys)
    assert len(rt.store.query_events("u1")) == 30
    messages = [OutgoingMessage(str(i), json.dumps({"n": i}), delay_seconds=1) for i in range(23)]
    assert rt.queues.send(urls["trim"], messages) == []
    assert rt.queues.send("", messages[:1])[0].code == "NoQueueConfigured"
