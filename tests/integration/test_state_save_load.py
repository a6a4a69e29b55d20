"""Scenario: the pipeline's state saved mid-flight, loaded into a new endpoint, and the pipeline goes on.

Given a stage whose users have events folded into views, snapshots and trims (and more events still in
flight), when the endpoint's whole state is saved, the endpoint stopped, and the state loaded into a new
endpoint on the same port, then the events sent after the load join those sent before: every view equals
the oracle's fold of everything sent, and nothing was lost by the move (I1, I2; at least once, I3).
The endpoints are this test's own: saving and loading another test's endpoint would disturb it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from esjoin.testing.backends import free_port
from esjoin.testing.checks import assert_converged
from esjoin.testing.control_client import ControlClient
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from esjoin.testing.pipeline import EventLog, Pipeline
from tests.integration.support.own_endpoint import deploy_demo, own_backend


def some_events(user: str, name: str, count: int) -> list[dict]:
    now = now_ms()
    events = [user_created(user, name, now - 100_000)]
    for n in range(count):
        events.append(logged_in(user, now - 50_000 + n) if n % 2 else order_submitted(user, now - 40_000 + n))
    return events


@pytest.mark.embedded_only("saves and loads the embedded endpoint's state")
def test_a_saved_pipeline_goes_on_in_a_new_endpoint(tmp_path: Path, new_user) -> None:
    port = free_port()
    before = own_backend(tmp_path / "before", port)
    log = EventLog()
    try:
        outputs = deploy_demo(before, "moved", tmp_path)
        pipeline = Pipeline(before, outputs, log)
        alice, bob = new_user("alice"), new_user("bob")
        pipeline.put_events(some_events(alice, "Alice", 12) + some_events(bob, "Bob", 8))
        assert_converged(pipeline)  # snapshots (threshold 5) and trims have run
        pipeline.put_events([logged_in(alice), order_submitted(bob)])  # in flight when the state is saved
        archive = ControlClient(before.endpoint_url).save_state()
    finally:
        before.stop()

    after = own_backend(tmp_path / "after", port)
    try:
        loaded = ControlClient(after.endpoint_url).load_state(archive, "moved.zip")
        assert loaded["functions"] == 5 and loaded["eventSourceMappings"] == 4, loaded
        pipeline = Pipeline(after, outputs, log)

        pipeline.put_events([*some_events(new_user("carol"), "Carol", 6), order_submitted(alice), logged_in(bob)])

        assert_converged(pipeline)
    finally:
        after.stop()
