"""Part `robustness`: does the endpoint stay fast, small and lossless when it is pushed or broken?

Three sections, each on a fresh embedded endpoint of its own (bench.endpoints.EmbeddedEndpoint):

1. `lock_hold`: moto runs under a lock (emulator/moto_lock.py). A DynamoDB single-table operation now
   takes its table's lock (shared mode) instead of the one process-wide lock, so a long Scan of one
   table should no longer stall writes to another. Measured: tables A and B (pay-per-request, key
   "pk"), 50,000 small items loaded into B (BatchWriteItem, 25 a call, a few threads), then PutItem
   latency on A (one client, sequential) (a) alone and (b) while another process keeps scanning all of
   B with boto3's Scan paginator (default page size: moto's 1 MB pages). Target: PutItem p99 on A
   < 20 ms while B is scanned. Also (c) PutItem on B itself during the scan, which must wait for the
   page being read (correct: it is the same table), and (d) PutItem on A during the scan while a
   BatchGetItem on A (an exclusive operation, as every poller's direct backend access is) runs every
   100 ms: an exclusive request waits for the scan page, and shared requests queue behind a waiting
   exclusive one (writer preference), so (d) shows what the per-table lock gives once the pipeline's
   pollers are running too. The scanner runs in a process of its own so that parsing its 1 MB pages
   does not hold the benchmark client's GIL while PutItem is timed.
2. `load`: the pipeline stack (bootstrapped as bench/pipeline_bench.py does, snapshots and trims on)
   fed at a steady 300 events/s (PutRecords every 100 ms) for 3 minutes over 300 users. Reported:
   events sent and the achieved rate, how long the pipeline needed after the last put to fold
   everything (it kept up if that is short), put -> view latency sampled on 30 users, zero loss
   (pipeline_bench.verify: views = oracle, quiescent, snapshots + stored events account for every
   event), CPU per event, and the resident memory of the endpoint process and of its Lambda workers
   before, during (peak) and after. moto keeps every item written, every Kinesis and DynamoDB Streams
   record (no retention period) and every event id, so the endpoint grows with each event: the figure
   to watch is KiB per 1,000 events, and whether it stays proportional.
3. `kill_workers`: the same pipeline at 150 events/s for 60 s while a thread SIGKILLs a random
   Lambda worker process (a child of the endpoint running the runtime's worker.py) every 0.8 s: an
   execution environment dying mid-invocation, as a crashed or OOM-killed container does on AWS. The
   mappings must retry and the pipeline must still converge with zero loss (deadline 120 s, and at
   least the queues' visibility timeout plus a minute: see kill_workers()). Also
   reported: kills per function, the invocation outcomes (from the endpoint's history), the failure
   queue, and memory before and after (killed workers must not leak in the endpoint).

`python -m bench robustness [--quick] [--only lock_hold,load,kill_workers]`; it takes about seven
minutes (--quick: about two), so it is not part of `python -m bench` with no part.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
import queue
import random
import signal
import statistics
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import pipeline_bench
from bench.cpu import children, cpu_since, function_name, tree_cpu, tree_rss
from bench.endpoints import EmbeddedEndpoint, client
from bench.pipeline_bench import (
    PendingEvent,
    ViewPoller,
    _next_event,
    _wait_counts,
    cpu_per_event,
    deploy,
    describe_cpu,
    invocation_counts,
    invocation_table,
    verify,
)
from bench.report import Measurement, PartReport, load_average, markdown_table, paced, summary_ms
from esjoin.testing.checks import wait_quiescent
from esjoin.testing.control_client import ControlClient
from esjoin.testing.events import user_created
from esjoin.testing.pipeline import Pipeline
from infra.stack import visibility_timeout_for

SECTIONS = ("lock_hold", "load", "kill_workers")
PUT_P99_TARGET_MS = 20.0
WORKER_SCRIPT = "runtime/worker.py"  # emulator/lambda_service/runtime.py installs worker.py there
ITEM_PAYLOAD = "x" * 64  # the items' one non-key attribute: "small items"
TABLE_A, TABLE_B = "robustness-a", "robustness-b"


@dataclass(frozen=True)
class Settings:
    # lock_hold
    table_items: int = 50_000
    loader_threads: int = 4
    put_calls: int = 1000
    same_table_seconds: float = 10.0  # (c): PutItem on B for this long (a few of them wait for a whole page)
    exclusive_seconds: float = 10.0  # (d): PutItem on A for this long
    exclusive_interval: float = 0.1
    waited_ms: float = 50.0  # (c), (d): a PutItem slower than this waited for something
    # the pipeline sections
    horizon_seconds: float = 2.0  # as pipeline_bench: snapshots and trims flow while events do
    threshold: int = 20
    batch_interval: float = 0.1  # one PutRecords call this often
    load_users: int = 300
    load_rate: float = 300.0
    load_seconds: float = 180.0
    probe_users: int = 30  # put -> view latency is sampled on these users' events
    kill_users: int = 200
    kill_rate: float = 150.0
    kill_seconds: float = 60.0
    kill_interval: float = 0.8
    kill_function_timeout: int = 10  # the stack's function timeout in kill_workers (queue visibility: 6x)
    converge_deadline: float = 300.0
    kill_converge_deadline: float = 120.0
    rss_interval: float = 2.0

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            table_items=20_000,
            put_calls=300,
            same_table_seconds=3.0,
            exclusive_seconds=3.0,
            load_users=100,
            load_seconds=20.0,
            probe_users=20,
            kill_users=100,
            kill_seconds=15.0,
        )

    def pipeline_settings(self, deadline: float) -> pipeline_bench.Settings:
        """What pipeline_bench's deploy() and verify() read: horizon, threshold, convergence deadline."""
        return pipeline_bench.Settings(
            horizon_seconds=self.horizon_seconds, threshold=self.threshold, converge_deadline=deadline
        )


def run(quick: bool = False, sections: tuple[str, ...] = SECTIONS) -> PartReport:
    """Each section on an endpoint of its own; a section that raises is reported and the others still run."""
    settings = Settings.quick() if quick else Settings()
    report = PartReport("robustness", "Robustness: lock hold, sustained load, killed workers", quick)
    report.data["settings"] = settings.__dict__
    rss_rows: list[list[Any]] = []
    for section in sections:
        one = PartReport("robustness", section, quick)
        began = time.monotonic()
        print(f"-- robustness: {section}", flush=True)
        try:
            {"lock_hold": lock_hold, "load": load, "kill_workers": kill_workers}[section](one, settings)
        except Exception as error:
            one.data["failed"] = True
            one.notes.append(
                f"{section} raised {type(error).__name__}: {str(error)[:1500]}\n"
                + "".join(traceback.format_exc(limit=6))[-1500:]
            )
        one.data["seconds"] = round(time.monotonic() - began, 1)
        for measurement in one.measurements:
            measurement.name = f"{section}: {measurement.name}"
            report.add(measurement)
        report.extra_tables += [f"{section}: {table}" for table in one.extra_tables]
        report.notes += [f"{section}: {note}" for note in one.notes]
        report.data[section] = one.data
        if "rss" in one.data:
            rss_rows.append(rss_row(section, one.data["rss"]))
    if rss_rows:
        report.extra_tables.insert(
            0,
            "Resident memory (VmRSS from /proc, MiB): the endpoint process, and the sum over "
            "its Lambda worker processes (their count in brackets):\n\n"
            + markdown_table(
                ["section", "endpoint before", "endpoint peak", "endpoint after", "workers before", "workers after"],
                rss_rows,
            ),
        )
    report.data["failed"] = any(report.data[s].get("failed") for s in sections)
    report.notes += [
        "All figures on a 2-core machine shared with other work: see the load average beside each figure.",
        "lock_hold: latencies are measured by the benchmark's boto3 client (sequential calls: each includes "
        "botocore's ~1 ms of its own). The scan page time 'served' is from the request being sent to the "
        "response being received (botocore's before-send to before-parse), i.e. how long the endpoint holds "
        "the table; 'client' adds parsing the page.",
        "load and kill_workers: the stack of bench/pipeline_bench.py (infra.bootstrap.apply, 2 shards, "
        f"snapshot_horizon_seconds={settings.horizon_seconds:g}, snapshot_threshold={settings.threshold}); events "
        "are logins and orders for random users, after one user-created event each; one PutRecords call every "
        f"{settings.batch_interval * 1000:.0f} ms. Zero loss is pipeline_bench.verify "
        "(esjoin.testing.checks.assert_converged on every user).",
    ]
    return report


def rss_row(section: str, rss: dict[str, Any]) -> list[Any]:
    before, after = rss.get("before") or {}, rss.get("after") or {}

    def mib(kib: int | None) -> str:
        return "-" if kib is None else f"{kib / 1024:.0f}"

    return [
        section,
        mib(before.get("endpointKiB")),
        mib(rss.get("peakEndpointKiB")),
        mib(after.get("endpointKiB")),
        f"{mib(before.get('workersKiB'))} ({before.get('workers', 0)})",
        f"{mib(after.get('workersKiB'))} ({after.get('workers', 0)})",
    ]


@contextlib.contextmanager
def fresh_endpoint(report: PartReport) -> Iterator[EmbeddedEndpoint]:
    """An embedded endpoint for one section; its state directory and log are kept if the section failed."""
    endpoint = EmbeddedEndpoint().start()
    failed = True
    try:
        yield endpoint
        failed = bool(report.data.get("failed"))
    finally:
        if failed:
            report.notes.append(f"the endpoint's log and state are kept in {endpoint.work_dir}")
        alive = endpoint.process is not None and endpoint.process.poll() is None
        report.data["endpointAliveAtEnd"] = alive
        if not alive:
            report.data["failed"] = True
            report.notes.append(f"the endpoint process exited during the section; see {endpoint.log_path}")
        endpoint.stop(keep_files=failed or not alive)


# -- 1. lock_hold ------------------------------------------------------------------------------------


def lock_hold(report: PartReport, settings: Settings) -> None:
    with fresh_endpoint(report) as endpoint:
        dynamodb = endpoint.client("dynamodb")
        for table in (TABLE_A, TABLE_B):
            dynamodb.create_table(
                TableName=table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            )
            dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1})
        began = time.perf_counter()
        load_items(endpoint.url, TABLE_B, settings.table_items, settings.loader_threads)
        report.data["loadSeconds"] = round(time.perf_counter() - began, 1)
        put_items(dynamodb, TABLE_A, 50, "warm")  # connections open, moto's code paths warm

        load = load_average()
        alone = put_items(dynamodb, TABLE_A, settings.put_calls, "alone")
        alone.load = (load, load_average())
        with Scanner(endpoint.url, TABLE_B) as scanner:
            during = put_items(dynamodb, TABLE_A, settings.put_calls, "scan")
            pages_during = scanner.pages_so_far() - 1  # the first one ended before the puts began
            same = put_items(dynamodb, TABLE_B, None, "same", seconds=settings.same_table_seconds)
            with ExclusiveRequests(endpoint.url, TABLE_A, settings.exclusive_interval) as exclusive:
                mixed = put_items(dynamodb, TABLE_A, None, "excl", seconds=settings.exclusive_seconds)
        served = summary_ms([page[0] for page in scanner.pages])
        total = summary_ms([page[1] for page in scanner.pages])
        items = [page[2] for page in scanner.pages]
        batch_get = summary_ms(exclusive.latencies)

    threshold = settings.waited_ms
    report.data.update(
        {
            "putAlone": alone.to_json(threshold),
            "putDuringScan": during.to_json(threshold),
            "putSameTableDuringScan": same.to_json(threshold),
            "putDuringScanAndExclusive": mixed.to_json(threshold),
            "batchGetDuringScanMs": batch_get,
            "scanPageServedMs": served,
            "scanPageClientMs": total,
            "scanPages": len(items),
            "itemsPerPage": sorted(set(items)),
            "tableItems": settings.table_items,
        }
    )
    report.add(
        Measurement(
            "PutItem on A p99, alone", alone.summary.get("p99"), "ms", "", None, alone.describe(threshold), alone.load
        )
    )
    report.add(
        Measurement(
            "PutItem on A p99, while B is scanned",
            during.summary.get("p99"),
            "ms",
            f"< {PUT_P99_TARGET_MS:.0f} ms",
            during.summary.get("p99", float("inf")) < PUT_P99_TARGET_MS,
            f"{during.describe(threshold)}; {pages_during} scan pages of B completed meanwhile",
            during.load,
        )
    )
    report.add(
        Measurement(
            "Scan page of B p50 (served)",
            served.get("p50"),
            "ms",
            "",
            None,
            f"{settings.table_items:,} items in B, {min(items, default=0):,}-{max(items, default=0):,} items a page "
            f"(1 MB), {len(items)} pages; served p99 {served.get('p99', 0):.0f} ms; with the client's parsing: "
            f"p50 {total.get('p50', 0):.0f} ms",
            during.load,
        )
    )
    report.add(
        Measurement(
            "(c) PutItem on B itself max, while B is scanned",
            same.summary.get("max"),
            "ms",
            "waits (same table)",
            None,
            f"{same.describe(threshold)}: a put that arrives while a page is read waits for it, as it must "
            "(sequential puts: one waits, the next ones run while the scanner parses the page)",
            same.load,
        )
    )
    report.add(
        Measurement(
            "(d) PutItem on A p99, while B is scanned and a BatchGetItem on A runs every "
            f"{settings.exclusive_interval * 1000:.0f} ms",
            mixed.summary.get("p99"),
            "ms",
            "",
            None,
            f"{mixed.describe(threshold)}; the BatchGetItem calls (exclusive): p50 {batch_get.get('p50', 0):.0f}, "
            f"max {batch_get.get('max', 0):.0f} ms, n={batch_get['n']}",
            mixed.load,
        )
    )
    report.notes.append(
        f"Loading {settings.table_items:,} items into B took {report.data['loadSeconds']} s "
        f"({settings.loader_threads} threads, BatchWriteItem of 25). Items: pk (S) and one {len(ITEM_PAYLOAD)}-"
        "character attribute. (d): BatchGetItem is not a single-table operation, so it takes moto exclusively, as "
        "the pollers' direct backend reads do; it waits for the scan page, and new shared requests (PutItem on A) "
        "queue behind it (writers are preferred once waiting)."
    )
    report.notes.append(
        "Sequential calls under-count stalls (one call waits through a stall, the following ones run fast: "
        "coordinated omission), so each PutItem figure also says how many calls took longer than "
        f"{threshold:.0f} ms and what share of the calls' total time they took."
    )


@dataclass
class Puts:
    """Sequential PutItem calls: when each began (epoch s) and how long it took (ms)."""

    began: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    load: tuple[float, float] | None = None

    @property
    def summary(self) -> dict[str, float | int]:
        return summary_ms(self.ms)

    def slow(self, threshold_ms: float) -> list[tuple[float, float]]:
        return [(round(at, 3), round(ms, 1)) for at, ms in zip(self.began, self.ms, strict=True) if ms > threshold_ms]

    def describe(self, threshold_ms: float) -> str:
        s = self.summary
        slow = self.slow(threshold_ms)
        share = 100 * sum(ms for _, ms in slow) / sum(self.ms) if self.ms else 0.0
        return (
            f"p50 {s.get('p50', 0):.1f}, p99 {s.get('p99', 0):.1f}, max {s.get('max', 0):.1f} ms, n={s['n']}; "
            f"{len(slow)} took > {threshold_ms:.0f} ms ({share:.0f} % of the time)"
        )

    def to_json(self, threshold_ms: float) -> dict[str, Any]:
        return {"ms": self.summary, "slow": self.slow(threshold_ms), "load": self.load}


def load_items(endpoint_url: str, table: str, count: int, threads: int) -> None:
    """`count` items into `table`, BatchWriteItem of 25, `threads` threads of their own client each."""

    def write(start: int, stop: int) -> None:
        dynamodb = client(endpoint_url, "dynamodb")
        for first in range(start, stop, 25):
            request = {
                table: [
                    {"PutRequest": {"Item": {"pk": {"S": f"b-{i:06d}"}, "v": {"S": ITEM_PAYLOAD}}}}
                    for i in range(first, min(first + 25, stop))
                ]
            }
            while request:
                request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    per_thread = -(-count // threads // 25) * 25  # whole batches per thread
    workers = [
        threading.Thread(target=write, args=(start, min(start + per_thread, count)), daemon=True)
        for start in range(0, count, per_thread)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    described = client(endpoint_url, "dynamodb").describe_table(TableName=table)["Table"]
    if described.get("ItemCount", count) != count:
        raise RuntimeError(f"{table} holds {described.get('ItemCount')} items, expected {count}")


def put_items(dynamodb: Any, table: str, count: int | None, prefix: str, seconds: float | None = None) -> Puts:
    """`count` sequential PutItem calls (or as many as fit in `seconds`, whichever ends first)."""
    puts = Puts()
    load = load_average()
    until = time.perf_counter() + seconds if seconds else None
    for i in itertools.count():
        if (count is not None and i >= count) or (until is not None and time.perf_counter() > until):
            break
        at, began = time.time(), time.perf_counter()
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"{prefix}-{i:06d}"}, "v": {"S": ITEM_PAYLOAD}})
        puts.ms.append((time.perf_counter() - began) * 1000)
        puts.began.append(at)
    puts.load = (load, load_average())
    return puts


def _scan_loop(endpoint_url: str, table: str, stop: Any, pages: Any) -> None:
    """The scanner process: full scans of `table` with the Scan paginator until `stop` is set; one
    (served ms, client ms, items) tuple a page on `pages`, then None."""
    dynamodb = client(endpoint_url, "dynamodb")
    marks: dict[str, float] = {}

    def mark(name: str) -> Any:
        def handler(**_: Any) -> None:  # before-send handlers must return None (else: the response)
            marks[name] = time.perf_counter()

        return handler

    dynamodb.meta.events.register("before-send.dynamodb.Scan", mark("sent"))
    dynamodb.meta.events.register("before-parse.dynamodb.Scan", mark("received"))
    paginator = dynamodb.get_paginator("scan")
    try:
        while not stop.is_set():
            began = time.perf_counter()
            for page in paginator.paginate(TableName=table):
                now = time.perf_counter()
                pages.put(
                    (
                        round((marks["received"] - marks["sent"]) * 1000, 2),
                        round((now - began) * 1000, 2),
                        len(page["Items"]),
                    )
                )
                began = now
                if stop.is_set():
                    break
    finally:
        pages.put(None)


class Scanner:
    """A process that keeps scanning a table (see _scan_loop); entering returns once its first page arrived."""

    def __init__(self, endpoint_url: str, table: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._queue: Any = context.Queue()
        self._process = context.Process(
            target=_scan_loop, args=(endpoint_url, table, self._stop, self._queue), name="bench-scanner", daemon=True
        )
        self.pages: list[tuple[float, float, int]] = []
        self._done = False

    def pages_so_far(self) -> int:
        self._drain(block=False)
        return len(self.pages)

    def _drain(self, block: bool) -> None:
        until = time.monotonic() + 120
        while not self._done:
            try:
                page = self._queue.get(timeout=1) if block else self._queue.get_nowait()
            except queue.Empty:
                if not block:
                    return
                if not self._process.is_alive() or time.monotonic() > until:
                    raise RuntimeError(
                        f"the scanner process stopped answering (exit code {self._process.exitcode})"
                    ) from None
                continue
            if page is None:
                self._done = True
            else:
                self.pages.append(page)

    def __enter__(self) -> Scanner:
        self._process.start()
        until = time.monotonic() + 300
        while not self.pages:
            try:
                page = self._queue.get(timeout=1)
            except queue.Empty:
                if not self._process.is_alive() or time.monotonic() > until:
                    self.__exit__()
                    raise RuntimeError(
                        f"the scanner process gave no page (exit code {self._process.exitcode})"
                    ) from None
                continue
            if page is None:
                self._done = True
                raise RuntimeError("the scanner process ended before its first page")
            self.pages.append(page)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            self._drain(block=True)
        finally:
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()


class ExclusiveRequests:
    """A thread issuing one BatchGetItem on `table` every `interval` s (moto taken exclusively)."""

    def __init__(self, endpoint_url: str, table: str, interval: float) -> None:
        self._client = client(endpoint_url, "dynamodb")
        self._table = table
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-exclusive", daemon=True)
        self.latencies: list[float] = []

    def _run(self) -> None:
        keys = [{"pk": {"S": f"warm-{i:06d}"}} for i in range(10)]
        while not self._stop.wait(self._interval):
            began = time.perf_counter()
            self._client.batch_get_item(RequestItems={self._table: {"Keys": keys}})
            self.latencies.append((time.perf_counter() - began) * 1000)

    def __enter__(self) -> ExclusiveRequests:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


# -- the pipeline sections: shared pieces ------------------------------------------------------------


@dataclass
class RssSampler:
    """tree_rss(pid) every `interval` s in a thread, for the peak and the trend (JSON)."""

    pid: int
    interval: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._started = time.monotonic()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.samples.append({"t": round(time.monotonic() - self._started, 1), **tree_rss(self.pid)})

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join()


@dataclass
class SendResult:
    events: int
    seconds: float  # first put to the end of the last one
    rate: float  # events / the scheduled window (or the real one, if the sends fell behind)
    max_late_ms: float  # how far behind its schedule a PutRecords call started, at worst
    ended_at: float  # perf_counter after the last put
    started_at: float  # epoch s of the first put
    put_ms: dict[str, float | int]  # the PutRecords calls' latencies


def send_paced(
    pipeline: Pipeline,
    users: list[str],
    counts: list[int],
    rate: float,
    seconds: float,
    batch_interval: float,
    rng: random.Random,
    poller: ViewPoller | None = None,
) -> SendResult:
    """Logins and orders for random users at `rate` events/s: one PutRecords of rate * batch_interval
    events every batch_interval s. counts[i] (user i's events so far) is kept up to date; the events of
    the poller's users (the first len(poller.users)) are handed to it for their put -> view latency."""
    batches = max(1, round(seconds / batch_interval))
    per_batch = max(1, round(rate * batch_interval))
    probes = len(poller.users) if poller is not None else 0
    started, started_at = time.perf_counter(), time.time()
    sent, late, put_ms = 0, 0.0, []
    for i in paced(batches, 1 / batch_interval, started):
        late = max(late, time.perf_counter() - (started + i * batch_interval))
        events = []
        now = time.time()
        for user in (rng.randrange(len(users)) for _ in range(per_batch)):
            counts[user] += 1
            events.append(_next_event(users[user], rng))
            if user < probes and poller is not None:
                poller.add(PendingEvent(user, counts[user], now))
        began = time.perf_counter()
        pipeline.put_events(events)
        put_ms.append((time.perf_counter() - began) * 1000)
        sent += len(events)
    ended = time.perf_counter()
    window = max(ended - started, batches * batch_interval)
    return SendResult(
        sent,
        round(ended - started, 2),
        round(sent / window, 1),
        round(late * 1000, 1),
        ended,
        started_at,
        summary_ms(put_ms),
    )


def start_users(pipeline: Pipeline, users: list[str], deadline: float) -> list[int]:
    """One user-created event each, folded, and a snapshot (with its trim) for a few users so that every
    function has run before the measurement; returns each user's event count (1)."""
    pipeline.put_events([user_created(user, f"User {i}") for i, user in enumerate(users)])
    _wait_counts(pipeline, dict.fromkeys(users, 1), deadline)
    for user in users[:10]:
        pipeline.request_snapshot(user, horizon_seconds=0)
    wait_quiescent(pipeline, users, deadline)
    return [1] * len(users)


def rss_summary(before: dict[str, int], after: dict[str, int], sampler: RssSampler, events: int) -> dict[str, Any]:
    peak = max([s["endpointKiB"] for s in sampler.samples] + [before["endpointKiB"], after["endpointKiB"]])
    growth = after["endpointKiB"] - before["endpointKiB"]
    return {
        "before": before,
        "after": after,
        "peakEndpointKiB": peak,
        "peakWorkersKiB": max([s["workersKiB"] for s in sampler.samples] + [after["workersKiB"]]),
        "endpointGrowthKiBPer1000Events": round(growth * 1000 / events, 1) if events else None,
        "samples": sampler.samples,
    }


def finish_section(
    report: Any, rss: Any, events: int, failures: dict[str, Any], invocations: Any, note: str | None
) -> None:
    """What both pipeline sections end with: RSS, the failure queue, the invocations and any note."""
    rss_measurements(report, rss, events)
    report.add(
        Measurement(
            "failure queue messages at the end",
            failures["messages"],
            "",
            "0",
            failures["messages"] == 0,
            str(failures["bySource"] or ""),
        )
    )
    report.extra_tables.append(invocation_table(invocations))
    if note:
        report.notes.append(note)


def rss_measurements(report: PartReport, rss: dict[str, Any], events: int) -> None:
    before, after = rss["before"], rss["after"]
    report.add(
        Measurement(
            "endpoint RSS after",
            after["endpointKiB"] / 1024,
            "MiB",
            "",
            None,
            f"before {before['endpointKiB'] / 1024:.0f} MiB, peak {rss['peakEndpointKiB'] / 1024:.0f} MiB; growth "
            f"{rss['endpointGrowthKiBPer1000Events']} KiB per 1,000 events ({events:,} events)",
        )
    )
    report.add(
        Measurement(
            "Lambda workers RSS after (sum)",
            after["workersKiB"] / 1024,
            "MiB",
            "",
            None,
            f"{after['workers']} workers; before: {before['workersKiB'] / 1024:.0f} MiB in {before['workers']}; "
            f"peak {rss['peakWorkersKiB'] / 1024:.0f} MiB",
        )
    )


def failure_queue_summary(pipeline: Pipeline) -> dict[str, Any]:
    """How many messages are in the failure queue now, by source (what the mappings and functions gave up on)."""
    messages = pipeline.failure_messages()
    sources = Counter(
        str(
            m.get("source")
            or ("kinesis" if "KinesisBatchInfo" in m else "ddbstream" if "DDBStreamBatchInfo" in m else "?")
        )
        for m in messages
    )
    return {"messages": len(messages), "bySource": dict(sources), "first": messages[:3]}


def control_of(pipeline: Pipeline) -> ControlClient:
    control = pipeline.backend.control
    assert control is not None, "the embedded endpoint has a control API"
    return control


def busy_mappings(pipeline: Pipeline) -> dict[str, Any]:
    """The engine state of every mapping that is not idle now (by the stack's mapping key): what kept the
    endpoint from quiescence when verification timed out."""
    control = control_of(pipeline)
    keys = {mapping["uuid"]: key for key, mapping in pipeline.outputs.mappings.items()}
    return {
        keys.get(uuid, uuid): control.mapping(uuid).get("engine")
        for uuid, idle in control.quiescence().get("mappingsIdle", {}).items()
        if not idle
    }


def verify_and_explain(report: PartReport, settings: pipeline_bench.Settings, pipeline: Pipeline) -> bool:
    """pipeline_bench.verify; when it fails, also what the mappings that are still busy are doing."""
    verify(report, settings, pipeline)
    ok = bool(report.data["verification"]["ok"])
    if not ok:
        busy = busy_mappings(pipeline)
        report.data["busyMappings"] = busy
        report.notes.append(f"mappings still busy after verification: {json.dumps(busy, default=str)[:2000]}")
    return ok


def history_note(pipeline: Pipeline, counts: dict[str, dict[str, Any]]) -> str:
    """A note when the endpoint's history (ESJOIN_HISTORY_SIZE records) no longer holds the whole run."""
    last = control_of(pipeline).history(limit=1)["lastId"]
    held = sum(c["invocations"] for c in counts.values())
    if last > held:
        return (
            f"the endpoint's history holds the last {held:,} of {last:,} invocations: the invocation table "
            "covers the end of the run only"
        )
    return ""


# -- 2. load -----------------------------------------------------------------------------------------


def load(report: PartReport, settings: Settings) -> None:
    run_id = uuid.uuid4().hex[:6]
    pipeline_settings = settings.pipeline_settings(settings.converge_deadline)
    with fresh_endpoint(report) as endpoint:
        pipeline, report.data["applySeconds"] = deploy(endpoint, f"robust-{run_id}", pipeline_settings)
        pid = endpoint.process.pid if endpoint.process else 0
        users = [f"load-{run_id}-{i:03d}" for i in range(settings.load_users)]
        counts = start_users(pipeline, users, settings.converge_deadline)
        rng = random.Random(3)
        poller = ViewPoller(pipeline, users[: settings.probe_users], interval=0.1)
        poll_thread = threading.Thread(target=poller.run, name="bench-view-poller", daemon=True)
        rss_before, cpu_before, load_before = tree_rss(pid), tree_cpu(pid), load_average()
        with RssSampler(pid, settings.rss_interval) as sampler:
            poll_thread.start()
            sent = send_paced(
                pipeline, users, counts, settings.load_rate, settings.load_seconds, settings.batch_interval, rng, poller
            )
            done = _wait_counts(pipeline, dict(zip(users, counts, strict=True)), settings.converge_deadline)
            until = time.monotonic() + 30
            while poller.unresolved() and time.monotonic() < until:
                time.sleep(0.1)
            poller.stop.set()
            poll_thread.join()
            cpu = cpu_per_event(cpu_since(cpu_before, tree_cpu(pid)), sent.events)
            load_after = load_average()
            verify_and_explain(report, pipeline_settings, pipeline)
            rss_after = tree_rss(pid)
        rss = rss_summary(rss_before, rss_after, sampler, sent.events)
        invocations = invocation_counts(control_of(pipeline), pipeline.outputs)
        note = history_note(pipeline, invocations)
        failures = failure_queue_summary(pipeline)

    drain = done - sent.ended_at
    resolved = [e for per_user in poller.pending for e in per_user if e.updated_at_ms is not None]
    latency = summary_ms([e.updated_at_ms - e.sent_at * 1000 for e in resolved])  # type: ignore[operator]
    seen = summary_ms([(e.observed_at - e.sent_at) * 1000 for e in resolved])  # type: ignore[operator]
    windows = latency_windows(resolved, sent.started_at, settings.load_seconds / 6)
    report.data.update(
        {
            "events": sent.events,
            "sendSeconds": sent.seconds,
            "rate": sent.rate,
            "maxSendLateMs": sent.max_late_ms,
            "putRecordsMs": sent.put_ms,
            "drainSeconds": round(drain, 2),
            "latencyByWindow": windows,
            "latencyByUpdatedAtMs": latency,
            "latencyByPollerMs": seen,
            "cpuMsPerEvent": cpu,
            "rss": rss,
            "invocations": invocations,
            "failureQueue": failures,
        }
    )
    loads = (load_before, load_after)
    report.add(
        Measurement(
            "achieved events/s",
            sent.rate,
            "ev/s",
            f"{settings.load_rate:.0f}/s",
            sent.rate >= 0.97 * settings.load_rate,
            f"{sent.events:,} events over {settings.load_users} users in {sent.seconds:.0f} s (PutRecords of "
            f"{round(settings.load_rate * settings.batch_interval)} every {settings.batch_interval * 1000:.0f} ms; "
            f"at worst {sent.max_late_ms:.0f} ms behind schedule; PutRecords p50 {sent.put_ms.get('p50', 0):.0f}, "
            f"p99 {sent.put_ms.get('p99', 0):.0f}, max {sent.put_ms.get('max', 0):.0f} ms); CPU ms/event: "
            f"{describe_cpu(cpu)}",
            loads,
        )
    )
    report.add(
        Measurement(
            "drain: last put -> every view row counts all its events",
            drain,
            "s",
            "",
            None,
            "short: the pipeline kept up with the rate; long: a backlog built up while sending",
            loads,
        )
    )
    report.add(
        Measurement(
            "put -> view latency p50 (updatedAt)",
            latency.get("p50"),
            "ms",
            "",
            None,
            f"p99 {latency.get('p99', 0):.0f} ms, max {latency.get('max', 0):.0f} ms, n={latency['n']} (the events "
            f"of {len(poller.users)} users); as the poller saw it: p50 {seen.get('p50', 0):.0f}, "
            f"p99 {seen.get('p99', 0):.0f} ms",
            loads,
        )
    )
    report.add(
        Measurement(
            "put -> view latency p99 (updatedAt)",
            latency.get("p99"),
            "ms",
            "",
            None,
            f"p50 / p99 by {settings.load_seconds / 6:.0f} s of sending: "
            + ", ".join(f"{w.get('p50', 0):.0f} / {w.get('p99', 0):.0f}" for w in windows)
            + " ms"
            + (f"; {poller.unresolved()} events never seen" if poller.unresolved() else ""),
            loads,
        )
    )
    finish_section(report, rss, sent.events, failures, invocations, note)


def latency_windows(events: list[PendingEvent], started_at: float, width: float) -> list[dict[str, Any]]:
    """put -> view latency (updatedAt) of the events sent in each `width` s of the send phase: does it
    grow as the endpoint's heap does?"""
    windows: dict[int, list[float]] = {}
    for event in events:
        assert event.updated_at_ms is not None
        windows.setdefault(int((event.sent_at - started_at) // width), []).append(
            event.updated_at_ms - event.sent_at * 1000
        )
    return [{"fromS": round(index * width), **summary_ms(values)} for index, values in sorted(windows.items())]


# -- 3. kill_workers ---------------------------------------------------------------------------------


def worker_pids(endpoint_pid: int) -> list[int]:
    """The endpoint's Lambda worker processes: its children running the runtime's worker.py."""
    found = []
    for pid in children(endpoint_pid):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(argument.decode(errors="replace").endswith(WORKER_SCRIPT) for argument in arguments):
            found.append(pid)
    return found


@dataclass
class WorkerKiller:
    """Every `interval` s, SIGKILL one of the endpoint's worker processes, chosen at random."""

    endpoint_pid: int
    interval: float
    rng: random.Random
    kills: list[dict[str, Any]] = field(default_factory=list)
    misses: int = 0  # no worker alive at that moment, or it was gone before the signal
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.wait(self.interval):
            pids = worker_pids(self.endpoint_pid)
            if not pids:
                self.misses += 1
                continue
            pid = self.rng.choice(pids)
            name = function_name(pid)
            if pid not in worker_pids(self.endpoint_pid):  # exited meanwhile: its pid may be reused
                self.misses += 1
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                self.misses += 1
                continue
            self.kills.append(
                {
                    "t": round(time.monotonic() - started, 2),
                    "pid": pid,
                    "function": name.rsplit("-", 1)[-1],
                    "workersAlive": len(pids),
                }
            )


def kill_workers(report: PartReport, settings: Settings) -> None:
    run_id = uuid.uuid4().hex[:6]
    # A batch whose worker was killed failed: SQS makes its messages visible again only after the queue's
    # visibility timeout (6x the function timeout), so that bounds the time to quiescence. Hence a shorter
    # function timeout than the stack's default 30 s (which would mean 180 s), and a deadline above it.
    visibility = visibility_timeout_for(settings.kill_function_timeout)
    deadline = max(settings.kill_converge_deadline, visibility + 60.0)
    pipeline_settings = settings.pipeline_settings(deadline)
    with fresh_endpoint(report) as endpoint:
        pipeline, report.data["applySeconds"] = deploy(
            endpoint,
            f"robust-{run_id}",
            pipeline_settings,
            {"function_timeout_seconds": settings.kill_function_timeout},
        )
        pid = endpoint.process.pid if endpoint.process else 0
        users = [f"kill-{run_id}-{i:03d}" for i in range(settings.kill_users)]
        counts = start_users(pipeline, users, settings.converge_deadline)
        rng = random.Random(4)
        killer = WorkerKiller(pid, settings.kill_interval, random.Random(5))
        kill_thread = threading.Thread(target=killer.run, name="bench-worker-killer", daemon=True)
        rss_before, load_before = tree_rss(pid), load_average()
        with RssSampler(pid, settings.rss_interval) as sampler:
            kill_thread.start()
            try:
                sent = send_paced(
                    pipeline, users, counts, settings.kill_rate, settings.kill_seconds, settings.batch_interval, rng
                )
            finally:
                killer.stop.set()
                kill_thread.join()
            began = time.perf_counter()
            verify_and_explain(report, pipeline_settings, pipeline)
            converged = time.perf_counter() - began
            rss_after = tree_rss(pid)
        rss = rss_summary(rss_before, rss_after, sampler, sent.events)
        invocations = invocation_counts(control_of(pipeline), pipeline.outputs)
        note = history_note(pipeline, invocations)
        failures = failure_queue_summary(pipeline)
        load_after = load_average()

    by_function = Counter(kill["function"] for kill in killer.kills)
    errors = {
        key: sum(n for outcome, n in c["outcomes"].items() if outcome != "success") for key, c in invocations.items()
    }
    report.data.update(
        {
            "events": sent.events,
            "sendSeconds": sent.seconds,
            "rate": sent.rate,
            "kills": len(killer.kills),
            "killsByFunction": dict(by_function),
            "misses": killer.misses,
            "killLog": killer.kills,
            "verifySeconds": round(converged, 1),
            "rss": rss,
            "invocations": invocations,
            "failedInvocations": errors,
            "failureQueue": failures,
        }
    )
    loads = (load_before, load_after)
    alive = statistics.median([k["workersAlive"] for k in killer.kills]) if killer.kills else 0
    report.add(
        Measurement(
            "workers SIGKILLed",
            len(killer.kills),
            "",
            "",
            None,
            f"one every {settings.kill_interval:g} s for {sent.seconds:.0f} s: "
            + ", ".join(f"{name} {n}" for name, n in sorted(by_function.items()))
            + f"; median {alive:g} workers alive at a kill; {killer.misses} ticks found none to kill",
            loads,
        )
    )
    report.add(
        Measurement(
            "events sent meanwhile",
            sent.events,
            "",
            "",
            None,
            f"{sent.rate:.0f} events/s achieved (asked {settings.kill_rate:.0f}) over {settings.kill_users} users; "
            "invocations that failed: " + ", ".join(f"{k} {v}" for k, v in errors.items()),
            loads,
        )
    )
    report.add(
        Measurement(
            "time to converge after the last kill",
            converged,
            "s",
            f"< {deadline:.0f} s",
            bool(report.data["verification"]["ok"]) and converged < deadline,
            "until every view equals the oracle and the endpoint is quiescent (pipeline_bench.verify); a killed "
            f"snapshot or trim batch comes back after the queue's visibility timeout ({visibility} s)",
            loads,
        )
    )
    finish_section(report, rss, sent.events, failures, invocations, note)
    report.notes.append(
        f"The stack ran with function_timeout_seconds={settings.kill_function_timeout} (default 30), so the "
        f"snapshot and trim queues' visibility timeout is {visibility} s instead of 180 s: the messages of a "
        "batch whose worker was killed are redelivered after that long, as on AWS, and quiescence waits for "
        "them."
    )
