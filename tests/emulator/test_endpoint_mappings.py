"""Event source mappings over real HTTP: the Lambda API for mappings, delivery from Kinesis, DynamoDB
Streams and SQS to a probe function that records every event, and the events' shapes.

The engine's detailed semantics are unit-tested in test_esm_*.py; here, one end-to-end check each.
Shapes: https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html,
https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html, https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import DynamoDBStreamModel, KinesisDataStreamModel, SqsModel
from botocore.exceptions import ClientError

from tests.emulator.support.endpoint import (
    ACCOUNT,
    REGION,
    Control,
    Probe,
    create_queue,
    create_stream,
    create_table,
    kinesis_data,
    unique,
    wait_mapping_state,
    wait_until,
)

HALF_HASH = 2**127


def error_code(raised: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


# -- delivery and event shapes -------------------------------------------------------------------------


def test_kinesis_records_are_delivered_in_aws_shape(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, stream_arn = create_stream(kinesis, shards=2)
    mapping = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON"
    )
    wait_mapping_state(lambda_client, mapping["UUID"], "Enabled")

    before = time.time()
    puts = {}
    for n in range(6):
        data = json.dumps({"n": n}).encode()
        hash_key = "0" if n % 2 else str(HALF_HASH)
        put = kinesis.put_record(StreamName=stream, Data=data, PartitionKey=f"user-{n}", ExplicitHashKey=hash_key)
        puts[f"{put['ShardId']}:{put['SequenceNumber']}"] = (n, data, put)
    after = time.time()
    recorder.wait_records(6)

    for event in recorder.events():
        KinesisDataStreamModel.model_validate(event)
    records = recorder.records()
    assert sorted(r["eventID"] for r in records) == sorted(puts), "one delivery per record, none invented"
    for record in records:
        n, data, put = puts[record["eventID"]]
        shard_id, sequence_number = record["eventID"].rsplit(":", 1)
        assert re.fullmatch(r"shardId-\d{12}", shard_id)
        assert record["kinesis"]["sequenceNumber"] == sequence_number == put["SequenceNumber"]
        assert base64.b64decode(record["kinesis"]["data"]) == data
        assert record["kinesis"]["partitionKey"] == f"user-{n}"
        assert record["kinesis"]["kinesisSchemaVersion"] == "1.0"
        assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)
        assert before - 1 <= record["kinesis"]["approximateArrivalTimestamp"] <= after + 1
        assert (record["eventSource"], record["eventName"], record["eventVersion"]) == (
            "aws:kinesis",
            "aws:kinesis:record",
            "1.0",
        )
        assert (record["awsRegion"], record["eventSourceARN"]) == (REGION, stream_arn)
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/.+", record["invokeIdentityArn"])
    for shard in {r["eventID"].split(":")[0] for r in records}:
        numbers = [int(r["kinesis"]["sequenceNumber"]) for r in records if r["eventID"].startswith(shard)]
        assert numbers == sorted(numbers), f"shard {shard} delivered out of order"
    wait_until(control.quiescent, "quiescence")  # the probe stores records before its invocation ends
    history = recorder.history()
    assert sorted(i for r in history for i in r["batchIds"]) == sorted(puts)
    assert {(r["invocationType"], r["source"], r["mapping"]) for r in history} == {
        ("EventSourceMapping", "kinesis", mapping["UUID"])
    }


def test_kinesis_invoke_identity_arn_is_the_functions_role(probe: Any, lambda_client: Any, kinesis: Any) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/{unique('probe-role')}"
    recorder: Probe = probe(Role=role)
    stream, stream_arn = create_stream(kinesis)
    lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON"
    )
    kinesis.put_record(StreamName=stream, Data=b"{}", PartitionKey="p")

    assert recorder.wait_records(1)[0]["invokeIdentityArn"] == role


def test_dynamodb_stream_records_are_delivered_in_aws_shape(probe: Any, lambda_client: Any, dynamodb: Any) -> None:
    recorder: Probe = probe()
    table, stream_arn = create_table(dynamodb, range_key=True, stream_view="NEW_AND_OLD_IMAGES")
    mapping = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON"
    )
    wait_mapping_state(lambda_client, mapping["UUID"], "Enabled")
    key = {"pk": {"S": "user-1"}, "sk": {"S": "profile"}}

    before = time.time()
    dynamodb.put_item(TableName=table, Item={**key, "name": {"S": "Ada"}, "logins": {"N": "1"}})
    dynamodb.update_item(
        TableName=table, Key=key, UpdateExpression="SET logins = :n", ExpressionAttributeValues={":n": {"N": "2"}}
    )
    dynamodb.delete_item(TableName=table, Key=key)
    after = time.time()
    records = recorder.wait_records(3)

    for event in recorder.events():
        DynamoDBStreamModel.model_validate(event)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    for record in records:
        assert (record["eventVersion"], record["eventSource"]) == ("1.1", "aws:dynamodb")
        assert (record["awsRegion"], record["eventSourceARN"]) == (REGION, stream_arn)
        assert record["eventID"]
        change = record["dynamodb"]
        assert change["Keys"] == key
        assert isinstance(change["ApproximateCreationDateTime"], int | float)
        assert int(before) - 1 <= change["ApproximateCreationDateTime"] <= after + 1
        assert isinstance(change["SizeBytes"], int) and change["SizeBytes"] > 0
        assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert change["SequenceNumber"].isdigit()
    insert, modify, remove = (r["dynamodb"] for r in records)
    assert insert["NewImage"] == {**key, "name": {"S": "Ada"}, "logins": {"N": "1"}} and "OldImage" not in insert
    assert (modify["OldImage"]["logins"], modify["NewImage"]["logins"]) == ({"N": "1"}, {"N": "2"})
    assert remove["OldImage"]["logins"] == {"N": "2"} and "NewImage" not in remove
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert numbers == sorted(numbers)


def test_sqs_messages_are_delivered_in_aws_shape_and_deleted(probe: Any, lambda_client: Any, sqs: Any) -> None:
    recorder: Probe = probe()
    url, queue_arn = create_queue(sqs)
    mapping = lambda_client.create_event_source_mapping(FunctionName=recorder.name, EventSourceArn=queue_arn)
    wait_mapping_state(lambda_client, mapping["UUID"], "Enabled")

    sent = {}
    for n in range(3):
        attributes = {"kind": {"DataType": "String", "StringValue": f"kind-{n}"}} if n == 0 else {}
        response = sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}), MessageAttributes=attributes)
        sent[response["MessageId"]] = response
    records = recorder.wait_records(3)

    for event in recorder.events():
        SqsModel.model_validate(event)
    assert sorted(r["messageId"] for r in records) == sorted(sent)
    for record in records:
        response = sent[record["messageId"]]
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest() == response["MD5OfMessageBody"]
        attributes = record["attributes"]
        assert attributes["ApproximateReceiveCount"] == "1"
        assert attributes["SentTimestamp"].isdigit() and attributes["ApproximateFirstReceiveTimestamp"].isdigit()
        assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= int(attributes["SentTimestamp"])
        assert attributes["SenderId"]
        assert record["receiptHandle"]
        assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == ("aws:sqs", queue_arn, REGION)
        if "MD5OfMessageAttributes" in response:
            assert record["md5OfMessageAttributes"] == response["MD5OfMessageAttributes"]
            assert record["messageAttributes"] == {
                "kind": {"stringValue": "kind-0", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
            }
        else:
            assert record["messageAttributes"] == {}
    wait_until(lambda: queue_counts(sqs, url) == (0, 0), "the delivered messages deleted from the queue")


# -- the mapping API -------------------------------------------------------------------------------------


def test_create_get_list_update_and_delete_a_mapping_with_aws_defaults(
    probe: Any, lambda_client: Any, kinesis: Any, sqs: Any
) -> None:
    recorder: Probe = probe()
    _, stream_arn = create_stream(kinesis)
    _, queue_arn = create_queue(sqs)

    stream_mapping = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=stream_arn, StartingPosition="LATEST"
    )
    queue_mapping = lambda_client.create_event_source_mapping(FunctionName=recorder.arn, EventSourceArn=queue_arn)

    assert stream_mapping["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert stream_mapping["State"] == "Creating"
    assert (stream_mapping["EventSourceArn"], stream_mapping["FunctionArn"]) == (stream_arn, recorder.arn)
    assert {
        key: stream_mapping[key]
        for key in (
            "BatchSize",
            "MaximumBatchingWindowInSeconds",
            "StartingPosition",
            "ParallelizationFactor",
            "MaximumRetryAttempts",
            "MaximumRecordAgeInSeconds",
            "BisectBatchOnFunctionError",
            "DestinationConfig",
        )
    } == {
        "BatchSize": 100,
        "MaximumBatchingWindowInSeconds": 0,
        "StartingPosition": "LATEST",
        "ParallelizationFactor": 1,
        "MaximumRetryAttempts": -1,
        "MaximumRecordAgeInSeconds": -1,
        "BisectBatchOnFunctionError": False,
        "DestinationConfig": {"OnFailure": {}},
    }
    assert queue_mapping["State"] == "Creating"
    assert (queue_mapping["BatchSize"], queue_mapping["MaximumBatchingWindowInSeconds"]) == (10, 0)
    assert "StartingPosition" not in queue_mapping
    stream_uuid, queue_uuid = stream_mapping["UUID"], queue_mapping["UUID"]
    wait_mapping_state(lambda_client, stream_uuid, "Enabled")
    wait_mapping_state(lambda_client, queue_uuid, "Enabled")

    got = lambda_client.get_event_source_mapping(UUID=queue_uuid)
    assert (got["UUID"], got["EventSourceArn"], got["FunctionArn"]) == (queue_uuid, queue_arn, recorder.arn)
    by_function = lambda_client.list_event_source_mappings(FunctionName=recorder.name)["EventSourceMappings"]
    assert {m["UUID"] for m in by_function} == {stream_uuid, queue_uuid}
    by_source = lambda_client.list_event_source_mappings(EventSourceArn=queue_arn)["EventSourceMappings"]
    assert [m["UUID"] for m in by_source] == [queue_uuid]

    updated = lambda_client.update_event_source_mapping(UUID=queue_uuid, BatchSize=5)
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202 and updated["BatchSize"] == 5
    assert updated["State"] == "Updating"
    assert lambda_client.get_event_source_mapping(UUID=queue_uuid)["BatchSize"] == 5

    deleted = lambda_client.delete_event_source_mapping(UUID=queue_uuid)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202 and deleted["State"] == "Deleting"
    with pytest.raises(ClientError) as raised:
        lambda_client.get_event_source_mapping(UUID=queue_uuid)
    assert error_code(raised) == (404, "ResourceNotFoundException")
    remaining = lambda_client.list_event_source_mappings(FunctionName=recorder.name)["EventSourceMappings"]
    assert [m["UUID"] for m in remaining] == [stream_uuid]


def test_an_updated_mapping_returns_to_enabled(probe: Any, lambda_client: Any, sqs: Any) -> None:
    recorder: Probe = probe()
    _, queue_arn = create_queue(sqs)
    uuid_ = lambda_client.create_event_source_mapping(FunctionName=recorder.name, EventSourceArn=queue_arn)["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Enabled")

    assert lambda_client.update_event_source_mapping(UUID=uuid_, BatchSize=5)["State"] == "Updating"

    assert wait_mapping_state(lambda_client, uuid_, "Enabled", timeout=5)["BatchSize"] == 5


def test_disabling_stops_delivery_and_enabling_resumes_without_loss_or_duplicates(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, stream_arn = create_stream(kinesis)
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON"
    )["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Enabled")

    def put(n: int) -> None:
        kinesis.put_record(StreamName=stream, Data=json.dumps({"n": n}).encode(), PartitionKey=f"k{n % 2}")

    for n in range(3):
        put(n)
    recorder.wait_records(3)

    disabling = lambda_client.update_event_source_mapping(UUID=uuid_, Enabled=False)
    assert disabling["State"] == "Disabling"
    wait_mapping_state(lambda_client, uuid_, "Disabled")
    for n in range(3, 6):
        put(n)
    wait_until(control.quiescent, "quiescence with the mapping disabled")
    assert sorted(kinesis_data(r)["n"] for r in recorder.records()) == [0, 1, 2], "no delivery while disabled"

    enabling = lambda_client.update_event_source_mapping(UUID=uuid_, Enabled=True)
    assert enabling["State"] == "Enabling"
    wait_mapping_state(lambda_client, uuid_, "Enabled")
    recorder.wait_records(6)
    wait_until(control.quiescent, "quiescence after enabling")
    assert sorted(kinesis_data(r)["n"] for r in recorder.records()) == list(range(6)), "each record exactly once"


def test_a_disabled_sqs_mapping_leaves_messages_in_the_queue_until_enabled(
    probe: Any, lambda_client: Any, sqs: Any, control: Control
) -> None:
    recorder: Probe = probe()
    url, queue_arn = create_queue(sqs)
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=queue_arn, Enabled=False
    )["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Disabled")

    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
    wait_until(control.quiescent, "quiescence with the mapping disabled")
    assert recorder.records() == [] and queue_counts(sqs, url) == (3, 0)

    lambda_client.update_event_source_mapping(UUID=uuid_, Enabled=True)
    recorder.wait_records(3)
    wait_until(control.quiescent, "quiescence after enabling")
    assert sorted(r["body"] for r in recorder.records()) == ["m0", "m1", "m2"]
    assert queue_counts(sqs, url) == (0, 0)


@pytest.mark.parametrize("source", ["kinesis", "dynamodb", "sqs"])
def test_a_mapping_to_a_missing_source_is_refused(probe: Any, lambda_client: Any, source: str) -> None:
    recorder: Probe = probe()
    arn = {
        "kinesis": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{unique('missing')}",
        "dynamodb": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{unique('missing')}/stream/2024-01-01T00:00:00.000",
        "sqs": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{unique('missing')}",
    }[source]
    position = {} if source == "sqs" else {"StartingPosition": "TRIM_HORIZON"}

    with pytest.raises(ClientError) as raised:
        lambda_client.create_event_source_mapping(FunctionName=recorder.name, EventSourceArn=arn, **position)

    assert error_code(raised) == (400, "InvalidParameterValueException")
    assert arn in raised.value.response["Error"]["Message"]


def test_a_duplicate_mapping_is_a_conflict(probe: Any, lambda_client: Any, sqs: Any) -> None:
    recorder: Probe = probe()
    _, queue_arn = create_queue(sqs)
    first = lambda_client.create_event_source_mapping(FunctionName=recorder.name, EventSourceArn=queue_arn)

    with pytest.raises(ClientError) as raised:
        lambda_client.create_event_source_mapping(FunctionName=recorder.name, EventSourceArn=queue_arn)

    assert error_code(raised) == (409, "ResourceConflictException")
    assert first["UUID"] in raised.value.response["Error"]["Message"]


def test_a_mapping_to_an_unknown_function_is_not_found(lambda_client: Any, sqs: Any) -> None:
    _, queue_arn = create_queue(sqs)
    with pytest.raises(ClientError) as raised:
        lambda_client.create_event_source_mapping(FunctionName=unique("nobody"), EventSourceArn=queue_arn)
    assert error_code(raised) == (404, "ResourceNotFoundException")


# -- failures, end to end --------------------------------------------------------------------------------


def test_a_failing_batch_is_retried_until_it_succeeds(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, stream_arn = create_stream(kinesis)
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON"
    )["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Enabled")
    rule = control.add_fault(function=recorder.name, action="error", count=2)

    kinesis.put_record(StreamName=stream, Data=b'{"n": 1}', PartitionKey="p")
    recorder.wait_records(1)
    wait_until(control.quiescent, "quiescence")

    history = recorder.history()
    assert [(r["attempt"], r["outcome"], r["injectedFault"]) for r in history] == [
        (1, "error", rule["id"]),
        (2, "error", rule["id"]),
        (3, "success", None),
    ], history
    assert len({tuple(r["batchIds"]) for r in history}) == 1, "the same batch each time"
    assert len(recorder.records()) == 1


def test_report_batch_item_failures_on_sqs_returns_only_the_failed_message(
    probe: Any, lambda_client: Any, sqs: Any, control: Control
) -> None:
    recorder: Probe = probe("report-failures")
    # Warm the probe: a batch must finish well inside the visibility timeout, or SQS rightly redelivers it.
    lambda_client.invoke(FunctionName=recorder.name, Payload=b"{}")
    url, queue_arn = create_queue(sqs, VisibilityTimeout="2")
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=queue_arn, FunctionResponseTypes=["ReportBatchItemFailures"]
    )["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Enabled")

    sent = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "MessageBody": "ok-a"},
            {"Id": "b", "MessageBody": "FAIL-b"},
            {"Id": "c", "MessageBody": "ok-c"},
        ],
    )
    ids = {entry["Id"]: entry["MessageId"] for entry in sent["Successful"]}
    recorder.wait_records(4)  # three, then the failed one again once its visibility timeout ends
    wait_until(lambda: queue_counts(sqs, url) == (0, 0), "the queue drained")

    records = recorder.records()
    assert sorted(r["body"] for r in records) == ["FAIL-b", "FAIL-b", "ok-a", "ok-c"]
    again = [r for r in records if r["attributes"]["ApproximateReceiveCount"] == "2"]
    assert [r["messageId"] for r in again] == [ids["b"]], "only the reported message came back"
    history = recorder.history()
    partial = [r for r in history if r["outcome"] == "partial"]
    assert [r["batchItemFailures"] for r in partial] == [[ids["b"]]]
    assert history[-1]["batchIds"] == [ids["b"]] and history[-1]["outcome"] == "success"


def test_when_retries_run_out_the_on_failure_queue_gets_awss_record(
    probe: Any, lambda_client: Any, kinesis: Any, sqs: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, stream_arn = create_stream(kinesis)
    destination_url, destination_arn = create_queue(sqs)
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name,
        EventSourceArn=stream_arn,
        StartingPosition="TRIM_HORIZON",
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": destination_arn}},
    )["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Enabled")
    control.add_fault(function=recorder.name, action="error", count=2)  # the first try and the one retry

    failed = kinesis.put_record(StreamName=stream, Data=b'{"n": 1}', PartitionKey="p")
    messages = wait_until(
        lambda: sqs.receive_message(QueueUrl=destination_url, WaitTimeSeconds=1).get("Messages"),
        "the on-failure record",
        history=recorder.history,
    )
    kinesis.put_record(StreamName=stream, Data=b'{"n": 2}', PartitionKey="p")
    delivered = recorder.wait_records(1)

    assert [kinesis_data(r)["n"] for r in delivered] == [2], "the shard moved on past the failed record"
    assert len(messages) == 1
    document = json.loads(messages[0]["Body"])
    assert document["version"] == "1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["timestamp"])
    context = document["requestContext"]
    assert (context["functionArn"], context["condition"], context["approximateInvokeCount"]) == (
        recorder.arn,
        "RetryAttemptsExhausted",
        2,
    )
    assert document["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    batch = document["KinesisBatchInfo"]
    assert (batch["shardId"], batch["startSequenceNumber"], batch["endSequenceNumber"]) == (
        failed["ShardId"],
        failed["SequenceNumber"],
        failed["SequenceNumber"],
    )
    assert (batch["batchSize"], batch["streamArn"]) == (1, stream_arn)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", batch["approximateArrivalOfFirstRecord"])
    wait_until(control.quiescent, "quiescence")  # the probe stores records before its invocation ends
    assert [r["outcome"] for r in recorder.history()] == ["error", "error", "success"]
