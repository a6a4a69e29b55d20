"""The pure domain: fold, snapshot prefix, sequence numbers (I1, I2, I3 at the level of the fold).

Given a user's events delivered in any order, with producer retries and redeliveries mixed in,
de-duplicated as the consumer does, and then split anywhere into "in the snapshot" and "above the
watermark", the view is the fold of the distinct events. The original example's selection is shown
to lose events for some history, so these properties can fail.
"""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from lambdas.events import ORDER_SUBMITTED, USER_CREATED, USER_LOGGED_IN, DomainEvent, StoredEvent
from lambdas.fold import (
    EMPTY_STATE,
    events_above,
    fold,
    original_selection,
    render_view,
    should_request_snapshot,
    snapshot_prefix,
)
from lambdas.sequence import NO_WATERMARK, decode_seq, encode_seq, is_encoded_seq

NOW = 1_700_000_000_000
HORIZON = 60_000


def make_event(
    event_id: str, event_type: str, timestamp: int, name: str | None = None, user_id: str = "u1"
) -> DomainEvent:
    payload: dict = {"id": event_id, "type": event_type, "timestamp": timestamp}
    if event_type == ORDER_SUBMITTED:
        payload["order"] = {"userId": user_id}
    else:
        payload["user"] = {"id": user_id} | ({"name": name} if name is not None else {})
    return DomainEvent(
        event_id=event_id,
        type=event_type,
        timestamp=timestamp,
        user_id=user_id,
        name=name if event_type == USER_CREATED else None,
        body=json.dumps(payload),
    )


def stored(event: DomainEvent, seq: int, visible_since: int = NOW - 10 * HORIZON) -> StoredEvent:
    return StoredEvent(seq=encode_seq(str(seq)), event=event, arrived_at=visible_since, stored_at=visible_since)


# Timestamps collide on purpose (ties in lastLogin and in the name's (timestamp, id) order).
event_strategy = st.builds(
    make_event,
    event_id=st.just(""),  # replaced by a unique id below
    event_type=st.sampled_from([USER_CREATED, USER_LOGGED_IN, ORDER_SUBMITTED]),
    timestamp=st.integers(min_value=NOW - 5 * HORIZON, max_value=NOW),
    name=st.sampled_from(["Ann", "Bob", None]),
)


@st.composite
def histories(draw: st.DrawFn) -> list[DomainEvent]:
    """Distinct events of one user (unique ids)."""
    events = draw(st.lists(event_strategy, min_size=0, max_size=25))
    return [make_event(f"e{i:03d}", e.type, e.timestamp, e.name) for i, e in enumerate(events)]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[DomainEvent], list[StoredEvent]]:
    """A history and the Kinesis log that carried it: any order, producer retries (same id, later
    sequence number) inserted anywhere. Sequence numbers grow along the log."""
    history = draw(histories())
    order = draw(st.permutations(history))
    log = list(order)
    for _ in range(draw(st.integers(min_value=0, max_value=10))):
        if not history:
            break
        copy = draw(st.sampled_from(history))
        earliest = log.index(copy) + 1  # a retry comes after the first copy
        log.insert(draw(st.integers(min_value=earliest, max_value=len(log))), copy)
    seqs = sorted(
        draw(st.lists(st.integers(min_value=1, max_value=10**40), min_size=len(log), max_size=len(log), unique=True))
    )
    return history, [stored(e, s) for e, s in zip(log, seqs, strict=True)]


def consumer_dedupe(log: list[StoredEvent]) -> list[StoredEvent]:
    """What the consumer accepts: per event id, the copy with the lowest sequence number."""
    first: dict[str, StoredEvent] = {}
    for record in log:
        if record.event.event_id not in first or record.seq < first[record.event.event_id].seq:
            first[record.event.event_id] = record
    return sorted(first.values(), key=lambda r: r.seq)


def expected_view(history: list[DomainEvent]) -> dict:
    """The fold by its definition, independent of the implementation."""
    created = [e for e in history if e.type == USER_CREATED]
    winner = max(created, key=lambda e: (e.timestamp, e.event_id), default=None)
    logins = [e.timestamp for e in history if e.type == USER_LOGGED_IN]
    return {
        "name": winner.name if winner else None,
        "last_login": max(logins, default=None),
        "order_count": sum(e.type == ORDER_SUBMITTED for e in history),
        "event_count": len(history),
    }


def view_fields(state) -> dict:
    return {
        "name": state.name,
        "last_login": state.last_login,
        "order_count": state.order_count,
        "event_count": state.event_count,
    }


# ---------------------------------------------------------------------------------------------
# I1 / I3: convergence whatever the order, duplicates and snapshot split
# ---------------------------------------------------------------------------------------------


@given(deliveries(), st.data())
def test_any_delivery_deduped_and_split_at_any_snapshot_folds_to_the_full_view(delivery, data):
    history, log = delivery
    accepted = consumer_dedupe(log)
    assert len(accepted) == len(history)  # every event counted once
    # Any chain of snapshots: each folds the next contiguous run of the accepted history.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(accepted)), max_size=4)))
    state, watermark, start = EMPTY_STATE, NO_WATERMARK, 0
    for cut in cuts:
        state = fold((e.event for e in accepted[start:cut]), start=state)
        watermark = accepted[cut - 1].seq if cut else watermark
        start = max(start, cut)
    # The view: the snapshot plus the stored events (the accepted copies) above its watermark.
    view = fold((e.event for e in events_above(accepted, watermark)), start=state)
    assert view_fields(view) == expected_view(history)


@given(histories(), st.randoms(use_true_random=False))
def test_fold_is_order_independent_and_ignores_repeats(history, rnd: random.Random):
    shuffled = history * 2
    rnd.shuffle(shuffled)
    assert fold(shuffled) == fold(history)
    assert view_fields(fold(history)) == expected_view(history)


@given(histories(), st.integers(0, 25))
def test_fold_from_a_snapshot_state_equals_fold_of_everything(history, cut):
    cut = min(cut, len(history))
    assert fold(history[cut:], start=fold(history[:cut])) == fold(history)


def test_name_comes_from_the_greatest_timestamp_then_id_whatever_the_order():
    a = make_event("a", USER_CREATED, 100, "First")
    b = make_event("b", USER_CREATED, 200, "Second")
    c = make_event("c", USER_CREATED, 200, "Third")  # same timestamp as b, greater id: wins
    for order in ([a, b, c], [c, b, a], [b, c, a]):
        assert fold(order).name == "Third"
    assert fold([a, b]).name == "Second"


def test_a_user_created_event_without_name_can_win_and_gives_null():
    assert fold([make_event("a", USER_CREATED, 1, "Ann"), make_event("b", USER_CREATED, 2, None)]).name is None


def test_reused_event_id_with_different_content_picks_the_same_copy_in_any_order():
    one = make_event("x", ORDER_SUBMITTED, 5)
    other = make_event("x", USER_LOGGED_IN, 7)
    assert fold([one, other]) == fold([other, one])
    assert fold([one, other]).event_count == 1


# ---------------------------------------------------------------------------------------------
# I2: the snapshot prefix is contiguous and never skips an event
# ---------------------------------------------------------------------------------------------


@given(
    st.lists(st.integers(min_value=NOW - 3 * HORIZON, max_value=NOW), max_size=30),
    st.integers(min_value=0, max_value=2 * HORIZON),
)
def test_snapshot_prefix_is_contiguous_and_stops_at_the_first_young_event(visible, horizon):
    events = [
        stored(make_event(f"e{i}", ORDER_SUBMITTED, 0), seq=100 + i, visible_since=v) for i, v in enumerate(visible)
    ]
    shuffled = list(reversed(events))  # the function must not rely on input order
    prefix = snapshot_prefix(shuffled, NOW, horizon)
    assert prefix == events[: len(prefix)]
    assert all(e.visible_since <= NOW - horizon for e in prefix)
    if len(prefix) < len(events):
        assert events[len(prefix)].visible_since > NOW - horizon


def test_a_late_event_is_judged_by_when_it_arrived_not_by_its_timestamp():
    old_but_just_arrived = stored(make_event("late", USER_LOGGED_IN, NOW - 100 * HORIZON), 1, visible_since=NOW)
    assert snapshot_prefix([old_but_just_arrived], NOW, HORIZON) == []
    selected, watermark = original_selection([old_but_just_arrived], NOW, HORIZON)
    assert selected == [old_but_just_arrived]  # the original snapshots it at once
    assert watermark == old_but_just_arrived.seq


def original_mode_loses(timestamps: list[int]) -> bool:
    """Run the original selection once on a stored history, then fold what is above its watermark."""
    events = [stored(make_event(f"e{i}", ORDER_SUBMITTED, t), seq=10 + i) for i, t in enumerate(timestamps)]
    selected, watermark = original_selection(events, NOW, HORIZON)
    state = fold((e.event for e in selected), start=EMPTY_STATE)
    view = fold((e.event for e in events_above(events, watermark)), start=state)
    return view.order_count != len(events)


def safe_mode_loses(timestamps: list[int]) -> bool:
    events = [stored(make_event(f"e{i}", ORDER_SUBMITTED, t), seq=10 + i) for i, t in enumerate(timestamps)]
    prefix = snapshot_prefix(events, NOW, HORIZON)
    watermark = prefix[-1].seq if prefix else NO_WATERMARK
    view = fold((e.event for e in events_above(events, watermark)), start=fold(e.event for e in prefix))
    return view.order_count != len(events)


timestamp_lists = st.lists(st.integers(min_value=NOW - 2 * HORIZON, max_value=NOW), max_size=8)


def test_original_mode_loses_events_for_some_history():
    """The property below is falsifiable: hypothesis finds a history the original selection loses."""
    from hypothesis import find

    counterexample = find(timestamp_lists, original_mode_loses, settings=settings(max_examples=2000, derandomize=True))
    assert original_mode_loses(counterexample)
    assert not safe_mode_loses(counterexample)


@given(timestamp_lists)
def test_safe_mode_never_loses(timestamps):
    assert not safe_mode_loses(timestamps)


def test_safe_mode_has_no_counterexample_to_find():
    from hypothesis import find

    try:
        find(timestamp_lists, safe_mode_loses, settings=settings(max_examples=500, derandomize=True))
    except NoSuchExample:
        return
    raise AssertionError("safe mode lost an event")


# ---------------------------------------------------------------------------------------------
# Sequence numbers, snapshot requests, rendering
# ---------------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**128 - 1), st.integers(min_value=0, max_value=10**128 - 1))
def test_encoded_sequence_numbers_sort_numerically(a, b):
    ea, eb = encode_seq(str(a)), encode_seq(str(b))
    assert (ea < eb) == (a < b)
    assert decode_seq(ea) == str(a)
    assert is_encoded_seq(ea)
    assert ea > NO_WATERMARK


def test_encode_seq_rejects_what_is_not_a_decimal_string():
    for bad in ("", "12a", "-1", "\uff11\uff12", None, 12):  # the last string: full-width digits
        try:
            encode_seq(bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    assert not is_encoded_seq("00312")  # length prefix disagrees
    assert is_encoded_seq("00212")
    assert not is_encoded_seq("")


def test_snapshot_is_requested_once_per_threshold_of_new_events():
    assert not should_request_snapshot(live_events=19, event_count=19, requested_at_count=None, threshold=20)
    assert should_request_snapshot(live_events=20, event_count=20, requested_at_count=None, threshold=20)
    assert not should_request_snapshot(live_events=25, event_count=25, requested_at_count=20, threshold=20)
    assert should_request_snapshot(live_events=25, event_count=40, requested_at_count=20, threshold=20)
    assert not should_request_snapshot(live_events=5, event_count=80, requested_at_count=20, threshold=20)


def test_render_view_uses_null_for_unknown_name_and_login():
    row = render_view("u1", fold([make_event("o", ORDER_SUBMITTED, 1)]), "0011", 3, 99, None)
    assert row == {
        "id": "u1",
        "name": None,
        "lastLogin": None,
        "recentOrderCount": 1,
        "eventCount": 1,
        "snapshotWatermark": "0011",
        "snapshotVersion": 3,
        "updatedAt": 99,
    }
    assert render_view("u1", EMPTY_STATE, "", 0, 1, 20)["snapshotRequestedAtCount"] == 20
