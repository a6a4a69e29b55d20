"""Deterministic mode, end to end (docs/reproduce.md): endpoints started as `python -m esjoin.emulator`
with a seed (the way users run them), driven by scripted inputs or live, then replayed.

A busy stack of two functions: `fan` reads a 2-shard Kinesis stream and, for each record, writes an
item and sends an SQS message delayed 60 s; `sink` reads that queue and writes an item too. Both write
what their handler saw of the clock, uuid4 and random, so the tests see that workers follow the seed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from esjoin.cli import app
from esjoin.emulator.aids.trace import first_difference, parse_trace, read_trace
from esjoin.testing.backends import Backend, free_port, own_embedded
from esjoin.testing.capture import Bundle, feed_scripted
from esjoin.testing.control_client import ControlApiError, ControlClient
from esjoin.testing.explore import wait_settled
from esjoin.testing.reproduce import Script, replay_trace

CLOCK = 1_800_000_000_000
FORGED = ("X-Esjoin-Actor", "delivery:1")  # an actor's name, from a client that is not that actor
ROLE = "arn:aws:iam::000000000000:role/lambda-role"
HANDLER = """
import os, random, time, uuid
import boto3

dynamodb = boto3.client("dynamodb")
sqs = boto3.client("sqs")

def handler(event, context):
    for record in event["Records"]:
        key = record.get("kinesis", {}).get("sequenceNumber") or record["messageId"]
        dynamodb.put_item(TableName=os.environ["TABLE"], Item={
            "pk": {"S": key}, "fn": {"S": context.function_name}, "clock": {"N": str(int(time.time() * 1000))},
            "uuid": {"S": str(uuid.uuid4())}, "random": {"N": repr(random.random())}})
        if "kinesis" in record:
            sqs.send_message(QueueUrl=os.environ["QUEUE"], MessageBody=key, DelaySeconds=60)
    return {}

def slow_handler(event, context):
    started = time.monotonic()
    while time.monotonic() < started + 1.5:  # a CPU-bound handler: real time passes, virtual time does not
        pass
    return handler(event, context)
"""


def code_zip(source: str = HANDLER) -> bytes:
    """A function's zip, the same bytes every time (fixed entry dates)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("app.py", date_time=(2026, 1, 1, 0, 0, 0)), source)
    return buffer.getvalue()


def deterministic_backend(
    directory: Path, seed: int, pace: str = "virtual", args: list[str] | None = None, clock: int = CLOCK
) -> Backend:
    environment = {"ESJOIN_SEED": str(seed), "ESJOIN_PACE": pace, "ESJOIN_CLOCK_START_MS": str(clock)}
    return own_embedded(directory, extra_env=environment, args=args, control_timeout=60)


def build_busy_stack(clients: Any, records: int = 12) -> None:
    """The stack and its inputs, through `clients(service)` (a Script's, or live boto3 clients)."""
    kinesis, sqs, dynamodb, lambda_ = (clients(s) for s in ("kinesis", "sqs", "dynamodb", "lambda"))
    kinesis.create_stream(StreamName="busy", ShardCount=2)
    queue = "http://localhost:4566/000000000000/delayed"
    sqs.create_queue(QueueName="delayed")
    if "seen" not in dynamodb.list_tables().get("TableNames", ["scripted"]):
        dynamodb.create_table(
            TableName="seen",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    for name in ("fan", "sink"):
        lambda_.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": code_zip()},
            Environment={"Variables": {"TABLE": "seen", "QUEUE": queue}},
        )
    lambda_.create_event_source_mapping(
        FunctionName="fan",
        EventSourceArn="arn:aws:kinesis:us-east-1:000000000000:stream/busy",
        StartingPosition="TRIM_HORIZON",
        BatchSize=3,
    )
    lambda_.create_event_source_mapping(
        FunctionName="sink", EventSourceArn="arn:aws:sqs:us-east-1:000000000000:delayed", BatchSize=2
    )
    for index in range(records):
        kinesis.put_record(StreamName="busy", Data=f"record {index}".encode(), PartitionKey=f"key-{index % 5}")


def invoke_slow_function(backend: Backend) -> None:
    backend.client("dynamodb").create_table(
        TableName="seen",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    lambda_ = backend.client("lambda")
    lambda_.create_function(
        FunctionName="slow",
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.slow_handler",
        Code={"ZipFile": code_zip()},
        Environment={"Variables": {"TABLE": "seen", "QUEUE": "unused"}},
    )
    answer = lambda_.invoke(FunctionName="slow", Payload=json.dumps({"Records": [{"messageId": "direct"}]}))
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer, answer["Payload"].read()


def items(backend: Backend) -> list[dict[str, Any]]:
    return backend.client("dynamodb").scan(TableName="seen", ConsistentRead=True)["Items"]


def scripted_run(directory: Path, seed: int) -> tuple[bytes, list[dict[str, Any]], float]:
    """The busy stack as scripted inputs under `seed`: the trace, the items written, the wall time."""
    backend = deterministic_backend(directory, seed)
    try:
        script = Script(backend)
        build_busy_stack(script.client)
        started = time.monotonic()
        backend.control.submit_inputs(script.requests, script.blobs)
        wait_settled(backend)
        elapsed = time.monotonic() - started
        trace = backend.control.trace()
        return trace, items(backend), elapsed
    finally:
        backend.stop()


def test_the_same_seed_gives_the_same_trace_byte_for_byte_and_another_seed_another(tmp_path):
    first, seen, elapsed = scripted_run(tmp_path / "first", 11)
    second, _, _ = scripted_run(tmp_path / "second", 11)
    other, _, _ = scripted_run(tmp_path / "other", 12)
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest(), first_difference(
        parse_trace(first), parse_trace(second)
    )
    assert hashlib.sha256(other).hexdigest() != hashlib.sha256(first).hexdigest()
    trace = parse_trace(first)
    granted = {e["grant"].split(":")[0] for e in trace.entries if "grant" in e}
    assert {"ext", "esm", "delivery"} <= granted, granted
    deliveries = [e["delivery"] for e in trace.entries if "delivery" in e]
    assert sum(len(d["records"]) for d in deliveries if d["function"] == "fan") == 12
    # Then every record went through both functions, though each waited 60 s of virtual time
    assert len(seen) == 24, f"expected 12 items from fan and 12 from sink, saw {len(seen)}"
    assert elapsed < 30, f"60 s delays cost {elapsed:.1f} s of real time: time is not virtual"
    sink_clocks = [int(i["clock"]["N"]) for i in seen if i["fn"]["S"] == "sink"]
    fan_clocks = [int(i["clock"]["N"]) for i in seen if i["fn"]["S"] == "fan"]
    assert min(sink_clocks) >= min(fan_clocks) + 60_000, "a handler did not see the virtual clock"
    assert max(fan_clocks) < CLOCK + 60_000, "the clock ran on while nothing was due"


def test_workers_draw_uuid4_and_random_from_the_seed(tmp_path):
    _, first, _ = scripted_run(tmp_path / "first", 21)
    _, second, _ = scripted_run(tmp_path / "second", 21)

    def drawn(rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
        return {row["pk"]["S"]: (row["uuid"]["S"], row["random"]["N"]) for row in rows if row["fn"]["S"] == "fan"}

    assert drawn(first) == drawn(second)
    assert len({uuid for uuid, _ in drawn(first).values()}) == 12


def test_a_run_driven_live_replays_exactly_and_reports_a_changed_run(tmp_path):
    # an hour behind the wall clock: the live endpoint's clock catches up while outside requests wait
    backend = deterministic_backend(tmp_path / "live", 31, pace="wall", clock=int(time.time() * 1000) - 3_600_000)
    try:
        # a slow function invoked directly: its call is a step of the outside request's actor, taken once
        # the clock has caught up with the wall clock again (the handler spent 1.5 s of real time)
        invoke_slow_function(backend)
        build_busy_stack(backend.client, records=6)
        wait_settled(backend)
        assert len(items(backend)) == 12 + 1
        recorded = tmp_path / "live.trace.jsonl.gz"
        recorded.write_bytes(backend.control.trace())
    finally:
        backend.stop()
    trace = read_trace(recorded)
    assert [e for e in trace.entries if "advance" in e], "the live clock never caught up with the wall clock"
    result = replay_trace(recorded, report=False)
    assert result.divergence is None, result.divergence
    assert result.difference is None, result.difference
    assert result.replayed.last_step >= trace.last_step

    # A replay up to a step stops there: the deliveries after it do not happen
    until = next(e["step"] for e in trace.entries if "delivery" in e) - 1
    partial = replay_trace(recorded, until=until, report=False)
    assert partial.divergence is None and partial.difference is None
    assert not [e for e in partial.replayed.entries if "delivery" in e and e["step"] <= until]


def rewrite(path: Path, target: Path, change: Any) -> Path:
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    target.write_bytes(gzip.compress(b"".join(change(lines))))
    return target


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("small")
    backend = deterministic_backend(directory, 41)
    try:
        backend.client("sqs").create_queue(QueueName="one")
        path = directory / "small.trace.jsonl.gz"
        path.write_bytes(backend.control.trace())
        return path
    finally:
        backend.stop()


def bad_traces(good: Path, directory: Path) -> dict[str, tuple[Path, str]]:
    header = json.loads(gzip.decompress(good.read_bytes()).splitlines()[0])
    raw = good.read_bytes()
    (directory / "truncated.gz").write_bytes(raw[: len(raw) // 2])
    (directory / "empty.gz").write_bytes(b"")
    (directory / "capture.gz").write_bytes(gzip.compress(b'{"format": "esjoin-capture", "version": 1}\n'))
    future = {**header, "version": 99}
    rewrite(good, directory / "future.gz", lambda lines: [json.dumps(future).encode() + b"\n", *lines[1:]])
    rewrite(good, directory / "cut.gz", lambda lines: [*lines[:-1], lines[-1][:-5]])
    blob = {"blob": "0" * 64, "data": base64.b64encode(b"not what the hash says").decode()}
    rewrite(good, directory / "blob.gz", lambda lines: [*lines, json.dumps(blob).encode() + b"\n"])
    return {
        "truncated": (directory / "truncated.gz", "truncated or not gzip"),
        "empty": (directory / "empty.gz", "empty"),
        "capture": (directory / "capture.gz", "not an esjoin trace"),
        "future": (directory / "future.gz", "version 99"),
        "cut": (directory / "cut.gz", "line"),
        "blob": (directory / "blob.gz", "does not match its content"),
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "capture", "future", "cut", "blob"])
def test_a_bad_trace_gets_a_clear_error_naming_the_file_and_starts_nothing(kind, small_trace, tmp_path):
    path, problem = bad_traces(small_trace, tmp_path)[kind]
    replay = CliRunner().invoke(app, ["replay", str(path)])
    assert replay.exit_code == 2, replay.output
    message = " ".join(replay.output.split())
    assert str(path) in message and problem in message, message
    assert "Traceback" not in message
    port = free_port()
    endpoint = subprocess.run(
        [sys.executable, "-m", "esjoin.emulator", "--replay", str(path), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"ESJOIN_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"},
    )
    assert endpoint.returncode == 2 and problem in endpoint.stderr, endpoint.stderr
    assert not (tmp_path / "state").exists(), "a bad trace left a half-started endpoint behind"


def test_the_trace_holds_each_outside_request_without_its_signature(small_trace):
    trace = read_trace(small_trace)
    request = next(e["request"] for e in trace.entries if e.get("label") == "sqs.CreateQueue")
    assert request["service"] == "sqs" and request["region"] == "us-east-1"
    text = json.dumps(request).lower()
    assert "signature" not in text and "credential" not in text and "authorization" not in text
    assert trace.header["seed"] == 41 and trace.header["clockStartMs"] == CLOCK


def test_deterministic_control_routes_refuse_bad_input(tmp_path):
    backend = deterministic_backend(tmp_path, 51)
    try:
        control = backend.control
        with pytest.raises(ControlApiError, match="400"):
            control._call("POST", "/schedule/inputs", {"requests": "nope"})
        with pytest.raises(ControlApiError, match="400"):
            control.submit_inputs([{"method": "POST", "path": "/", "body": {"$blob": "f" * 64}}])
        # a request naming an actor that is not running is served as an outside one, and recorded
        forged = backend.client("sqs")
        forged.meta.events.register("before-sign", lambda request, **_: request.headers.add_header(*FORGED))
        forged.create_queue(QueueName="forged")
        trace = parse_trace(control.trace())
        assert any(e.get("label") == "sqs.CreateQueue" and e["grant"].startswith("ext:") for e in trace.entries)
        assert control.schedule()["seed"] == 51
    finally:
        backend.stop()


def test_fast_mode_has_no_trace(endpoint, control):
    with pytest.raises(ControlApiError, match="409"):
        ControlClient(endpoint.url).trace()


FAILING_HANDLER = """
def handler(event, context):
    raise RuntimeError("always")
"""


def test_event_invocations_retry_in_virtual_time_and_more_than_the_pool_holds_run(tmp_path):
    backend = deterministic_backend(tmp_path, 61)
    try:
        script = Script(backend)
        lambda_ = script.client("lambda")
        code = {"ZipFile": code_zip(FAILING_HANDLER)}
        lambda_.create_function(FunctionName="flaky", Runtime="python3.12", Role=ROLE, Handler="app.handler", Code=code)
        for index in range(10):  # more than the 8 threads fast mode's async pool has
            lambda_.invoke(FunctionName="flaky", InvocationType="Event", Payload=json.dumps({"n": index}))
        started = time.monotonic()
        backend.control.submit_inputs(script.requests, script.blobs)
        wait_settled(backend)
        elapsed = time.monotonic() - started
        attempts = [r["attempt"] for r in backend.control.history(function="flaky")["invocations"]]
        assert sorted(attempts) == sorted([1, 2, 3] * 10), attempts
        schedule = backend.control.schedule()
        assert schedule["clockMs"] >= CLOCK + 3_000, "the retries' 1 s and 2 s did not pass on the virtual clock"
        assert elapsed < 30, f"{elapsed:.1f} s"
    finally:
        backend.stop()


def test_a_captured_bundle_fed_to_a_deterministic_endpoint_goes_in_as_scripted_inputs(tmp_path):
    bundle = Bundle(
        {
            "format": "esjoin-capture",
            "version": 1,
            "stream": "captured",
            "shards": {
                "shardId-000000000000": [
                    {
                        "sequenceNumber": str(i),
                        "partitionKey": f"k{i % 2}",
                        "data": base64.b64encode(b"r%d" % i).decode(),
                        "arrival": i,
                    }
                    for i in range(5)
                ]
            },
            "tables": {},
        }
    )
    backend = deterministic_backend(tmp_path, 71, pace="wall")
    try:
        backend.client("kinesis").create_stream(StreamName="captured", ShardCount=1)
        fed = feed_scripted(bundle, backend)
        wait_settled(backend)
        kinesis = backend.client("kinesis")
        iterator = kinesis.get_shard_iterator(
            StreamName="captured", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        data = [r["Data"] for r in kinesis.get_records(ShardIterator=iterator)["Records"]]
        assert fed["records"] == 5 and data == [b"r0", b"r1", b"r2", b"r3", b"r4"]
        labels = [e["label"] for e in parse_trace(backend.control.trace()).entries if "grant" in e]
        assert labels.count("kinesis.PutRecords") == 1, labels
    finally:
        backend.stop()


def test_after_a_code_change_the_replay_reports_where_the_run_departs_and_still_ends(tmp_path):
    """A trace replayed with changed function code: the divergence is the change (the delayed SQS sends
    the old code made, and the new code does not), and the run still goes to its end."""
    backend = deterministic_backend(tmp_path / "run", 81)
    try:
        script = Script(backend)
        build_busy_stack(script.client, records=4)
        backend.control.submit_inputs(script.requests, script.blobs)
        wait_settled(backend)
        recorded = tmp_path / "run.trace.jsonl.gz"
        recorded.write_bytes(backend.control.trace())
    finally:
        backend.stop()
    old_code = base64.b64encode(code_zip())
    new_code = base64.b64encode(code_zip(HANDLER.replace("DelaySeconds=60)", "DelaySeconds=60) if False else None")))

    def swap(lines: list[bytes]) -> list[bytes]:  # the functions' code, inline in CreateFunction's body
        return [line.replace(old_code, new_code) for line in lines]

    fixed = rewrite(recorded, tmp_path / "fixed.trace.jsonl.gz", swap)
    result = replay_trace(fixed, report=False)
    divergence = result.divergence
    assert divergence is not None, "a run with other code followed the recording to the end"
    assert divergence["expected"]["label"] == "sqs.SendMessage", divergence
    assert result.schedule["replayDone"]
