"""Scenario: late events, older than the snapshot horizon, arriving after younger events and after a
snapshot. The original example took "events older than the horizon" by timestamp and then set its
watermark to the highest sequence number it had seen: the younger events in between were skipped,
and trim then deleted them for good."""

from esjoin.testing.checks import assert_converged, problems_at_quiescence
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from esjoin.testing.pipeline import Pipeline
from tests.integration.support.scenario import (
    wait_for_queue_drained,
    wait_for_snapshot_count,
    wait_for_stored_count,
    wait_for_view_count,
)


def late_events_after_a_snapshot(pipeline: Pipeline, user: str) -> None:
    now = now_ms()
    # Given a user whose first events are already folded into a snapshot
    pipeline.put_events(
        [
            user_created(user, "Late", now - 600_000),
            logged_in(user, now - 500_000),
            order_submitted(user, now - 400_000),
        ]
    )
    wait_for_view_count(pipeline, user, 3)
    pipeline.request_snapshot(user, horizon_seconds=0)
    wait_for_snapshot_count(pipeline, user, 3)
    # and younger events after it (younger than the horizon)
    pipeline.put_events([logged_in(user, now_ms()), order_submitted(user, now_ms())])
    # When events with timestamps older than the horizon and than everything snapshotted arrive late
    pipeline.put_events([order_submitted(user, now - 900_000), logged_in(user, now - 950_000)])
    wait_for_view_count(pipeline, user, 7)
    # and a snapshot with the stage's horizon runs while the young events are still young (on its own:
    # the snapshot function serves requests for one user in one batch once, with the smallest horizon),
    pipeline.request_snapshot(user, horizon_seconds=None)
    wait_for_queue_drained(pipeline, "snapshotRequests")
    # then a snapshot of everything (and the trims they request)
    pipeline.request_snapshot(user, horizon_seconds=0)


def test_late_events_are_counted_and_never_trimmed_before_being_counted(pipeline, new_user):
    user = new_user("late")
    late_events_after_a_snapshot(pipeline, user)
    # Then every event is counted exactly once, and nothing was trimmed before it was counted
    assert_converged(pipeline, [user])
    wait_for_snapshot_count(pipeline, user, 7)
    row = pipeline.views([user])[user]
    assert row["recentOrderCount"] == 3 and row["lastLogin"] >= now_ms() - 120_000
    # And a late event arriving after everything was snapshotted and trimmed is counted too
    wait_for_stored_count(pipeline, user, 0)
    pipeline.put_events([order_submitted(user, now_ms() - 3_600_000)])
    assert_converged(pipeline, [user])
    assert pipeline.views([user])[user]["recentOrderCount"] == 4


def test_the_scenario_catches_the_original_timestamp_based_snapshot(broken_pipeline, new_user):
    """The same scenario on a stage running the original's snapshot logic must fail: proof that the
    scenario guards the behaviour (SNAPSHOT_MODE=original is for this demonstration only)."""
    user = new_user("late-broken")
    late_events_after_a_snapshot(broken_pipeline, user)
    problems = problems_at_quiescence(broken_pipeline, [user])
    assert problems, "the original snapshot logic lost nothing: the scenario no longer guards I2"
    assert any("expected" in problem for problem in problems)
