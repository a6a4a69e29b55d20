"""Kinesis mappings: order, batching, starting positions, retries, on-failure, bisect, partial batch
responses, parallelization, resharding, and the event's shape (checked with Powertools' models)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time

import pytest
from aws_lambda_powertools.utilities.parser.models import KinesisDataStreamModel

from esjoin.emulator.event_source_mapping.engine import EventSourceMappingEngine
from esjoin.emulator.event_source_mapping.payloads import lane_hash
from esjoin.emulator.invocation import LambdaServiceError
from tests.emulator.support.esm import (
    ACCOUNT,
    FUNCTION_ARN,
    REGION,
    EngineHarness,
    Gate,
    create_queue,
    create_stream,
    fail,
    item_failures,
    kinesis_shards,
    mapping,
    ok,
    put_record,
    queue_messages,
    updated,
    wait_until,
)


def write(harness: EngineHarness, stream: str, items: list[tuple[str, int]]) -> list[str]:
    """Write ({"key", "n"}) records with partition key `key`, all at once (the pollers see them
    together: moto's lock is held); returns their sequence numbers."""
    with harness.moto.lock():
        return [put_record(harness.moto, stream, key, {"key": key, "n": n}) for key, n in items]


def test_records_arrive_in_shard_order_as_aws_kinesis_events(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto, shards=2)
    written = write(harness, stream, [(f"user-{i % 5}", i) for i in range(20)])
    created = harness.start(stream, BatchSize=100)

    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 20, "all 20 records")

    shard_of = {}
    for call in harness.function.calls:
        event = KinesisDataStreamModel.model_validate(call.event)
        shards = {record.eventID.split(":")[0] for record in event.Records}
        assert len(shards) == 1, "a batch holds records of one shard"
        for raw, record in zip(call.records, event.Records, strict=True):
            shard_of[record.kinesis.sequenceNumber] = record.eventID.split(":")[0]
            assert record.eventSource == "aws:kinesis" and record.eventName == "aws:kinesis:record"
            assert record.eventVersion == "1.0" and record.kinesis.kinesisSchemaVersion == "1.0"
            sequence_number = record.kinesis.sequenceNumber
            assert record.eventID == f"{shard_of[sequence_number]}:{sequence_number}"
            assert record.eventSourceARN == stream and record.awsRegion == REGION
            assert record.invokeIdentityArn.startswith(f"arn:aws:iam::{ACCOUNT}:role/")
            assert json.loads(record.kinesis.data)["key"] == record.kinesis.partitionKey
            assert isinstance(raw["kinesis"]["approximateArrivalTimestamp"], float)
            assert abs(raw["kinesis"]["approximateArrivalTimestamp"] - time.time()) < 60
            assert set(raw) == {
                "kinesis",
                "eventSource",
                "eventVersion",
                "eventID",
                "eventName",
                "invokeIdentityArn",
                "awsRegion",
                "eventSourceARN",
            }
        assert call.function_arn == FUNCTION_ARN
        assert call.origin.invocation_type == "EventSourceMapping"
        assert call.origin.mapping_uuid == created.uuid
        assert call.origin.source == "kinesis" and call.origin.attempt == 1

    assert sorted(shard_of) == sorted(written)
    for shard_id in set(shard_of.values()):
        delivered = [seq for call in harness.function.calls for seq in call.ids if shard_of[seq] == shard_id]
        assert delivered == sorted(delivered, key=int), f"{shard_id} delivered out of order"
    harness.wait_idle(created.uuid)
    status = harness.engine.status(created.uuid)
    assert status["lag"] == 0
    assert all(
        shard["checkpoint"] == max((s for s in shard_of if shard_of[s] == shard_id), key=int)
        for shard_id, shard in status["shards"].items()
    )


def test_batch_size_caps_each_batch(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    write(harness, stream, [("k", i) for i in range(25)])
    harness.start(stream, BatchSize=10)

    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 25, "25 records")
    assert [len(call.records) for call in harness.function.calls] == [10, 10, 5]
    assert [item["n"] for item in harness.function.delivered()] == list(range(25))


def test_batching_window_waits_for_a_full_batch_and_no_longer(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    created = harness.start(stream, BatchSize=5, MaximumBatchingWindowInSeconds=30)
    write(harness, stream, [("k", i) for i in range(5)])
    harness.function.wait_for_calls(1)  # full: delivered long before the 30 s window ends
    assert [item["n"] for item in harness.function.calls[0].data] == [0, 1, 2, 3, 4]

    harness.engine.update(updated(created, maximum_batching_window_seconds=1))
    write(harness, stream, [("k", 5), ("k", 6)])
    calls = harness.function.wait_for_calls(2)  # not full: delivered when the 1 s window ends
    assert [item["n"] for item in calls[1].data] == [5, 6]


def test_starting_position_latest_skips_what_was_written_before(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto, shards=2)
    write(harness, stream, [(f"k{i}", i) for i in range(6)])
    harness.start(stream, StartingPosition="LATEST")
    write(harness, stream, [(f"k{i}", 100 + i) for i in range(6)])

    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 6, "6 new records")
    harness.wait_idle()
    assert sorted(item["n"] for item in harness.function.delivered()) == [100 + i for i in range(6)]


def test_starting_position_at_timestamp_starts_at_the_first_record_after_it(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    write(harness, stream, [("k", i) for i in range(3)])
    with harness.moto.lock():
        last_old = max(
            r.created_at for shard in kinesis_shards(harness.moto, stream).values() for r in shard.records.values()
        )
    timestamp = last_old + 0.000_5
    wait_until(lambda: time.time() > timestamp + 0.001, "the clock to pass the timestamp")
    write(harness, stream, [("k", i) for i in range(3, 6)])
    harness.start(stream, StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=timestamp)

    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 3, "3 records")
    harness.wait_idle()
    assert [item["n"] for item in harness.function.delivered()] == [3, 4, 5]


def test_a_failed_batch_blocks_its_shard_until_it_succeeds(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    failures = iter([fail("first"), fail("second"), fail("third")])
    harness.function.respond = lambda call: next(failures, ok())
    created = harness.start(stream, BatchSize=3)
    write(harness, stream, [("k", i) for i in range(3)])
    harness.function.wait_for_calls(2)
    write(harness, stream, [("k", i) for i in range(3, 6)])

    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 4 * 3 + 3, "retries, then more")
    harness.wait_idle(created.uuid)
    calls = harness.function.calls
    assert [[item["n"] for item in call.data] for call in calls[:4]] == [[0, 1, 2]] * 4
    assert [call.origin.attempt for call in calls[:4]] == [1, 2, 3, 4]
    assert [item["n"] for call in calls[4:] for item in call.data] == [3, 4, 5]
    results = harness.reported(created.uuid, "last_processing_result")
    assert results[-2:] == ["PROBLEM: Function call failed", "OK"]


def test_exhausted_retries_send_the_invocation_record_and_the_shard_moves_on(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    destination = create_queue(harness.moto)
    harness.function.respond = lambda call: fail("poison") if any(d["n"] == 1 for d in call.data) else ok()
    created = harness.start(
        stream, BatchSize=2, MaximumRetryAttempts=2, DestinationConfig={"OnFailure": {"Destination": destination}}
    )
    sequence_numbers = write(harness, stream, [("k", 0), ("k", 1)])
    harness.function.wait_for_calls(3)
    write(harness, stream, [("k", 2)])

    harness.function.wait_for(lambda calls: any(d["n"] == 2 for c in calls for d in c.data), "the next record")
    harness.wait_idle(created.uuid)
    assert [call.origin.attempt for call in harness.function.calls] == [1, 2, 3, 1]

    [message] = queue_messages(harness.moto, destination)
    record = json.loads(message.body)
    assert set(record) == {"requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo"}
    request, response, info = record["requestContext"], record["responseContext"], record["KinesisBatchInfo"]
    assert request["functionArn"] == FUNCTION_ARN and request["condition"] == "RetryAttemptsExhausted"
    assert request["approximateInvokeCount"] == 3 and request["requestId"]
    assert response == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["version"] == "1.0"
    assert info["shardId"] == "shardId-000000000000" and info["streamArn"] == stream
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == tuple(sequence_numbers)
    assert info["batchSize"] == 2
    iso_ms = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    for field in ("approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord"):
        assert re.fullmatch(iso_ms, info[field]), info[field]
    assert re.fullmatch(iso_ms, record["timestamp"])


def test_records_older_than_the_maximum_age_are_discarded_unread(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    destination = create_queue(harness.moto)
    write(harness, stream, [("k", 0), ("k", 1)])
    with harness.moto.lock():
        for shard in kinesis_shards(harness.moto, stream).values():
            for record in shard.records.values():
                record.created_at -= 120  # written two minutes ago
    created = harness.start(
        stream, MaximumRecordAgeInSeconds=60, DestinationConfig={"OnFailure": {"Destination": destination}}
    )
    write(harness, stream, [("k", 2)])

    harness.function.wait_for_calls(1)
    harness.wait_idle(created.uuid)
    assert [item["n"] for item in harness.function.delivered()] == [2]
    [message] = queue_messages(harness.moto, destination)
    record = json.loads(message.body)
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["KinesisBatchInfo"]["batchSize"] == 2


def test_bisect_isolates_a_poison_record(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    destination = create_queue(harness.moto)
    harness.function.respond = lambda call: fail("poison") if any(d["n"] == 5 for d in call.data) else ok()
    write(harness, stream, [("k", i) for i in range(8)])
    created = harness.start(
        stream,
        BatchSize=8,
        BisectBatchOnFunctionError=True,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": destination}},
    )

    harness.wait_idle(created.uuid)
    sizes = [(len(call.records), call.data[0]["n"]) for call in harness.function.calls]
    # 8 fails -> [0..3] ok, [4..7] fails -> [4,5] fails, [6,7] ok after -> [4] ok, [5] fails twice.
    assert sizes == [(8, 0), (4, 0), (4, 4), (2, 4), (1, 4), (1, 5), (1, 5), (2, 6)]
    succeeded = [
        d["n"] for call in harness.function.calls if not any(d["n"] == 5 for d in call.data) for d in call.data
    ]
    assert sorted(succeeded) == [0, 1, 2, 3, 4, 6, 7]
    [message] = queue_messages(harness.moto, destination)
    record = json.loads(message.body)
    assert record["KinesisBatchInfo"]["batchSize"] == 1
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 5  # 8, 4, 2, 1 and its one retry


def test_report_batch_item_failures_retries_from_the_lowest_failed_record(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    sequence_numbers = write(harness, stream, [("k", i) for i in range(6)])
    responses = iter([item_failures([sequence_numbers[4], sequence_numbers[2]])])
    harness.function.respond = lambda call: next(responses, ok())
    created = harness.start(stream, BatchSize=10, FunctionResponseTypes=["ReportBatchItemFailures"])

    harness.function.wait_for_calls(2)
    harness.wait_idle(created.uuid)
    calls = harness.function.calls
    assert [item["n"] for item in calls[0].data] == [0, 1, 2, 3, 4, 5]
    assert [item["n"] for item in calls[1].data] == [2, 3, 4, 5]
    assert len(calls) == 2
    shard = harness.engine.status(created.uuid)["shards"]["shardId-000000000000"]
    assert shard["checkpoint"] == sequence_numbers[5]


@pytest.mark.parametrize(
    "response",
    [
        item_failures(["49000000000000000000000000000000000000000000000000000000000"]),  # not in the batch
        item_failures([""]),
        item_failures([None]),
        ok({"batchItemFailures": [{"sequenceNumber": "1"}]}),  # bad key name
        ok({"batchItemFailures": "all"}),
        ok("done"),
    ],
    ids=["unknown", "empty", "null", "bad-key", "not-a-list", "not-an-object"],
)
def test_an_invalid_batch_response_fails_the_whole_batch(harness: EngineHarness, response) -> None:
    stream = create_stream(harness.moto)
    responses = iter([response])
    harness.function.respond = lambda call: next(responses, ok())
    write(harness, stream, [("k", i) for i in range(3)])
    created = harness.start(stream, FunctionResponseTypes=["ReportBatchItemFailures"])

    harness.function.wait_for_calls(2)
    harness.wait_idle(created.uuid)
    assert [[item["n"] for item in call.data] for call in harness.function.calls] == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize(
    "response",
    [ok(None), ok({}), ok({"batchItemFailures": []}), ok({"batchItemFailures": None})],
    ids=["null", "empty", "[]", "none"],
)
def test_an_empty_batch_response_is_success(harness: EngineHarness, response) -> None:
    stream = create_stream(harness.moto)
    harness.function.respond = lambda call: response
    write(harness, stream, [("k", i) for i in range(3)])
    created = harness.start(stream, FunctionResponseTypes=["ReportBatchItemFailures"])
    harness.function.wait_for_calls(1)
    harness.wait_idle(created.uuid)
    assert len(harness.function.calls) == 1


def test_parallelization_keeps_each_key_in_order_across_concurrent_lanes(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    keys = [f"user-{i}" for i in range(12)]
    assert len({lane_hash(key) % 4 for key in keys}) >= 3, "the keys spread over several lanes"
    gate = Gate()
    first_batches = threading.Semaphore(0)

    def respond(call):
        if call.index < 2:
            first_batches.release()
            gate.wait()  # hold the first two batches until both are in flight
        return ok()

    harness.function.respond = respond
    write(harness, stream, [(key, n) for n in range(5) for key in keys])
    created = harness.start(stream, BatchSize=4, ParallelizationFactor=4)
    harness.function.wait_in_flight(2)
    gate.open()
    harness.wait_idle(created.uuid)

    assert harness.function.max_in_flight >= 2
    delivered = harness.function.delivered()
    assert len(delivered) == len(keys) * 5
    for key in keys:
        assert [item["n"] for item in delivered if item["key"] == key] == list(range(5)), key
    for call in harness.function.calls:
        assert len({lane_hash(item["key"]) % 4 for item in call.data}) == 1, "a batch comes from one lane"
    status = harness.engine.status(created.uuid)
    assert status["lag"] == 0 and len(status["shards"]["shardId-000000000000"]["lanes"]) == 4


def test_a_child_shard_waits_until_its_parent_is_done(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    gate = Gate()
    harness.function.respond = lambda call: (gate.wait(), ok())[1] if call.index == 0 else ok()
    write(harness, stream, [(f"k{i}", i) for i in range(4)])
    created = harness.start(stream, BatchSize=2)
    harness.function.wait_in_flight(1)
    with harness.moto.lock():
        harness.moto.kinesis(REGION).split_shard(stream, None, "shardId-000000000000", str(2**127))
    write(harness, stream, [(f"k{i}", 10 + i) for i in range(4)])
    children = set(kinesis_shards(harness.moto, stream)) - {"shardId-000000000000"}
    assert len(children) == 2
    gate.open()

    harness.wait_idle(created.uuid)
    delivered = harness.function.delivered()
    assert sorted(item["n"] for item in delivered) == [0, 1, 2, 3, 10, 11, 12, 13]
    assert [item["n"] for item in delivered[:4]] == [0, 1, 2, 3], "the parent is finished first"
    child_events = {record["eventID"].split(":")[0] for call in harness.function.calls[2:] for record in call.records}
    assert child_events <= children
    status = harness.engine.status(created.uuid)["shards"]
    assert status["shardId-000000000000"]["finished"] is True


def test_throttles_are_retried_without_using_retry_attempts(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    errors = iter(
        [LambdaServiceError(429, "TooManyRequestsException", "Rate exceeded")] * 3
        + [LambdaServiceError(404, "ResourceNotFoundException", "Function not found")]
    )

    def respond(call):
        error = next(errors, None)
        if error:
            raise error
        return ok()

    harness.function.respond = respond
    created = harness.start(stream, MaximumRetryAttempts=0)
    write(harness, stream, [("k", 0)])
    harness.function.wait_for_calls(5)
    harness.wait_idle(created.uuid)
    assert len(harness.function.calls) == 5
    assert "PROBLEM: Function not found" in harness.reported(created.uuid, "last_processing_result")
    assert harness.reported(created.uuid, "last_processing_result")[-1] == "OK"


def test_records_data_is_delivered_base64_as_written(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    raw = bytes(range(256))
    put_record(harness.moto, stream, "k", raw)
    harness.start(stream)
    [call] = harness.function.wait_for_calls(1)
    assert base64.b64decode(call.records[0]["kinesis"]["data"]) == raw


def test_invoke_identity_arn_is_the_role_the_lambda_api_names(harness: EngineHarness) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/service-role/esm-test-role"
    engine = EventSourceMappingEngine(
        harness.config, harness.moto, harness.function, lambda *_: None, invoke_identity_arn=lambda function_arn: role
    )
    harness.engines.append(engine)
    stream = create_stream(harness.moto)
    put_record(harness.moto, stream, "k", {"n": 1})
    engine.start(mapping(stream))
    [call] = harness.function.wait_for_calls(1)
    assert call.records[0]["invokeIdentityArn"] == role
