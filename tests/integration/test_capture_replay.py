"""Scenario: a bug seen in "production" brought home. Events flow through one endpoint's pipeline (the
stand-in for a real account); `esjoin capture` reads its stream, read-only, into a bundle; `esjoin replay
--inputs` feeds the bundle into a fresh stack on another endpoint; the views there equal the first
pipeline's, and the oracle's fold of what was sent (I1), duplicates and late events included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from esjoin.testing.backends import Backend
from esjoin.testing.capture import Bundle, CaptureError, capture, feed
from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from esjoin.testing.pipeline import EventLog, Pipeline
from tests.integration.support.own_endpoint import deploy_demo, own_backend


def deployed(directory: Path, stage: str) -> tuple[Backend, Pipeline, EventLog]:
    backend = own_backend(directory)
    log = EventLog()
    return backend, Pipeline(backend, deploy_demo(backend, stage, directory), log), log


@pytest.mark.embedded_only("starts two embedded endpoints of its own")
def test_a_captured_stream_replayed_elsewhere_gives_the_same_views(tmp_path: Path, new_user) -> None:
    production, source, sent = deployed(tmp_path / "production", "prod")
    try:
        alice, bob = new_user("alice"), new_user("bob")
        now = now_ms()
        events = [user_created(alice, "Alice", now - 90_000), user_created(bob, "Bob", now - 90_000)]
        events += [logged_in(alice, now - 60_000 + n) for n in range(4)] + [
            order_submitted(bob, now - n) for n in range(5)
        ]
        source.put_events(events)
        source.resend(events[2:4])  # producer retries: same ids again
        source.put_events([logged_in(bob, now - 300_000)])  # a late login
        assert_converged(source)
        production_views = source.views(sent.users())
        bundle = capture(production.target, source.outputs.stream["name"])
    finally:
        production.stop()
    assert bundle.records == len(events) + 2 + 1, bundle.records
    bundle.write(tmp_path / "capture.json.gz")

    local, replayed, replayed_log = deployed(tmp_path / "local", "local")
    try:
        fed = feed(Bundle.read(tmp_path / "capture.json.gz"), local.target, replayed.outputs.stream["name"])
        assert fed["records"] == bundle.records
        replayed_log.sent.extend(sent.sent)  # the oracle folds what production was sent

        assert_converged(replayed)
        for user in sent.users():
            mine, theirs = replayed.views([user])[user], production_views[user]
            for key in ("name", "lastLogin", "recentOrderCount", "eventCount"):
                assert mine.get(key) == theirs.get(key), (
                    f"{user}.{key}: replayed {mine.get(key)}, production {theirs.get(key)}"
                )
    finally:
        local.stop()


def test_a_bundle_from_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not.gz").write_bytes(b"plain text")
    with pytest.raises(CaptureError, match="not an esjoin capture bundle"):
        Bundle.read(tmp_path / "not.gz")
