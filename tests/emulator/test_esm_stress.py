"""A stream mapping under random failures, partial batch responses, throttles, bisection, lanes and
restarts: every record is acknowledged exactly once, each key in order, no key in two lanes at once."""

from __future__ import annotations

import random
import threading
from collections import defaultdict

import pytest

from esjoin.emulator.invocation import InvocationResult, LambdaServiceError
from tests.emulator.support.esm import (
    Call,
    EngineHarness,
    create_stream,
    fail,
    item_failures,
    ok,
    put_record,
    wait_until,
)


class ChaoticFunction:
    """Answers at random (seeded): ok, a function error, a partial failure, or a throttle; always ok
    from the fourth attempt so the run ends. Records which records each answer acknowledged."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.acknowledged: list[tuple[str, int]] = []  # (key, n) in acknowledgement order
        self.keys_in_flight: set[str] = set()
        self.overlaps: list[set[str]] = []

    def __call__(self, call: Call) -> InvocationResult:
        data = call.data
        keys = {item["key"] for item in data}
        with self.lock:
            if keys & self.keys_in_flight:
                self.overlaps.append(keys & self.keys_in_flight)
            self.keys_in_flight |= keys
            choice = (
                "ok" if call.origin.attempt >= 4 else self.random.choice(["ok", "ok", "error", "partial", "throttle"])
            )
            if choice == "partial":
                failed_at = self.random.randrange(len(data))
                self.acknowledged.extend((item["key"], item["n"]) for item in data[:failed_at])
            elif choice == "ok" and not call.origin.duplicate:
                self.acknowledged.extend((item["key"], item["n"]) for item in data)
            self.keys_in_flight -= keys
        if choice == "throttle":
            raise LambdaServiceError(429, "TooManyRequestsException", "Rate exceeded")
        if choice == "error":
            return fail("chaos")
        if choice == "partial":
            return item_failures(call.ids[failed_at:][::-1])
        return ok()


@pytest.mark.parametrize("seed", [1, 2])
def test_random_failures_never_lose_reorder_or_repeat_an_acknowledged_record(harness: EngineHarness, seed: int) -> None:
    stream = create_stream(harness.moto, shards=2)
    chaos = ChaoticFunction(seed)
    harness.function.respond = chaos
    created = harness.start(
        stream,
        BatchSize=7,
        ParallelizationFactor=3,
        BisectBatchOnFunctionError=True,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    keys = [f"user-{i}" for i in range(9)]
    counters: dict[str, int] = defaultdict(int)

    def write(count: int) -> None:
        for _ in range(count):
            key = random.Random(seed * 1000 + sum(counters.values())).choice(keys)
            put_record(harness.moto, stream, key, {"key": key, "n": counters[key]})
            counters[key] += 1

    write(120)
    wait_until(lambda: len(chaos.acknowledged) >= 40, "some progress", history=lambda: len(chaos.acknowledged))
    harness.engine.shutdown()  # a restart in the middle: resume from the checkpoints
    harness.engine = harness.new_engine()
    harness.engine.start(created.copy())
    write(80)
    harness.wait_idle(created.uuid, timeout=20)

    assert not chaos.overlaps, "a key was in two batches at once"
    assert len(chaos.acknowledged) == len(set(chaos.acknowledged)), "a record was acknowledged twice"
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, n in chaos.acknowledged:
        by_key[key].append(n)
    assert {key: numbers for key, numbers in by_key.items()} == {
        key: list(range(count)) for key, count in counters.items()
    }, "lost or out of order"
    assert harness.engine.status(created.uuid)["lag"] == 0
