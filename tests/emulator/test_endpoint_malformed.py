"""Malformed requests get AWS-style errors (4xx with an error type), never a 500, a traceback or a hang,
and the endpoint keeps serving afterwards.

Raw HTTP (http.client), since boto3 would never send these. A request signed for a service carries a
SigV4 Authorization header (the endpoint does not check signatures, as LocalStack does not).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pytest
from botocore.exceptions import ClientError

from tests.emulator.support.endpoint import Control, Endpoint, create_stream, create_table, unique
from tests.emulator.support.raw_http import JSON_10, JSON_11, assert_aws_error, assert_still_serving, send, signed


@dataclass(frozen=True)
class Malformed:
    name: str
    body: bytes
    headers: dict[str, str]
    bug: str | None = None  # why the endpoint answers this one wrongly today (the test is xfail)

    @property
    def path(self) -> str:
        return "/2015-03-31/functions" if "/lambda/" in self.headers.get("Authorization", "") else "/"


MALFORMED = [
    Malformed("dynamodb-garbage-putitem", b"\x00garbage{{", signed("dynamodb", "DynamoDB_20120810.PutItem")),
    Malformed("dynamodb-empty-putitem", b"", signed("dynamodb", "DynamoDB_20120810.PutItem")),
    Malformed("dynamodb-unknown-operation", b"{}", signed("dynamodb", "DynamoDB_20120810.Frobnicate")),
    Malformed(
        "dynamodbstreams-bad-iterator",
        b'{"ShardIterator": "garbage"}',
        signed("dynamodb", "DynamoDBStreams_20120810.GetRecords"),
    ),
    Malformed("dynamodbstreams-garbage", b"garbage", signed("dynamodb", "DynamoDBStreams_20120810.GetRecords")),
    Malformed("kinesis-garbage-putrecord", b"garbage{{", signed("kinesis", "Kinesis_20131202.PutRecord", JSON_11)),
    Malformed("kinesis-garbage-getrecords", b"garbage{{", signed("kinesis", "Kinesis_20131202.GetRecords", JSON_11)),
    Malformed("kinesis-unknown-operation", b"{}", signed("kinesis", "Kinesis_20131202.Frobnicate", JSON_11)),
    Malformed("sqs-garbage-sendmessage", b"garbage{{", signed("sqs", "AmazonSQS.SendMessage")),
    Malformed("sqs-garbage-receivemessage", b"garbage{{", signed("sqs", "AmazonSQS.ReceiveMessage")),
    Malformed("sqs-unknown-operation", b"{}", signed("sqs", "AmazonSQS.Frobnicate")),
    Malformed(
        "sqs-query-unknown-action",
        b"Action=Frobnicate&Version=2012-11-05",
        signed("sqs", content_type="application/x-www-form-urlencoded"),
    ),
    Malformed("unknown-target-unknown-service", b"{}", signed("frobnicator", "Frobnicator_20200101.Run")),
    Malformed(
        "unsigned-dynamodb-target", b"garbage{{", {"X-Amz-Target": "DynamoDB_20120810.PutItem", "Content-Type": JSON_10}
    ),
    Malformed("unsigned-unknown-target", b"{}", {"X-Amz-Target": "Frobnicator_20200101.Run", "Content-Type": JSON_10}),
    Malformed("no-auth-no-target", b"hello", {"Content-Type": "text/plain"}),
    Malformed("lambda-garbage-create-function", b"garbage{{", signed("lambda", content_type="application/json")),
]


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(m, id=m.name, marks=[pytest.mark.xfail(strict=True, reason=m.bug)] if m.bug else [])
        for m in MALFORMED
    ],
)
def test_a_malformed_request_gets_an_aws_error(endpoint: Endpoint, request_: Malformed) -> None:
    response = send(endpoint, "POST", request_.path, request_.body, request_.headers)

    assert_aws_error(response)


def test_every_malformed_request_is_answered_and_the_endpoint_keeps_serving(
    endpoint: Endpoint, control: Control
) -> None:
    for request_ in MALFORMED:
        response = send(endpoint, "POST", request_.path, request_.body, request_.headers)  # raises on a hang
        assert response.status, request_.name
        assert_still_serving(endpoint, control)


# -- oversized payloads -----------------------------------------------------------------------------------


def test_an_oversized_dynamodb_item_is_a_validation_error(endpoint: Endpoint, control: Control, dynamodb: Any) -> None:
    table, _ = create_table(dynamodb)
    with pytest.raises(ClientError) as raised:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "big"}, "blob": {"S": "x" * (401 * 1024)}})
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert_still_serving(endpoint, control)


def test_a_30_mb_request_body_is_an_aws_error(endpoint: Endpoint, control: Control, dynamodb: Any) -> None:
    table, _ = create_table(dynamodb)
    body = json.dumps({"TableName": table, "Item": {"pk": {"S": "big"}, "blob": {"S": "x" * (30 << 20)}}}).encode()

    response = send(endpoint, "POST", "/", body, signed("dynamodb", "DynamoDB_20120810.PutItem"))

    assert_aws_error(response)
    assert_still_serving(endpoint, control)


def test_an_oversized_sqs_message_is_refused(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique("big"))["QueueUrl"]
    with pytest.raises(ClientError) as raised:
        sqs.send_message(QueueUrl=url, MessageBody="x" * (1024 * 1024 + 1))
    assert raised.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_an_oversized_kinesis_record_is_refused(kinesis: Any) -> None:
    name, _ = create_stream(kinesis)
    with pytest.raises(ClientError) as raised:
        kinesis.put_record(StreamName=name, Data=b"x" * (1024 * 1024 + 1), PartitionKey="p")
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_an_oversized_invoke_payload_is_request_too_large(lambda_client: Any, functions: Any, control: Control) -> None:
    name = functions.create("def handler(event, context):\n    return 1\n")
    with pytest.raises(ClientError) as raised:
        lambda_client.invoke(FunctionName=name, Payload=json.dumps({"blob": "x" * (6 << 20)}).encode())
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert raised.value.response["Error"]["Code"] == "RequestTooLargeException"
    assert control.history(name) == []


def test_a_client_that_never_finishes_its_body_does_not_block_others(endpoint: Endpoint, control: Control) -> None:
    address = urlparse(endpoint.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as stalled:
        stalled.sendall(
            b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\n"
            b'Content-Type: application/x-amz-json-1.0\r\nContent-Length: 1000\r\n\r\n{"Li'
        )
        assert_still_serving(endpoint, control)  # while that request waits for the rest of its body
