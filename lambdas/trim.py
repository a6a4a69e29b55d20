"""Trim: SQS batch of trim requests -> delete events the snapshot contains (handler ``lambdas.trim.handler``).

Request: ``{"type": "trim", "userId": ..., "watermark"?: encoded seq}``. An event is deleted only if
its seq is <= the *persisted* snapshot watermark (read consistently here), so only events the snapshot
provably folded go (I2); with a message watermark, the bound is the smaller of the two. Deleting is
idempotent, so redelivery is harmless (I3). REMOVE stream records this produces are no-ops for the
trigger.
"""

from __future__ import annotations

import logging
from typing import Any

from lambdas.dependencies import Runtime, function_name, runtime
from lambdas.logs import log
from lambdas.records import SqsMessage
from lambdas.sequence import NO_WATERMARK
from lambdas.work_requests import TrimRequest, parse_trim_request, reject_malformed, requests_by_user


def requested_bound(requests: list[TrimRequest]) -> str | None:
    """One bound for several requests of a user: the highest asked for; None if any asks for "all"."""
    if any(r.watermark is None for r in requests):
        return None
    return max(r.watermark or NO_WATERMARK for r in requests)


def trim_bound(requested: str | None, persisted: str) -> str:
    """Delete up to here: never past the persisted snapshot watermark."""
    return persisted if requested is None else min(requested, persisted)


def trim_user(rt: Runtime, user_id: str, requested: str | None) -> int:
    snapshot = rt.store.get_snapshot(user_id)
    bound = trim_bound(requested, snapshot.watermark)
    keys = rt.store.event_keys_up_to(user_id, bound)
    rt.store.delete_events(keys)
    return len(keys)


def process(event: dict[str, Any], context: Any, rt: Runtime) -> dict[str, Any]:
    messages = [SqsMessage.from_lambda(r) for r in event.get("Records") or []]
    malformed, by_user = requests_by_user(messages, parse_trim_request)

    failed = reject_malformed(rt, context, "trim", malformed)
    deleted = 0
    for user_id, requests in by_user.items():
        try:
            deleted += trim_user(rt, user_id, requested_bound([r for _, r in requests]))
        except Exception as error:
            log(
                rt.logger,
                logging.ERROR,
                "trim failed",
                function=function_name(context),
                userId=user_id,
                error=repr(error),
                messageIds=[m.message_id for m, _ in requests],
                action="reported as batch item failures; SQS redelivers, then redrives to the DLQ",
            )
            failed.extend(m.message_id for m, _ in requests)
    log(
        rt.logger,
        logging.INFO,
        "trim batch",
        function=function_name(context),
        messages=len(messages),
        users=len(by_user),
        malformed=len(malformed),
        deleted=deleted,
        failed=len(failed),
    )
    return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(failed)]}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, context, runtime())
