"""Invariant checks: wait for the pipeline to settle, then compare it with what the test sent.

`assert_converged(pipeline)` is the end of every scenario. It waits for the views to match the
oracle (I1), then for quiescence, then checks again, and checks that snapshots plus live events
account for every accepted event (I2: nothing trimmed before it was counted). A failure prints the
differences, what was sent, the failure queue and the endpoint's recent invocations.

Quiescence is observed, not guessed, on the embedded endpoint: its control API knows whether any
mapping has records pending, anything is in flight or queued (`/_esjoin/quiescence`). LocalStack
and AWS do not expose their pollers, so there the harness requires the snapshot and trim queues to
be empty and the views to stay unchanged for the backend's `settle` time (documented in the README).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from esjoin.testing.oracle import view_differences
from esjoin.testing.pipeline import Pipeline
from esjoin.testing.waits import eventually


def differences(pipeline: Pipeline, users: list[str]) -> list[str]:
    views = pipeline.views(users)
    return [d for user in users for d in view_differences(pipeline.log.expected(user), views.get(user))]


def wait_quiescent(pipeline: Pipeline, users: list[str], deadline: float | None = None) -> None:
    backend = pipeline.backend
    timing = backend.timing
    deadline = deadline or timing.deadline
    if backend.control is not None:

        def quiescent_twice() -> bool:
            return backend.control.quiescence()["quiescent"] and backend.control.quiescence()["quiescent"]

        eventually(
            quiescent_twice,
            expected="the endpoint to be quiescent (no mapping work pending, nothing in flight)",
            deadline=deadline,
            interval=timing.interval,
            max_interval=timing.max_interval,
            observe=backend.control.quiescence,
            context=lambda: recent_history(pipeline),
        )
        return
    queues = ("snapshotRequests", "trimRequests")
    stable_since = [time.monotonic()]
    last = [None]

    def settled() -> bool:
        depth = {q: pipeline.queue_depth(q) for q in queues}
        state = (json.dumps(pipeline.views(users), sort_keys=True, default=str), tuple(depth.values()))
        if state != last[0] or any(depth.values()):
            last[0], stable_since[0] = state, time.monotonic()
            return False
        return time.monotonic() - stable_since[0] >= timing.settle

    eventually(
        settled,
        expected=f"queues empty and views unchanged for {timing.settle:.0f}s",
        deadline=deadline,
        interval=timing.interval,
        max_interval=timing.max_interval,
        observe=lambda: {q: pipeline.queue_depth(q) for q in queues},
    )


def assert_converged(pipeline: Pipeline, users: Iterable[str] | None = None, deadline: float | None = None) -> None:
    """I1 and I2 for `users` (default: every user the test sent events for)."""
    users = sorted(users if users is not None else pipeline.log.users())
    timing = pipeline.backend.timing
    deadline = deadline or timing.deadline

    def report() -> str:
        return failure_report(pipeline, users)

    eventually(
        lambda: not differences(pipeline, users),
        expected=f"view rows of {len(users)} user(s) to equal the fold of the events sent",
        deadline=deadline,
        interval=timing.interval,
        max_interval=timing.max_interval,
        observe=lambda: differences(pipeline, users)[:20],
        context=report,
    )
    wait_quiescent(pipeline, users, deadline)
    remaining = differences(pipeline, users)
    if remaining:
        raise AssertionError(
            "views matched, then changed once the pipeline went quiet:\n  "
            + "\n  ".join(remaining[:20])
            + "\n"
            + report()
        )
    accounting = snapshot_accounting_errors(pipeline, users)
    if accounting:
        raise AssertionError(
            "events lost or double-counted between snapshots and the events table:\n  "
            + "\n  ".join(accounting)
            + "\n"
            + report()
        )


def problems_at_quiescence(
    pipeline: Pipeline, users: Iterable[str] | None = None, deadline: float | None = None
) -> list[str]:
    """Wait for quiescence (not for convergence), then list every I1/I2 violation found (or [])."""
    users = sorted(users if users is not None else pipeline.log.users())
    wait_quiescent(pipeline, users, deadline)
    return differences(pipeline, users) + snapshot_accounting_errors(pipeline, users)


def snapshot_accounting_errors(pipeline: Pipeline, users: list[str]) -> list[str]:
    """I2: each snapshot's event count plus the distinct events stored above its watermark equals
    the number of distinct events sent (an event trimmed but never folded makes this fall short)."""
    errors = []
    snapshots = pipeline.snapshots(users)
    for user in users:
        expected = pipeline.log.expected(user).event_count
        snapshot = snapshots.get(user) or {}
        watermark = snapshot.get("watermark") or ""
        live = {e["eventId"] for e in pipeline.stored_events(user) if e["seq"] > watermark}
        counted = int(snapshot.get("eventCount") or 0) + len(live)
        if counted != expected:
            errors.append(
                f"{user}: snapshot holds {snapshot.get('eventCount', 0)} event(s) up to "
                f"{watermark or '(none)'}, {len(live)} stored above it; expected {expected} in all"
            )
    return errors


def recent_history(pipeline: Pipeline, limit: int = 25) -> str:
    control = pipeline.backend.control
    if control is None:
        return "(no invocation history on this backend: see CloudWatch Logs /aws/lambda/<function>)"
    try:
        records = control.history(limit=limit)["invocations"]
    except Exception as error:  # the report must not hide the original failure
        return f"(history unavailable: {error})"
    lines = [
        f"  #{r['id']} {r['function']:28} {r['outcome']:9} attempt={r['attempt']} batch={len(r['batchIds'])}"
        + (f" {r['errorType']}: {str(r['errorMessage'])[:100]}" if r.get("errorType") else "")
        for r in records
    ]
    return "recent invocations (newest last):\n" + "\n".join(lines)


def failure_report(pipeline: Pipeline, users: list[str]) -> str:
    parts = [pipeline.log.describe(user) for user in users[:5]]
    try:
        failures = pipeline.failure_messages()
        parts.append(f"failure queue ({len(failures)}): " + json.dumps(failures[:5], default=str)[:1500])
    except Exception as error:
        parts.append(f"(failure queue unreadable: {error})")
    parts.append(recent_history(pipeline))
    return "\n".join(parts)
