"""Trigger: events-table stream batch -> view rows (handler ``lambdas.trigger.handler``).

INSERT/MODIFY records name the users whose views may be stale; REMOVE records come from trim and
change nothing a view shows, so a batch of only REMOVEs makes no AWS call. A user whose refresh
fails is reported with the lowest stream sequence number among its records, so the mapping retries
from there (https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from lambdas.dependencies import Runtime, function_name, runtime
from lambdas.logs import log
from lambdas.records import StreamRecord
from lambdas.views import refresh_views


def _sequence_order(sequence_number: str) -> tuple[int, str]:
    # Stream sequence numbers are decimal strings; compare them as numbers.
    return (len(sequence_number), sequence_number) if sequence_number.isdigit() else (0, sequence_number)


def changed_users(records: Iterable[StreamRecord]) -> dict[str, str]:
    """user id -> the lowest sequence number among its INSERT/MODIFY records (insertion order kept)."""
    users: dict[str, str] = {}
    for record in records:
        if record.event_name not in ("INSERT", "MODIFY") or not record.user_id:
            continue
        current = users.get(record.user_id)
        if current is None or _sequence_order(record.sequence_number) < _sequence_order(current):
            users[record.user_id] = record.sequence_number
    return users


def batch_item_failures(users: Mapping[str, str], failed: Iterable[str]) -> list[dict[str, str]]:
    identifiers = sorted({users[u] for u in failed if u in users}, key=_sequence_order)
    return [{"itemIdentifier": i} for i in identifiers]


def process(event: dict[str, Any], context: Any, rt: Runtime) -> dict[str, Any]:
    records = [StreamRecord.from_lambda(r) for r in event.get("Records") or []]
    users = changed_users(records)
    if not users:
        return {"batchItemFailures": []}
    result = refresh_views(rt, list(users))
    for user_id, error in result.failed.items():
        log(
            rt.logger,
            logging.ERROR,
            "view refresh failed",
            function=function_name(context),
            userId=user_id,
            sequenceNumber=users[user_id],
            error=repr(error),
            action="reported as a batch item failure; the mapping retries from this sequence number",
        )
    log(
        rt.logger,
        logging.INFO,
        "trigger batch",
        function=function_name(context),
        records=len(records),
        users=len(users),
        written=len(result.written),
        unchanged=len(result.unchanged),
        snapshotRequests=len(result.snapshot_requests),
        failed=len(result.failed),
    )
    return {"batchItemFailures": batch_item_failures(users, result.failed)}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, context, runtime())
