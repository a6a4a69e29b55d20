"""The demo's functions wired together over the fakes of fake_aws.py: `Pipeline` plays the event source
mappings' delivery semantics step by step (one Kinesis batch at a time per shard, stream batches, SQS
messages that stay when they fail), and compares views and storage with the fold of what was produced.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from typing import Any

from lambdas import consumer, snapshot, trigger, trim
from lambdas.config import Settings
from lambdas.dependencies import Runtime
from lambdas.events import ORDER_SUBMITTED, parse_event
from lambdas.fold import fold
from lambdas.queues import Queues
from lambdas.retry import Backoff
from lambdas.store import IncompleteBatchError, Store, from_item
from tests.unit.support.fake_aws import (
    EVENTS,
    FAILQ,
    IDS,
    SNAPQ,
    SNAPS,
    TRIMQ,
    VIEWS,
    FakeDynamoDB,
    FakeKinesis,
    FakeMessage,
    FakeSQS,
)

START = 1_700_000_000_000


def no_sleep(_seconds: float) -> None:
    return None


class Context:
    function_name = "esjoin-test"


class Pipeline:
    def __init__(
        self,
        mode: str = "safe",
        horizon_seconds: float = 1.0,
        threshold: int = 3,
        max_events: int = 1000,
        page_size: int = 3,
    ) -> None:
        self.now = START
        self.settings = Settings(
            events_table=EVENTS,
            views_table=VIEWS,
            snapshots_table=SNAPS,
            event_ids_table=IDS,
            stream_name="s",
            snapshot_queue_url=SNAPQ,
            trim_queue_url=TRIMQ,
            failure_queue_url=FAILQ,
            snapshot_horizon_seconds=horizon_seconds,
            snapshot_threshold=threshold,
            snapshot_max_events=max_events,
            snapshot_mode=mode,
        )
        self.ddb = FakeDynamoDB(page_size=page_size)
        self.sqs = FakeSQS(self.clock)
        self.kinesis = FakeKinesis(self.clock)
        logger = logging.getLogger("esjoin.tests")
        logger.setLevel(logging.CRITICAL)
        self.rt = Runtime(
            settings=self.settings,
            store=Store(self.settings, self.ddb, Backoff(sleep=no_sleep)),
            queues=Queues(self.sqs, Backoff(attempts=3, sleep=no_sleep)),
            logger=logger,
            clock=self.clock,
        )
        self.kinesis_checkpoint = 0
        self.consuming = False
        self.stream_checkpoint = 0
        self.produced: list[dict] = []  # valid events as the producer sent them (retries included)
        self.poison_sent: list[str] = []  # base64 data of poison records

    def clock(self) -> int:
        return self.now

    def tick(self, ms: int) -> None:
        self.now += ms

    # producer side
    def produce(self, event: dict) -> None:
        self.produced.append(event)
        self.kinesis.append(json.dumps(event).encode(), parse_event(event).user_id)

    def produce_poison(self, data: bytes) -> None:
        self.kinesis.append(data, "poison")
        self.poison_sent.append(base64.b64encode(data).decode())

    # Kinesis mapping: one invocation at a time per shard, batches in order; a batch item failure
    # checkpoints before that record.
    def consume(self, size: int, redeliver: bool = False) -> None:
        if self.consuming:
            return  # Lambda never runs two batches of one shard at once
        start = self.kinesis_checkpoint
        batch = self.kinesis.records[start : start + size]
        if not batch:
            return
        self.consuming = True
        try:
            for _ in range(2 if redeliver else 1):
                result = consumer.process({"Records": copy.deepcopy(batch)}, Context(), self.rt)
        except IncompleteBatchError:
            return  # the mapping retries the whole batch later
        finally:
            self.consuming = False
        failures = [f["itemIdentifier"] for f in result["batchItemFailures"]]
        if failures:
            first = min(failures, key=int)
            self.kinesis_checkpoint = start + [r["kinesis"]["sequenceNumber"] for r in batch].index(first)
        else:
            self.kinesis_checkpoint = start + len(batch)

    # DynamoDB Streams mapping. A nested call (from a hook) plays a concurrent invocation, as on
    # another stream shard; the checkpoint moves to the furthest record processed.
    def trigger(self, size: int, redeliver: bool = False) -> None:
        start = self.stream_checkpoint
        batch = self.ddb.stream[start : start + size]
        if not batch:
            return
        for _ in range(2 if redeliver else 1):
            result = trigger.process({"Records": copy.deepcopy(batch)}, Context(), self.rt)
        assert result["batchItemFailures"] == []
        self.stream_checkpoint = max(self.stream_checkpoint, start + len(batch))

    # SQS mappings: failed messages stay and come back
    def run_queue(self, url: str, redeliver: bool = False) -> None:
        messages = self.sqs.receive(url)
        if not messages:
            return
        event = {
            "Records": [
                {
                    "messageId": m.message_id,
                    "receiptHandle": "r",
                    "body": m.body,
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "eventSource": "aws:sqs",
                }
                for m in messages
            ]
        }
        handler = snapshot.process if url == SNAPQ else trim.process
        for _ in range(2 if redeliver else 1):
            result = handler(copy.deepcopy(event), Context(), self.rt)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        self.sqs.delete(url, {m.message_id for m in messages} - failed)

    def request_snapshot(self, user_id: str, horizon_seconds: float | None = 0) -> None:
        body = {"type": "snapshot", "userId": user_id}
        if horizon_seconds is not None:
            body["horizonSeconds"] = horizon_seconds
        self.sqs.queues[SNAPQ].append(FakeMessage(f"manual-{next(self.sqs.ids)}", json.dumps(body), 0))

    def drain(self) -> None:
        """Run every mapping until nothing is left (quiescence)."""
        for _ in range(1000):
            before = (
                self.kinesis_checkpoint,
                self.stream_checkpoint,
                len(self.ddb.stream),
                sum(len(q) for q in self.sqs.queues.values()),
            )
            self.consume(100)
            self.trigger(100)
            self.tick(901_000)  # past any SQS delay
            self.run_queue(SNAPQ)
            self.run_queue(TRIMQ)
            self.trigger(100)
            after = (
                self.kinesis_checkpoint,
                self.stream_checkpoint,
                len(self.ddb.stream),
                sum(len(q) for q in self.sqs.queues.values()) - len(self.sqs.queues[FAILQ]),
            )
            if after[:3] == before[:3] and not self.sqs.queues[SNAPQ] and not self.sqs.queues[TRIMQ]:
                return
        raise AssertionError("the pipeline did not reach quiescence")

    # what the tests compare
    def users(self) -> set[str]:
        return {parse_event(e).user_id for e in self.produced}

    def expected(self, user_id: str) -> dict:
        return view_of(user_id, fold(parse_event(e) for e in self.produced if parse_event(e).user_id == user_id))

    def view(self, user_id: str) -> dict | None:
        item = self.ddb.tables[VIEWS].get((user_id,))
        if item is None:
            return None
        row = from_item(item)
        return {k: row.get(k) for k in ("id", "name", "lastLogin", "recentOrderCount", "eventCount")}

    def stored_state(self, user_id: str) -> dict:
        """What storage alone can rebuild: the snapshot plus the events above its watermark (I2)."""
        snap = self.rt.store.get_snapshot(user_id)
        return view_of(
            user_id,
            fold((e.event for e in self.rt.store.query_events(user_id, after=snap.watermark)), start=snap.state),
        )

    def failure_messages(self) -> list[dict]:
        return [json.loads(m.body) for m in self.sqs.queues[FAILQ]]


def event(event_id: str, event_type: str, user_id: str, timestamp: int, name: str | None = None) -> dict:
    body: dict[str, Any] = {"id": event_id, "type": event_type, "timestamp": timestamp}
    if event_type == ORDER_SUBMITTED:
        body["order"] = {"userId": user_id, "orderId": f"o-{event_id}"}
    else:
        body["user"] = {"id": user_id} | ({"name": name} if name else {})
    return body


def view_of(user_id: str, state: Any) -> dict:
    """A folded state as the view row's compared fields."""
    return {
        "id": user_id,
        "name": state.name,
        "lastLogin": state.last_login,
        "recentOrderCount": state.order_count,
        "eventCount": state.event_count,
    }
