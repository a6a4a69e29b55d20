"""moto with esjoin's speed patches and with its own code, in one process (tests/emulator/test_speed_*.py,
test_dispatch_equivalence.py; the fixtures `speed_patches` and `moto_app` are in conftest.py).

esjoin.emulator.moto_layer.speed records every function it replaced; `moto_own_code()` puts them back
for a block, so one run of moto answers with its own code and another with the patches.

Answers are compared byte for byte where nothing in them is volatile (DynamoDB data-plane answers);
answers that carry request ids, timestamps, random ids or global sequence numbers are compared as
JSON, in their own key order, with those values replaced by placeholders (`normalized`). The two
runs of a comparison use the same resource names in two regions (`ORIGINAL_REGION`,
`PATCHED_REGION`), so they never see each other's state; region names in ARNs are normalised.
Everything runs in this process on moto's backends, without sockets.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from esjoin.emulator.moto_layer import speed as moto_speed

ACCOUNT = "123456789012"
ORIGINAL_REGION = "us-east-1"  # where moto's own code answers
PATCHED_REGION = "us-west-2"  # where the patched code answers (same length: ARNs compare as bytes)
HOST = "127.0.0.1:4566"
DYNAMODB = "DynamoDB_20120810"
STREAMS = "DynamoDBStreams_20120810"
KINESIS = "Kinesis_20131202"
SQS = "AmazonSQS"
# Values that differ between two runs of the same requests: random ids, clocks, moto's global
# Kinesis sequence counter, stream labels (a timestamp), shard iterators (which carry those).
VOLATILE_KEYS = frozenset(
    {
        "CreationDateTime",
        "StreamCreationTimestamp",
        "ApproximateArrivalTimestamp",
        "ApproximateCreationDateTime",
        "SequenceNumber",
        "StartingSequenceNumber",
        "EndingSequenceNumber",
        "ShardIterator",
        "NextShardIterator",
        "MessageId",
        "ReceiptHandle",
        "eventID",
        "LatestStreamLabel",
        "StreamLabel",
        "LatestStreamArn",
        "StreamArn",
        "eventSourceARN",
        "CreatedTimestamp",
        "LastModifiedTimestamp",
        "SentTimestamp",
        "ApproximateFirstReceiveTimestamp",
        "CreationRequestDateTime",
        "SizeBytes",  # of a stream record: moto measures it with the record's creation time in it
    }
)
DYNAMODB_STREAM_SHARD = re.compile(r"shardId-[0-9]{20}-[0-9a-f]{8}")  # a creation time and a random suffix


def current(owner: Any, name: str) -> Any:
    if isinstance(owner, dict):
        return owner.get(name, moto_speed.MISSING)
    return inspect.getattr_static(owner, name)


def _install(owner: Any, name: str, value: Any) -> None:
    if not isinstance(owner, dict):
        setattr(owner, name, value)
    elif value is moto_speed.MISSING:
        owner.pop(name, None)
    else:
        owner[name] = value


@contextlib.contextmanager
def moto_own_code() -> Iterator[None]:
    """moto as it was before esjoin.emulator.moto_layer.speed, for the block: every replaced function put back.
    (Not thread-safe: nothing else in the test module touches moto meanwhile.)"""
    patched = [(entry, current(entry.owner, entry.name)) for entry in moto_speed.REPLACED]
    for entry, _ in patched:
        _install(entry.owner, entry.name, entry.original)
    try:
        yield
    finally:
        for entry, value in reversed(patched):
            _install(entry.owner, entry.name, value)


def original(owner: Any, name: str) -> Any:
    """What moto_speed replaced at `owner.name`."""
    return next(entry.original for entry in moto_speed.REPLACED if entry.owner is owner and entry.name == name)


@dataclass(frozen=True)
class Answer:
    status: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(wsgi: Callable[..., Any], region: str, target: str, body: Any) -> Answer:
    """One JSON-protocol request, as a SigV4-signed boto3 call arrives at moto (the signature itself is
    not checked by moto); an exception out of moto is returned as an Answer describing it."""
    from werkzeug.test import EnvironBuilder

    service = {DYNAMODB: "dynamodb", STREAMS: "dynamodb", KINESIS: "kinesis", SQS: "sqs"}[target.partition(".")[0]]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    content_type = "application/x-amz-json-1.1" if service == "kinesis" else "application/x-amz-json-1.0"
    environ = EnvironBuilder(
        method="POST",
        path="/",
        data=data,
        headers={
            "Host": HOST,
            "Content-Type": content_type,
            "X-Amz-Target": target,
            "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20250101/{region}/{service}/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0",
        },
    ).get_environ()
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started["status"], started["headers"] = status, tuple(headers)

    try:
        payload = b"".join(wsgi(environ, start_response))
    except Exception as error:  # moto's app runs in debug mode: its exceptions reach the caller
        return Answer("raised", (), f"{type(error).__name__}: {error}".encode())
    return Answer(started["status"], started["headers"], payload)


def normalized_headers(answer: Answer) -> list[tuple[str, str]]:
    """The headers, with the per-request values checked and replaced: the request id (moto's 52
    characters), the CRC32 and the Content-Length (of this answer's own body)."""
    result = []
    for name, value in answer.headers:
        lower = name.lower()
        if lower == "x-amzn-requestid":
            assert re.fullmatch(r"[A-Za-z0-9]{52}", value), value
            value = "<request id>"
        elif lower == "x-amz-crc32":
            assert value == str(zlib.crc32(answer.body)), "x-amz-crc32 is not the body's"
            value = "<crc32 of the body>"
        elif lower == "content-length":
            assert value == str(len(answer.body)), "Content-Length is not the body's"
            value = "<length of the body>"
        result.append((name, value))
    return result


def normalized(value: Any) -> Any:
    """A JSON answer with its volatile values (VOLATILE_KEYS) replaced by placeholders."""
    if isinstance(value, dict):
        return {key: f"<{key}>" if key in VOLATILE_KEYS else normalized(member) for key, member in value.items()}
    if isinstance(value, list):
        return [normalized(member) for member in value]
    if isinstance(value, str):
        return DYNAMODB_STREAM_SHARD.sub("<ShardId>", value.replace(PATCHED_REGION, ORIGINAL_REGION))
    return value


def comparable(answer: Answer, byte_for_byte: bool = False) -> tuple[Any, ...]:
    body: Any = answer.body.replace(PATCHED_REGION.encode(), ORIGINAL_REGION.encode())
    if not byte_for_byte and body[:1] == b"{":
        body = json.dumps(normalized(json.loads(body)))  # json.dumps keeps the answer's key order
    return answer.status, normalized_headers(answer), body


SERIALS = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(SERIALS)}"


def create_table(wsgi: Any, region: str, name: str, stream: bool = False) -> str:
    body: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "by-g",
                "Projection": {"ProjectionType": "ALL"},
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
            }
        ],
    }
    if stream:
        body["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    answer = call(wsgi, region, f"{DYNAMODB}.CreateTable", body)
    assert answer.status.startswith("200"), answer
    return name
