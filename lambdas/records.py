"""Typed views of the records Lambda delivers (one dataclass per event source), parsed leniently.

Shapes: Kinesis https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html#services-kinesis-event-example,
DynamoDB Streams https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html#services-ddb-event-example,
SQS https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html#example-standard-queue-message-event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KinesisRecord:
    event_id: str  # "shardId-000000000000:<sequence number>"
    partition_key: str
    sequence_number: str
    data: str  # base64, as delivered
    approximate_arrival_timestamp: float  # seconds since the epoch
    event_source_arn: str

    @classmethod
    def from_lambda(cls, record: dict[str, Any]) -> KinesisRecord:
        kinesis = record.get("kinesis") or {}
        return cls(
            event_id=str(record.get("eventID", "")),
            partition_key=str(kinesis.get("partitionKey", "")),
            sequence_number=str(kinesis.get("sequenceNumber", "")),
            data=kinesis.get("data", ""),
            approximate_arrival_timestamp=float(kinesis.get("approximateArrivalTimestamp") or 0.0),
            event_source_arn=str(record.get("eventSourceARN", "")),
        )

    @property
    def shard_id(self) -> str:
        return self.event_id.split(":", 1)[0] if ":" in self.event_id else ""

    @property
    def arrival_ms(self) -> int:
        return int(self.approximate_arrival_timestamp * 1000)

    def as_failure_content(self) -> dict[str, Any]:
        """The record as the failure queue keeps it (data stays base64, exactly as delivered)."""
        return {
            "eventID": self.event_id,
            "partitionKey": self.partition_key,
            "sequenceNumber": self.sequence_number,
            "approximateArrivalTimestamp": self.approximate_arrival_timestamp,
            "data": self.data,
            "eventSourceARN": self.event_source_arn,
        }


@dataclass(frozen=True)
class StreamRecord:
    """A DynamoDB Streams record of the events table (only what the trigger needs)."""

    event_name: str  # INSERT | MODIFY | REMOVE
    user_id: str | None
    sequence_number: str

    @classmethod
    def from_lambda(cls, record: dict[str, Any]) -> StreamRecord:
        dynamodb = record.get("dynamodb") or {}
        user_id = ((dynamodb.get("Keys") or {}).get("userId") or {}).get("S")
        return cls(
            event_name=str(record.get("eventName", "")),
            user_id=user_id,
            sequence_number=str(dynamodb.get("SequenceNumber", "")),
        )


@dataclass(frozen=True)
class SqsMessage:
    message_id: str
    body: str
    attributes: dict[str, Any]

    @classmethod
    def from_lambda(cls, record: dict[str, Any]) -> SqsMessage:
        return cls(
            message_id=str(record.get("messageId", "")),
            body=record.get("body") or "",
            attributes=dict(record.get("attributes") or {}),
        )

    @property
    def receive_count(self) -> int:
        """SQS's ApproximateReceiveCount: above 1, an earlier attempt at this message failed or timed out."""
        try:
            return int(self.attributes.get("ApproximateReceiveCount", 1))
        except (TypeError, ValueError):
            return 1

    def as_failure_content(self) -> dict[str, Any]:
        return {"messageId": self.message_id, "body": self.body, "attributes": self.attributes}
