"""Refresh view rows from the snapshot and the events above it (used by the trigger and the snapshot).

Per batch of users (a handful of calls whatever the number of events):

1. BatchGetItem the view rows: W1 = the snapshot watermark each row was built from.
2. Query each user's events with seq > W1 (consistent, paginated).
3. BatchGetItem the snapshots AFTER the queries: S2 with watermark W2 >= W1.
4. state = fold(events with seq > W2, start=S2.state); PutItem the row, conditionally.

Why reading the snapshot last is enough (no retry loop): trim deletes only events with
seq <= the persisted watermark, and the watermark only grows, so any event the query missed because
it was trimmed has seq <= W2 and is inside S2; events the query returned with seq <= W2 are ignored
because S2 already holds them. Events stored after the query have their own stream records, hence
their own refresh.

Why the conditional write is enough (I4): every consistent read sees a growing set of accepted events
(stored events plus what snapshots absorbed), so between two refreshes of one user a larger
eventCount means a superset and an equal eventCount the same set. The row is written if the stored
one folds fewer events, or as many but from an older snapshot (so the row's watermark can move on,
keeping later queries short); otherwise a writer with as much information got there first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lambdas.dependencies import Runtime
from lambdas.events import StoredEvent
from lambdas.fold import Snapshot, ViewState, events_above, fold, render_view, should_request_snapshot
from lambdas.logs import log
from lambdas.queues import OutgoingMessage, request_delay_seconds
from lambdas.sequence import NO_WATERMARK
from lambdas.work_requests import snapshot_request_body


@dataclass(frozen=True)
class ViewUpdate:
    """What one user's refresh decided, before any write (pure, so it can be tested without AWS)."""

    user_id: str
    state: ViewState
    snapshot: Snapshot
    live_events: int  # stored events above the snapshot's watermark
    previous_requested_at: int | None  # the stored row's snapshotRequestedAtCount
    request_snapshot: bool

    def row(self, now_ms: int, snapshot_requested: bool) -> dict[str, Any]:
        requested_at = self.state.event_count if snapshot_requested else self.previous_requested_at
        return render_view(
            self.user_id, self.state, self.snapshot.watermark, self.snapshot.version, now_ms, requested_at
        )


def plan_view_update(
    user_id: str, stored_row: dict[str, Any] | None, events: Sequence[StoredEvent], snapshot: Snapshot, threshold: int
) -> ViewUpdate:
    live = events_above(events, snapshot.watermark)
    state = fold((e.event for e in live), start=snapshot.state)
    previous = (stored_row or {}).get("snapshotRequestedAtCount")
    previous = int(previous) if previous is not None else None
    return ViewUpdate(
        user_id=user_id,
        state=state,
        snapshot=snapshot,
        live_events=len(live),
        previous_requested_at=previous,
        request_snapshot=should_request_snapshot(len(live), state.event_count, previous, threshold),
    )


def row_watermark(stored_row: dict[str, Any] | None) -> str:
    return str((stored_row or {}).get("snapshotWatermark") or NO_WATERMARK)


@dataclass
class RefreshResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # a writer with as much information was first
    snapshot_requests: list[str] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)


def refresh_views(rt: Runtime, user_ids: Sequence[str]) -> RefreshResult:
    """Bring the users' view rows up to date. A failure of one user is reported, not raised, so the
    others proceed; a failure of a shared read (the batch gets) is raised."""
    result = RefreshResult()
    store, settings = rt.store, rt.settings
    rows = store.get_views(user_ids)
    events: dict[str, list[StoredEvent]] = {}
    for user_id in user_ids:
        try:
            events[user_id] = store.query_events(user_id, after=row_watermark(rows.get(user_id)))
        except Exception as error:
            result.failed[user_id] = error
    readable = [u for u in user_ids if u in events]
    snapshots = store.get_snapshots(readable)

    plans: dict[str, ViewUpdate] = {}
    for user_id in readable:
        snapshot = snapshots[user_id]
        try:
            if snapshot.watermark < row_watermark(rows.get(user_id)):
                # The snapshot went backwards (an operator deleted it): read again from its watermark.
                events[user_id] = store.query_events(user_id, after=snapshot.watermark)
            plans[user_id] = plan_view_update(
                user_id, rows.get(user_id), events[user_id], snapshot, settings.snapshot_threshold
            )
        except Exception as error:
            result.failed[user_id] = error

    # Ask for snapshots before writing rows: if the request cannot be sent, the row keeps its old
    # snapshotRequestedAtCount and a later refresh asks again.
    now = rt.now_ms()
    delay = request_delay_seconds(settings.snapshot_horizon_seconds)
    wanted = [
        OutgoingMessage(key=u, body=snapshot_request_body(u, now), delay_seconds=delay)
        for u, plan in plans.items()
        if plan.request_snapshot
    ]
    failures = rt.queues.send(settings.snapshot_queue_url, wanted)
    for failure in failures:
        log(
            rt.logger,
            logging.WARNING,
            "snapshot request not sent",
            userId=failure.key,
            code=failure.code,
            error=failure.message,
            action="a later refresh of this user asks again",
        )
    unsent = {f.key for f in failures}
    result.snapshot_requests = [m.key for m in wanted if m.key not in unsent]

    for user_id, plan in plans.items():
        try:
            row = plan.row(now, snapshot_requested=plan.request_snapshot and user_id not in unsent)
            if store.put_view(row):
                result.written.append(user_id)
            else:
                result.unchanged.append(user_id)
        except Exception as error:
            result.failed[user_id] = error
    return result
