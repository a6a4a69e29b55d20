"""The SQS messages between the functions: snapshot and trim requests, and malformed ones.

Snapshot request: ``{"type": "snapshot", "userId", "horizonSeconds"?: number >= 0, "requestedAt"?: ms}``.
Trim request: ``{"type": "trim", "userId", "watermark"?: encoded seq}``. A message that can never be
processed goes to the failure queue with its content and counts as processed (I5).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lambdas.dependencies import Runtime, function_name
from lambdas.logs import log
from lambdas.queues import OutgoingMessage, failure_message
from lambdas.records import SqsMessage
from lambdas.sequence import NO_WATERMARK, is_encoded_seq


class MalformedRequest(ValueError):
    """An SQS message that can never be processed; it goes to the failure queue."""


@dataclass(frozen=True)
class SnapshotRequest:
    user_id: str
    horizon_seconds: float | None = None
    requested_at: int | None = None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _request_payload(body: str, request_type: str) -> tuple[dict[str, Any], str]:
    """The JSON object of a request of `request_type` (``type`` may be left out) and its userId."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise MalformedRequest(f"body must be a JSON object, got {type(payload).__name__}")
    if payload.get("type", request_type) != request_type:
        raise MalformedRequest(f"type must be {request_type!r}, got {payload.get('type')!r}")
    user_id = payload.get("userId")
    if not isinstance(user_id, str) or not user_id.strip():
        raise MalformedRequest("missing userId (a non-empty string)")
    return payload, user_id


def parse_snapshot_request(body: str) -> SnapshotRequest:
    payload, user_id = _request_payload(body, "snapshot")
    horizon = payload.get("horizonSeconds")
    if horizon is not None and not (_is_number(horizon) and horizon >= 0):
        raise MalformedRequest(f"horizonSeconds must be a number >= 0, got {horizon!r}")
    requested_at = payload.get("requestedAt")
    if requested_at is not None and not _is_number(requested_at):
        raise MalformedRequest(f"requestedAt must be ms since the epoch, got {requested_at!r}")
    return SnapshotRequest(
        user_id=user_id,
        horizon_seconds=None if horizon is None else float(horizon),
        requested_at=None if requested_at is None else int(requested_at),
    )


@dataclass(frozen=True)
class TrimRequest:
    user_id: str
    watermark: str | None = None  # None: up to the persisted snapshot watermark


def parse_trim_request(body: str) -> TrimRequest:
    payload, user_id = _request_payload(body, "trim")
    watermark = payload.get("watermark")
    if watermark is not None and watermark != NO_WATERMARK and not is_encoded_seq(watermark):
        raise MalformedRequest(
            f"watermark must be an encoded sequence number as stored in the events table's `seq` (its length in "
            f"3 digits, then the Kinesis sequence number: '059' + 59 digits here), not a raw Kinesis sequence "
            f"number; got {watermark!r}. Omit it to trim up to the persisted snapshot watermark"
        )
    return TrimRequest(user_id=user_id, watermark=watermark)


RequestT = TypeVar("RequestT", SnapshotRequest, TrimRequest)


def requests_by_user(
    messages: Sequence[SqsMessage], parse: Callable[[str], RequestT]
) -> tuple[list[tuple[SqsMessage, str]], dict[str, list[tuple[SqsMessage, RequestT]]]]:
    """Parse an SQS batch: the malformed messages with their reason, and the requests by user."""
    malformed: list[tuple[SqsMessage, str]] = []
    by_user: dict[str, list[tuple[SqsMessage, RequestT]]] = {}
    for message in messages:
        try:
            request = parse(message.body)
        except MalformedRequest as error:
            malformed.append((message, str(error)))
            continue
        by_user.setdefault(request.user_id, []).append((message, request))
    return malformed, by_user


def snapshot_request_body(user_id: str, requested_at: int, horizon_seconds: float | None = None) -> str:
    body: dict[str, Any] = {"type": "snapshot", "userId": user_id, "requestedAt": requested_at}
    if horizon_seconds is not None:
        body["horizonSeconds"] = horizon_seconds
    return json.dumps(body, separators=(",", ":"))


def trim_request_body(user_id: str, watermark: str) -> str:
    return json.dumps({"type": "trim", "userId": user_id, "watermark": watermark}, separators=(",", ":"))


def reject_malformed(rt: Runtime, context: Any, source: str, malformed: Sequence[tuple[SqsMessage, str]]) -> list[str]:
    """Send malformed messages to the failure queue; return the ids that could not be sent."""
    if not malformed:
        return []
    name = function_name(context)
    for message, reason in malformed:
        log(
            rt.logger,
            logging.ERROR,
            "malformed request",
            function=name,
            reason=reason,
            request=message.as_failure_content(),
        )
    if not rt.settings.failure_queue_url:
        return []
    now = rt.now_ms()
    outgoing = [
        OutgoingMessage(
            key=m.message_id, body=failure_message(source, reason, name, now, "message", m.as_failure_content(), "body")
        )
        for m, reason in malformed
    ]
    return [f.key for f in rt.queues.send(rt.settings.failure_queue_url, outgoing)]
