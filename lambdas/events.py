"""Domain events on the wire: parse and validate, or say precisely why a record is poison.

Wire format (Kinesis record data, JSON; the partition key is the user id)::

    {"id": <uuid>, "type": "user-created" | "user-loggedIn" | "order-submitted",
     "timestamp": <ms epoch>, "user": {"id", "name"?}}            # user events
    {..., "order": {"userId", ...}}                                 # order events

No boto3 here: this module is pure and shared by the consumer, the command and the fold.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from lambdas.records import KinesisRecord
from lambdas.sequence import encode_seq

USER_CREATED = "user-created"
USER_LOGGED_IN = "user-loggedIn"
ORDER_SUBMITTED = "order-submitted"
EVENT_TYPES = (USER_CREATED, USER_LOGGED_IN, ORDER_SUBMITTED)

MAX_BODY_BYTES = 350_000
"""A DynamoDB item is at most 400 KB (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/
ServiceQuotas.html#limits-items) but a Kinesis record may hold 1 MB: a bigger event could never be
stored, and retrying it would block the shard forever, so it is poison."""


class InvalidEvent(ValueError):
    """The record cannot become a domain event; ``reason`` says why in a sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DomainEvent:
    event_id: str
    type: str
    timestamp: int  # ms epoch, the producer's clock (domain time, not arrival time)
    user_id: str
    name: str | None  # user-created only; None when the event carries no name
    body: str  # the JSON as delivered, kept verbatim in the events table


@dataclass(frozen=True)
class StoredEvent:
    """An accepted event as persisted in the events table (one row per Kinesis record)."""

    seq: str  # encoded Kinesis sequence number (sequence.encode_seq): sorts numerically as a string
    event: DomainEvent
    arrived_at: int  # ms, the record's approximateArrivalTimestamp
    stored_at: int  # ms, when the consumer (last) wrote the row
    shard_id: str = ""

    @property
    def visible_since(self) -> int:
        """When the row became visible at the latest (a redelivery rewrites it later)."""
        return max(self.arrived_at, self.stored_at)


def _require_id(value: Any, what: str) -> str:
    if isinstance(value, bool) or value is None:
        raise InvalidEvent(f"missing {what}")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidEvent(f"{what} must be a string, got {type(value).__name__}")
    if value.strip() == "":
        raise InvalidEvent(f"empty {what}")
    return value


def _require_timestamp(value: Any) -> int:
    if value is None:
        raise InvalidEvent("missing timestamp")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"timestamp must be a number of ms since the epoch, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEvent("timestamp must be finite")
    if value < 0:
        raise InvalidEvent("timestamp must not be negative")
    return int(value)


def parse_event(payload: Any, body: str | None = None) -> DomainEvent:
    """Validate one decoded event object; raise `InvalidEvent` with the reason."""
    if not isinstance(payload, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(payload).__name__}")
    event_type = payload.get("type")
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {event_type!r} (expected one of {', '.join(EVENT_TYPES)})")
    event_id = _require_id(payload.get("id"), "event id")
    timestamp = _require_timestamp(payload.get("timestamp"))
    name = None
    if event_type == ORDER_SUBMITTED:
        order = payload.get("order")
        if not isinstance(order, dict):
            raise InvalidEvent("missing user id: order-submitted event has no order object")
        user_id = _require_id(order.get("userId"), "user id (order.userId)")
    else:
        user = payload.get("user")
        if not isinstance(user, dict):
            raise InvalidEvent(f"missing user id: {event_type} event has no user object")
        user_id = _require_id(user.get("id"), "user id (user.id)")
        if event_type == USER_CREATED:
            name = user.get("name")
            if name is not None and not isinstance(name, str):
                raise InvalidEvent(f"user.name must be a string, got {type(name).__name__}")
    if body is None:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise InvalidEvent(f"event body exceeds {MAX_BODY_BYTES} bytes (DynamoDB's item limit)")
    return DomainEvent(event_id=event_id, type=event_type, timestamp=timestamp, user_id=user_id, name=name, body=body)


def parse_body(body: str) -> DomainEvent:
    """Parse a JSON text (as stored in the events table or sent by a producer)."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidEvent(f"data is not valid JSON: {exc}") from exc
    return parse_event(payload, body)


def decode_kinesis_data(data: str) -> DomainEvent:
    """Decode a Lambda Kinesis record's ``data`` (base64 of UTF-8 JSON) into a domain event."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidEvent(f"data is not valid base64: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"data is not UTF-8: {exc}") from exc
    return parse_body(text)


@dataclass(frozen=True)
class PoisonRecord:
    """A Kinesis record that can never become an event: it goes to the failure queue, as delivered."""

    record: KinesisRecord
    reason: str


def decode_kinesis_record(record: KinesisRecord, stored_at: int) -> StoredEvent:
    """A delivered Kinesis record -> the event as the consumer stores it; `InvalidEvent` if poison."""
    try:
        seq = encode_seq(record.sequence_number)
    except ValueError as exc:
        raise InvalidEvent(f"record has no usable sequence number: {exc}") from exc
    return StoredEvent(
        seq=seq,
        event=decode_kinesis_data(record.data),
        arrived_at=record.arrival_ms,
        stored_at=stored_at,
        shard_id=record.shard_id,
    )
