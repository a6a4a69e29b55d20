"""Scenarios: snapshot requests at awkward moments, big trims, and rebuilding a view (I1, I2, I5).

A snapshot request is served through SQS whatever state the user is in: before any view row exists,
for a user with no events at all, for a user whose view row was deleted (the request rebuilds it).
Trim deletes in batches of at most 25 (BatchWriteItem's limit) however many events a snapshot folded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from esjoin.testing.pipeline import Pipeline
from tests.integration.support.scenario import (
    view_of,
    wait_for_snapshot_count,
    wait_for_stored_count,
    wait_for_view_count,
    wait_until,
)

MANUAL_SNAPSHOTS = {"snapshot_threshold": 1_000_000}
"""A stage whose trigger never asks for a snapshot: only the scenario does, so it knows what each
snapshot (and so each trim) holds."""


@pytest.fixture
def manual_pipeline(backend: Any, stack_factory: Callable[..., Any]) -> Pipeline:
    return Pipeline(backend, stack_factory("manual", **MANUAL_SNAPSHOTS))


@pytest.fixture
def held_pipeline(backend: Any, stack_factory: Callable[..., Any]) -> Pipeline:
    """A stage of its own: the scenario disables its trigger mapping for a while."""
    return Pipeline(backend, stack_factory("held", **MANUAL_SNAPSHOTS))


def test_sixty_events_are_trimmed_in_one_go(manual_pipeline, new_user):
    pipeline = manual_pipeline
    # Given a user with 60 events in the view
    user = new_user("sixty")
    start = now_ms() - 60_000
    events = [user_created(user, "Sixty", start)]
    events += [(logged_in if i % 3 else order_submitted)(user, start + 1_000 + i) for i in range(59)]
    pipeline.put_events(events)
    wait_for_view_count(pipeline, user, 60)
    # When one snapshot folds all of them (so one trim request covers 60 events, 25 per BatchWriteItem)
    pipeline.request_snapshot(user, horizon_seconds=0)
    snapshot = wait_for_snapshot_count(pipeline, user, 60)
    assert snapshot["version"] == 1, snapshot
    # Then the events table holds none of them, and the view is intact
    wait_for_stored_count(pipeline, user, 0)
    assert_converged(pipeline, [user])
    assert pipeline.views([user])[user]["recentOrderCount"] == 20


def test_a_snapshot_for_a_user_with_no_events_is_harmless(pipeline, new_user):
    # Given a user nobody has sent anything for
    ghost = new_user("ghost")
    # When a snapshot is requested for them
    pipeline.request_snapshot(ghost, horizon_seconds=0)
    # Then the request is served: the view row is the fold of nothing, no snapshot is written
    assert_converged(pipeline, [ghost])
    assert (view_of(pipeline, ghost) or {}).get("eventCount") == 0
    assert pipeline.snapshots([ghost]) == {}
    # And the user's first events fold as usual afterwards
    pipeline.put_events([user_created(ghost, "Ghost"), logged_in(ghost)])
    assert_converged(pipeline, [ghost])


def test_a_snapshot_requested_before_any_view_row_exists(held_pipeline, new_user):
    pipeline = held_pipeline
    user = new_user("early")
    trigger = pipeline.mapping_uuid("trigger")
    # Given the trigger is disabled, so a user's stored events have no view row yet
    set_mapping_enabled(pipeline, trigger, False)
    try:
        now = now_ms()
        pipeline.put_events(
            [user_created(user, "Early", now - 3_000), logged_in(user, now - 2_000), order_submitted(user, now - 1_000)]
        )
        wait_for_stored_count(pipeline, user, 3)
        assert view_of(pipeline, user) is None
        # When a snapshot is requested
        pipeline.request_snapshot(user, horizon_seconds=0)
        # Then the snapshot holds the events and its run writes the view row
        wait_for_snapshot_count(pipeline, user, 3)
        row = wait_for_view_count(pipeline, user, 3)
        assert (row["name"], row["recentOrderCount"]) == ("Early", 1)
    finally:
        set_mapping_enabled(pipeline, trigger, True)
    # And once the trigger runs again, the view stays right (and follows new events)
    pipeline.put_events([order_submitted(user, now_ms())])
    assert_converged(pipeline, [user])


def set_mapping_enabled(pipeline: Pipeline, uuid: str, enabled: bool) -> None:
    """UpdateEventSourceMapping, then wait for the mapping to say so (Enabling/Disabling take a while
    on some backends)."""
    pipeline.lambda_.update_event_source_mapping(UUID=uuid, Enabled=enabled)
    state = "Enabled" if enabled else "Disabled"
    wait_until(
        pipeline,
        lambda: pipeline.lambda_.get_event_source_mapping(UUID=uuid)["State"] == state,
        f"mapping {uuid} to be {state}",
        observe=lambda: pipeline.lambda_.get_event_source_mapping(UUID=uuid)["State"],
    )


def test_a_deleted_view_row_is_rebuilt_by_a_snapshot_request(pipeline, new_user):
    # Given a user's view row, from events that are live in the events table (and a quiet pipeline)
    user = new_user("rebuild")
    now = now_ms()
    pipeline.put_events(
        [user_created(user, "Rebuilt", now - 5_000), logged_in(user, now - 4_000), order_submitted(user, now - 3_000)]
    )
    assert_converged(pipeline, [user])
    # When the row is deleted and a snapshot is requested
    pipeline.delete_view(user)
    assert view_of(pipeline, user) is None
    pipeline.request_snapshot(user, horizon_seconds=None)
    # Then the row comes back equal to the fold
    assert_converged(pipeline, [user])
    # Given the events are then snapshotted and trimmed, and two more arrive
    pipeline.request_snapshot(user, horizon_seconds=0)
    wait_for_snapshot_count(pipeline, user, 3)
    wait_for_stored_count(pipeline, user, 0)
    pipeline.put_events([logged_in(user, now - 2_000), order_submitted(user, now - 1_000)])
    assert_converged(pipeline, [user])  # and quiet: no refresh under way to write the row again
    # When the row is deleted again and a snapshot is requested (with the stage's horizon: the two
    # young events stay above the watermark)
    pipeline.delete_view(user)
    assert view_of(pipeline, user) is None
    pipeline.request_snapshot(user, horizon_seconds=None)
    # Then the row is rebuilt from the snapshot and the live events
    assert_converged(pipeline, [user])
    row = pipeline.views([user])[user]
    assert (row["name"], row["recentOrderCount"], row["lastLogin"]) == ("Rebuilt", 2, now - 2_000)
