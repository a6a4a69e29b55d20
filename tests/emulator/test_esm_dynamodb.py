"""DynamoDB Streams mappings: the event's shape (Powertools' models), order, LATEST, lanes by hash key,
and the on-failure invocation record."""

from __future__ import annotations

import json
import re

from aws_lambda_powertools.utilities.parser.models import (
    DynamoDBStreamLambdaOnFailureDestinationModel,
    DynamoDBStreamModel,
)

from esjoin.emulator.event_source_mapping.payloads import lane_hash
from tests.emulator.support.esm import (
    FUNCTION_ARN,
    REGION,
    EngineHarness,
    Gate,
    create_queue,
    create_table,
    delete_item,
    fail,
    ok,
    put_item,
    queue_messages,
)


def test_changes_arrive_in_order_as_aws_dynamodb_stream_events(harness: EngineHarness) -> None:
    table, stream = create_table(harness.moto)
    created = harness.start(stream, BatchSize=100)
    put_item(harness.moto, table, {"pk": {"S": "a"}, "v": {"N": "1"}})
    put_item(harness.moto, table, {"pk": {"S": "a"}, "v": {"N": "2"}})
    put_item(harness.moto, table, {"pk": {"S": "b"}, "v": {"N": "3"}})
    delete_item(harness.moto, table, {"pk": {"S": "a"}})

    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 4, "4 stream records")
    harness.wait_idle(created.uuid)
    records = [record for call in harness.function.calls for record in call.records]
    for call in harness.function.calls:
        DynamoDBStreamModel.model_validate(call.event)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "INSERT", "REMOVE"]
    sequence_numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequence_numbers == sorted(sequence_numbers)
    for record in records:
        assert set(record) == {
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        }
        assert record["eventVersion"] == "1.1" and record["eventSource"] == "aws:dynamodb"
        assert record["awsRegion"] == REGION and record["eventSourceARN"] == stream
        assert re.fullmatch(r"[0-9a-f]{32}", record["eventID"])
        change = record["dynamodb"]
        assert isinstance(change["ApproximateCreationDateTime"], int | float)
        assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES" and change["SizeBytes"] > 0
        assert change["Keys"] == {"pk": record["dynamodb"].get("NewImage", change.get("OldImage"))["pk"]}
    modify = records[1]["dynamodb"]
    assert modify["OldImage"] == {"pk": {"S": "a"}, "v": {"N": "1"}}
    assert modify["NewImage"] == {"pk": {"S": "a"}, "v": {"N": "2"}}
    assert "NewImage" not in records[3]["dynamodb"] and records[3]["dynamodb"]["OldImage"]["v"] == {"N": "2"}
    assert harness.function.calls[0].origin.source == "dynamodb"


def test_latest_skips_changes_made_before_the_mapping(harness: EngineHarness) -> None:
    table, stream = create_table(harness.moto)
    put_item(harness.moto, table, {"pk": {"S": "old"}})
    created = harness.start(stream, StartingPosition="LATEST")
    put_item(harness.moto, table, {"pk": {"S": "new"}})
    harness.function.wait_for_calls(1)
    harness.wait_idle(created.uuid)
    assert [item["pk"]["S"] for item in harness.function.delivered()] == ["new"]


def test_lanes_follow_the_item_hash_key(harness: EngineHarness) -> None:
    table, stream = create_table(harness.moto, range_key=True)
    gate = Gate()
    harness.function.respond = lambda call: (gate.wait(), ok())[1] if call.index == 0 else ok()
    keys = ["a", "b", "c", "d", "e", "f"]
    assert len({lane_hash(json.dumps({"S": key})) % 3 for key in keys}) >= 2
    for n in range(4):
        for key in keys:
            put_item(harness.moto, table, {"pk": {"S": key}, "sk": {"N": str(n)}})
    created = harness.start(stream, BatchSize=3, ParallelizationFactor=3)
    harness.function.wait_in_flight(1)
    harness.function.wait_for(lambda calls: len(calls) >= 2, "a second lane delivering while the first waits")
    gate.open()
    harness.wait_idle(created.uuid)

    delivered = harness.function.delivered()
    assert len(delivered) == 24
    for key in keys:
        assert [int(item["sk"]["N"]) for item in delivered if item["pk"]["S"] == key] == [0, 1, 2, 3]


def test_exhausted_retries_send_a_ddb_stream_invocation_record(harness: EngineHarness) -> None:
    table, stream = create_table(harness.moto)
    destination = create_queue(harness.moto)
    harness.function.respond = lambda call: fail("cannot")
    created = harness.start(
        stream, MaximumRetryAttempts=1, DestinationConfig={"OnFailure": {"Destination": destination}}
    )
    with harness.moto.lock():  # one batch
        put_item(harness.moto, table, {"pk": {"S": "x"}})
        put_item(harness.moto, table, {"pk": {"S": "y"}})

    harness.wait_idle(created.uuid)
    [message] = queue_messages(harness.moto, destination)
    record = json.loads(message.body)
    parsed = DynamoDBStreamLambdaOnFailureDestinationModel.model_validate(record)
    assert parsed.request_context.condition == "RetryAttemptsExhausted"
    assert parsed.request_context.approximate_invoke_count == 2
    assert parsed.request_context.function_arn == FUNCTION_ARN
    assert parsed.response_context.function_error == "Unhandled"
    assert parsed.response_context.status_code == 200
    info = record["DDBStreamBatchInfo"]
    delivered = harness.function.calls[-1].ids
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (delivered[0], delivered[-1])
    assert info["batchSize"] == len(delivered) and info["streamArn"] == stream
    assert info["shardId"].startswith("shardId-")
    # DynamoDB's arrival times are whole seconds; the record's timestamp has milliseconds
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["approximateArrivalOfFirstRecord"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    assert harness.reported(created.uuid, "last_processing_result")[-1] == "PROBLEM: Function call failed"


def test_a_deleted_table_is_reported_and_does_not_stop_the_engine(harness: EngineHarness) -> None:
    table, stream = create_table(harness.moto)
    created = harness.start(stream)
    put_item(harness.moto, table, {"pk": {"S": "x"}})
    harness.function.wait_for_calls(1)
    with harness.moto.lock():
        harness.moto.dynamodb(REGION).delete_table(table)
    harness.wait_reported(created.uuid, "last_processing_result", "PROBLEM: Event source not found")
    harness.wait_idle(created.uuid)
    assert harness.engine.status(created.uuid)["sourceMissing"] is True
