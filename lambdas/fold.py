"""The domain: fold a user's events into view state, choose what a snapshot may contain.

Pure functions only (no I/O, no boto3), so the invariants can be tested exhaustively:

- `fold` is order-independent and idempotent per event id: lastLogin is the max login timestamp,
  orderCount counts distinct order events, the name comes from the user-created event with the
  greatest (timestamp, id). Folding a snapshot's state with the events above its watermark gives the
  same state as folding everything (I1).
- `snapshot_prefix` returns a contiguous prefix (by sequence number) of the events above the
  watermark and never skips one, so "the snapshot contains e" is exactly "e.seq <= watermark" (I2).
- `original_selection` reproduces the original example's bug ONLY to demonstrate data loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lambdas.events import ORDER_SUBMITTED, USER_CREATED, USER_LOGGED_IN, DomainEvent, StoredEvent
from lambdas.sequence import NO_WATERMARK

# ---------------------------------------------------------------------------------------------
# View state and the fold
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewState:
    """What a user's events fold into; a snapshot stores exactly this."""

    name: str | None = None
    name_timestamp: int | None = None  # the (timestamp, event id) of the user-created event that won
    name_event_id: str | None = None
    last_login: int | None = None
    order_count: int = 0
    event_count: int = 0  # distinct events folded


EMPTY_STATE = ViewState()


def _canonical(copies: list[DomainEvent]) -> DomainEvent:
    # Copies with one id should be identical; if a producer reused an id with other content, pick the
    # same representative whatever the order of delivery.
    return min(copies, key=lambda e: (e.type, e.timestamp, e.user_id, e.name or "", e.body))


def dedupe_by_id(events: Iterable[DomainEvent]) -> list[DomainEvent]:
    copies: dict[str, list[DomainEvent]] = {}
    for event in events:
        copies.setdefault(event.event_id, []).append(event)
    return [_canonical(c) for c in copies.values()]


def apply(state: ViewState, event: DomainEvent) -> ViewState:
    """Fold one event (the caller guarantees it is not already in `state`)."""
    state = replace(state, event_count=state.event_count + 1)
    if event.type == USER_CREATED:
        current = (state.name_timestamp, state.name_event_id)
        if state.name_timestamp is None or (event.timestamp, event.event_id) > current:
            state = replace(state, name=event.name, name_timestamp=event.timestamp, name_event_id=event.event_id)
    elif event.type == USER_LOGGED_IN:
        if state.last_login is None or event.timestamp > state.last_login:
            state = replace(state, last_login=event.timestamp)
    elif event.type == ORDER_SUBMITTED:
        state = replace(state, order_count=state.order_count + 1)
    else:  # parse_event admits only the three types
        raise ValueError(f"unknown event type {event.type!r}")
    return state


def fold(events: Iterable[DomainEvent], start: ViewState = EMPTY_STATE) -> ViewState:
    """Fold events (de-duplicated by id) onto `start`; the result does not depend on their order."""
    state = start
    for event in dedupe_by_id(events):
        state = apply(state, event)
    return state


# ---------------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A user's persisted snapshot: the fold of every stored event with seq <= watermark."""

    user_id: str
    state: ViewState = EMPTY_STATE
    watermark: str = NO_WATERMARK
    version: int = 0  # 0 = never written; +1 per write (optimistic concurrency)
    updated_at: int = 0


def events_above(events: Iterable[StoredEvent], watermark: str) -> list[StoredEvent]:
    """The events a snapshot with this watermark does not contain, in sequence order."""
    return sorted((e for e in events if e.seq > watermark), key=lambda e: e.seq)


def snapshot_prefix(events: Sequence[StoredEvent], now_ms: int, horizon_ms: int) -> list[StoredEvent]:
    """The events a snapshot may fold now: in sequence order, while each has been visible for at
    least `horizon_ms`; stop at the first younger one. Never skips an event, so the result is a
    contiguous prefix and its last seq is a correct watermark.

    Age is measured from when the row became visible (max of Kinesis arrival and the consumer's
    write), not from the event's domain timestamp: a late event (old timestamp) is as young as any.
    """
    cutoff = now_ms - horizon_ms
    prefix: list[StoredEvent] = []
    for event in sorted(events, key=lambda e: e.seq):
        if event.visible_since > cutoff:
            break
        prefix.append(event)
    return prefix


def original_selection(events: Sequence[StoredEvent], now_ms: int, horizon_ms: int) -> tuple[list[StoredEvent], str]:
    """ONLY FOR DEMONSTRATING DATA LOSS (SNAPSHOT_MODE=original): the original example's selection.

    It picks the events whose *domain timestamp* is older than the horizon and sets the watermark to
    the highest seq among them. Any younger event below that seq is never folded, and trim then
    deletes it: a late event (old timestamp, high seq) silently drops its predecessors.
    """
    cutoff = now_ms - horizon_ms
    selected = [e for e in events if e.event.timestamp <= cutoff]
    watermark = max((e.seq for e in selected), default=NO_WATERMARK)
    return selected, watermark


def should_request_snapshot(live_events: int, event_count: int, requested_at_count: int | None, threshold: int) -> bool:
    """Ask for a snapshot when enough events sit above the watermark, at most once per `threshold`
    new events (a request already in flight covers the ones before)."""
    if live_events < threshold:
        return False
    return requested_at_count is None or event_count - requested_at_count >= threshold


# ---------------------------------------------------------------------------------------------
# View rows
# ---------------------------------------------------------------------------------------------


def render_view(
    user_id: str,
    state: ViewState,
    snapshot_watermark: str,
    snapshot_version: int,
    updated_at: int,
    snapshot_requested_at_count: int | None,
) -> dict[str, Any]:
    """The view row as plain Python (None becomes DynamoDB NULL)."""
    row: dict[str, Any] = {
        "id": user_id,
        "name": state.name,
        "lastLogin": state.last_login,
        "recentOrderCount": state.order_count,
        "eventCount": state.event_count,
        "snapshotWatermark": snapshot_watermark,
        "snapshotVersion": snapshot_version,
        "updatedAt": updated_at,
    }
    if snapshot_requested_at_count is not None:
        row["snapshotRequestedAtCount"] = snapshot_requested_at_count
    return row
