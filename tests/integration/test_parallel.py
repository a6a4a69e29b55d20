"""Scenario: a stream of three shards read with ParallelizationFactor 4: up to four batches of one
shard in flight at once, order kept per partition key (per user)
(https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html#services-kinesis-parallelization).

The consumer must not assume it sees a whole shard in order, only each user's events in order; the
views converge either way. On the embedded endpoint the invocation history also shows that batches of
one shard did overlap in time and that no user's records were delivered out of order.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from esjoin.testing.oracle import user_of
from esjoin.testing.pipeline import Pipeline
from tests.integration.support.scenario import history_mark, invocations, kinesis_event_id

PARALLEL_STAGE = {"shard_count": 3, "parallelization_factor": 4}
USERS = 24
SEED = 4


@pytest.fixture
def parallel_pipeline(backend: Any, stack_factory: Callable[..., Any]) -> Pipeline:
    return Pipeline(backend, stack_factory("parallel", **PARALLEL_STAGE))


def test_parallel_batches_per_shard_keep_each_users_order(parallel_pipeline, new_user, maybe_faults):
    pipeline = parallel_pipeline
    control = pipeline.backend.control
    mark = history_mark(control) if control else 0
    if maybe_faults:  # slow each consumer run down (this stage only) so a shard's lanes overlap
        maybe_faults.add("delay", function=pipeline.function("consumer"), delay_seconds=0.2, count=12)
    # Given 24 users, five events each, interleaved, in several PutRecords calls
    rng = random.Random(SEED)
    users = [new_user(f"p{i}") for i in range(USERS)]
    base = now_ms() - 60_000
    per_user = {
        u: [
            user_created(u, "Parallel", base),
            logged_in(u, base + 1_000),
            order_submitted(u, base + 2_000),
            logged_in(u, base + 3_000),
            order_submitted(u, base + 4_000),
        ]
        for u in users
    }
    queues = {u: list(events) for u, events in per_user.items()}
    interleaved = []
    while any(queues.values()):
        user = rng.choice([u for u, q in queues.items() if q])
        interleaved.append(queues[user].pop(0))
    results = []
    for start in range(0, len(interleaved), 20):
        results.extend(pipeline.put_events(interleaved[start : start + 20]))
    assert len({r["shardId"] for r in results}) == 3, "the users did not spread over the three shards"
    # Then the views converge
    assert_converged(pipeline, users)
    if control is None:
        return  # LocalStack and AWS do not show their pollers' batches
    # and the history shows batches of one shard in flight together, each user's records in order
    history = [r for r in invocations(control, pipeline.function("consumer"), mark) if not r["duplicate"]]
    user_of_record = {kinesis_event_id(r): user_of(e) for r, e in zip(results, interleaved, strict=True)}
    assert overlapping_batches_of_one_shard(history), "no two batches of one shard were ever in flight together"
    problems = per_user_order_problems(history, user_of_record)
    assert not problems, "\n".join(problems[:10])


def overlapping_batches_of_one_shard(history: list[dict[str, Any]]) -> list[tuple[int, int]]:
    by_shard: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in history:
        by_shard[record["batchIds"][0].split(":")[0]].append(record)
    return [
        (a["id"], b["id"])
        for records in by_shard.values()
        for a, b in itertools.combinations(records, 2)
        if a["startedAt"] < b["endedAt"] and b["startedAt"] < a["endedAt"]
    ]


def per_user_order_problems(history: list[dict[str, Any]], user_of_record: dict[str, str]) -> list[str]:
    """Each user's records in sequence order inside a batch, and a later record's batch starting only
    after the batch with the earlier record succeeded."""
    problems = []
    first_delivery: dict[str, dict[str, Any]] = {}
    for record in sorted(history, key=lambda r: r["id"]):
        seen: dict[str, int] = {}
        for event_id in record["batchIds"]:
            user, sequence = user_of_record.get(event_id), int(event_id.split(":")[1])
            if user is None:
                continue
            if seen.get(user, -1) > sequence:
                problems.append(f"invocation #{record['id']}: {user}'s records out of order")
            seen[user] = sequence
            first_delivery.setdefault(event_id, record)
    by_user: dict[str, list[str]] = defaultdict(list)
    for event_id, user in user_of_record.items():
        by_user[user].append(event_id)
    for user, event_ids in by_user.items():
        ordered = sorted(event_ids, key=lambda e: int(e.split(":")[1]))
        for earlier, later in itertools.pairwise(ordered):
            a, b = first_delivery.get(earlier), first_delivery.get(later)
            if a is None or b is None:
                problems.append(f"{user}: {earlier if a is None else later} never delivered")
            elif a["id"] != b["id"] and b["startedAt"] < a["endedAt"]:
                problems.append(f"{user}: #{b['id']} (with {later}) started before #{a['id']} (with {earlier}) ended")
    return problems
