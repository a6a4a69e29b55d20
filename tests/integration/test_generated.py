"""A generated suite: Hypothesis drives the pipeline with random sequences of what can happen to it.

Each example is a fresh set of three users and a sequence of steps: fresh events, producer retries
of events already sent, late events (timestamps minutes to hours old), snapshot and trim requests
and, on the embedded endpoint, injected failures and delays (a consumer or trigger invocation that
fails, a function that starts late, a snapshot write held back). After every step the snapshots
must not have gone backwards (I4); at the end of the example the views must equal the fold of what
was sent and the snapshots must account for every event (I1, I2: `assert_converged`).

A failing example is shrunk and printed as the steps to replay, e.g.

    state = PipelineMachine()
    sent_0 = state.first_events(kinds=['order-submitted'], user=1)
    sent_1, sent_2 = state.send_events(age_seconds=0, kinds=['user-created', 'user-loggedIn'], user=1)
    state.request_snapshot(horizon=0, user=1)
    state.resend(event=sent_1)
    state.teardown()

CI runs a few short examples, derandomized (the same ones every run); `--esjoin-long` runs a soak with many
more, longer and random ones.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from esjoin.testing.checks import assert_converged, failure_report, problems_at_quiescence
from esjoin.testing.events import event_of_kind, now_ms
from esjoin.testing.oracle import KNOWN_TYPES
from esjoin.testing.pipeline import EventLog, Pipeline
from tests.integration.support.scenario import Faults, snapshot_write_marker

USERS = 3
KINDS = KNOWN_TYPES
CI_SETTINGS = {"max_examples": 6, "stateful_step_count": 12, "derandomize": True}
SOAK_SETTINGS = {"max_examples": 40, "stateful_step_count": 40, "derandomize": False}


class PipelineMachine(RuleBasedStateMachine):
    """Steps on one stage of the pipeline. `pipeline` and `faults` are set by the test below."""

    pipeline: Pipeline
    faults: Faults | None = None

    sent = Bundle("sent")
    users = st.integers(min_value=0, max_value=USERS - 1)

    def __init__(self) -> None:
        super().__init__()
        run = uuid.uuid4().hex[:8]
        self.user_ids = [f"u-gen-{run}-{i}" for i in range(USERS)]
        self.pipeline.log = EventLog()  # each example checks only what it sent
        self.snapshot_seen: dict[str, tuple[int, str]] = {}

    # -- what producers do -------------------------------------------------------------------------

    @initialize(target=sent, user=users, kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4))
    def first_events(self, user: int, kinds: list[str]) -> Any:
        return self.send_events(user, kinds, age_seconds=1)

    @rule(
        target=sent,
        user=users,
        kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
        age_seconds=st.integers(0, 5),
    )
    def send_events(self, user: int, kinds: list[str], age_seconds: int) -> Any:
        """Fresh events for one user, in one PutRecords call."""
        now = now_ms()
        events = [
            event_of_kind(kind, self.user_ids[user], now - age_seconds * 1000 + i) for i, kind in enumerate(kinds)
        ]
        self.pipeline.put_events(events)
        return multiple(*events)

    @rule(target=sent, user=users, kind=st.sampled_from(KINDS), minutes_late=st.integers(10, 600))
    def send_late_event(self, user: int, kind: str, minutes_late: int) -> dict[str, Any]:
        """An event older than the horizon and than anything snapshotted, arriving now."""
        event = event_of_kind(kind, self.user_ids[user], now_ms() - minutes_late * 60_000)
        self.pipeline.put_events([event])
        return event

    @rule(event=sent)
    def resend(self, event: dict[str, Any]) -> None:
        """A producer retry: the same event (same id) again, as a new Kinesis record."""
        self.pipeline.resend([event])

    # -- what operators do ---------------------------------------------------------------------------

    @rule(user=users, horizon=st.sampled_from([0, None]))
    def request_snapshot(self, user: int, horizon: int | None) -> None:
        """horizon None: the stage's horizon (young events stay out); 0: everything stored."""
        self.pipeline.request_snapshot(self.user_ids[user], horizon_seconds=horizon)

    @rule(user=users)
    def request_trim(self, user: int) -> None:
        self.pipeline.request_trim(self.user_ids[user])

    # -- what goes wrong (embedded endpoint only: the control API) -------------------------------------

    @precondition(lambda self: self.faults is not None)
    @rule(function=st.sampled_from(["consumer", "trigger"]), user=users)
    def fail_next_invocation(self, function: str, user: int) -> None:
        """The next invocation of `function` carrying this user's records fails; its mapping retries."""
        self.faults.add(
            "error",
            function=self.pipeline.function(function),
            match=self.user_ids[user],
            count=1,
            error_type="RuntimeError",
            error_message="injected by the generated suite",
        )

    @precondition(lambda self: self.faults is not None)
    @rule(
        function=st.sampled_from(["consumer", "trigger", "snapshot", "trim"]),
        user=users,
        seconds=st.sampled_from([0.2, 0.5, 1.0]),
    )
    def delay_next_invocation(self, function: str, user: int, seconds: float) -> None:
        self.faults.add(
            "delay",
            function=self.pipeline.function(function),
            match=self.user_ids[user],
            count=1,
            delay_seconds=seconds,
        )

    @precondition(lambda self: self.faults is not None)
    @rule(user=users)
    def hold_next_snapshot_write(self, user: int) -> None:
        """The next snapshot PutItem for this user waits a second: other runs may overtake it."""
        self.faults.add(
            "delay",
            operation="PutItem",
            service="dynamodb",
            match=snapshot_write_marker(self.user_ids[user]),
            delay_seconds=1.0,
            count=1,
        )

    # -- what must hold --------------------------------------------------------------------------------

    @invariant()
    def snapshots_only_move_forward(self) -> None:
        for user, snapshot in self.pipeline.snapshots(self.user_ids).items():
            now = (int(snapshot.get("version", 0)), str(snapshot.get("watermark", "")))
            before = self.snapshot_seen.get(user, (0, ""))
            assert now[0] >= before[0] and now[1] >= before[1], f"{user}'s snapshot went back: {before} -> {now}"
            self.snapshot_seen[user] = now

    def teardown(self) -> None:
        try:
            sent_for = self.pipeline.log.users()
            if sent_for and self.pipeline.backend.control is not None:
                # Quiescence is observable here: a wrong view is a failure at once, not after the
                # convergence deadline (which would make each replay while shrinking take that long).
                problems = problems_at_quiescence(self.pipeline, sent_for)
                assert not problems, "\n".join(problems) + "\n" + failure_report(self.pipeline, sent_for)
            if sent_for:
                assert_converged(self.pipeline, sent_for)
        finally:
            if self.faults is not None:
                self.faults.remove_all()  # rules never used (their user got no matching work)


def test_generated_sequences_converge(pipeline, maybe_faults, long_run):
    PipelineMachine.pipeline = pipeline
    PipelineMachine.faults = maybe_faults
    bounds = SOAK_SETTINGS if long_run else CI_SETTINGS
    run_state_machine_as_test(
        PipelineMachine,
        settings=settings(
            **bounds,
            deadline=None,
            database=None,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.fixture(autouse=True)
def _forget_the_machine_state():
    yield
    PipelineMachine.faults = None
