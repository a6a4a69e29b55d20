"""Part `emulator` (issue 2): the embedded endpoint alone, with probe functions instead of the application.

1. Start to ready: spawn `python -m esjoin.emulator`, poll /_esjoin/health every 5 ms until 200; median of 5.
2. Per-call latency through the endpoint vs moto's own ThreadedMotoServer: DynamoDB PutItem and
   GetItem, Kinesis PutRecord, SQS SendMessage, one warm boto3 client per server, calls one at a
   time; rounds alternate between the two servers so a change in machine load hits both alike.
   Overhead = (endpoint median - moto median) / moto median.
3. Two hops: put_record -> hop1 -> put_item -> table stream -> hop2 -> put_item, records sent at a
   steady rate one at a time; latency from just before put_record to hop2's own timestamp.
4. Records/s through a Kinesis mapping (BatchSize 100) into a function that only counts: records
   pushed with PutRecords (500 a call) while the mapping consumes them, until the history shows
   every record delivered; and the drain of a pre-filled stream (mapping enabled after the push).
Targets (2-core machine): ready < 1.5 s; overhead < 10 % at the median; two-hop p50 < 40 ms and
p99 < 150 ms; >= 500 records/s.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.endpoints import REPO_ROOT, EmbeddedEndpoint, RawMotoServer, client
from bench.probes import COUNTER, HOP1, HOP2, ProbeResources, count_items, scan_items, wait_for
from bench.report import Measurement, PartReport, load_average, markdown_table, paced, spread, summary_ms
from esjoin.testing.control_client import ControlClient
from esjoin.testing.pipeline import PUT_RECORDS_LIMIT

READY_TARGET_SECONDS = 1.5
OVERHEAD_TARGET_PERCENT = 10.0
TWO_HOP_P50_TARGET_MS = 40.0
TWO_HOP_P99_TARGET_MS = 150.0
THROUGHPUT_TARGET = 500.0


@dataclass(frozen=True)
class Settings:
    startup_runs: int = 5
    call_rounds: int = 4
    calls_per_round: int = 250  # per operation and server: 1,000 calls each in all
    warmup_calls: int = 50
    two_hop_records: int = 1000
    two_hop_rate: float = 50.0  # records per second, one put_record at a time
    throughput_records: int = 20000
    throughput_runs: int = 2
    throughput_shards: int = 1

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            startup_runs=3,
            call_rounds=2,
            calls_per_round=100,
            warmup_calls=20,
            two_hop_records=200,
            throughput_records=5000,
            throughput_runs=1,
        )


def run(quick: bool = False, sections: tuple[str, ...] = ("startup", "calls", "two_hop", "throughput")) -> PartReport:
    settings = Settings.quick() if quick else Settings()
    report = PartReport("emulator", "Embedded endpoint (issue 2)", quick)
    report.data["settings"] = settings.__dict__
    if "startup" in sections:
        measure_startup(report, settings)
    if "calls" in sections:
        measure_calls(report, settings)
    if "two_hop" in sections:
        measure_two_hops(report, settings)
    if "throughput" in sections:
        measure_throughput(report, settings)
    report.notes += [
        "Endpoints: `python -m esjoin.emulator` (fresh state directory) and moto's ThreadedMotoServer, each in a "
        "process of its own on a free port; clients are boto3 in the benchmark's process.",
        "moto's own server answers every request with Connection: close (werkzeug's development "
        "server); ours keeps connections alive, which is part of the difference measured.",
        f"Two hops: records sent one put_record at a time at {settings.two_hop_rate:g}/s to a one-shard "
        "stream, BatchSize 100 on both mappings, MaximumBatchingWindowInSeconds 0.",
    ]
    return report


# -- 1. start to ready -----------------------------------------------------------------------------


def measure_startup(report: PartReport, settings: Settings) -> None:
    """Two ways Python may run: as this machine is configured (PYTHONDONTWRITEBYTECODE=1 here, and in
    the Dockerfile: the endpoint's own modules are compiled at every start), and with bytecode
    cached (Python's default; a private PYTHONPYCACHEPREFIX, warmed by one start, so the work tree is
    left alone). Each start also times the first AWS call after ready (what warming up in the
    background could have moved there)."""
    cache_dir = tempfile.mkdtemp(prefix="esjoin-bench-pycache-")
    variants = {
        "as configured": {},
        "bytecode cached": {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": cache_dir},
    }
    configured = os.environ.get("PYTHONDONTWRITEBYTECODE") or "unset"
    report.data["startup"] = {
        "PYTHONDONTWRITEBYTECODE": configured,
        "emulatorBytecodeInTree": any(REPO_ROOT.glob("emulator/**/__pycache__")),
    }
    try:
        for variant, env in variants.items():
            if variant == "bytecode cached":
                EmbeddedEndpoint(extra_env=env).start().stop()  # fills the cache
            load_before = load_average()
            ready, first_call = [], []
            for _ in range(settings.startup_runs):
                endpoint = EmbeddedEndpoint(extra_env=env)
                dynamodb = client(endpoint.url, "dynamodb")
                endpoint.start()
                began = time.perf_counter()
                dynamodb.list_tables()
                first_call.append((time.perf_counter() - began) * 1000)
                ready.append(endpoint.ready_seconds or 0.0)
                endpoint.stop()
            median = statistics.median(ready)
            report.data["startup"][variant] = {
                "readySeconds": [round(t, 3) for t in ready],
                "spread": spread(ready),
                "firstCallMs": [round(t, 1) for t in first_call],
            }
            name = "start to ready (`python -m esjoin.emulator`, health 200)" + (
                f", PYTHONDONTWRITEBYTECODE={configured}" if variant == "as configured" else ", bytecode cached"
            )
            report.add(
                Measurement(
                    name,
                    median,
                    "s",
                    f"< {READY_TARGET_SECONDS} s",
                    median < READY_TARGET_SECONDS,
                    f"median of {len(ready)}; runs {', '.join(f'{t:.2f}' for t in ready)}; first "
                    f"call after ready {statistics.median(first_call):.0f} ms (median)",
                    (load_before, load_average()),
                )
            )
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


# -- 2. per-call latency vs raw moto ------------------------------------------------------------------


Operation = Callable[[int], Any]


def _operations(clients: Callable[[str], Any], run: str) -> dict[str, Operation]:
    """The calls compared, on one server: each resource created first."""
    resources = ProbeResources(clients, run)
    table, _ = resources.table("calls")
    resources.stream("calls")
    stream = resources.name("calls")
    queue_url = resources.queue("calls")
    dynamodb, kinesis, sqs = clients("dynamodb"), clients("kinesis"), clients("sqs")
    payload = "x" * 100

    def item(i: int) -> dict[str, Any]:
        return {"pk": {"S": f"key-{i % 500}"}, "n": {"N": str(i)}, "body": {"S": payload}}

    return {
        "DynamoDB PutItem": lambda i: dynamodb.put_item(TableName=table, Item=item(i)),
        "DynamoDB GetItem": lambda i: dynamodb.get_item(TableName=table, Key={"pk": {"S": f"key-{i % 500}"}}),
        "Kinesis PutRecord": lambda i: kinesis.put_record(
            StreamName=stream, Data=payload.encode(), PartitionKey=f"key-{i}"
        ),
        "SQS SendMessage": lambda i: sqs.send_message(QueueUrl=queue_url, MessageBody=payload),
    }


def _time_calls(operation: Operation, start: int, count: int) -> list[float]:
    samples = []
    for i in range(start, start + count):
        began = time.perf_counter()
        operation(i)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def measure_calls(report: PartReport, settings: Settings) -> None:
    load_before = load_average()
    with EmbeddedEndpoint() as ours, RawMotoServer() as moto:
        servers = {"endpoint": _operations(ours.client, "ours"), "moto": _operations(moto.client, "moto")}
        for operations in servers.values():
            for operation in operations.values():
                _time_calls(operation, 0, settings.warmup_calls)
        samples: dict[str, dict[str, list[float]]] = {s: {op: [] for op in servers[s]} for s in servers}
        round_medians: dict[str, dict[str, list[float]]] = {s: {op: [] for op in servers[s]} for s in servers}
        for round_ in range(settings.call_rounds):
            order = ["endpoint", "moto"] if round_ % 2 == 0 else ["moto", "endpoint"]
            for server in order:
                for name, operation in servers[server].items():
                    taken = _time_calls(
                        operation, settings.warmup_calls + round_ * settings.calls_per_round, settings.calls_per_round
                    )
                    samples[server][name].extend(taken)
                    round_medians[server][name].append(statistics.median(taken))
    load_after = load_average()
    rows, data = [], {}
    for name in samples["endpoint"]:
        ours_summary, moto_summary = summary_ms(samples["endpoint"][name]), summary_ms(samples["moto"][name])
        overhead = 100 * (ours_summary["p50"] - moto_summary["p50"]) / moto_summary["p50"]
        per_round = [
            100 * (o - m) / m for o, m in zip(round_medians["endpoint"][name], round_medians["moto"][name], strict=True)
        ]
        data[name] = {
            "endpoint": ours_summary,
            "moto": moto_summary,
            "overheadPercentAtMedian": round(overhead, 2),
            "overheadPercentPerRound": [round(v, 2) for v in per_round],
            "endpointRoundMediansMs": [round(v, 3) for v in round_medians["endpoint"][name]],
            "motoRoundMediansMs": [round(v, 3) for v in round_medians["moto"][name]],
        }
        rows.append(
            [
                name,
                f"{ours_summary['p50']:.2f}",
                f"{ours_summary['p99']:.2f}",
                f"{moto_summary['p50']:.2f}",
                f"{moto_summary['p99']:.2f}",
                f"{overhead:+.1f} %",
                f"{min(per_round):+.1f} .. {max(per_round):+.1f} %",
            ]
        )
        report.add(
            Measurement(
                f"gateway overhead at the median: {name}",
                overhead,
                "%",
                f"< {OVERHEAD_TARGET_PERCENT:.0f} %",
                overhead < OVERHEAD_TARGET_PERCENT,
                f"endpoint {ours_summary['p50']:.2f} ms vs moto {moto_summary['p50']:.2f} ms, "
                f"n={ours_summary['n']} each; per round {min(per_round):+.1f}..{max(per_round):+.1f} %",
                (load_before, load_after),
            )
        )
    report.data["calls"] = data
    report.extra_tables.append(
        "Per-call latency, ms (boto3 client, one call at a time, warm connection):\n\n"
        + markdown_table(
            ["call", "endpoint p50", "endpoint p99", "moto p50", "moto p99", "overhead at p50", "overhead per round"],
            rows,
        )
    )


# -- 3. two hops ---------------------------------------------------------------------------------------


def measure_two_hops(report: PartReport, settings: Settings) -> None:
    with EmbeddedEndpoint() as endpoint:
        resources = ProbeResources(endpoint.client)
        stream_arn = resources.stream("in")
        hop_table, hop_stream = resources.table("hop", stream=True)
        out_table, _ = resources.table("out")
        hop1 = resources.function("hop1", HOP1, {"HOP_TABLE": hop_table})
        hop2 = resources.function("hop2", HOP2, {"OUT_TABLE": out_table})
        resources.mapping(hop1, stream_arn, batch_size=100)
        resources.mapping(hop2, hop_stream, batch_size=100)
        kinesis, dynamodb = endpoint.client("kinesis"), endpoint.client("dynamodb")
        stream_name = resources.name("in")

        def put(record_id: str) -> None:
            document = {"id": record_id, "sent_at": time.time()}
            kinesis.put_record(StreamName=stream_name, PartitionKey=record_id, Data=json.dumps(document).encode())

        for i in range(10):  # cold starts of both functions, outside the measurement
            put(f"warm-{i}")
        wait_for("warm-up records through both hops", lambda: count_items(dynamodb, out_table) >= 10, 60, 0.1)

        load_before = load_average()
        started = time.perf_counter()
        for i in paced(settings.two_hop_records, settings.two_hop_rate, started):
            put(f"r{i:05d}")
        sent_seconds = time.perf_counter() - started
        total = settings.two_hop_records + 10
        wait_for(
            f"{settings.two_hop_records} records through both hops",
            lambda: count_items(dynamodb, out_table) >= total,
            120,
            0.25,
        )
        load_after = load_average()
        rows = [item for item in scan_items(dynamodb, out_table) if item["pk"]["S"].startswith("r")]
        status = ControlClient(endpoint.url).history(function=hop1, limit=2000)["invocations"]
    two_hops = [1000 * (float(r["written_at"]["N"]) - float(r["sent_at"]["N"])) for r in rows]
    one_hop = [1000 * (float(r["hop1_at"]["N"]) - float(r["sent_at"]["N"])) for r in rows]
    batch_sizes = [len(r["batchIds"]) for r in status if r["outcome"] == "success"]
    two, one = summary_ms(two_hops), summary_ms(one_hop)
    detail = (
        f"n={two['n']} at {settings.two_hop_rate:.0f} records/s (sent in {sent_seconds:.1f} s); "
        f"p90 {two['p90']:.1f}, max {two['max']:.0f} ms; first hop p50 {one['p50']:.1f} / "
        f"p99 {one['p99']:.1f} ms"
    )
    load = (load_before, load_after)
    report.add(
        Measurement(
            "two-hop latency p50",
            two["p50"],
            "ms",
            f"< {TWO_HOP_P50_TARGET_MS:.0f} ms",
            two["p50"] < TWO_HOP_P50_TARGET_MS,
            detail,
            load,
        )
    )
    report.add(
        Measurement(
            "two-hop latency p99",
            two["p99"],
            "ms",
            f"< {TWO_HOP_P99_TARGET_MS:.0f} ms",
            two["p99"] < TWO_HOP_P99_TARGET_MS,
            "",
            load,
        )
    )
    report.data["twoHops"] = {
        "twoHopsMs": two,
        "firstHopMs": one,
        "sentSeconds": round(sent_seconds, 2),
        "hop1BatchSizes": {
            "mean": round(statistics.fmean(batch_sizes), 2) if batch_sizes else 0,
            "max": max(batch_sizes, default=0),
        },
        "perRecordMs": [round(v, 1) for v in two_hops],
    }


# -- 4. records per second -----------------------------------------------------------------------------


class DeliveredCounter:
    """Records a function received successfully, from the control API's history (read incrementally)."""

    def __init__(self, control: ControlClient, function: str) -> None:
        self.control, self.function = control, function
        self.since, self.records, self.invocations = 0, 0, 0

    def poll(self) -> int:
        page = self.control.history(function=self.function, since=self.since)
        for record in page["invocations"]:
            self.since = max(self.since, record["id"])
            if record["outcome"] == "success" and not record["duplicate"]:
                self.records += len(record["batchIds"])
                self.invocations += 1
        return self.records


def _delivered_at_least(counter: DeliveredCounter, records: int) -> bool:
    return counter.poll() >= records


def _push(kinesis: Any, stream: str, count: int, prefix: str) -> None:
    data = b"x" * 100
    for start in range(0, count, PUT_RECORDS_LIMIT):
        records = [
            {"Data": data, "PartitionKey": f"{prefix}-{i}"} for i in range(start, min(count, start + PUT_RECORDS_LIMIT))
        ]
        response = kinesis.put_records(StreamName=stream, Records=records)
        if response.get("FailedRecordCount"):
            raise RuntimeError(f"PutRecords failed for {response['FailedRecordCount']} records")


def measure_throughput(report: PartReport, settings: Settings) -> None:
    results: list[dict[str, Any]] = []
    with EmbeddedEndpoint() as endpoint:
        resources = ProbeResources(endpoint.client)
        kinesis, lambda_ = endpoint.client("kinesis"), endpoint.client("lambda")
        control = ControlClient(endpoint.url)
        counter = resources.function("counter", COUNTER)
        for run_ in range(settings.throughput_runs):
            for mode in ("push while consuming", "drain a pre-filled stream"):
                live = mode.startswith("push")
                suffix = f"tp{run_}-{'live' if live else 'drain'}"
                stream_arn = resources.stream(suffix, settings.throughput_shards)
                stream = resources.name(suffix)
                delivered = DeliveredCounter(control, counter)
                delivered.poll()
                baseline = delivered.records
                mapping = resources.mapping(counter, stream_arn, batch_size=100, enabled=live)
                load_before = load_average()
                started = time.perf_counter()
                _push(kinesis, stream, settings.throughput_records, suffix)
                pushed = time.perf_counter() - started
                if not live:
                    started = time.perf_counter()
                    lambda_.update_event_source_mapping(UUID=mapping, Enabled=True)
                wait_for(
                    f"{settings.throughput_records} records delivered",
                    functools.partial(_delivered_at_least, delivered, baseline + settings.throughput_records),
                    300,
                    0.1,
                )
                elapsed = time.perf_counter() - started
                lambda_.delete_event_source_mapping(UUID=mapping)
                results.append(
                    {
                        "mode": mode,
                        "run": run_ + 1,
                        "records": settings.throughput_records,
                        "seconds": round(elapsed, 3),
                        "pushSeconds": round(pushed, 3),
                        "recordsPerSecond": round(settings.throughput_records / elapsed, 1),
                        "invocations": delivered.invocations,
                        "load": (load_before, load_average()),
                    }
                )
    report.data["throughput"] = results
    for mode in ("push while consuming", "drain a pre-filled stream"):
        runs = [r for r in results if r["mode"] == mode]
        rates = [r["recordsPerSecond"] for r in runs]
        best = statistics.median(rates)
        report.add(
            Measurement(
                f"records/s through a Kinesis mapping, BatchSize 100 ({mode})",
                best,
                "rec/s",
                f">= {THROUGHPUT_TARGET:.0f}/s",
                best >= THROUGHPUT_TARGET,
                f"{settings.throughput_records:,} records, {settings.throughput_shards} shard; runs "
                + ", ".join(
                    f"{r['recordsPerSecond']:.0f}/s ({r['seconds']:.1f} s, push {r['pushSeconds']:.1f} s)" for r in runs
                ),
                (runs[0]["load"][0], runs[-1]["load"][1]),
            )
        )
