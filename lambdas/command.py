"""Command: direct invoke -> domain events on the Kinesis stream (handler ``lambdas.command.handler``).

Input, one of:

- a list of events in the wire format (see events.py), or ``{"events": [...]}``, or one event;
  a missing ``id`` or ``timestamp`` is filled in (new uuid, now);
- one small command: ``{"type": "user-created", "userId", "name"?}``, ``{"type": "user-loggedIn",
  "userId"}``, ``{"type": "order-submitted", "userId", "orderId"?, ...}`` (other fields go into the
  order); it becomes an event with a new id and timestamp = now.

Events are put with PutRecords, 500 per call, partition key = user id (so a user's events stay in
order on one shard). PutRecords can succeed as a call while some records fail; only those are sent
again, with the same event ids, so the consumer counts such producer retries once
(https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html).

Returns ``{"sent": n, "eventIds": [...], "failed": []}``; raises if records still fail after the retries
(the error lists them), and raises ValueError for invalid input.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lambdas.batching import bounded_batches
from lambdas.clients import aws_client
from lambdas.dependencies import Runtime, function_name, runtime
from lambdas.events import EVENT_TYPES, ORDER_SUBMITTED, USER_CREATED, InvalidEvent, parse_event
from lambdas.logs import log
from lambdas.retry import Backoff

PUT_RECORDS_LIMIT = 500
PUT_RECORDS_MAX_BYTES = 5 * 1024 * 1024  # per call, data plus partition keys
PUT_ATTEMPTS = 5


class PutRecordsFailed(RuntimeError):
    def __init__(self, message: str, failed: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.failed = failed


# ---------------------------------------------------------------------------------------------
# Input -> wire events (pure)
# ---------------------------------------------------------------------------------------------


def _command_event(command: dict[str, Any], now_ms: int, new_id: Callable[[], str]) -> dict[str, Any]:
    event_type = command.get("type")
    user_id = command.get("userId")
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown command type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}")
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(f"{event_type} command needs userId (a non-empty string)")
    event: dict[str, Any] = {"id": new_id(), "type": event_type, "timestamp": now_ms}
    if event_type == ORDER_SUBMITTED:
        order = {k: v for k, v in command.items() if k not in ("type", "userId", "id", "timestamp")}
        order.setdefault("orderId", new_id())
        event["order"] = {**order, "userId": user_id}
    else:
        event["user"] = {"id": user_id}
        if event_type == USER_CREATED and command.get("name") is not None:
            if not isinstance(command["name"], str):
                raise ValueError("user-created command: name must be a string")
            event["user"]["name"] = command["name"]
    return event


def build_events(payload: Any, now_ms: int, new_id: Callable[[], str] | None = None) -> list[dict[str, Any]]:
    """The wire events for one invocation's input, validated; ValueError says what is wrong."""
    new_id = new_id or (lambda: str(uuid.uuid4()))
    if isinstance(payload, dict) and "events" in payload:
        payload = payload["events"]
    if isinstance(payload, dict) and "userId" in payload:
        events = [_command_event(payload, now_ms, new_id)]
    elif isinstance(payload, dict):
        events = [payload]
    elif isinstance(payload, list):
        events = list(payload)
    else:
        raise ValueError(
            f"input must be a list of events, {{'events': [...]}}, an event or a command; got {type(payload).__name__}"
        )
    built = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise ValueError(f"event {index}: must be a JSON object, got {type(event).__name__}")
        event = dict(event)
        if event.get("id") is None:
            event["id"] = new_id()
        if event.get("timestamp") is None:
            event["timestamp"] = now_ms
        try:
            parse_event(event)
        except InvalidEvent as error:
            raise ValueError(f"event {index} ({event.get('id')}): {error.reason}") from error
        built.append(event)
    return built


@dataclass(frozen=True)
class OutgoingRecord:
    event_id: str
    partition_key: str
    data: bytes


def to_records(events: Sequence[dict[str, Any]]) -> list[OutgoingRecord]:
    records = []
    for event in events:
        parsed = parse_event(event)
        data = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        records.append(OutgoingRecord(event_id=parsed.event_id, partition_key=parsed.user_id, data=data))
    return records


def chunks(records: Sequence[OutgoingRecord]) -> list[list[OutgoingRecord]]:
    """PutRecords calls: at most 500 records and 5 MiB each."""
    return bounded_batches(
        records,
        PUT_RECORDS_LIMIT,
        PUT_RECORDS_MAX_BYTES,
        lambda record: len(record.data) + len(record.partition_key.encode("utf-8")),
    )


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


def put_records(
    client: Any, stream_name: str, records: Sequence[OutgoingRecord], backoff: Backoff
) -> list[dict[str, str]]:
    """Put all records, retrying only the failed ones; return those still failing after the retries."""
    still_failing: list[dict[str, str]] = []
    for chunk in chunks(records):
        pending = list(chunk)
        for attempt in range(1, PUT_ATTEMPTS + 1):
            response = client.put_records(
                StreamName=stream_name, Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in pending]
            )
            if not response.get("FailedRecordCount"):
                pending = []
                break
            failed = [
                (r, result) for r, result in zip(pending, response["Records"], strict=True) if result.get("ErrorCode")
            ]
            pending = [r for r, _ in failed]
            if attempt == PUT_ATTEMPTS:
                still_failing.extend(
                    {
                        "eventId": r.event_id,
                        "errorCode": result.get("ErrorCode", ""),
                        "errorMessage": result.get("ErrorMessage", ""),
                    }
                    for r, result in failed
                )
            else:
                backoff.wait(attempt)
    return still_failing


def process(
    payload: Any, context: Any, rt: Runtime, client: Any = None, backoff: Backoff | None = None
) -> dict[str, Any]:
    events = build_events(payload, rt.now_ms())
    records = to_records(events)
    failed = put_records(
        client or aws_client("kinesis"), rt.settings.stream_name, records, backoff or Backoff(attempts=PUT_ATTEMPTS)
    )
    log(rt.logger, logging.INFO, "command", function=function_name(context), events=len(records), failed=len(failed))
    if failed:
        raise PutRecordsFailed(
            f"{len(failed)} of {len(records)} records still failed after {PUT_ATTEMPTS} attempts on stream"
            f" {rt.settings.stream_name}: {json.dumps(failed)[:2000]}; invoke again with the same events"
            " (their ids are kept, so retries count once)",
            failed,
        )
    return {"sent": len(records), "eventIds": [r.event_id for r in records], "failed": []}


def handler(event: Any, context: Any) -> dict[str, Any]:
    return process(event, context, runtime())
