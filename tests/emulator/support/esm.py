"""Helpers for the event source mapping engine's tests (no tests here).

The engine runs in-process against moto's backends (no HTTP endpoint, no Lambda runtime): a
`ScriptedFunction` stands in for the Lambda API's Invoker, records every payload and answers what the
test scripts. Waits are conditions with deadlines; a failed wait prints the calls it saw.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esjoin.emulator.config import EmulatorConfig
from esjoin.emulator.event_source_mapping.engine import EventSourceMappingEngine
from esjoin.emulator.event_source_mapping.mapping import EventSourceMapping
from esjoin.emulator.invocation import UNHANDLED, InvocationOrigin, InvocationResult
from esjoin.emulator.moto_layer.moto_backends import MotoBackends
from esjoin.emulator.moto_layer.notifier import ChangeNotifier

REGION = "us-east-1"
ACCOUNT = "000000000000"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:esm-test"
WAIT_SECONDS = 10.0


# -- moto ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def shared_moto() -> MotoBackends:
    """One MotoBackends for the test session (moto's backends are process-wide anyway)."""
    return MotoBackends(EmulatorConfig(state_dir=Path("/nonexistent")), ChangeNotifier())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# What the tests created in the process-wide moto backends, removed by EngineHarness.close() so other
# tests in the session do not see it.
_created: list[tuple[str, str]] = []


def delete_created(moto: MotoBackends) -> None:
    with moto.lock():
        while _created:
            kind, name = _created.pop()
            try:
                if kind == "stream":
                    moto.kinesis(REGION).delete_stream(None, name)
                elif kind == "table":
                    moto.dynamodb(REGION).delete_table(name)
                else:
                    moto.sqs(REGION).delete_queue(name)
            except Exception:  # deleted by the test itself
                pass


def create_stream(moto: MotoBackends, shards: int = 1) -> str:
    name = unique("esm-stream")
    with moto.lock():
        arn = moto.kinesis(REGION).create_stream(name, shards).arn
    _created.append(("stream", name))
    return arn


def put_record(moto: MotoBackends, stream_arn: str, partition_key: str, data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    with moto.lock():
        sequence_number, _ = moto.kinesis(REGION).put_record(
            stream_arn, None, partition_key, None, base64.b64encode(raw).decode()
        )
    return str(sequence_number)


def kinesis_shards(moto: MotoBackends, stream_arn: str) -> dict[str, Any]:
    with moto.lock():
        stream = moto.kinesis(REGION).describe_stream(stream_arn=stream_arn, stream_name=None)
        return dict(stream.shards)


def create_table(moto: MotoBackends, range_key: bool = False, view: str = "NEW_AND_OLD_IMAGES") -> tuple[str, str]:
    """A table with a stream; returns (table name, stream ARN)."""
    from esjoin.emulator.moto_layer.fixes import table_stream_arn

    name = unique("esm-table")
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "sk", "AttributeType": "N"})
    with moto.lock():
        table = moto.dynamodb(REGION).create_table(
            name,
            schema=schema,
            throughput=None,
            attr=attributes,
            global_indexes=None,
            indexes=None,
            streams={"StreamEnabled": True, "StreamViewType": view},
            billing_mode="PAY_PER_REQUEST",
            sse_specification=None,
            tags=[],
            deletion_protection_enabled=False,
            warm_throughput=None,
        )
        stream_arn = table_stream_arn(table)
    _created.append(("table", name))
    return name, stream_arn


def put_item(moto: MotoBackends, table: str, item: dict[str, Any]) -> None:
    with moto.lock():
        moto.dynamodb(REGION).put_item(table, item)


def delete_item(moto: MotoBackends, table: str, key: dict[str, Any]) -> None:
    with moto.lock():
        moto.dynamodb(REGION).delete_item(table, key)


def create_queue(moto: MotoBackends, fifo: bool = False, **attributes: Any) -> str:
    name = unique("esm-queue") + (".fifo" if fifo else "")
    if fifo:
        attributes.setdefault("FifoQueue", "true")
        attributes.setdefault("ContentBasedDeduplication", "true")
    with moto.lock():
        arn = moto.sqs(REGION).create_queue(name, **attributes).queue_arn
    _created.append(("queue", name))
    return arn


def queue_name(queue_arn: str) -> str:
    return queue_arn.split(":")[5]


def send_message(moto: MotoBackends, queue_arn: str, body: str, **kwargs: Any) -> str:
    with moto.lock():
        return moto.sqs(REGION).send_message(queue_name(queue_arn), body, **kwargs).id


def queue_messages(moto: MotoBackends, queue_arn: str) -> list[Any]:
    """Every message the queue holds (visible or not), oldest first."""
    with moto.lock():
        return list(moto.sqs(REGION).get_queue(queue_name(queue_arn))._messages)


def mapping(source_arn: str, **params: Any) -> EventSourceMapping:
    """An EventSourceMapping as CreateEventSourceMapping would make it (AWS's defaults, validated)."""
    if ":sqs:" not in source_arn:
        params.setdefault("StartingPosition", "TRIM_HORIZON")
    return EventSourceMapping.create(
        {"EventSourceArn": source_arn, "FunctionName": "esm-test", **params}, FUNCTION_ARN, REGION, ACCOUNT
    )


def updated(original: EventSourceMapping, **changes: Any) -> EventSourceMapping:
    """A copy of `original` with some fields changed, for engine.update()."""
    return dataclasses.replace(original.copy(), **changes)


# -- the fake function ---------------------------------------------------------------------------


def ok(payload: Any = None) -> InvocationResult:
    return InvocationResult(request_id=str(uuid.uuid4()), payload=json.dumps(payload).encode())


def fail(message: str = "boom") -> InvocationResult:
    document = {"errorMessage": message, "errorType": "Exception", "stackTrace": []}
    return InvocationResult(
        request_id=str(uuid.uuid4()), payload=json.dumps(document).encode(), function_error=UNHANDLED
    )


def item_failures(identifiers: Iterable[Any]) -> InvocationResult:
    return ok({"batchItemFailures": [{"itemIdentifier": identifier} for identifier in identifiers]})


def record_id(record: dict[str, Any]) -> str:
    """A record's itemIdentifier: the sequence number (streams) or the message id (SQS)."""
    if "kinesis" in record:
        return record["kinesis"]["sequenceNumber"]
    if "dynamodb" in record:
        return record["dynamodb"]["SequenceNumber"]
    return record["messageId"]


def record_data(record: dict[str, Any]) -> Any:
    """What the producer wrote: the Kinesis data (JSON), the SQS body, or the DynamoDB NewImage."""
    if "kinesis" in record:
        return json.loads(base64.b64decode(record["kinesis"]["data"]))
    if "dynamodb" in record:
        return record["dynamodb"].get("NewImage")
    return record["body"]


@dataclass
class Call:
    index: int
    function_arn: str
    payload: bytes
    origin: InvocationOrigin
    started: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.payload)

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.event["Records"]

    @property
    def ids(self) -> list[str]:
        return [record_id(record) for record in self.records]

    @property
    def data(self) -> list[Any]:
        return [record_data(record) for record in self.records]

    def __repr__(self) -> str:
        return f"Call#{self.index}(attempt={self.origin.attempt}, duplicate={self.origin.duplicate}, data={self.data})"


class ScriptedFunction:
    """The Invoker the engine calls: records each call and answers with `respond(call)` (default: ok)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.respond: Callable[[Call], InvocationResult] = lambda call: ok()
        self.in_flight = 0
        self.max_in_flight = 0
        self._condition = threading.Condition()

    def __call__(self, function_arn: str, payload: bytes, origin: InvocationOrigin) -> InvocationResult:
        with self._condition:
            call = Call(len(self.calls), function_arn, payload, origin, time.monotonic())
            self.calls.append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._condition.notify_all()
        try:
            return self.respond(call)
        finally:
            with self._condition:
                self.in_flight -= 1
                self._condition.notify_all()

    def wait_for(self, predicate: Callable[[list[Call]], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self.calls):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    history = "\n  ".join(repr(call) for call in self.calls) or "(none)"
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; calls:\n  {history}")
                self._condition.wait(remaining)

    def wait_for_calls(self, count: int, timeout: float = WAIT_SECONDS) -> list[Call]:
        self.wait_for(lambda calls: len(calls) >= count, f"{count} calls", timeout)
        return list(self.calls)

    def wait_in_flight(self, count: int, timeout: float = WAIT_SECONDS) -> None:
        self.wait_for(lambda calls: self.in_flight >= count, f"{count} invocations in flight", timeout)

    def delivered(self, duplicates: bool = False) -> list[Any]:
        """The data of every record delivered, in call order (first deliveries only by default)."""
        with self._condition:
            calls = list(self.calls)
        return [item for call in calls if duplicates or not call.origin.duplicate for item in call.data]


class Gate:
    """Holds invocations until opened (to observe what is in flight)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self) -> None:
        if not self._event.wait(WAIT_SECONDS):
            raise AssertionError("gate never opened")

    def open(self) -> None:
        self._event.set()


def wait_until(
    predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS, history: Callable[[], Any] | None = None
) -> None:
    """Poll `predicate` (a cheap question to the engine or moto) until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}" + (f"; history: {history()}" if history else "")
            )
        pause.wait(0.005)


# -- the engine under test -----------------------------------------------------------------------


class EngineHarness:
    """An engine on the shared moto, a ScriptedFunction, and the on_change reports it made."""

    def __init__(self, state_dir: Path, timing: str = "fast") -> None:
        self.moto = shared_moto()
        self.config = EmulatorConfig(state_dir=state_dir, timing=timing)
        self.function = ScriptedFunction()
        self.changes: list[tuple[str, dict[str, Any]]] = []
        self._changes_lock = threading.Lock()
        self.engines: list[EventSourceMappingEngine] = []
        self.engine = self.new_engine()

    def new_engine(self) -> EventSourceMappingEngine:
        engine = EventSourceMappingEngine(self.config, self.moto, self.function, self._on_change)
        self.engines.append(engine)
        return engine

    def _on_change(self, uuid_: str, changes: dict[str, Any]) -> None:
        with self._changes_lock:
            self.changes.append((uuid_, dict(changes)))

    def reported(self, uuid_: str, key: str) -> list[Any]:
        with self._changes_lock:
            return [changes[key] for u, changes in self.changes if u == uuid_ and key in changes]

    def wait_reported(self, uuid_: str, key: str, value: Any) -> None:
        wait_until(
            lambda: value in self.reported(uuid_, key),
            f"{key} = {value!r} for {uuid_}",
            history=lambda: self.reported(uuid_, key),
        )

    def start(self, source_arn: str, **params: Any) -> EventSourceMapping:
        created = mapping(source_arn, **params)
        self.engine.start(created)
        return created

    def wait_idle(self, uuid_: str | None = None, timeout: float = WAIT_SECONDS) -> None:
        wait_until(
            lambda: self.engine.is_idle(uuid_),
            f"mapping {uuid_ or '(all)'} idle",
            timeout,
            history=lambda: (self.function.calls, uuid_ and self.engine.status(uuid_)),
        )

    def close(self) -> None:
        for engine in self.engines:
            engine.shutdown()
        delete_created(self.moto)
