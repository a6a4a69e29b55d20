"""The console's JSON, read straight from the endpoint's own state (docs/console.md).

Everything here reads moto's backends and the Lambda service in-process, under the same locks the
pollers take, so the page costs no AWS requests and shows up in no trace. Every list is bounded:
tables and streams page (`limit`, `start`), the timeline reads the history's ring buffer from a cursor,
and values that do not fit (a 400 KB item, a binary attribute) are shown cut or as base64, never
dropped silently.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import statistics
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer

from esjoin.emulator.invocation import LambdaServiceError

if TYPE_CHECKING:
    from esjoin.emulator.server import Emulator

MAX_PAGE = 200
DEFAULT_PAGE = 50
VALUE_PREVIEW = 4096
"""Characters of one string value shown in a list; the item's own view shows it whole."""
DURATION_WINDOW_SECONDS = 60.0
FAILURE_HINTS = ("FAILURE", "DLQ", "DEAD")


class ConsoleError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def page_size(value: str | None) -> int:
    if not value:
        return DEFAULT_PAGE
    try:
        size = int(value)
    except ValueError:
        raise ConsoleError(f"limit must be a number, not {value!r}") from None
    if not 1 <= size <= MAX_PAGE:
        raise ConsoleError(f"limit must be between 1 and {MAX_PAGE}")
    return size


# -- values: DynamoDB images, Kinesis data, SQS bodies as plain JSON -----------------------------


_deserializer = TypeDeserializer()


def plain(value: Any) -> Any:
    """JSON-safe: Decimals as numbers, bytes as {"$binary": base64}, sets as sorted lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray)):
        return {"$binary": base64.b64encode(bytes(value)).decode()}
    if hasattr(value, "value") and type(value).__name__ == "Binary":
        return plain(value.value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def image(typed: dict[str, Any] | None) -> dict[str, Any] | None:
    """A DynamoDB image ({"id": {"S": "x"}}) as plain JSON ({"id": "x"})."""
    if typed is None:
        return None
    try:
        return {name: plain(_deserializer.deserialize(attr)) for name, attr in typed.items()}
    except (TypeError, ValueError, KeyError) as error:
        return {"$undecodable": str(error), "$raw": typed}


def decode_bytes(data: bytes) -> Any:
    """Kinesis data: JSON when it is, else text, else base64."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"$binary": base64.b64encode(data).decode()}
    try:
        return json.loads(text)
    except ValueError:
        return text


def decode_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def preview(value: Any) -> Any:
    if isinstance(value, str) and len(value) > VALUE_PREVIEW:
        return value[:VALUE_PREVIEW] + f"… ({len(value)} characters)"
    if isinstance(value, dict):
        return {k: preview(v) for k, v in value.items()}
    if isinstance(value, list):
        return [preview(v) for v in value]
    return value


def decode_batch(payload: bytes) -> list[dict[str, Any]]:
    """The records of an event source mapping's batch, decoded for reading."""
    try:
        event = json.loads(payload or b"null")
    except ValueError:
        return [{"raw": payload.decode("utf-8", errors="replace")}]
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        return [{"event": event}]
    decoded = []
    for record in records:
        if not isinstance(record, dict):
            continue
        if "kinesis" in record:
            kinesis = record["kinesis"]
            try:
                data = decode_bytes(base64.b64decode(kinesis.get("data") or ""))
            except ValueError:
                data = kinesis.get("data")
            decoded.append(
                {
                    "source": "kinesis",
                    "id": record.get("eventID"),
                    "partitionKey": kinesis.get("partitionKey"),
                    "sequenceNumber": kinesis.get("sequenceNumber"),
                    "data": data,
                }
            )
        elif "dynamodb" in record:
            stream = record["dynamodb"]
            decoded.append(
                {
                    "source": "dynamodb",
                    "id": record.get("eventID"),
                    "eventName": record.get("eventName"),
                    "sequenceNumber": stream.get("SequenceNumber"),
                    "keys": image(stream.get("Keys")),
                    "newImage": image(stream.get("NewImage")),
                    "oldImage": image(stream.get("OldImage")),
                }
            )
        elif "body" in record:
            decoded.append(
                {"source": "sqs", "id": record.get("messageId"), "body": decode_text(str(record.get("body")))}
            )
        else:
            decoded.append({"source": "unknown", "record": record})
    return decoded


# -- the console's views ------------------------------------------------------------------------


class ConsoleData:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    @property
    def region(self) -> str:
        return self.emulator.config.region

    # ---- pipeline ----------------------------------------------------------------------------

    def graph(self) -> dict[str, Any]:
        """Nodes (streams, tables, queues, functions, mappings) and edges, from the real resources."""
        moto, region = self.emulator.moto, self.region
        backend = self.emulator.lambda_backend
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        with moto.lock():
            for stream in list(moto.kinesis(region).streams.values()):
                nodes.append(
                    {
                        "id": stream.arn,
                        "kind": "stream",
                        "name": stream.stream_name,
                        "shards": len(stream.shards),
                        "status": stream.status,
                    }
                )
            for table in list(moto.dynamodb(region).tables.values()):
                streaming = table.latest_stream_label and (table.stream_specification or {}).get("StreamEnabled")
                nodes.append(
                    {
                        "id": table.table_arn,
                        "kind": "table",
                        "name": table.name,
                        "items": len(table),
                        "streamArn": f"{table.table_arn}/stream/{table.latest_stream_label}" if streaming else None,
                    }
                )
            queues = list(moto.sqs(region).queues.values())
            for queue in queues:
                nodes.append(
                    {
                        "id": queue.queue_arn,
                        "kind": "queue",
                        "name": queue.name,
                        "url": queue.url,
                        "visible": queue.approximate_number_of_messages,
                        "inFlight": queue.approximate_number_of_messages_not_visible,
                        "delayed": queue.approximate_number_of_messages_delayed,
                        "dlq": (queue.redrive_policy or {}).get("deadLetterTargetArn"),
                    }
                )
                if queue.redrive_policy:
                    edges.append(
                        {"from": queue.queue_arn, "to": queue.redrive_policy["deadLetterTargetArn"], "kind": "dlq"}
                    )
        by_name = {node["name"]: node["id"] for node in nodes}
        by_url = {node.get("url"): node["id"] for node in nodes if node.get("url")}
        pools = self.emulator.lambda_backend.runtime.status()
        history = self.emulator.history.query()  # one copy of the history for every figure below
        durations = durations_by_function(history)
        for function in list(backend.functions.values()):
            if function.region != region:
                continue
            pool = pools.get(function.arn, {})
            nodes.append(
                {
                    "id": function.arn,
                    "kind": "function",
                    "name": function.name,
                    "runtime": function.runtime,
                    "warm": pool.get("workers_idle", 0) + pool.get("workers_busy", 0),
                    "busy": pool.get("workers_busy", 0),
                    "invocations": pool.get("invocations", 0),
                    "errors": pool.get("errors", 0),
                    "durationP50": durations.get(function.name, {}).get("p50"),
                    "durationP99": durations.get(function.name, {}).get("p99"),
                }
            )
            for key, value in sorted(function.environment.items()):  # what the function is told to use
                target = by_url.get(value) or by_name.get(value)
                if target:
                    edges.append({"from": function.arn, "to": target, "kind": "uses", "label": key})
        for uuid in list(backend.mappings):
            try:
                status = backend.engine.status(uuid)
                mapping = backend.get_event_source_mapping(uuid)
            except LambdaServiceError:
                continue  # deleted meanwhile
            source = mapping.event_source_arn
            source_id = source.split("/stream/")[0] if ":dynamodb:" in source else source
            nodes.append(
                {
                    "id": uuid,
                    "kind": "mapping",
                    "name": f"{short_name(source_id)} → {short_name(mapping.function_arn)}",
                    "state": "Paused" if status.get("paused") else status.get("state"),
                    "paused": status.get("paused"),
                    "batchSize": mapping.batch_size,
                    "inFlight": status.get("inFlight"),
                    "lastProcessingResult": status.get("lastProcessingResult"),
                    "lag": status.get("lag"),
                    "shards": status.get("shards"),
                    "retrying": status.get("retryingBatches"),
                    "lastError": last_error(history, uuid),
                }
            )
            edges.append({"from": source_id, "to": uuid, "kind": "source"})
            edges.append({"from": uuid, "to": mapping.function_arn, "kind": "invokes"})
            if mapping.on_failure_destination:
                edges.append({"from": uuid, "to": mapping.on_failure_destination, "kind": "onFailure"})
        known = {node["id"] for node in nodes}
        edges = [edge for edge in edges if edge["from"] in known and edge["to"] in known]
        return {"region": region, "nodes": nodes, "edges": edges, "quiescence": self.emulator.quiescence()}

    # ---- timeline ----------------------------------------------------------------------------

    def invocations(self, since: int, limit: int) -> dict[str, Any]:
        history = self.emulator.history
        records = history.query(since_id=since)
        return {
            "invocations": [lane_of(r.to_api()) for r in records[:limit]],
            "lastId": history.last_id(),
            "more": len(records) > limit,
        }

    def invocation(self, record_id: int) -> dict[str, Any]:
        found = self.emulator.history.get(record_id)
        if found is None:
            raise ConsoleError(f"no invocation {record_id} in the history (it keeps the newest ones)", 404)
        record, detail = found
        response = decode_text(detail.response.decode("utf-8", errors="replace")) if detail.response else None
        return {
            "invocation": lane_of(record.to_api()),
            "records": decode_batch(detail.payload) if record.mapping else [],
            "event": None if record.mapping else decode_text(detail.payload.decode("utf-8", errors="replace")),
            "payloadTruncated": detail.truncated,
            "response": response,
            "batchItemFailures": record.batch_item_failures,
            "log": detail.log,
        }

    # ---- failures ----------------------------------------------------------------------------

    def failure_queues(self) -> dict[str, tuple[Any, str | None, str]]:
        """arn -> (queue, the source it catches failures of, why it counts as a failure queue)."""
        moto, region, backend = self.emulator.moto, self.region, self.emulator.lambda_backend
        found: dict[str, tuple[Any, str | None, str]] = {}
        with moto.lock():
            queues = {queue.queue_arn: queue for queue in moto.sqs(region).queues.values()}
        urls = {queue.url: arn for arn, queue in queues.items()}
        for arn, queue in queues.items():
            target = (queue.redrive_policy or {}).get("deadLetterTargetArn")
            if target in queues:
                found[target] = (queues[target], arn, f"dead-letter queue of {queue.name}")
        for uuid in list(backend.mappings):
            try:
                mapping = backend.get_event_source_mapping(uuid)
            except LambdaServiceError:
                continue
            if mapping.on_failure_destination in queues and mapping.on_failure_destination not in found:
                found[mapping.on_failure_destination] = (
                    queues[mapping.on_failure_destination],
                    mapping.event_source_arn,
                    f"on-failure destination of mapping {uuid}",
                )
        for function in list(backend.functions.values()):
            for key, value in function.environment.items():
                arn = urls.get(value) or (value if value in queues else None)
                if arn and arn not in found and any(hint in key.upper() for hint in FAILURE_HINTS):
                    found[arn] = (queues[arn], None, f"{function.name}'s {key}")
        return found

    def failures(self) -> dict[str, Any]:
        result = []
        for arn, (queue, source, why) in sorted(self.failure_queues().items(), key=lambda item: item[1][0].name):
            with self.emulator.moto.lock_for(arn):
                messages = list(queue._messages)[:MAX_PAGE]
            result.append(
                {
                    "arn": arn,
                    "name": queue.name,
                    "why": why,
                    "source": source,
                    "count": queue.approximate_number_of_messages + queue.approximate_number_of_messages_not_visible,
                    "messages": [failure_message(message, source) for message in messages],
                }
            )
        return {"queues": result}

    def replay(self, queue_arn: str, message_id: str) -> dict[str, Any]:
        """Send one failure back to its source, then delete it from the failure queue."""
        queues = self.failure_queues()
        if queue_arn not in queues:
            raise ConsoleError(f"{queue_arn} is not a failure queue of this endpoint", 404)
        if self.emulator.scheduler is not None:
            raise ConsoleError(
                "a deterministic endpoint admits only requests it can trace: replay with the AWS API instead", 409
            )
        queue, source, _ = queues[queue_arn]
        moto, region = self.emulator.moto, self.region
        with moto.lock():
            message = next((m for m in queue._messages if m.id == message_id), None)
            if message is None:
                raise ConsoleError(f"no message {message_id} in {queue.name} (replayed or deleted already?)", 404)
            body = decode_text(message.body)
            record = body.get("record") if isinstance(body, dict) else None
            if isinstance(record, dict) and record.get("data") and ":kinesis:" in str(record.get("eventSourceARN")):
                if body.get("record", {}).get("dataTruncated"):
                    raise ConsoleError("the record's data was cut to fit the message: replay it from the log", 409)
                stream_name = record["eventSourceARN"].rsplit("/", 1)[-1]
                written = record["eventSourceARN"]
                moto.kinesis(region).put_record(
                    stream_arn=None,
                    stream_name=stream_name,
                    partition_key=record.get("partitionKey") or message_id,
                    explicit_hash_key=None,
                    data=record["data"],  # base64, as the API request carries it and moto keeps it
                )
                target = f"stream {stream_name}"
            elif isinstance(body, dict) and isinstance(body.get("KinesisBatchInfo"), dict):
                target, written = self._replay_batch(body["KinesisBatchInfo"])
            elif source is not None and ":sqs:" in source:
                source_name = source.rsplit(":", 1)[-1]
                moto.sqs(region).send_message(source_name, message.body)
                target, written = f"queue {source_name}", source
            else:
                raise ConsoleError(
                    "this message names no source to replay it to (a Kinesis record with its data, or a "
                    "dead-letter queue's message)",
                    409,
                )
            queue._messages.remove(message)
        self.emulator.notifier.notify(written)  # the source's mapping hears of it at once
        return {"replayed": message_id, "to": target}

    def _replay_batch(self, info: dict[str, Any]) -> tuple[str, str]:
        """A Kinesis on-failure record names a shard and a sequence range: put those records on the
        stream again (new sequence numbers, same data and partition keys). Called under moto's lock."""
        kinesis = self.emulator.moto.kinesis(self.region)
        arn = str(info.get("streamArn") or "")
        stream = next((s for s in kinesis.streams.values() if s.arn == arn), None)
        shard = stream.shards.get(str(info.get("shardId"))) if stream is not None else None
        if shard is None:
            raise ConsoleError(f"the batch's stream or shard is gone ({arn} {info.get('shardId')})", 409)
        first, last = int(info.get("startSequenceNumber") or 0), int(info.get("endSequenceNumber") or 0)
        records = [r for r in shard.records.values() if first <= int(r.sequence_number) <= last]
        if not records:
            raise ConsoleError("the batch's records are no longer on the stream (trimmed by retention?)", 409)
        for record in records:
            kinesis.put_record(
                stream_arn=None,
                stream_name=stream.stream_name,
                partition_key=record.partition_key,
                explicit_hash_key=None,
                data=record.data,
            )
        return f"stream {stream.stream_name} ({len(records)} records)", stream.arn

    # ---- data --------------------------------------------------------------------------------

    def tables(self) -> list[dict[str, Any]]:
        moto = self.emulator.moto
        with moto.lock():
            return [
                {"name": table.name, "items": len(table), "keys": [k["AttributeName"] for k in table.schema]}
                for table in moto.dynamodb(self.region).tables.values()
            ]

    def table_items(self, name: str, limit: int, start: str | None, key: str | None) -> dict[str, Any]:
        moto = self.emulator.moto
        dynamodb = moto.dynamodb(self.region)
        table = dynamodb.tables.get(name)
        if table is None:
            raise ConsoleError(f"no table {name!r} in {self.region}", 404)
        with moto.lock_for(table.table_arn):
            keys = [(item_key(item), item) for item in table.all_items()]
        hash_name = table.hash_key_attr
        if key:
            keys = [(k, item) for k, item in keys if str(plain_attr(item, hash_name)) == key]
        keys.sort(key=lambda pair: pair[0])
        count = len(keys)
        if start:
            keys = [(k, item) for k, item in keys if k > start]
        page = keys[:limit]
        items = [preview(image(item.to_json()["Attributes"])) for _, item in page]
        return {
            "table": name,
            "keys": [k["AttributeName"] for k in table.schema],
            "items": items,
            "next": page[-1][0] if len(keys) > limit else None,
            "count": count,
        }

    def streams(self) -> list[dict[str, Any]]:
        moto = self.emulator.moto
        with moto.lock():
            return [
                {"name": stream.stream_name, "shards": sorted(stream.shards)}
                for stream in moto.kinesis(self.region).streams.values()
            ]

    def stream_records(
        self, name: str, shard: str | None, after: str | None, limit: int, key: str | None
    ) -> dict[str, Any]:
        moto = self.emulator.moto
        kinesis = moto.kinesis(self.region)
        stream = kinesis.streams.get(name) or next((s for s in kinesis.streams.values() if s.stream_name == name), None)
        if stream is None:
            raise ConsoleError(f"no stream {name!r} in {self.region}", 404)
        shard_id = shard or sorted(stream.shards)[0]
        if shard_id not in stream.shards:
            raise ConsoleError(f"no shard {shard_id!r} in {name}", 404)
        with moto.lock_for(stream.arn):
            records = list(stream.shards[shard_id].records.values())
        if after:
            records = [r for r in records if int(r.sequence_number) > int(after)]
        records = [r for r in records if not key or r.partition_key == key or key in users_of(record_value(r))]
        page = records[:limit]
        return {
            "stream": name,
            "shard": shard_id,
            "shards": sorted(stream.shards),
            "records": [
                {
                    "sequenceNumber": str(r.sequence_number),
                    "partitionKey": r.partition_key,
                    "arrival": r.created_at,
                    "data": preview(record_value(r)),
                }
                for r in page
            ],
            "next": str(page[-1].sequence_number) if len(records) > limit else None,
        }

    def user(self, user_id: str, tables: dict[str, str]) -> dict[str, Any]:
        """The demo app: a user's rows (view, events, snapshot) next to the oracle's fold of every
        event for them on the input streams (the stream keeps what trimming removed from the table)."""
        found: dict[str, Any] = {}
        for role, name in tables.items():
            try:
                found[role] = self.table_items(name, MAX_PAGE, None, user_id)["items"]
            except ConsoleError:
                found[role] = None
        moto, events = self.emulator.moto, []
        for stream in list(moto.kinesis(self.region).streams.values()):
            with moto.lock_for(stream.arn):
                records = [r for shard in stream.shards.values() for r in shard.records.values()]
            events.extend(value for r in records if isinstance(value := record_value(r), dict))
        mine = [event for event in events if user_id in users_of(event)]
        oracle = self._oracle()
        expected = plain(vars(oracle(user_id, mine))) if oracle else None
        return {"user": user_id, "tables": found, "events": mine[:MAX_PAGE], "oracle": expected}

    def _oracle(self) -> Any:
        """The configured oracle (ESJOIN_CONSOLE_ORACLE), or None when none is set or it cannot be loaded."""
        name = self.emulator.config.console_oracle
        if not name or ":" not in name:
            return None
        module, _, function = name.partition(":")
        try:
            return getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as error:
            raise ConsoleError(f"ESJOIN_CONSOLE_ORACLE={name} cannot be loaded: {error}", 500) from None


def durations_by_function(history: list[Any]) -> dict[str, dict[str, float]]:
    """p50 and p99 duration (ms) per function over the last DURATION_WINDOW_SECONDS."""
    since = time.time() - DURATION_WINDOW_SECONDS
    per_function: dict[str, list[float]] = {}
    for record in history:
        if record.ended_at >= since and record.outcome != "throttled":
            per_function.setdefault(record.function, []).append(record.duration_ms)
    result = {}
    for name, values in per_function.items():
        values.sort()
        result[name] = {
            "p50": round(statistics.median(values), 1),
            "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 1),
        }
    return result


def last_error(history: list[Any], uuid: str) -> str | None:
    """A mapping's newest failed delivery, as "<outcome>: <type> <message>"."""
    for record in reversed(history):
        if record.mapping == uuid and record.outcome in ("error", "timeout", "partial"):
            return f"{record.outcome}: {record.error_type or ''} {record.error_message or ''}".strip()
    return None


def short_name(arn: str) -> str:
    """arn:...:stream/name, arn:...:table/name, arn:...:function:name -> name"""
    return arn.rsplit(":", 1)[-1].split("/")[-1]


def lane_of(record: dict[str, Any]) -> dict[str, Any]:
    """The timeline lane: the function, and for a mapping's deliveries its source and, for streams,
    the shard (a batch comes from one shard: its record ids start with it)."""
    lane = record["function"]
    if record.get("mapping"):
        lane += f" ← {record.get('source') or 'mapping'}"
        first = (record.get("batchIds") or [""])[0]
        if first.startswith("shardId-"):
            lane += f" {first.split(':', 1)[0]}"
    return {**record, "lane": lane}


def failure_message(message: Any, source: str | None) -> dict[str, Any]:
    body = decode_text(message.body)
    reason = body.get("reason") if isinstance(body, dict) else None
    original = body.get("record") or body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("requestContext"), dict):  # a mapping's on-failure record
        context = body["requestContext"]
        reason = f"{context.get('condition')} after {context.get('approximateInvokeCount')} invocations"
        original = body.get("KinesisBatchInfo") or body.get("DDBStreamBatchInfo") or body.get("SQSBatchInfo")
    if isinstance(original, dict) and isinstance(original.get("data"), str):
        with contextlib.suppress(ValueError):
            original = {**original, "decoded": decode_bytes(base64.b64decode(original["data"]))}
    return {
        "messageId": message.id,
        "sentAt": getattr(message, "sent_timestamp", None),
        "receiveCount": getattr(message, "approximate_receive_count", 0),
        "reason": reason or ("moved here after maxReceiveCount receives" if source else None),
        "original": preview(original) if original is not None else None,
        "body": preview(body),
    }


def item_key(item: Any) -> str:
    hash_key = json.dumps(plain(_deserializer.deserialize(item.hash_key.to_json())), sort_keys=True, default=str)
    if item.range_key is None:
        return hash_key
    range_key = json.dumps(plain(_deserializer.deserialize(item.range_key.to_json())), sort_keys=True, default=str)
    return f"{hash_key}\x1f{range_key}"


def plain_attr(item: Any, name: str) -> Any:
    attr = item.attrs.get(name)
    return None if attr is None else plain(_deserializer.deserialize(attr.to_json()))


def record_value(record: Any) -> Any:
    """A Kinesis record's data (moto keeps it base64), decoded."""
    data = record.data
    try:
        raw = base64.b64decode(data) if isinstance(data, str) else bytes(data)
    except ValueError:
        raw = str(data).encode()
    return decode_bytes(raw)


def users_of(value: Any) -> set[str]:
    """User ids a demo event names (user.id, order.userId), for the filters."""
    if not isinstance(value, dict):
        return set()
    found = {(value.get("user") or {}).get("id"), (value.get("order") or {}).get("userId")}
    return {str(v) for v in found if v}
