"""Explore a scenario's schedules: one seed, one interleaving; many seeds, many interleavings.

An exploration deploys the demo stack once (on a fast endpoint of its own) and saves its state. Then,
for each seed, a fresh deterministic endpoint (virtual pace, a fixed clock) loads that state and runs
the scenario's inputs as a script: the seed decides when each input is admitted among the pipeline's
own steps, so a seed's run is the same every time, whatever the machine's speed. When the pipeline has
settled, the oracle checks every view row and counts the events lost (I1, I2). A failing seed's trace
is kept: `esjoin replay TRACE --check` brings the failure back.

    exploration = Exploration(workdir, stage_settings={"snapshot_mode": "original"})
    for result in exploration.run(snapshot_race, seeds=range(1, 21)):
        print(result.seed, result.problems)
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esjoin.testing.backends import Backend, own_embedded
from esjoin.testing.events import logged_in, order_submitted, user_created
from esjoin.testing.pipeline import EventLog, Pipeline, partition_key
from esjoin.testing.reproduce import Script
from esjoin.testing.waits import eventually

REGION = "us-east-1"
CLOCK_START_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z: every seed's run starts at the same instant
SETTLE_DEADLINE_SECONDS = 120.0
# The stage explorations run: snapshots and trims within a scenario (a 2 s horizon, a low threshold)
# and a short function timeout, as the integration scenarios have.
EXPLORE_SETTINGS: dict[str, Any] = {
    "shard_count": 2,
    "snapshot_horizon_seconds": 2,
    "snapshot_threshold": 5,
    "function_timeout_seconds": 5,
}


@dataclass
class Inputs:
    """What a scenario sends (as a script) and what the oracle expects of it."""

    script: Script
    outputs: Any
    clock_ms: int
    log: EventLog = field(default_factory=EventLog)

    def put_events(self, events: list[dict[str, Any]]) -> None:
        self.log.record(events, "kinesis")
        records = [{"Data": json.dumps(e).encode(), "PartitionKey": partition_key(e)} for e in events]
        self.script.client("kinesis").put_records(StreamName=self.outputs.stream["name"], Records=records)

    def request_snapshot(self, user: str, horizon_seconds: float | None = 0) -> None:
        message: dict[str, Any] = {"type": "snapshot", "userId": user, "requestedAt": self.clock_ms}
        if horizon_seconds is not None:
            message["horizonSeconds"] = horizon_seconds
        queue = self.outputs.queues["snapshotRequests"]["url"]
        self.script.client("sqs").send_message(QueueUrl=queue, MessageBody=json.dumps(message))

    def request_trim(self, user: str) -> None:
        queue = self.outputs.queues["trimRequests"]["url"]
        self.script.client("sqs").send_message(QueueUrl=queue, MessageBody=json.dumps({"type": "trim", "userId": user}))

    def resend(self, events: list[dict[str, Any]]) -> None:
        """A producer retry: the same events (same ids) again, as new records."""
        self.put_events(events)

    def add_fault(self, rule: dict[str, Any]) -> None:
        """A fault rule (the control API's POST /_esjoin/faults body), added at its place in the script."""
        self.script.control("POST", "/_esjoin/faults", rule)

    def settle(self) -> None:
        self.script.settle()


Scenario = Callable[[Inputs], None]


@dataclass
class SeedResult:
    seed: int
    problems: list[str]
    steps: int
    seconds: float
    trace: Path | None = None  # kept for a failing seed (or when asked)
    trace_bytes: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.problems)


class Exploration:
    def __init__(self, workdir: Path, stage: str = "explore", stage_settings: dict[str, Any] | None = None) -> None:
        self.workdir = Path(workdir)
        self.stage = stage
        self.settings = {**EXPLORE_SETTINGS, **(stage_settings or {}), "stage": stage, "region": REGION}
        self._archive: bytes | None = None
        self._outputs: Any = None

    def prepare(self) -> None:
        """Deploy the stage once, on a fast endpoint, and keep its state for every seed."""
        if self._archive is not None:
            return
        directory = self.workdir / "deploy"
        backend = own_embedded(directory, region=REGION)
        try:
            self._outputs = deploy_stage(backend, self.settings, directory / "outputs.json")
            self._archive = backend.control.save_state()
        finally:
            backend.stop()

    def run(self, scenario: Scenario, seeds: Iterable[int], keep_traces: bool = False) -> Iterator[SeedResult]:
        self.prepare()
        for seed in seeds:
            yield self.run_seed(scenario, seed, keep_trace=keep_traces)

    def run_seed(self, scenario: Scenario, seed: int, keep_trace: bool = False) -> SeedResult:
        """The scenario under one seed on a fresh endpoint; the trace is kept when it fails."""
        self.prepare()
        started = time.monotonic()
        directory = self.workdir / f"seed-{seed}"
        environment = {"ESJOIN_SEED": str(seed), "ESJOIN_PACE": "virtual", "ESJOIN_CLOCK_START_MS": str(CLOCK_START_MS)}
        backend = own_embedded(directory, region=REGION, extra_env=environment, control_timeout=60)
        try:
            script = Script(backend)
            assert self._archive is not None
            script.add_state(self._archive)
            inputs = Inputs(script, self._outputs, CLOCK_START_MS)
            with fixed_uuids():  # event and order ids: the same inputs under every seed, in every run
                scenario(inputs)
            backend.control.submit_inputs(script.requests, script.blobs)
            wait_settled(backend)
            pipeline = Pipeline(backend, self._outputs, inputs.log)
            problems = problems_now(pipeline)
            trace = backend.control.trace()
            steps = backend.control.schedule()["step"]
        finally:
            backend.stop()
        kept = None
        if problems or keep_trace:
            kept = self.workdir / f"seed-{seed}.trace.jsonl.gz"
            kept.write_bytes(trace)
        return SeedResult(seed, problems, steps, time.monotonic() - started, kept, len(trace))


@contextmanager
def fixed_uuids() -> Iterator[None]:
    """uuid.uuid4 draws from a fixed sequence inside the block."""
    draws = random.Random(0)
    original = uuid.uuid4
    uuid.uuid4 = lambda: uuid.UUID(int=draws.getrandbits(128), version=4)  # type: ignore[assignment]
    try:
        yield
    finally:
        uuid.uuid4 = original  # type: ignore[assignment]


def deploy_stage(backend: Backend, overrides: dict[str, Any], outputs_path: Path | None = None) -> Any:
    """The demo stack with `overrides` (StackSettings fields), bootstrapped on `backend`; its outputs."""
    from infra.bootstrap import apply
    from infra.settings import StackSettings
    from infra.stack import build_stack

    settings = StackSettings.from_env(environ={}, overrides=overrides)
    return apply(build_stack(settings), backend.target, outputs_path=outputs_path)


def wait_settled(backend: Backend, deadline: float = SETTLE_DEADLINE_SECONDS) -> None:
    """Every input admitted, nothing runnable, no timer pending (a deterministic endpoint's quiescence)."""
    eventually(
        lambda: backend.control.quiescence()["quiescent"],
        expected="the deterministic endpoint to settle (inputs admitted, nothing runnable, no timer)",
        deadline=deadline,
        interval=0.02,
        max_interval=0.2,
        observe=lambda: {k: v for k, v in backend.control.schedule().items() if k != "actors"},
    )


def problems_now(pipeline: Pipeline) -> list[str]:
    """I1 and I2 at a settled point: view rows against the oracle, and the events lost."""
    from esjoin.testing.checks import differences, snapshot_accounting_errors

    users = pipeline.log.users()
    return differences(pipeline, users) + snapshot_accounting_errors(pipeline, users)


# -- the stock scenarios --------------------------------------------------------------------------------


def snapshot_race(inputs: Inputs) -> None:
    """Snapshots racing each other and trim: one user's events arrive three at a time, each group
    followed by snapshot requests, so snapshot runs of that user overlap with each other and with
    trims. A slow run's stale snapshot, written unconditionally (the original example), moves the
    watermark back below events a faster run's trim already deleted (I2, I4)."""
    user, now = "racer", inputs.clock_ms
    for group in range(4):
        age = 120_000 - group * 30_000
        first = user_created(user, "Racer", now - age) if group == 0 else logged_in(user, now - age)
        inputs.put_events([first, order_submitted(user, now - age + 10_000)])
        inputs.put_events([order_submitted(user, now - age + 20_000)])
        inputs.request_snapshot(user)
        if group:
            inputs.request_snapshot(user)


LATE_USERS = ("late-a", "late-b", "late-c")


def late_events(inputs: Inputs) -> None:
    """Late events (timestamps older than the horizon and than everything snapshotted) arriving after
    younger ones, then a snapshot with the stage's horizon, for each of three users. The original
    example selected events by timestamp and set its watermark to the highest sequence number selected:
    the younger events below it were skipped, and trim deleted them (I2)."""
    now = inputs.clock_ms
    for user in LATE_USERS:
        inputs.put_events([user_created(user, user.title(), now - 600_000), logged_in(user, now - 500_000)])
        inputs.put_events([order_submitted(user, now - 400_000)])
        inputs.request_snapshot(user)
    for user in LATE_USERS:
        inputs.put_events([logged_in(user, now), order_submitted(user, now)])
        inputs.put_events([order_submitted(user, now - 900_000), logged_in(user, now - 950_000)])
        inputs.request_snapshot(user, horizon_seconds=None)


SCENARIOS: dict[str, Scenario] = {"snapshot-race": snapshot_race, "late-events": late_events}
