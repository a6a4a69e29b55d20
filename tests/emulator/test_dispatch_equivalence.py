"""esjoin.emulator.moto_layer.dispatch calls the JSON handlers of DynamoDB, DynamoDB Streams, Kinesis and
SQS without Flask: compared with moto's Flask app on the same requests (support/moto_speed.py), its
handlers' exceptions included, and the requests it leaves to moto's app."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from esjoin.emulator.moto_layer.dispatch import MotoDispatch
from tests.emulator.support.moto_speed import (
    DYNAMODB,
    KINESIS,
    ORIGINAL_REGION,
    PATCHED_REGION,
    SQS,
    STREAMS,
    Answer,
    call,
    comparable,
    unique,
)


def pipeline_requests(send: Callable[[str, Any], Answer], name: str) -> list[tuple[str, Answer]]:
    """The requests the pipeline makes, each service's errors included; later requests use what earlier
    answers returned (stream ARNs, shard iterators, receipt handles)."""
    answers: list[tuple[str, Answer]] = []

    def ask(target: str, body: Any) -> Answer:
        answer = send(target, body)
        answers.append((target, answer))
        return answer

    table = {"TableName": name}
    key = {"pk": {"S": "a"}, "sk": {"N": "1"}}
    ask(
        f"{DYNAMODB}.CreateTable",
        {
            **table,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "N"},
            ],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        },
    )
    ask(f"{DYNAMODB}.PutItem", {**table, "Item": {**key, "v": {"M": {"b": {"B": "AAE="}, "n": {"NS": ["1", "2.5"]}}}}})
    ask(f"{DYNAMODB}.PutItem", {**table, "Item": key, "ConditionExpression": "attribute_not_exists(pk)"})
    ask(f"{DYNAMODB}.GetItem", {**table, "Key": key, "ReturnConsumedCapacity": "TOTAL"})
    ask(
        f"{DYNAMODB}.BatchWriteItem",
        {
            "RequestItems": {
                name: [
                    {"PutRequest": {"Item": {"pk": {"S": "a"}, "sk": {"N": str(number)}, "s": {"S": "é"}}}}
                    for number in (2, 3)
                ]
            }
        },
    )
    ask(
        f"{DYNAMODB}.Query",
        {
            **table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": "a"}},
            "ScanIndexForward": False,
            "Limit": 2,
        },
    )
    ask(
        f"{DYNAMODB}.UpdateItem",
        {
            **table,
            "Key": {"pk": {"S": "z"}, "sk": {"N": "0"}},
            "UpdateExpression": "SET v = :v",
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": {":v": {"N": "1"}},
        },
    )
    ask(
        f"{DYNAMODB}.UpdateItem",
        {
            **table,
            "Key": key,
            "UpdateExpression": "ADD c :one",
            "ReturnValues": "ALL_NEW",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        },
    )
    ask(f"{DYNAMODB}.BatchGetItem", {"RequestItems": {name: {"Keys": [key, {"pk": {"S": "a"}, "sk": {"N": "3"}}]}}})
    ask(f"{DYNAMODB}.GetItem", {"TableName": f"{name}-missing", "Key": key})
    ask(f"{DYNAMODB}.PutItem", {**table, "Item": {"pk": {"S": ""}, "sk": {"N": "1"}}})
    described = ask(f"{DYNAMODB}.DescribeTable", table).json()
    stream_arn = described["Table"]["LatestStreamArn"]
    stream = ask(f"{STREAMS}.DescribeStream", {"StreamArn": stream_arn}).json()
    shard = stream["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = ask(
        f"{STREAMS}.GetShardIterator", {"StreamArn": stream_arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}
    ).json()["ShardIterator"]
    ask(f"{STREAMS}.GetRecords", {"ShardIterator": iterator, "Limit": 10})
    ask(f"{STREAMS}.GetRecords", {"ShardIterator": "not-an-iterator"})

    stream_name = {"StreamName": name}
    ask(f"{KINESIS}.CreateStream", {**stream_name, "ShardCount": 2})
    ask(f"{KINESIS}.DescribeStreamSummary", stream_name)
    ask(f"{KINESIS}.PutRecord", {**stream_name, "Data": base64.b64encode(b"one").decode(), "PartitionKey": "a"})
    ask(
        f"{KINESIS}.PutRecords",
        {
            **stream_name,
            "Records": [
                {"Data": base64.b64encode(f"record {number}".encode()).decode(), "PartitionKey": f"key-{number}"}
                for number in range(4)
            ],
        },
    )
    shards = ask(f"{KINESIS}.ListShards", stream_name).json()["Shards"]
    for listed in shards:
        shard_iterator = ask(
            f"{KINESIS}.GetShardIterator",
            {**stream_name, "ShardId": listed["ShardId"], "ShardIteratorType": "TRIM_HORIZON"},
        ).json()["ShardIterator"]
        ask(f"{KINESIS}.GetRecords", {"ShardIterator": shard_iterator, "Limit": 10})
    ask(f"{KINESIS}.DescribeStream", {"StreamName": f"{name}-missing"})
    ask(f"{KINESIS}.PutRecord", {**stream_name, "Data": "AAE=", "PartitionKey": ""})

    created = ask(f"{SQS}.CreateQueue", {"QueueName": name, "Attributes": {"VisibilityTimeout": "30"}})
    queue_url = created.json()["QueueUrl"]
    ask(
        f"{SQS}.SendMessage",
        {
            "QueueUrl": queue_url,
            "MessageBody": "hello",
            "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "greeting"}},
        },
    )
    ask(
        f"{SQS}.SendMessageBatch",
        {
            "QueueUrl": queue_url,
            "Entries": [{"Id": str(number), "MessageBody": f"body {number}"} for number in range(3)],
        },
    )
    received = ask(
        f"{SQS}.ReceiveMessage",
        {"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "MessageAttributeNames": ["All"], "AttributeNames": ["All"]},
    ).json()
    for message in received.get("Messages", []):
        ask(f"{SQS}.DeleteMessage", {"QueueUrl": queue_url, "ReceiptHandle": message["ReceiptHandle"]})
    ask(f"{SQS}.GetQueueAttributes", {"QueueUrl": queue_url, "AttributeNames": ["All"]})
    ask(f"{SQS}.SendMessage", {"QueueUrl": f"{queue_url}-missing", "MessageBody": "x"})
    ask(f"{SQS}.ChangeMessageVisibility", {"QueueUrl": queue_url, "ReceiptHandle": "nope", "VisibilityTimeout": 5})
    ask(f"{SQS}.DeleteQueue", {"QueueUrl": queue_url})

    ask(f"{DYNAMODB}.NoSuchOperation", {})  # moto raises: both paths let it through
    ask(f"{DYNAMODB}.GetItem", b"not json")
    return answers


def test_direct_dispatch_answers_as_moto_s_flask_app(moto_app: Any) -> None:
    name = unique("dispatch")
    direct = MotoDispatch(moto_app)
    through_flask = pipeline_requests(lambda target, body: call(moto_app, ORIGINAL_REGION, target, body), name)
    through_dispatch = pipeline_requests(lambda target, body: call(direct, PATCHED_REGION, target, body), name)
    assert [target for target, _ in through_dispatch] == [target for target, _ in through_flask]
    assert len(through_flask) >= 30
    statuses = {answer.status for _, answer in through_flask}
    assert {"200 OK", "400 BAD REQUEST", "raised"} <= statuses  # successes, moto's errors, moto's exceptions
    for (target, patched), (_, own) in zip(through_dispatch, through_flask, strict=True):
        assert comparable(patched) == comparable(own), target


def _client_error() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "ListQueues")


def _http_exception(status: int) -> Exception:
    from werkzeug.exceptions import default_exceptions

    return default_exceptions[status]("described by the handler")


@pytest.mark.parametrize(
    "error",
    [
        _client_error,
        lambda: _http_exception(400),
        lambda: _http_exception(404),
        lambda: _http_exception(503),
        lambda: RuntimeError("moto broke"),
    ],
    ids=["ClientError", "HTTP 400", "HTTP 404", "HTTP 503", "another exception"],
)
def test_direct_dispatch_answers_a_handler_s_exceptions_as_flask_does(
    moto_app: Any, monkeypatch: pytest.MonkeyPatch, error: Callable[[], Exception]
) -> None:
    """What a handler raises past moto's own error handling: a ClientError (moto's Flask wrapper
    answers 400 with its message), an HTTPException (Flask answers it), anything else (propagates)."""
    from moto.sqs.responses import SQSResponse

    def call_action(self: Any) -> Any:
        raise error()

    monkeypatch.setattr(SQSResponse, "call_action", call_action)
    own = call(moto_app, ORIGINAL_REGION, f"{SQS}.ListQueues", {})
    patched = call(MotoDispatch(moto_app), PATCHED_REGION, f"{SQS}.ListQueues", {})
    assert comparable(patched) == comparable(own)
    assert own.status != "200 OK"


def test_requests_the_direct_path_does_not_take_reach_moto_s_app(moto_app: Any) -> None:
    """An Origin (CORS), a method other than POST, another path or another service: moto's app."""
    from esjoin.emulator.moto_layer.dispatch import direct_handler

    base = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "HTTP_X_AMZ_TARGET": f"{DYNAMODB}.GetItem"}
    assert direct_handler(base) is not None
    for change in (
        {"HTTP_ORIGIN": "http://example.com"},
        {"REQUEST_METHOD": "GET"},
        {"PATH_INFO": "/x"},
        {"HTTP_X_AMZ_TARGET": "Logs_20140328.DescribeLogGroups"},
        {"HTTP_X_AMZ_TARGET": ""},
    ):
        assert direct_handler({**base, **change}) is None, change
