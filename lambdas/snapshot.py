"""Snapshot: SQS batch of snapshot requests -> snapshots, trim requests, refreshed views
(handler ``lambdas.snapshot.handler``).

Request: ``{"type": "snapshot", "userId": ..., "horizonSeconds"?: n >= 0, "requestedAt"?: ms}``;
``horizonSeconds`` overrides SNAPSHOT_HORIZON_SECONDS (0 folds everything stored now), so an operator
or a test can ask for one by hand. A request also rebuilds the user's view.

Per user (requests for one user in a batch are handled once, with the smallest horizon):

1. Read the snapshot (consistent): watermark W, version v.
2. Query the events with seq > W (consistent, at most SNAPSHOT_MAX_EVENTS).
3. Take them in seq order while each has been visible for the horizon; stop at the first younger one.
   The consumer makes a user's events visible in seq order, so this is a contiguous prefix of
   everything the user will ever store above W, and the new watermark W' = the prefix's last seq means
   exactly "every event with seq <= W' is folded in" (I2).
4. PutItem the new snapshot with version v+1 if the stored one still has version v (I4); on conflict
   read again and retry. If the run hit SNAPSHOT_MAX_EVENTS and folded them all, ask for another run.
5. If the watermark moved, ask the trim function to delete events <= W'.
6. Refresh the view (views.refresh_views).

SNAPSHOT_MODE=original exists ONLY TO DEMONSTRATE DATA LOSS: it restores the original example's logic
(select by *domain timestamp*, watermark = highest selected seq, unconditional write), which drops
events whose seq is below the watermark but whose timestamp is recent, and trim then deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lambdas.config import SNAPSHOT_MODE_ORIGINAL
from lambdas.dependencies import Runtime, function_name, runtime
from lambdas.events import StoredEvent
from lambdas.fold import Snapshot, fold, original_selection, snapshot_prefix
from lambdas.logs import log
from lambdas.queues import OutgoingMessage
from lambdas.records import SqsMessage
from lambdas.store import SnapshotConflict
from lambdas.views import refresh_views
from lambdas.work_requests import (
    parse_snapshot_request,
    reject_malformed,
    requests_by_user,
    snapshot_request_body,
    trim_request_body,
)

MAX_CONFLICT_ATTEMPTS = 5


def next_snapshot(
    current: Snapshot, events: Sequence[StoredEvent], now_ms: int, horizon_ms: int, mode: str
) -> Snapshot | None:
    """The snapshot to write after `current` given the events above its watermark, or None if there is
    nothing to fold yet. Pure: the write and its concurrency control are the caller's."""
    if mode == SNAPSHOT_MODE_ORIGINAL:
        # ONLY FOR DEMONSTRATING DATA LOSS (see the module docstring).
        selected, watermark = original_selection(events, now_ms, horizon_ms)
    else:
        selected = snapshot_prefix(events, now_ms, horizon_ms)
        watermark = selected[-1].seq if selected else current.watermark
    if not selected:
        return None
    return Snapshot(
        user_id=current.user_id,
        state=fold((e.event for e in selected), start=current.state),
        watermark=watermark,
        version=current.version + 1,
        updated_at=now_ms,
    )


@dataclass
class SnapshotRun:
    user_id: str
    before: Snapshot
    after: Snapshot | None = None  # None: nothing was folded
    more: bool = False  # read the maximum and folded all of it: another run is needed

    @property
    def advanced(self) -> bool:
        return self.after is not None and self.after.watermark > self.before.watermark


def take_snapshot(rt: Runtime, user_id: str, horizon_ms: int) -> SnapshotRun:
    settings = rt.settings
    original = settings.snapshot_mode == SNAPSHOT_MODE_ORIGINAL
    for _attempt in range(MAX_CONFLICT_ATTEMPTS):
        current = rt.store.get_snapshot(user_id)
        events = rt.store.query_events(user_id, after=current.watermark, limit=settings.snapshot_max_events)
        run = SnapshotRun(user_id=user_id, before=current)
        new = next_snapshot(current, events, rt.now_ms(), horizon_ms, settings.snapshot_mode)
        if new is None:
            return run
        try:
            # The original example wrote without a version check; kept ONLY to demonstrate data loss.
            rt.store.put_snapshot(new, expected_version=None if original else current.version)
        except SnapshotConflict:
            log(rt.logger, logging.INFO, "snapshot conflict, reading again", userId=user_id, version=current.version)
            continue
        run.after = new
        run.more = len(events) >= settings.snapshot_max_events and new.watermark == events[-1].seq
        return run
    raise SnapshotConflict(
        f"snapshot of user {user_id}: still conflicting after {MAX_CONFLICT_ATTEMPTS}"
        " attempts; the message is retried after its visibility timeout"
    )


def trim_watermark(run: SnapshotRun, redelivered: bool) -> str | None:
    """The watermark to ask the trim function for, if any: the new one when the snapshot moved; on a
    redelivered request also the current one, in case an earlier attempt advanced the snapshot but
    failed to send its trim request."""
    if run.advanced and run.after is not None:
        return run.after.watermark
    if redelivered and run.before.watermark:
        return run.before.watermark
    return None


def process(event: dict[str, Any], context: Any, rt: Runtime) -> dict[str, Any]:
    messages = [SqsMessage.from_lambda(r) for r in event.get("Records") or []]
    malformed, by_user = requests_by_user(messages, parse_snapshot_request)

    name = function_name(context)
    settings = rt.settings
    failed_users: dict[str, BaseException] = {}
    trims: list[OutgoingMessage] = []
    follow_ups: list[OutgoingMessage] = []
    folded = 0
    for user_id, requests in by_user.items():
        horizons = [r.horizon_seconds for _, r in requests if r.horizon_seconds is not None]
        horizon_seconds = min(horizons) if horizons else None
        horizon_ms = settings.snapshot_horizon_ms if horizon_seconds is None else int(horizon_seconds * 1000)
        try:
            run = take_snapshot(rt, user_id, horizon_ms)
        except Exception as error:
            failed_users[user_id] = error
            continue
        if run.after is not None:
            folded += run.after.state.event_count - run.before.state.event_count
        watermark = trim_watermark(run, redelivered=any(m.receive_count > 1 for m, _ in requests))
        if watermark:
            trims.append(OutgoingMessage(user_id, trim_request_body(user_id, watermark)))
        if run.more:
            again = snapshot_request_body(user_id, rt.now_ms(), horizon_seconds)
            follow_ups.append(OutgoingMessage(user_id, again))

    for failure in [
        *rt.queues.send(settings.trim_queue_url, trims),
        *rt.queues.send(settings.snapshot_queue_url, follow_ups),
    ]:
        error = RuntimeError(f"could not send to SQS: {failure.code} {failure.message}")
        failed_users.setdefault(failure.key, error)
    done = [u for u in by_user if u not in failed_users]
    if done:
        try:
            failed_users.update(refresh_views(rt, done).failed)
        except Exception as error:
            failed_users.update(dict.fromkeys(done, error))

    failed = reject_malformed(rt, context, "snapshot", malformed)
    for user_id, error in failed_users.items():
        message_ids = [m.message_id for m, _ in by_user[user_id]]
        log(
            rt.logger,
            logging.ERROR,
            "snapshot failed",
            function=name,
            userId=user_id,
            error=repr(error),
            messageIds=message_ids,
            action="reported as batch item failures; SQS redelivers, then redrives to the DLQ",
        )
        failed.extend(message_ids)
    log(
        rt.logger,
        logging.INFO,
        "snapshot batch",
        function=name,
        messages=len(messages),
        users=len(by_user),
        malformed=len(malformed),
        eventsFolded=folded,
        trimRequests=len(trims),
        failed=len(failed),
        mode=settings.snapshot_mode,
    )
    return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(failed)]}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, context, runtime())
