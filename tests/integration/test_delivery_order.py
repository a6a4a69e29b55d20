"""Scenario: many users' events interleaved over the stream's shards, each user's events arriving in
an order unrelated to their timestamps (I1: the fold does not depend on the order of delivery).

Kinesis keeps order per shard only, and a producer's order is not the order things happened: a
rename can arrive before the creation it overrides, a login before an older one.
"""

from __future__ import annotations

import itertools
import random

from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created

USERS = 12
SEED = 20240611  # the interleaving is random but the same on every run


def test_interleaved_users_across_shards_converge_whatever_the_order(pipeline, new_user):
    rng = random.Random(SEED)
    users = [new_user(f"o{i}") for i in range(USERS)]
    base = now_ms() - 600_000
    events = []
    for index, user in enumerate(users):
        # Given each user's events, with timestamps handed out in a shuffled order: a second
        # user-created (a rename) may come before the first, logins and orders in any order
        timestamps = [base + 1_000 * step for step in range(7)]
        rng.shuffle(timestamps)
        kinds = [
            lambda u, t: user_created(u, "First", t),
            lambda u, t: user_created(u, "Renamed", t),
            logged_in,
            logged_in,
            logged_in,
            order_submitted,
            order_submitted,
        ]
        if index % 3 == 0:
            kinds = kinds[2:]  # some users never get a user-created event
        events.extend(kind(user, timestamp) for kind, timestamp in zip(kinds, timestamps, strict=False))
    # When all users' events are interleaved at random and sent in PutRecords calls of random sizes
    rng.shuffle(events)
    results, start = [], 0
    while start < len(events):
        size = rng.randint(1, 15)
        results.extend(pipeline.put_events(events[start : start + size]))
        start += size
    assert len({r["shardId"] for r in results}) >= 2, "the users did not spread over the stage's shards"
    out_of_order = [u for u in users if not is_sorted([e["timestamp"] for e in pipeline.log.events_of(u)])]
    assert len(out_of_order) >= USERS // 2, "too few users whose arrival order differs from timestamp order"
    # Then every view row is the fold of its user's events: names from the latest user-created,
    # lastLogin the newest login, orders counted
    assert_converged(pipeline, users)


def is_sorted(values: list[int]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(values))
