"""SQS mappings: the event's shape (Powertools' model), deletion, visibility, redrive to the DLQ,
partial batch responses, FIFO groups, concurrency, delayed messages."""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities.parser.models import SqsModel

from tests.emulator.support.esm import (
    REGION,
    EngineHarness,
    Gate,
    create_queue,
    fail,
    item_failures,
    ok,
    queue_messages,
    queue_name,
    send_message,
)


def test_messages_arrive_as_aws_sqs_events_and_are_deleted(harness: EngineHarness) -> None:
    queue = create_queue(harness.moto)
    created = harness.start(queue, BatchSize=10)
    sent = [
        send_message(
            harness.moto,
            queue,
            f"body-{i}",
            message_attributes={
                "kind": {"DataType": "String", "StringValue": "test"},
                "blob": {"DataType": "Binary", "BinaryValue": b"hi"},
            },
        )
        for i in range(3)
    ]

    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 3, "3 messages")
    harness.wait_idle(created.uuid)
    assert queue_messages(harness.moto, queue) == []
    records = [record for call in harness.function.calls for record in call.records]
    for call in harness.function.calls:
        SqsModel.model_validate(call.event)
    assert [r["messageId"] for r in records] == sent
    for i, record in enumerate(records):
        assert record["body"] == f"body-{i}" and record["receiptHandle"]
        assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == queue
        assert record["awsRegion"] == REGION and len(record["md5OfBody"]) == 32
        assert set(record["attributes"]) == {
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
        }
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert record["attributes"]["SentTimestamp"].isdigit()
        assert record["messageAttributes"] == {
            "kind": {"stringValue": "test", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            "blob": {"binaryValue": "aGk=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
        }
        assert len(record["md5OfMessageAttributes"]) == 32
    assert harness.function.calls[0].origin.source == "sqs"


def test_failed_messages_return_after_the_visibility_timeout_then_go_to_dlq(harness: EngineHarness) -> None:
    dlq = create_queue(harness.moto)
    queue = create_queue(
        harness.moto, VisibilityTimeout=1, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq, "maxReceiveCount": 2})
    )
    harness.function.respond = lambda call: fail("cannot")
    created = harness.start(queue)
    message_id = send_message(harness.moto, queue, "doomed")

    harness.function.wait_for_calls(2)
    # The third receive finds the receive count at maxReceiveCount: SQS moves it to the DLQ instead.
    harness.wait_idle(created.uuid, timeout=10)
    receive_counts = [call.records[0]["attributes"]["ApproximateReceiveCount"] for call in harness.function.calls]
    assert receive_counts == ["1", "2"]
    assert [call.ids for call in harness.function.calls] == [[message_id], [message_id]]
    assert queue_messages(harness.moto, queue) == []
    assert [message.id for message in queue_messages(harness.moto, dlq)] == [message_id]
    assert harness.reported(created.uuid, "last_processing_result")[-1] == "PROBLEM: Function call failed"


def test_report_batch_item_failures_deletes_only_the_messages_not_reported(harness: EngineHarness) -> None:
    queue = create_queue(harness.moto, VisibilityTimeout=1)
    ids = [send_message(harness.moto, queue, f"m{i}") for i in range(3)]
    responses = iter([item_failures([ids[1]])])
    harness.function.respond = lambda call: next(responses, ok())
    created = harness.start(queue, BatchSize=10, FunctionResponseTypes=["ReportBatchItemFailures"])

    harness.function.wait_for_calls(2)
    harness.wait_idle(created.uuid)
    first, second = harness.function.calls
    assert first.ids == ids and second.ids == [ids[1]]
    assert second.records[0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert queue_messages(harness.moto, queue) == []


def test_an_invalid_batch_response_returns_every_message(harness: EngineHarness) -> None:
    queue = create_queue(harness.moto, VisibilityTimeout=1)
    ids = [send_message(harness.moto, queue, f"m{i}") for i in range(2)]
    responses = iter([item_failures(["not-a-message-id"])])
    harness.function.respond = lambda call: next(responses, ok())
    created = harness.start(queue, BatchSize=10, FunctionResponseTypes=["ReportBatchItemFailures"])

    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 4, "both messages twice")
    harness.wait_idle(created.uuid)
    assert sorted(harness.function.calls[0].ids) == sorted(ids)
    assert sorted(i for call in harness.function.calls[1:] for i in call.ids) == sorted(ids)


def test_fifo_keeps_one_batch_per_group_in_flight_and_each_group_in_order(harness: EngineHarness) -> None:
    queue = create_queue(harness.moto, fifo=True)
    gate = Gate()
    harness.function.respond = lambda call: (gate.wait(), ok())[1]
    for n in range(4):
        for group in ("g1", "g2", "g3"):
            send_message(harness.moto, queue, json.dumps({"group": group, "n": n}), group_id=group)
    created = harness.start(queue, BatchSize=2)
    harness.function.wait_in_flight(2)
    in_flight_groups = [{r["attributes"]["MessageGroupId"] for r in call.records} for call in harness.function.calls]
    gate.open()
    harness.wait_idle(created.uuid)

    seen: set[str] = set()
    for groups in in_flight_groups:  # the batches in flight together never share a group
        assert not groups & seen
        seen |= groups
    delivered = [json.loads(body) for body in harness.function.delivered()]
    assert len(delivered) == 12
    for group in ("g1", "g2", "g3"):
        assert [d["n"] for d in delivered if d["group"] == group] == [0, 1, 2, 3]
    record = harness.function.calls[0].records[0]
    assert {"SequenceNumber", "MessageGroupId", "MessageDeduplicationId"} <= set(record["attributes"])
    SqsModel.model_validate(harness.function.calls[0].event)


def test_maximum_concurrency_caps_batches_in_flight(harness: EngineHarness) -> None:
    queue = create_queue(harness.moto)
    gate = Gate()
    harness.function.respond = lambda call: (gate.wait(), ok())[1]
    for i in range(10):
        send_message(harness.moto, queue, f"m{i}")
    created = harness.start(queue, BatchSize=1, ScalingConfig={"MaximumConcurrency": 2})
    harness.function.wait_in_flight(2)
    assert harness.engine.status(created.uuid)["inFlight"] == 2
    gate.open()
    harness.wait_idle(created.uuid)
    assert harness.function.max_in_flight == 2
    assert len(harness.function.delivered()) == 10


def test_a_delayed_message_is_delivered_when_due_without_a_write(harness: EngineHarness) -> None:
    queue = create_queue(harness.moto)
    created = harness.start(queue)
    with harness.moto.lock():
        harness.moto.sqs(REGION).send_message(queue_name(queue), "later", delay_seconds=1)
    assert not harness.engine.is_idle(created.uuid), "a delayed message is pending"
    harness.function.wait_for_calls(1, timeout=5)
    harness.wait_idle(created.uuid)
    assert harness.function.delivered() == ["later"]


def test_a_batching_window_gathers_messages_into_one_batch(harness: EngineHarness) -> None:
    queue = create_queue(harness.moto)
    created = harness.start(queue, BatchSize=20, MaximumBatchingWindowInSeconds=1)
    for i in range(5):
        send_message(harness.moto, queue, f"m{i}")
    harness.function.wait_for_calls(1, timeout=5)
    harness.wait_idle(created.uuid)
    assert [call.data for call in harness.function.calls] == [[f"m{i}" for i in range(5)]]
