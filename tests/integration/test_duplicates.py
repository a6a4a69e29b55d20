"""Scenarios: everything delivered more than once counts once (I3).

Two kinds of duplicate: a producer retry (the same event id sent again: a new Kinesis record with a new
sequence number), and at-least-once delivery (Lambda hands the same batch, or SQS the same message,
to a function again). The original example counted both twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from esjoin.testing.pipeline import Pipeline
from tests.integration.support.scenario import (
    history_mark,
    invocations,
    kinesis_event_id,
    put_mixed,
    wait_for_snapshot_count,
    wait_for_stored_count,
    wait_for_view_count,
    wait_until,
)


def test_a_producer_retry_counts_once_also_after_its_first_copies_were_trimmed(pipeline, new_user):
    # Given a user's events, each sent twice at once by a producer that retried (new sequence numbers)
    user = new_user("retry")
    now = now_ms()
    events = [
        user_created(user, "Retry", now - 5_000),
        logged_in(user, now - 4_000),
        order_submitted(user, now - 3_000),
        order_submitted(user, now - 2_000),
    ]
    first = pipeline.put_events(events)
    again = pipeline.put_events(events, how="retry")
    assert {r["sequenceNumber"] for r in first}.isdisjoint(r["sequenceNumber"] for r in again)
    # Then each counts once
    assert_converged(pipeline, [user])
    assert pipeline.views([user])[user]["recentOrderCount"] == 2
    # Given the first copies folded into a snapshot and trimmed from the events table
    pipeline.request_snapshot(user, horizon_seconds=0)
    wait_for_snapshot_count(pipeline, user, 4)
    wait_for_stored_count(pipeline, user, 0)
    # When the producer retries them once more, with one new event among them
    late_order = order_submitted(user, now - 1_000)
    pipeline.resend([*events, late_order])
    # Then only the new one counts, and the retried copies are not even stored again
    assert_converged(pipeline, [user])
    assert pipeline.views([user])[user]["recentOrderCount"] == 3
    assert [row["eventId"] for row in pipeline.stored_events(user)] == [late_order["id"]]


@pytest.fixture
def dup_pipeline(backend: Any, stack_factory: Callable[..., Any]) -> Pipeline:
    """A stage of its own: the control API's duplicate_next doubles the next batch of a mapping,
    whoever's it is, and the scenario checks that the doubled batch was its own."""
    return Pipeline(backend, stack_factory("dup"))


@pytest.mark.embedded_only("redelivers batches with the control API's duplicate_next")
def test_redelivered_batches_and_messages_count_once(dup_pipeline, new_user, control):
    pipeline = dup_pipeline
    user = new_user("dup")
    mark = history_mark(control)
    # Given the next batch of each mapping is delivered twice (the consumer's, the trigger's, and the
    # snapshot and trim functions' SQS batches)
    for key in ("consumer", "trigger", "snapshot", "trim"):
        control.duplicate_next(pipeline.mapping_uuid(key), count=1)
    # When a user's events arrive in one batch, with a poison record among them
    now = now_ms()
    events = [
        user_created(user, "Twice", now - 3_000),
        logged_in(user, now - 2_000),
        order_submitted(user, now - 1_000),
    ]
    *sent, poison = put_mixed(pipeline, [*events, b"{not json"], user)
    wait_for_view_count(pipeline, user, 3)
    # and a snapshot is requested (its run and the trim it asks for are delivered twice too)
    pipeline.request_snapshot(user, horizon_seconds=0)
    wait_for_snapshot_count(pipeline, user, 3)
    wait_for_stored_count(pipeline, user, 0)
    # Then the view, the snapshot and the events table count each event once
    assert_converged(pipeline, [user])
    assert pipeline.views([user])[user]["recentOrderCount"] == 1
    # and the poison record went to the failure queue once, though its batch was delivered twice
    poison_id = kinesis_event_id(poison)
    messages = [m for m in pipeline.failure_messages() if (m.get("record") or {}).get("eventID") == poison_id]
    assert len(messages) == 1, messages
    # and each function did get a duplicate: the consumer's carried this user's records
    mine = {kinesis_event_id(r) for r in sent}
    for key in ("consumer", "trigger", "snapshot", "trim"):
        function = pipeline.function(key)
        duplicates = wait_until(
            pipeline,
            lambda f=function: [r for r in invocations(control, f, mark) if r["duplicate"]],
            f"a duplicate delivery to {function}",
        )
        if key == "consumer":
            assert mine <= set(duplicates[0]["batchIds"]), duplicates
