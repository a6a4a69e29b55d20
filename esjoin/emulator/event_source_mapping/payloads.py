"""The events Lambda delivers, field for field as AWS builds them.

- Kinesis: https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html#services-kinesis-event-example
- DynamoDB Streams: https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html#services-ddb-event-example
- SQS: https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html#example-standard-queue-message-event

Each record is encoded to JSON once, when read; a batch's payload is the records joined into
{"Records": [...]}, so retries and bisected halves reuse the bytes and the 6 MB limit is exact.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import json
import zlib
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

# A synchronous invocation's payload is at most 6 MB; a batch stops growing before it.
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
_ENVELOPE = (b'{"Records":[', b"]}")
ENVELOPE_BYTES = len(_ENVELOPE[0]) + len(_ENVELOPE[1])


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=_json_default).encode()


def records_payload(encoded_records: Iterable[bytes]) -> bytes:
    return _ENVELOPE[0] + b",".join(encoded_records) + _ENVELOPE[1]


def fits(current_bytes: int, count: int, record_bytes: int) -> bool:
    """Whether a record of `record_bytes` still fits a payload of `count` records of `current_bytes`."""
    return ENVELOPE_BYTES + current_bytes + count + record_bytes <= MAX_PAYLOAD_BYTES


class Encoded(Protocol):
    encoded: bytes  # the record as it goes into {"Records": [...]}


E = TypeVar("E", bound=Encoded)


def take_batch(pending: deque[E], size: int) -> tuple[list[E], int]:
    """Take from the front of `pending` at most `size` records that fit one payload (the first one
    always); returns them and their encoded bytes."""
    records: list[E] = []
    total = 0
    while pending and len(records) < size:
        record = pending[0]
        if records and not fits(total, len(records), len(record.encoded)):
            break
        records.append(pending.popleft())
        total += len(record.encoded)
    return records, total


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.datetime):
        return epoch_seconds(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def epoch_seconds(value: datetime.datetime | float | int) -> float:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # moto's utcnow(): naive UTC
            return calendar.timegm(value.timetuple()) + value.microsecond / 1e6
        return value.timestamp()
    return float(value)


def lane_hash(key: str) -> int:
    """A stable hash of a partition key (Python's hash() changes between runs)."""
    return zlib.crc32(key.encode())


# -- Kinesis -------------------------------------------------------------------------------------


def kinesis_record(
    *,
    shard_id: str,
    sequence_number: int,
    partition_key: str,
    data: Any,
    arrival: float,
    stream_arn: str,
    region: str,
    invoke_identity_arn: str,
) -> dict[str, Any]:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": str(sequence_number),
            "data": _base64_text(data),
            "approximateArrivalTimestamp": round(arrival, 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": invoke_identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def _base64_text(data: Any) -> str:
    """moto keeps a record's data as the base64 text the producer sent; normalise it (AWS re-encodes)."""
    if isinstance(data, bytes | bytearray):
        try:
            return base64.b64encode(base64.b64decode(data, validate=True)).decode()
        except ValueError:
            return base64.b64encode(data).decode()
    return base64.b64encode(base64.b64decode(data)).decode()


# -- DynamoDB Streams ----------------------------------------------------------------------------


def dynamodb_record(record: dict[str, Any], *, stream_arn: str, region: str) -> dict[str, Any]:
    """A stream record as GetRecords returns it (moto's StreamRecord), as Lambda delivers it."""
    change = record["dynamodb"]
    dynamodb: dict[str, Any] = {
        # Lambda delivers epoch seconds (whole seconds unless the stream asks for microseconds).
        "ApproximateCreationDateTime": int(epoch_seconds(change["ApproximateCreationDateTime"])),
        "Keys": change["Keys"],
    }
    for image in ("NewImage", "OldImage"):
        if image in change:
            dynamodb[image] = change[image]
    dynamodb.update(
        {
            "SequenceNumber": str(change["SequenceNumber"]),
            "SizeBytes": int(change["SizeBytes"]),
            "StreamViewType": change["StreamViewType"],
        }
    )
    event: dict[str, Any] = {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion") or region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in record:  # TTL deletions
        event["userIdentity"] = record["userIdentity"]
    return event


# -- SQS -----------------------------------------------------------------------------------------


def sqs_record(message: Any, *, queue_arn: str, region: str, fifo: bool) -> dict[str, Any]:
    """A received moto `Message` (a copy, with its receipt handle and counts) as Lambda delivers it."""
    attributes = {
        "ApproximateReceiveCount": str(message.approximate_receive_count),
        "SentTimestamp": str(message.sent_timestamp),
        "SenderId": message.sender_id,
        "ApproximateFirstReceiveTimestamp": str(message.approximate_first_receive_timestamp),
    }
    trace_header = (message.system_attributes or {}).get("AWSTraceHeader")
    if trace_header:
        attributes["AWSTraceHeader"] = (
            trace_header.get("StringValue") if isinstance(trace_header, dict) else str(trace_header)
        )
    if fifo:
        attributes["SequenceNumber"] = message.sequence_number or _fifo_sequence_number(message)
        attributes["MessageGroupId"] = message.group_id
        if message.deduplication_id is not None:
            attributes["MessageDeduplicationId"] = message.deduplication_id
    record: dict[str, Any] = {
        "messageId": message.id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": {
            name: _message_attribute(value) for name, value in (message.message_attributes or {}).items()
        },
    }
    if message.message_attributes:
        record["md5OfMessageAttributes"] = message.attribute_md5
    record.update(
        {
            "md5OfBody": message.body_md5,
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
    )
    return record


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    attribute: dict[str, Any] = {}
    if value.get("StringValue") is not None:
        attribute["stringValue"] = value["StringValue"]
    if value.get("BinaryValue") is not None:
        binary = value["BinaryValue"]
        attribute["binaryValue"] = (
            base64.b64encode(binary).decode() if isinstance(binary, bytes | bytearray) else binary
        )
    attribute["stringListValues"] = list(value.get("StringListValues") or [])
    attribute["binaryListValues"] = list(value.get("BinaryListValues") or [])
    attribute["dataType"] = value["DataType"]
    return attribute


def _fifo_sequence_number(message: Any) -> str:
    # moto numbers FIFO messages only when the producer gave a deduplication id; AWS always does.
    # Derived from the send time, so it grows as AWS's does, and stable across receives.
    return f"{int(message.sent_timestamp) * 1000 + zlib.crc32(message.id.encode()) % 1000:020d}"
