"""The five handlers wired together over in-memory fakes of the AWS clients (tests/unit/support/; no network).

One run through every stage, then the random-schedule model: a hypothesis-driven scheduler delivers
Kinesis batches, stream batches and SQS messages in random interleavings, with redeliveries, producer
retries, poison, throttling, late events and snapshots or trims running in the middle of another
function's work, and checks at quiescence that every view is the fold of the user's accepted events
(I1-I5). Each handler's own scenarios are in test_lambdas_<handler>.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from lambdas.events import ORDER_SUBMITTED, USER_CREATED, USER_LOGGED_IN
from lambdas.store import from_item
from tests.unit.support.fake_aws import EVENTS, SNAPQ, SNAPS, TRIMQ, VIEWS
from tests.unit.support.pipeline import START, Pipeline, event


def test_events_flow_to_views_and_snapshot_then_trim_keeps_the_view():
    p = Pipeline(threshold=3)
    p.produce(event("c1", USER_CREATED, "u1", START, "Ann"))
    for i in range(5):
        p.produce(event(f"o{i}", ORDER_SUBMITTED, "u1", START + i))
    p.produce(event("l1", USER_LOGGED_IN, "u1", START + 50))
    p.consume(100)
    p.trigger(100)
    assert (
        p.view("u1")
        == p.expected("u1")
        == {"id": "u1", "name": "Ann", "lastLogin": START + 50, "recentOrderCount": 5, "eventCount": 7}
    )
    assert len(p.sqs.queues[SNAPQ]) == 1  # 7 live events >= threshold 3
    p.drain()
    assert p.ddb.tables[EVENTS] == {}  # all snapshotted, then trimmed
    assert p.rt.store.get_snapshot("u1").state.event_count == 7
    assert p.view("u1") == p.expected("u1")
    row = from_item(p.ddb.tables[VIEWS][("u1",)])
    assert row["snapshotVersion"] == 1 and row["snapshotWatermark"] == p.rt.store.get_snapshot("u1").watermark


# ---------------------------------------------------------------------------------------------
# The random schedule: any interleaving converges (I1-I5)
# ---------------------------------------------------------------------------------------------

USERS = ["u1", "u2", "u3"]


# Domain timestamps relative to now: current, just inside the 1 s horizon, or late (up to an hour old).
ages = st.one_of(st.just(0), st.integers(min_value=-1500, max_value=0), st.integers(min_value=-3_600_000, max_value=0))


produce_step = st.tuples(
    st.just("produce"),
    st.sampled_from(USERS),
    st.sampled_from([USER_CREATED, USER_LOGGED_IN, ORDER_SUBMITTED, ORDER_SUBMITTED]),
    ages,
    st.sampled_from(["Ann", "Bob", None]),
)


consume_step = st.tuples(st.just("consume"), st.integers(min_value=1, max_value=8), st.booleans())


trigger_step = st.tuples(st.just("trigger"), st.integers(min_value=1, max_value=8), st.booleans())


# one_of picks a branch uniformly: repeating a branch weights it.
steps = st.lists(
    st.one_of(
        produce_step,
        produce_step,
        produce_step,
        consume_step,
        consume_step,
        trigger_step,
        trigger_step,
        st.tuples(st.just("retry"), st.integers(min_value=0, max_value=100)),
        st.tuples(st.just("poison")),
        st.tuples(st.just("snapshot"), st.booleans()),
        st.tuples(st.just("trim"), st.booleans()),
        st.tuples(st.just("manual"), st.sampled_from(USERS), st.sampled_from([0, None])),
        st.tuples(st.just("tick"), st.integers(min_value=0, max_value=3000)),
        st.tuples(st.just("throttle"), st.integers(min_value=1, max_value=6)),
        st.tuples(st.just("snapshot-mid-write"), st.sampled_from(USERS)),
        st.tuples(st.just("snapshot-mid-query"), st.sampled_from(USERS)),
        st.tuples(st.just("drop-view"), st.sampled_from(USERS)),
        st.tuples(st.just("snapshot-race"), st.sampled_from(USERS)),
        st.tuples(st.just("events-mid-query"), st.sampled_from(USERS)),
    ),
    min_size=15,
    max_size=60,
)


@dataclass
class Schedule:
    pipeline: Pipeline
    ids: itertools.count = field(default_factory=itertools.count)

    def concurrent_snapshot(self, user_id: str) -> Callable[[dict], None]:
        def run(_request: dict) -> None:
            self.pipeline.request_snapshot(user_id)
            self.pipeline.run_queue(SNAPQ)
            self.pipeline.run_queue(TRIMQ)

        return run

    def newer_events(self, user_id: str) -> Callable[[dict], None]:
        """Another event is stored and its own trigger runs while this function is half way."""

        def run(_request: dict) -> None:
            p = self.pipeline
            p.produce(event(f"e{next(self.ids)}", ORDER_SUBMITTED, user_id, p.now))
            p.consume(100)
            p.trigger(100)

        return run

    def apply(self, step: tuple) -> None:
        p, kind = self.pipeline, step[0]
        if kind == "produce":
            _, user, event_type, age, name = step
            p.produce(event(f"e{next(self.ids)}", event_type, user, p.now + age, name))
        elif kind == "retry" and p.produced:
            p.produce(p.produced[step[1] % len(p.produced)])
        elif kind == "poison":
            p.produce_poison(b"\x00garbage")
        elif kind == "consume":
            p.consume(step[1], redeliver=step[2])
        elif kind == "trigger":
            p.trigger(step[1], redeliver=step[2])
        elif kind == "snapshot":
            p.run_queue(SNAPQ, redeliver=step[1])
        elif kind == "trim":
            p.run_queue(TRIMQ, redeliver=step[1])
        elif kind == "manual":
            p.request_snapshot(step[1], step[2])
        elif kind == "tick":
            p.tick(step[1])
        elif kind == "throttle":
            p.ddb.unprocessed_writes = step[1]
        elif kind == "snapshot-mid-write":
            p.ddb.hooks["BatchWriteItem"] = self.concurrent_snapshot(step[1])
        elif kind == "snapshot-mid-query":
            p.ddb.hooks["Query"] = self.concurrent_snapshot(step[1])
        elif kind == "snapshot-race":
            p.ddb.hooks["PutItem:" + SNAPS] = self.concurrent_snapshot(step[1])
        elif kind == "events-mid-query":
            p.ddb.hooks["Query"] = self.newer_events(step[1])
        elif kind == "drop-view":
            p.ddb.tables[VIEWS].pop((step[1],), None)
            p.request_snapshot(step[1], None)  # the operator's rebuild


def run_schedule(schedule: list[tuple], mode: str = "safe", page_size: int = 2) -> list[str]:
    """Run the steps, then drain; return every invariant violation found at quiescence."""
    p = Pipeline(mode=mode, horizon_seconds=1, threshold=3, max_events=5, page_size=page_size)
    runner = Schedule(p)
    for step in schedule:
        runner.apply(step)
    p.ddb.hooks.clear()
    p.ddb.unprocessed_writes = 0
    p.drain()
    problems = []
    for user in sorted(p.users()):
        if p.view(user) != p.expected(user):  # I1, I3
            problems.append(f"I1: view of {user} is {p.view(user)}, expected {p.expected(user)}")
        if p.stored_state(user) != p.expected(user):  # I2: storage still holds every event
            problems.append(f"I2: storage of {user} rebuilds {p.stored_state(user)}")
    watermarks: dict[str, list[tuple[int, str]]] = {}
    for write in p.ddb.snapshot_writes:
        watermarks.setdefault(write["userId"], []).append((write["version"], write["watermark"]))
    for user, history in watermarks.items():  # I4: versions and watermarks only move forward
        if history != sorted(history) or len({v for v, _ in history}) != len(history):
            problems.append(f"I4: snapshot writes of {user}: {history}")
    if [m["record"]["data"] for m in p.failure_messages()] != p.poison_sent:  # I5, once each
        problems.append(f"I5: failure queue {p.failure_messages()} != poison {p.poison_sent}")
    return problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.sampled_from([1, 2, 100]))
def test_any_schedule_converges_to_the_fold_of_the_accepted_events(schedule, page_size):
    assert run_schedule(schedule, page_size=page_size) == []


# Late events, one user, snapshots at any time: enough to expose the original example's bug quickly.
late_event_steps = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), st.just("u1"), st.just(ORDER_SUBMITTED), ages, st.none()),
        st.tuples(st.just("consume"), st.integers(min_value=1, max_value=8), st.just(False)),
        st.tuples(st.just("manual"), st.just("u1"), st.sampled_from([0, None])),
        st.tuples(st.just("snapshot"), st.just(False)),
        st.tuples(st.just("tick"), st.integers(min_value=0, max_value=3000)),
    ),
    min_size=4,
    max_size=20,
)


def test_the_schedule_property_catches_the_original_snapshot_logic():
    """Proof the property above can fail: in SNAPSHOT_MODE=original hypothesis finds a schedule that
    loses an event (and the same schedule is fine in safe mode)."""
    counterexample = find(
        late_event_steps,
        lambda schedule: bool(run_schedule(schedule, mode="original")),
        settings=settings(
            max_examples=3000,
            deadline=None,
            phases=[Phase.generate],
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert any(p.startswith(("I1", "I2")) for p in run_schedule(counterexample, mode="original"))
    assert run_schedule(counterexample, mode="safe") == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(late_event_steps)
def test_late_events_never_lose_anything_in_safe_mode(schedule):
    assert run_schedule(schedule) == []
