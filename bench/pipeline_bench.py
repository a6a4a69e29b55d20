"""Part `pipeline` (issue 3): the real stack on the embedded endpoint, with snapshots and trims running.

A fresh stage is applied (`infra.bootstrap.apply`) on an endpoint of its own, with a snapshot horizon
short enough (2 s) and a threshold low enough (20 live events) that snapshot and trim requests flow
while events do.

1. Latency: events for 100 users, sent one at a time at a steady rate (PutRecords of one record),
   round-robin over the users. The latency of event k of user u is the view row's `updatedAt` (the
   trigger's clock when it built the row) minus the time just before the event was put, for the
   first row a poller sees with eventCount >= k (each user's events are folded in sequence order,
   so that row reflects event k). A row seen late, or rewritten by a later refresh, only makes the
   figure larger: it is an upper bound. The poller's own observation time (another, looser upper
   bound) is reported beside it.
2. Throughput: 10,000 events for 100 other users pushed as fast as PutRecords (500 a call) takes
   them; events/s = events / (time from the first put until every view row counts all its events).
3. Zero loss: `esjoin.testing.checks.assert_converged` on every user of both phases: each view equals the
   oracle's fold of what was sent, the endpoint is quiescent and stays so, and snapshots plus the
   events stored above their watermark account for every event (I1, I2).
Targets: p50 < 100 ms; >= 300 events/s.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.cpu import cpu_since, tree_cpu
from bench.endpoints import REGION, EmbeddedEndpoint
from bench.report import Measurement, PartReport, load_average, markdown_table, paced, summary_ms
from esjoin.target import local_target
from esjoin.testing.backends import EMBEDDED, TIMING, Backend
from esjoin.testing.checks import assert_converged, wait_quiescent
from esjoin.testing.control_client import ControlClient
from esjoin.testing.events import logged_in, order_submitted, user_created
from esjoin.testing.pipeline import Pipeline
from infra.bootstrap import apply
from infra.settings import StackSettings
from infra.stack import build_stack

P50_TARGET_MS = 100.0
THROUGHPUT_TARGET = 300.0
FUNCTIONS = ("consumer", "trigger", "snapshot", "trim")


@dataclass(frozen=True)
class Settings:
    users: int = 100
    latency_events: int = 1500  # 15 per user
    latency_rate: float = 25.0  # events per second, one PutRecords call each
    throughput_events: int = 10000
    horizon_seconds: float = 2.0
    threshold: int = 20
    poll_seconds: float = 0.05  # the latency poller: BatchGetItem of the rows still owed an event
    converge_deadline: float = 300.0
    runs: int = 2

    @classmethod
    def quick(cls) -> Settings:
        return cls(users=20, latency_events=200, throughput_events=2000, runs=1)


def run(quick: bool = False) -> PartReport:
    """`settings.runs` runs, each on an endpoint and stage of its own; the figures of every run, and
    the median of the runs for the targets."""
    settings = Settings.quick() if quick else Settings()
    report = PartReport("pipeline", "The pipeline on the embedded endpoint (issue 3)", quick)
    report.data["settings"] = settings.__dict__
    runs: list[PartReport] = []
    for index in range(settings.runs):
        one = PartReport("pipeline", f"run {index + 1}", quick)
        run_once(one, settings)
        runs.append(one)
        for measurement in one.measurements:
            measurement.name = f"run {index + 1}: {measurement.name}"
            report.add(measurement)
        report.extra_tables.append(f"Run {index + 1}: " + one.extra_tables[0])
    report.data["runs"] = [one.data for one in runs]
    report.data["failed"] = any(one.data.get("failed") for one in runs)
    report.notes += [note for one in runs for note in one.notes if note.startswith("assert_converged failed")]
    targets = (
        ("latency p50 (updatedAt)", f"< {P50_TARGET_MS:.0f} ms", lambda v: v < P50_TARGET_MS),
        ("sustained events/s", f">= {THROUGHPUT_TARGET:.0f}/s", lambda v: v >= THROUGHPUT_TARGET),
    )
    for position, (metric, target, met) in enumerate(targets):
        values = [m.value for m in runs_measurements(runs) if metric in m.name and m.value is not None]
        if values:
            median = statistics.median(values)
            report.measurements.insert(
                position,
                Measurement(
                    f"median of {len(values)} run(s): {metric}",
                    median,
                    "ms" if "latency" in metric else "ev/s",
                    target,
                    met(median),
                    "runs: " + ", ".join(f"{v:.1f}" for v in values),
                ),
            )
    report.data["applySeconds"] = runs[0].data.get("applySeconds") if runs else None
    report.notes += [
        f"Each run: a fresh endpoint and stage (infra.bootstrap.apply, {report.data['applySeconds']} s) with "
        f"snapshot_horizon_seconds={settings.horizon_seconds:g} and snapshot_threshold={settings.threshold}; "
        "2 shards, the stack's mappings (consumer BatchSize 100, trigger 1000, snapshot and trim 10).",
        f"Latency: {settings.latency_events} events, one PutRecords call each at {settings.latency_rate:g}/s, "
        f"round-robin over {settings.users} users whose event counts were spread below the threshold, so "
        "snapshots and trims run throughout (see 'invocations meanwhile'). Every function ran before "
        "(no cold start during the measurement). updatedAt is the trigger's clock when it built the row "
        "(taken just before its PutItem); the figure is an upper bound (see bench/pipeline_bench.py).",
        f"Throughput: {settings.throughput_events} events for {settings.users} other users, pushed as fast "
        "as PutRecords takes them (500 a call), until every row counts all its events; then "
        "esjoin.testing.checks.assert_converged on all users of both phases.",
        "CPU ms/event: CPU time of the endpoint process and of each function's worker processes "
        "(/proc), divided by the events of the phase: it moves far less with the machine's load than "
        "wall-clock figures do.",
    ]
    return report


def runs_measurements(runs: list[PartReport]) -> list[Measurement]:
    return [m for one in runs for m in one.measurements]


def run_once(report: PartReport, settings: Settings) -> None:
    run_id = uuid.uuid4().hex[:6]
    with EmbeddedEndpoint() as endpoint:
        pipeline, report.data["applySeconds"] = deploy(endpoint, f"bench-{run_id}", settings)
        control = pipeline.backend.control
        assert control is not None
        outputs = pipeline.outputs
        pid = endpoint.process.pid if endpoint.process else 0
        measure_latency(report, settings, pipeline, [f"lat-{run_id}-{i:03d}" for i in range(settings.users)], pid)
        measure_throughput(report, settings, pipeline, [f"tp-{run_id}-{i:03d}" for i in range(settings.users)], pid)
        verify(report, settings, pipeline)
        report.data["invocations"] = invocation_counts(control, outputs)
        report.extra_tables.append(invocation_table(report.data["invocations"]))


def deploy(
    endpoint: EmbeddedEndpoint, stage: str, settings: Settings, overrides: dict[str, Any] | None = None
) -> tuple[Pipeline, float]:
    """A fresh stage applied on `endpoint` (infra.bootstrap.apply) with the settings' snapshot horizon
    and threshold (and any other StackSettings `overrides`), and the harness Pipeline that drives it;
    also how long the apply took (s)."""
    stack_settings = StackSettings.from_env(
        environ={},
        overrides={
            "stage": stage,
            "snapshot_horizon_seconds": settings.horizon_seconds,
            "snapshot_threshold": settings.threshold,
            **(overrides or {}),
        },
    )
    began = time.perf_counter()
    outputs = apply(build_stack(stack_settings), endpoint.url, outputs_path=None)
    apply_seconds = round(time.perf_counter() - began, 2)
    backend = Backend(EMBEDDED, local_target(endpoint.url, REGION), TIMING[EMBEDDED], ControlClient(endpoint.url))
    return Pipeline(backend, outputs), apply_seconds


# -- 1. latency ------------------------------------------------------------------------------------


@dataclass
class PendingEvent:
    user: int
    count: int  # the user's eventCount once this event is folded in
    sent_at: float  # epoch seconds, just before the put
    updated_at_ms: int | None = None  # updatedAt of the first row seen with eventCount >= count
    observed_at: float | None = None


@dataclass
class ViewPoller:
    """Reads the rows of users with unresolved events every `interval` s and resolves the events each
    row reflects."""

    pipeline: Pipeline
    users: list[str]
    interval: float
    pending: list[list[PendingEvent]] = field(default_factory=list)  # per user, in send order
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    polls: int = 0

    def __post_init__(self) -> None:
        self.pending = [[] for _ in self.users]
        self.index = {user: i for i, user in enumerate(self.users)}

    def add(self, event: PendingEvent) -> None:
        with self.lock:
            self.pending[event.user].append(event)

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:  # only the rows still owed an event: the poller's reads load the endpoint too
                wanted = [
                    self.users[i]
                    for i, events in enumerate(self.pending)
                    if any(e.updated_at_ms is None for e in events)
                ]
            rows = self.pipeline.views(wanted) if wanted else {}
            now = time.time()
            self.polls += 1
            with self.lock:
                for user, row in rows.items():
                    count = int(row.get("eventCount") or 0)
                    for event in self.pending[self.index[user]]:
                        if event.updated_at_ms is None and event.count <= count:
                            event.updated_at_ms = int(row["updatedAt"])
                            event.observed_at = now
            self.stop.wait(self.interval)

    def unresolved(self) -> int:
        with self.lock:
            return sum(1 for events in self.pending for e in events if e.updated_at_ms is None)


def _next_event(user: str, rng: random.Random) -> dict[str, Any]:
    return logged_in(user) if rng.random() < 0.5 else order_submitted(user, amount=rng.randint(1, 100))


def _wait_counts(pipeline: Pipeline, expected: dict[str, int], deadline: float, interval: float = 0.25) -> float:
    """Until every user's row counts its events; returns when (perf_counter)."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        rows = pipeline.views(list(expected))
        if all(int((rows.get(u) or {}).get("eventCount") or 0) >= n for u, n in expected.items()):
            return time.perf_counter()
        time.sleep(interval)
    rows = pipeline.views(list(expected))
    behind = {
        u: (int((rows.get(u) or {}).get("eventCount") or 0), n)
        for u, n in expected.items()
        if int((rows.get(u) or {}).get("eventCount") or 0) < n
    }
    raise TimeoutError(f"{len(behind)} view rows behind after {deadline:.0f} s, e.g. {list(behind.items())[:5]}")


def warm_up(pipeline: Pipeline, users: list[str], settings: Settings, rng: random.Random) -> list[int]:
    """Every function runs before the measurement (snapshot and trim through one snapshot request per
    user), so it sees warm workers. Then user i gets a number of events spread evenly below the
    snapshot threshold, so that during the measurement the users cross it one after another (as
    independent users would), not all in the same second. Returns each user's event count."""
    pipeline.put_events([user_created(user, f"User {i}") for i, user in enumerate(users)])
    _wait_counts(pipeline, dict.fromkeys(users, 1), settings.converge_deadline)
    for user in users:
        pipeline.request_snapshot(user, horizon_seconds=0)
    wait_quiescent(pipeline, users, settings.converge_deadline)
    per_user_in_measurement = max(1, settings.latency_events // len(users))
    lowest = max(1, settings.threshold - per_user_in_measurement + 1)
    counts = [lowest + (i * (settings.threshold - lowest)) // len(users) for i in range(len(users))]
    for round_ in range(1, max(counts)):
        pipeline.put_events(
            [_next_event(user, rng) for user, count in zip(users, counts, strict=True) if round_ < count]
        )
    _wait_counts(pipeline, dict(zip(users, counts, strict=True)), settings.converge_deadline)
    wait_quiescent(pipeline, users, settings.converge_deadline)
    return counts


def activity_since(control: ControlClient, since: int) -> dict[str, dict[str, int]]:
    """Per function (its logical key): invocations and cold starts since history id `since`."""
    activity: dict[str, dict[str, int]] = {}
    for record in control.history(since=since)["invocations"]:
        key = record["function"].rsplit("-", 1)[-1]
        counts = activity.setdefault(key, {"invocations": 0, "coldStarts": 0})
        counts["invocations"] += 1
        counts["coldStarts"] += bool(record["coldStart"])
    return activity


def measure_latency(
    report: PartReport, settings: Settings, pipeline: Pipeline, users: list[str], endpoint_pid: int
) -> None:
    rng = random.Random(1)
    counts = warm_up(pipeline, users, settings, rng)
    control = pipeline.backend.control
    assert control is not None
    history_mark = control.history(limit=1)["lastId"]

    poller = ViewPoller(pipeline, users, settings.poll_seconds)
    thread = threading.Thread(target=poller.run, name="bench-view-poller", daemon=True)
    thread.start()
    load_before = load_average()
    cpu_before = tree_cpu(endpoint_pid)
    started = time.perf_counter()
    for i in paced(settings.latency_events, settings.latency_rate, started):
        user = i % len(users)
        counts[user] += 1
        event = _next_event(users[user], rng)
        pending = PendingEvent(user, counts[user], time.time())
        poller.add(pending)
        pipeline.put_events([event])
    sent_seconds = time.perf_counter() - started
    until = time.monotonic() + settings.converge_deadline
    while poller.unresolved() and time.monotonic() < until:
        time.sleep(0.1)
    poller.stop.set()
    thread.join()
    load_after = load_average()
    cpu = cpu_per_event(cpu_since(cpu_before, tree_cpu(endpoint_pid)), settings.latency_events)
    events = [e for per_user in poller.pending for e in per_user]
    resolved = [e for e in events if e.updated_at_ms is not None]
    by_row = [e.updated_at_ms - e.sent_at * 1000 for e in resolved]  # type: ignore[operator]
    by_poller = [(e.observed_at - e.sent_at) * 1000 for e in resolved]  # type: ignore[operator]
    row, seen = summary_ms(by_row), summary_ms(by_poller)
    activity = activity_since(control, history_mark)
    report.data["latency"] = {
        "byUpdatedAtMs": row,
        "byPollerMs": seen,
        "activityDuring": activity,
        "cpuMsPerEvent": cpu,
        "sent": len(events),
        "unresolved": len(events) - len(resolved),
        "sentSeconds": round(sent_seconds, 2),
        "polls": poller.polls,
        "perEventMs": [round(v, 1) for v in by_row],
    }
    achieved = len(events) / sent_seconds
    load = (load_before, load_after)
    ran = ", ".join(f"{key} {counts['invocations']}" for key, counts in sorted(activity.items()))
    cold = sum(counts["coldStarts"] for counts in activity.values())
    report.add(
        Measurement(
            "event -> view row latency p50 (updatedAt)",
            row.get("p50"),
            "ms",
            f"< {P50_TARGET_MS:.0f} ms",
            row.get("p50", float("inf")) < P50_TARGET_MS,
            f"n={row['n']} over {len(users)} users at {achieved:.0f} events/s; p90 {row.get('p90', 0):.0f}, "
            f"max {row.get('max', 0):.0f} ms; as the poller saw it: p50 {seen.get('p50', 0):.0f} ms; "
            f"invocations meanwhile: {ran}; cold starts {cold}; CPU ms/event: {describe_cpu(cpu)}",
            load,
        )
    )
    report.add(
        Measurement(
            "event -> view row latency p99 (updatedAt)",
            row.get("p99"),
            "ms",
            "",
            None,
            f"poller-observed p99 {seen.get('p99', 0):.0f} ms"
            + (f"; {len(events) - len(resolved)} never seen" if len(resolved) < len(events) else ""),
            load,
        )
    )


# -- 2. throughput -----------------------------------------------------------------------------------


def measure_throughput(
    report: PartReport, settings: Settings, pipeline: Pipeline, users: list[str], endpoint_pid: int
) -> None:
    rng = random.Random(2)
    per_user = settings.throughput_events // len(users)
    streams = [
        [user_created(user, f"Tp {i}")] + [_next_event(user, rng) for _ in range(per_user - 1)]
        for i, user in enumerate(users)
    ]
    # Interleave the users, as independent producers would: event j of every user, then event j+1.
    events = [streams[u][j] for j in range(per_user) for u in range(len(users))]
    load_before = load_average()
    cpu_before = tree_cpu(endpoint_pid)
    started = time.perf_counter()
    pipeline.put_events(events)
    pushed = time.perf_counter() - started
    done = _wait_counts(pipeline, dict.fromkeys(users, per_user), settings.converge_deadline)
    elapsed = done - started
    rate = len(events) / elapsed
    cpu = cpu_per_event(cpu_since(cpu_before, tree_cpu(endpoint_pid)), len(events))
    report.data["throughput"] = {
        "events": len(events),
        "seconds": round(elapsed, 2),
        "pushSeconds": round(pushed, 2),
        "eventsPerSecond": round(rate, 1),
        "cpuMsPerEvent": cpu,
    }
    report.add(
        Measurement(
            "sustained events/s (put to every view row counting all events)",
            rate,
            "ev/s",
            f">= {THROUGHPUT_TARGET:.0f}/s",
            rate >= THROUGHPUT_TARGET,
            f"{len(events):,} events, {len(users)} users, {elapsed:.1f} s (PutRecords took "
            f"{pushed:.1f} s); CPU ms/event: {describe_cpu(cpu)}",
            (load_before, load_average()),
        )
    )


def cpu_per_event(spent: dict[str, float], events: int) -> dict[str, float]:
    """CPU milliseconds per event: the endpoint, each function (by its logical key), and in all."""
    per_event = {
        name.rsplit("-", 1)[-1] if name != "endpoint" else name: round(1000 * seconds / events, 2)
        for name, seconds in spent.items()
    }
    per_event["total"] = round(sum(per_event.values()), 2)
    return per_event


def describe_cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in cpu.items())


# -- 3. zero loss ------------------------------------------------------------------------------------


def verify(report: PartReport, settings: Settings, pipeline: Pipeline) -> None:
    users = pipeline.log.users()
    began = time.perf_counter()
    try:
        assert_converged(pipeline, users, deadline=settings.converge_deadline)
        ok, detail = True, f"{len(users)} users, {len(pipeline.log.sent):,} events sent"
    except AssertionError as error:
        ok, detail = False, str(error).splitlines()[0][:300]
        report.data["failed"] = True
        report.notes.append(f"assert_converged failed: {str(error)[:3000]}")
    report.data["verification"] = {"ok": ok, "seconds": round(time.perf_counter() - began, 2), "users": len(users)}
    report.add(
        Measurement(
            "zero loss: every view = oracle, quiescent, snapshots + stored events account for all",
            None,
            "",
            "all",
            ok,
            detail,
        )
    )


def invocation_counts(control: ControlClient, outputs: Any) -> dict[str, dict[str, Any]]:
    counts: dict[str, dict[str, Any]] = {}
    for key in FUNCTIONS:
        name = outputs.functions[key]["name"]
        records = control.history(function=name)["invocations"]
        outcomes: dict[str, int] = {}
        for record in records:
            outcomes[record["outcome"]] = outcomes.get(record["outcome"], 0) + 1
        durations = [r["durationMs"] for r in records]
        counts[key] = {
            "invocations": len(records),
            "outcomes": outcomes,
            "records": sum(len(r["batchIds"]) for r in records),
            "medianDurationMs": round(statistics.median(durations), 1) if durations else None,
            "totalDurationSeconds": round(sum(durations) / 1000, 1),
        }
    return counts


def invocation_table(counts: dict[str, dict[str, Any]]) -> str:
    rows = [
        [
            key,
            c["invocations"],
            c["records"],
            ", ".join(f"{k} {v}" for k, v in sorted(c["outcomes"].items())),
            c["medianDurationMs"],
            c["totalDurationSeconds"],
        ]
        for key, c in counts.items()
    ]
    return "Function invocations over the whole run (from the endpoint's history):\n\n" + markdown_table(
        ["function", "invocations", "records", "outcomes", "median duration ms", "total duration s"], rows
    )
