"""What the scenario suites share beyond the harness: waits on one user's state, shard arithmetic,
fault rules that clean up after themselves, a sampler for I4, and readings of the invocation history.

Imported by the test modules as `tests.integration.support.scenario`. Every wait uses the backend's
deadlines and, when it times out, says what it saw and what the pipeline did.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from esjoin.testing.checks import failure_report
from esjoin.testing.control_client import ControlClient
from esjoin.testing.pipeline import Pipeline
from esjoin.testing.waits import eventually

# -- waits ------------------------------------------------------------------------------------------


def wait_until(
    pipeline: Pipeline,
    check: Callable[[], Any],
    expected: str,
    users: Iterable[str] = (),
    observe: Callable[[], Any] | None = None,
) -> Any:
    """`check()`'s first truthy result, within the backend's deadline; on timeout the report shows
    what was sent for `users`, the failure queue and the recent invocations."""
    timing = pipeline.backend.timing
    users = list(users)
    return eventually(
        check,
        expected=expected,
        deadline=timing.deadline,
        interval=timing.interval,
        max_interval=timing.max_interval,
        observe=observe,
        context=lambda: failure_report(pipeline, users),
    )


def view_of(pipeline: Pipeline, user: str) -> dict[str, Any] | None:
    return pipeline.views([user]).get(user)


def snapshot_of(pipeline: Pipeline, user: str) -> dict[str, Any]:
    return pipeline.snapshots([user]).get(user) or {}


def wait_for_view_count(pipeline: Pipeline, user: str, count: int) -> dict[str, Any]:
    """The user's view row once it folds exactly `count` events."""
    return wait_until(
        pipeline,
        lambda: (row := view_of(pipeline, user)) and row.get("eventCount") == count and row,
        f"{user}'s view row to count {count} events",
        [user],
        lambda: view_of(pipeline, user),
    )


def wait_for_snapshot_count(pipeline: Pipeline, user: str, count: int) -> dict[str, Any]:
    """The user's snapshot once it holds exactly `count` events."""
    return wait_until(
        pipeline,
        lambda: (s := snapshot_of(pipeline, user)).get("eventCount") == count and s,
        f"{user}'s snapshot to hold {count} events",
        [user],
        lambda: snapshot_of(pipeline, user),
    )


def wait_for_stored_count(pipeline: Pipeline, user: str, count: int) -> list[dict[str, Any]]:
    """The user's rows in the events table once there are exactly `count` (0: all trimmed)."""
    rows: list[list[dict[str, Any]]] = [[]]

    def check() -> bool:
        rows[0] = pipeline.stored_events(user)
        return len(rows[0]) == count

    wait_until(
        pipeline,
        check,
        f"{count} of {user}'s events in the events table",
        [user],
        lambda: [(r["seq"], r["type"]) for r in rows[0]],
    )
    return rows[0]


def wait_for_queue_drained(pipeline: Pipeline, key: str) -> None:
    """The queue holds nothing (visible, in flight or delayed): what was sent has been processed."""
    wait_until(
        pipeline,
        lambda: pipeline.queue_depth(key) == 0,
        f"the {key} queue to be empty",
        observe=lambda: pipeline.queue_depth(key),
    )


def wait_for_failure_message(
    pipeline: Pipeline, matches: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The first failure-queue message for which `matches(message)` holds."""

    def find() -> dict[str, Any] | None:
        return next((m for m in pipeline.failure_messages() if matches(m)), None)

    return wait_until(pipeline, find, f"a failure-queue message: {what}")


# -- producing ----------------------------------------------------------------------------------------


def put_mixed(pipeline: Pipeline, items: list[dict[str, Any] | bytes], partition_key: str) -> list[dict[str, str]]:
    """One PutRecords call, so the records travel in one batch: events (recorded in the pipeline's
    log) and raw bytes (poison: part of no expected view), in this order, all on one partition key.
    Returns each record's {"shardId", "sequenceNumber"}, in order."""
    events = [item for item in items if isinstance(item, dict)]
    records = [
        {"Data": item if isinstance(item, bytes) else json.dumps(item).encode(), "PartitionKey": partition_key}
        for item in items
    ]
    pipeline.log.record(events, "kinesis")
    response = pipeline.kinesis.put_records(StreamName=pipeline.outputs.stream["name"], Records=records)
    assert response["FailedRecordCount"] == 0, response
    return [{"shardId": r["ShardId"], "sequenceNumber": r["SequenceNumber"]} for r in response["Records"]]


# -- shards -------------------------------------------------------------------------------------------


def shard_of(pipeline: Pipeline, partition_key: str) -> str:
    """The open shard Kinesis puts `partition_key` on: the MD5 of the key, as a 128-bit number, falls
    in the shard's hash key range (https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecord.html)."""
    hashed = int(hashlib.md5(partition_key.encode()).hexdigest(), 16)  # Kinesis's own hash, not security
    shards = pipeline.kinesis.list_shards(StreamName=pipeline.outputs.stream["name"])["Shards"]
    for shard in shards:
        hash_range = shard["HashKeyRange"]
        if "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {}) and int(
            hash_range["StartingHashKey"]
        ) <= hashed <= int(hash_range["EndingHashKey"]):
            return shard["ShardId"]
    raise AssertionError(f"no open shard of {pipeline.outputs.stream['name']} covers {partition_key!r}")


def user_on_shard(pipeline: Pipeline, new_user: Callable[[str], str], label: str, shard_id: str) -> str:
    """A fresh user id whose events land on `shard_id`."""
    for attempt in range(200):
        user = new_user(f"{label}{attempt}")
        if shard_of(pipeline, user) == shard_id:
            return user
    raise AssertionError(f"no user id found on {shard_id} in 200 tries")


# -- fault rules --------------------------------------------------------------------------------------


class Faults:
    """Fault rules added through the control API, all removed when the test ends (see conftest)."""

    def __init__(self, control: ControlClient) -> None:
        self.control = control
        self.added: list[str] = []

    def add(self, action: str, **rule: Any) -> dict[str, Any]:
        added = self.control.add_fault(action, **rule)
        self.added.append(added["id"])
        return added

    def active(self, rule: dict[str, Any]) -> dict[str, Any] | None:
        """The rule as it is now (its hits), or None once it is used up or removed."""
        return next((r for r in self.control.faults() if r["id"] == rule["id"]), None)

    def remove(self, rule: dict[str, Any]) -> None:
        self.control.remove_fault(rule["id"])

    def remove_all(self) -> None:
        for rule_id in self.added:
            self.control.remove_fault(rule_id)
        self.added.clear()


def wait_for_rule_used(pipeline: Pipeline, faults: Faults, rule: dict[str, Any]) -> None:
    """A rule with a count has been taken that often (the endpoint drops it then)."""
    wait_until(
        pipeline,
        lambda: faults.active(rule) is None,
        f"fault rule {rule['id']} to be used up",
        observe=lambda: faults.active(rule),
    )


def snapshot_write_marker(user: str) -> str:
    """Text found in the body of PutItem on the snapshots table for `user` and in no other PutItem the
    pipeline makes: a snapshot item is keyed by "userId" (a view row by "id"), and botocore writes the
    JSON protocol's body with json.dumps' default separators."""
    return f'"userId": {{"S": "{user}"}}'


# -- I4: sampling snapshots and views while things happen ------------------------------------------------


@dataclass
class StateSampler:
    """Reads the users' snapshots and view rows over and over on a thread (`with sampler:`), so a test
    can check afterwards that they only ever moved forward (I4)."""

    pipeline: Pipeline
    users: list[str]
    interval: float = 0.02
    snapshots: dict[str, list[tuple[int, str, int]]] = field(default_factory=dict)  # (version, watermark, count)
    views: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # (eventCount, snapshotVersion)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StateSampler:
        self._thread = threading.Thread(target=self._run, name="state-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.sample()  # the final state, read after everything the test did

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as error:  # a transient read error must not end the sampling
                self.errors.append(repr(error))
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for user, s in self.pipeline.snapshots(self.users).items():
            self._append(
                self.snapshots,
                user,
                (int(s.get("version", 0)), str(s.get("watermark", "")), int(s.get("eventCount", 0))),
            )
        for user, v in self.pipeline.views(self.users).items():
            self._append(self.views, user, (int(v.get("eventCount", 0)), int(v.get("snapshotVersion", 0))))

    @staticmethod
    def _append(series: dict[str, list[Any]], user: str, value: Any) -> None:
        values = series.setdefault(user, [])
        if not values or values[-1] != value:
            values.append(value)

    def regressions(self) -> list[str]:
        """Every step back seen: a snapshot's version, watermark or count, or a view row's (eventCount,
        snapshotVersion) going down."""
        found = []
        for user, values in self.snapshots.items():
            for before, after in itertools.pairwise(values):
                if any(a < b for a, b in zip(after, before, strict=True)):
                    found.append(f"{user} snapshot (version, watermark, eventCount) went back: {before} -> {after}")
        for user, values in self.views.items():
            for before, after in itertools.pairwise(values):
                if after < before:
                    found.append(f"{user} view (eventCount, snapshotVersion) went back: {before} -> {after}")
        return found

    def samples_taken(self) -> int:
        return sum(len(v) for v in self.snapshots.values()) + sum(len(v) for v in self.views.values())


# -- the invocation history (embedded endpoint) -------------------------------------------------------


def history_mark(control: ControlClient) -> int:
    """The id of the newest invocation recorded so far: later reads ask for what came after it."""
    return int(control.history(limit=1)["lastId"])


def invocations(control: ControlClient, function: str, since: int) -> list[dict[str, Any]]:
    return control.history(function=function, since=since)["invocations"]


def kinesis_event_id(put_result: dict[str, str]) -> str:
    """The eventID Lambda gives a Kinesis record: "<shard id>:<sequence number>"."""
    return f"{put_result['shardId']}:{put_result['sequenceNumber']}"


def describe_invocations(records: Iterable[dict[str, Any]]) -> str:
    return "\n".join(
        f"  #{r['id']} attempt={r['attempt']} {r['outcome']} dup={r['duplicate']} "
        f"fault={r['injectedFault']} batch={r['batchIds']}"
        for r in records
    )
