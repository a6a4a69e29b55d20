"""A client of one deployed stage of the pipeline, over boto3, for scenarios, the CLI and benchmarks.

It produces events (straight onto the Kinesis stream as the original's producers do, or through
the `command` function), asks for snapshots and trims the way an operator would (SQS messages),
and reads what the pipeline made (view rows, snapshots, stored events, the failure queue). Every
event it sends is recorded in its `EventLog`, which the checks compare the views against.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from esjoin.testing.backends import Backend
from esjoin.testing.events import partition_key
from esjoin.testing.oracle import ExpectedView, expected_view, user_of

_deserializer = TypeDeserializer()
PUT_RECORDS_LIMIT = 500


def plain(value: Any) -> Any:
    """DynamoDB's Decimals as ints (or floats), recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return plain({key: _deserializer.deserialize(value) for key, value in item.items()})


@dataclass
class SentEvent:
    event: dict[str, Any]
    sent_at: float
    how: str  # kinesis | command | retry


@dataclass
class EventLog:
    """Everything a test sent, in order, so the expected views can be computed and shown."""

    sent: list[SentEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, events: Iterable[dict[str, Any]], how: str) -> None:
        now = time.time()
        with self._lock:
            self.sent.extend(SentEvent(event, now, how) for event in events)

    def users(self) -> list[str]:
        with self._lock:
            return sorted({u for s in self.sent if (u := user_of(s.event))})

    def events_of(self, user_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s.event for s in self.sent if user_of(s.event) == user_id]

    def expected(self, user_id: str) -> ExpectedView:
        return expected_view(user_id, self.events_of(user_id))

    def describe(self, user_id: str, limit: int = 40) -> str:
        with self._lock:
            lines = [
                f"  {s.how:8} {s.event.get('type', '?'):16} id={str(s.event.get('id'))[:8]} "
                f"ts={s.event.get('timestamp')}"
                for s in self.sent
                if user_of(s.event) == user_id
            ]
        shown = lines[-limit:]
        more = f"  ... {len(lines) - limit} earlier\n" if len(lines) > limit else ""
        return f"sent for {user_id} ({len(lines)}):\n" + more + "\n".join(shown)


class Pipeline:
    def __init__(self, backend: Backend, outputs: Any, log: EventLog | None = None) -> None:
        self.backend = backend
        self.outputs = outputs
        self.log = log or EventLog()
        self.kinesis = backend.client("kinesis")
        self.dynamodb = backend.client("dynamodb")
        self.sqs = backend.client("sqs")
        self.lambda_ = backend.client("lambda")

    # -- names --------------------------------------------------------------------------------

    def table(self, key: str) -> str:
        return self.outputs.tables[key]["name"]

    def queue_url(self, key: str) -> str:
        return self.outputs.queues[key]["url"]

    def function(self, key: str) -> str:
        return self.outputs.functions[key]["name"]

    def mapping_uuid(self, key: str) -> str:
        return self.outputs.mappings[key]["uuid"]

    # -- producing ----------------------------------------------------------------------------

    def put_events(self, events: list[dict[str, Any]], how: str = "kinesis") -> list[dict[str, str]]:
        """PutRecords (500 a call), retrying only the failed records, as a careful producer does."""
        results: list[dict[str, str]] = []
        for start in range(0, len(events), PUT_RECORDS_LIMIT):
            chunk = events[start : start + PUT_RECORDS_LIMIT]
            self.log.record(chunk, how)
            results.extend(self._put_chunk(chunk))
        return results

    def _put_chunk(self, events: list[dict[str, Any]]) -> list[dict[str, str]]:
        pending = list(range(len(events)))
        results: list[dict[str, str]] = [{} for _ in events]
        for attempt in range(8):
            records = [
                {"Data": json.dumps(events[i]).encode(), "PartitionKey": partition_key(events[i])} for i in pending
            ]
            response = self.kinesis.put_records(StreamName=self.outputs.stream["name"], Records=records)
            failed = []
            for index, outcome in zip(pending, response["Records"], strict=True):
                if "ErrorCode" in outcome:
                    failed.append(index)
                else:
                    results[index] = {"shardId": outcome["ShardId"], "sequenceNumber": outcome["SequenceNumber"]}
            if not failed:
                return results
            pending = failed
            time.sleep(0.05 * 2**attempt)  # producer backoff, as the Kinesis docs advise for throttling
        raise RuntimeError(f"PutRecords kept failing for {len(pending)} record(s)")

    def resend(self, events: list[dict[str, Any]]) -> None:
        """A producer retry: the same events (same ids) again, with new sequence numbers."""
        self.put_events(events, how="retry")

    def command(self, payload: Any) -> dict[str, Any]:
        """Invoke the `command` function (it puts the events on the stream) and return its reply. Not
        recorded in the log: the caller records the events it passes (`log.record(events, "command")`)."""
        response = self.lambda_.invoke(FunctionName=self.function("command"), Payload=json.dumps(payload).encode())
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise RuntimeError(f"command function failed: {body}")
        return body

    # -- operator requests ----------------------------------------------------------------------

    def request_snapshot(self, user_id: str, horizon_seconds: float | None = 0) -> None:
        message: dict[str, Any] = {"type": "snapshot", "userId": user_id, "requestedAt": int(time.time() * 1000)}
        if horizon_seconds is not None:
            message["horizonSeconds"] = horizon_seconds
        self.sqs.send_message(QueueUrl=self.queue_url("snapshotRequests"), MessageBody=json.dumps(message))

    def request_trim(self, user_id: str, watermark: str | None = None) -> None:
        message: dict[str, Any] = {"type": "trim", "userId": user_id}
        if watermark is not None:
            message["watermark"] = watermark
        self.sqs.send_message(QueueUrl=self.queue_url("trimRequests"), MessageBody=json.dumps(message))

    # -- reading --------------------------------------------------------------------------------

    def views(self, users: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self._batch_get(self.table("views"), "id", users)

    def snapshots(self, users: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self._batch_get(self.table("snapshots"), "userId", users)

    def _batch_get(self, table: str, key: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), 100):
            keys = [{key: {"S": value}} for value in wanted[start : start + 100]]
            request = {table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                response = self.dynamodb.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(table, []):
                    row = from_item(item)
                    found[row[key]] = row
                request = response.get("UnprocessedKeys") or {}
        return found

    def stored_events(self, user_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = self.dynamodb.query(
                TableName=self.table("events"),
                ConsistentRead=True,
                KeyConditionExpression="userId = :u",
                ExpressionAttributeValues={":u": {"S": user_id}},
                **kwargs,
            )
            items.extend(from_item(item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    def delete_view(self, user_id: str) -> None:
        self.dynamodb.delete_item(TableName=self.table("views"), Key={"id": {"S": user_id}})

    def queue_depth(self, key: str) -> int:
        """Messages in a queue: visible, in flight and delayed."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url(key),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    def failure_messages(self) -> list[dict[str, Any]]:
        """What is in the failure queue now, without consuming it: each message read is hidden for a
        second (visibility timeout 1), so a caller that waits on this sees every message in turn."""
        seen: dict[str, dict[str, Any]] = {}
        while True:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url("failures"), MaxNumberOfMessages=10, VisibilityTimeout=1, WaitTimeSeconds=0
            )
            messages = response.get("Messages", [])
            if not messages:
                return list(seen.values())
            for message in messages:
                try:
                    seen[message["MessageId"]] = json.loads(message["Body"])
                except ValueError:
                    seen[message["MessageId"]] = {"unparsed": message["Body"]}
