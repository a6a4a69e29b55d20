"""The five handlers wired together over in-memory fakes of the AWS clients (no network).

The fakes speak the boto3 client API the functions use (DynamoDB, SQS, Kinesis), enforce AWS's
batch limits, can return UnprocessedItems / failed entries, page queries small, and record the
events table's stream. A hypothesis-driven scheduler then delivers Kinesis batches, stream batches
and SQS messages in random interleavings, with redeliveries, producer retries, poison, throttling,
late events and snapshots or trims running in the middle of another function's work, and checks at
quiescence that every view is the fold of the user's accepted events (I1-I5).
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from lambdas import command, consumer, snapshot, trigger, trim
from lambdas.config import Settings
from lambdas.events import ORDER_SUBMITTED, USER_CREATED, USER_LOGGED_IN, parse_event
from lambdas.fold import fold
from lambdas.queues import MAX_PAYLOAD_BYTES, Queues
from lambdas.retry import Backoff
from lambdas.runtime import Runtime
from lambdas.store import IncompleteBatchError, Store, from_item

EVENTS, IDS, SNAPS, VIEWS = "events", "event-ids", "snapshots", "views"
SNAPQ, TRIMQ, FAILQ = "q/snapshot", "q/trim", "q/failure"
START = 1_700_000_000_000


def no_sleep(_seconds: float) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# Fake AWS clients
# ---------------------------------------------------------------------------------------------


def conditional_check_failed(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "failed"}}, operation)


class FakeDynamoDB:
    """The DynamoDB calls store.py makes, with AWS's limits and an events-table stream."""

    KEYS = {EVENTS: ("userId", "seq"), IDS: ("eventId",), SNAPS: ("userId",), VIEWS: ("id",)}

    def __init__(self, page_size: int = 3) -> None:
        self.tables: dict[str, dict[tuple, dict]] = {name: {} for name in self.KEYS}
        self.stream: list[dict] = []
        self.page_size = page_size
        self.unprocessed_writes = 0  # leave up to this many write requests unprocessed (then counts down)
        self.unprocessed_gets = 0
        self.calls: Counter[str] = Counter()
        self.hooks: dict[str, Callable[[dict], None]] = {}  # op -> run once after the op
        self.snapshot_writes: list[dict] = []
        self._stream_seq = itertools.count(100)

    def _after(self, op: str, request: dict) -> None:
        hook = self.hooks.pop(op, None)
        if hook:
            hook(request)

    def _key(self, table: str, item: dict) -> tuple:
        return tuple(item[k]["S"] for k in self.KEYS[table])

    def _stream_record(self, name: str, item: dict) -> None:
        self.stream.append({"eventName": name, "eventSource": "aws:dynamodb", "dynamodb": {
            "Keys": {"userId": item["userId"], "seq": item["seq"]},
            "SequenceNumber": str(next(self._stream_seq)), "StreamViewType": "NEW_AND_OLD_IMAGES"}})

    def _put(self, table: str, item: dict) -> None:
        key = self._key(table, item)
        old = self.tables[table].get(key)
        self.tables[table][key] = copy.deepcopy(item)
        if table == EVENTS and old != item:  # DynamoDB Streams records nothing for a no-op write
            self._stream_record("MODIFY" if old else "INSERT", item)
        if table == SNAPS:
            self.snapshot_writes.append(from_item(item))

    def _delete(self, table: str, key_item: dict) -> None:
        old = self.tables[table].pop(self._key(table, key_item), None)
        if table == EVENTS and old:
            self._stream_record("REMOVE", old)

    def batch_get_item(self, RequestItems: dict) -> dict:
        self.calls["BatchGetItem"] += 1
        responses, unprocessed = {}, {}
        for table, request in RequestItems.items():
            keys = request["Keys"]
            assert len(keys) <= 100, "BatchGetItem takes at most 100 keys"
            assert len({self._key(table, k) for k in keys}) == len(keys), "duplicate keys"
            assert request.get("ConsistentRead") is True
            served, left = keys, []
            if self.unprocessed_gets and len(keys) > 1:
                served, left = keys[1:], keys[:1]
                self.unprocessed_gets -= 1
            found = [copy.deepcopy(self.tables[table][self._key(table, k)]) for k in served
                     if self._key(table, k) in self.tables[table]]
            if "ProjectionExpression" in request:
                names = [request["ExpressionAttributeNames"][n.strip()]
                         for n in request["ProjectionExpression"].split(",")]
                found = [{n: i[n] for n in names if n in i} for i in found]
            responses[table] = found
            if left:
                unprocessed[table] = {**request, "Keys": left}
        return {"Responses": responses, "UnprocessedKeys": unprocessed}

    def batch_write_item(self, RequestItems: dict) -> dict:
        self.calls["BatchWriteItem"] += 1
        flat = [(table, r) for table, requests in RequestItems.items() for r in requests]
        assert 0 < len(flat) <= 25, "BatchWriteItem takes 1 to 25 requests"
        keys = [(t, self._key(t, r["PutRequest"]["Item"] if "PutRequest" in r else r["DeleteRequest"]["Key"]))
                for t, r in flat]
        assert len(set(keys)) == len(keys), "BatchWriteItem rejects two requests for one item"
        unprocessed: dict[str, list] = {}
        for index, (table, request) in enumerate(flat):
            if self.unprocessed_writes and index % 2 == 0:  # AWS may leave any subset unprocessed
                self.unprocessed_writes -= 1
                unprocessed.setdefault(table, []).append(request)
                continue
            if "PutRequest" in request:
                self._put(table, request["PutRequest"]["Item"])
            else:
                self._delete(table, request["DeleteRequest"]["Key"])
        self._after("BatchWriteItem", RequestItems)
        return {"UnprocessedItems": unprocessed}

    def query(self, TableName: str, KeyConditionExpression: str, ExpressionAttributeNames: dict,
              ExpressionAttributeValues: dict, ConsistentRead: bool = False, Limit: int | None = None,
              ExclusiveStartKey: dict | None = None, ProjectionExpression: str | None = None) -> dict:
        self.calls["Query"] += 1
        assert TableName == EVENTS and ConsistentRead
        names, values = ExpressionAttributeNames, ExpressionAttributeValues
        match = re.fullmatch(r"(#\w+) = (:\w+)(?: AND (#\w+) (>|<=) (:\w+))?", KeyConditionExpression)
        assert match, KeyConditionExpression
        assert names[match[1]] == "userId"
        user = values[match[2]]["S"]
        assert user, "key condition values may not be empty"
        rows = sorted((k, i) for k, i in self.tables[EVENTS].items() if k[0] == user)
        if match[3]:
            assert names[match[3]] == "seq"
            bound = values[match[5]]["S"]
            assert bound, "key condition values may not be empty"
            rows = [(k, i) for k, i in rows if (k[1] > bound if match[4] == ">" else k[1] <= bound)]
        if ExclusiveStartKey:
            start = self._key(EVENTS, ExclusiveStartKey)
            rows = [(k, i) for k, i in rows if k > start]
        page = min(self.page_size, Limit or self.page_size)
        items = [copy.deepcopy(i) for _, i in rows[:page]]
        if ProjectionExpression:
            keep = [names[n.strip()] for n in ProjectionExpression.split(",")]
            items = [{n: i[n] for n in keep} for i in items]
        response: dict[str, Any] = {"Items": items, "Count": len(items)}
        if len(rows) > page:  # DynamoDB returns LastEvaluatedKey whenever it stopped early
            response["LastEvaluatedKey"] = {"userId": rows[page - 1][1]["userId"], "seq": rows[page - 1][1]["seq"]}
        self._after("Query", {"user": user})
        return response

    def get_item(self, TableName: str, Key: dict, ConsistentRead: bool = False) -> dict:
        self.calls["GetItem"] += 1
        assert ConsistentRead
        item = self.tables[TableName].get(self._key(TableName, Key))
        return {"Item": copy.deepcopy(item)} if item else {}

    def put_item(self, TableName: str, Item: dict, ConditionExpression: str | None = None,
                 ExpressionAttributeNames: dict | None = None, ExpressionAttributeValues: dict | None = None) -> dict:
        self.calls["PutItem"] += 1
        hook = self.hooks.pop("PutItem:" + TableName, None)
        if hook:  # a concurrent writer gets in between this writer's read and its write
            hook({"item": Item})
        old = self.tables[TableName].get(self._key(TableName, Item))
        if ConditionExpression and old is not None:
            names, values = ExpressionAttributeNames or {}, ExpressionAttributeValues or {}
            stored = from_item(old)

            def attr(placeholder: str) -> Any:
                return stored.get(names[placeholder])

            def val(placeholder: str) -> int:
                return int(values[placeholder]["N"])

            if ConditionExpression == "attribute_not_exists(#u) OR #v = :v":
                ok = attr("#v") == val(":v")
            elif ConditionExpression == "attribute_not_exists(#id) OR #n < :n OR (#n = :n AND #v < :v)":
                ok = attr("#n") < val(":n") or (attr("#n") == val(":n") and attr("#v") < val(":v"))
            else:
                raise AssertionError(f"condition the fake does not know: {ConditionExpression}")
            if not ok:
                raise conditional_check_failed("PutItem")
        self._put(TableName, Item)
        return {}


@dataclass
class FakeMessage:
    message_id: str
    body: str
    visible_at: int


class FakeSQS:
    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.queues: dict[str, list[FakeMessage]] = {SNAPQ: [], TRIMQ: [], FAILQ: []}
        self.fail_entries = 0  # fail this many entries (not the sender's fault)
        self.fail_calls = 0  # raise on this many calls
        self.ids = itertools.count()

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        assert 1 <= len(Entries) <= 10, "SendMessageBatch takes 1 to 10 entries"
        assert sum(len(e["MessageBody"].encode()) for e in Entries) <= MAX_PAYLOAD_BYTES
        if self.fail_calls:
            self.fail_calls -= 1
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "SendMessageBatch")
        successful, failed = [], []
        for entry in Entries:
            if self.fail_entries:
                self.fail_entries -= 1
                failed.append({"Id": entry["Id"], "SenderFault": False, "Code": "InternalError", "Message": "x"})
                continue
            delay = entry.get("DelaySeconds", 0)
            assert 0 <= delay <= 900
            self.queues[QueueUrl].append(FakeMessage(f"m{next(self.ids)}", entry["MessageBody"],
                                                     self.clock() + delay * 1000))
            successful.append({"Id": entry["Id"], "MessageId": "x"})
        return {"Successful": successful, "Failed": failed}

    def receive(self, url: str, n: int = 10) -> list[FakeMessage]:
        return [m for m in self.queues[url] if m.visible_at <= self.clock()][:n]

    def delete(self, url: str, message_ids: set[str]) -> None:
        self.queues[url] = [m for m in self.queues[url] if m.message_id not in message_ids]


class FakeKinesis:
    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.records: list[dict] = []  # Lambda-shaped records, in sequence order (one shard)
        self.fail_records = 0
        self.seq = itertools.count(10**20)  # 21-digit sequence numbers, growing

    def append(self, data: bytes, partition_key: str) -> str:
        seq = str(next(self.seq))
        self.records.append({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": partition_key, "sequenceNumber": seq,
                        "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": self.clock() / 1000},
            "eventSource": "aws:kinesis", "eventID": f"shardId-000000000000:{seq}", "eventVersion": "1.0",
            "eventName": "aws:kinesis:record", "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s"})
        return seq

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:
        assert len(Records) <= 500
        results, failed = [], 0
        for record in Records:
            if self.fail_records:
                self.fail_records -= 1
                failed += 1
                results.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"})
            else:
                results.append({"SequenceNumber": self.append(record["Data"], record["PartitionKey"]),
                                "ShardId": "shardId-000000000000"})
        return {"FailedRecordCount": failed, "Records": results}


# ---------------------------------------------------------------------------------------------
# The pipeline: the mappings' delivery semantics, driven step by step
# ---------------------------------------------------------------------------------------------


class Context:
    function_name = "esjoin-test"


class Pipeline:
    def __init__(self, mode: str = "safe", horizon_seconds: float = 1.0, threshold: int = 3,
                 max_events: int = 1000, page_size: int = 3) -> None:
        self.now = START
        self.settings = Settings(events_table=EVENTS, views_table=VIEWS, snapshots_table=SNAPS, event_ids_table=IDS,
                                 stream_name="s", snapshot_queue_url=SNAPQ, trim_queue_url=TRIMQ,
                                 failure_queue_url=FAILQ, snapshot_horizon_seconds=horizon_seconds,
                                 snapshot_threshold=threshold, snapshot_max_events=max_events, snapshot_mode=mode)
        self.ddb = FakeDynamoDB(page_size=page_size)
        self.sqs = FakeSQS(self.clock)
        self.kinesis = FakeKinesis(self.clock)
        logger = logging.getLogger("esjoin.tests")
        logger.setLevel(logging.CRITICAL)
        self.rt = Runtime(settings=self.settings, store=Store(self.settings, self.ddb, Backoff(sleep=no_sleep)),
                          queues=Queues(self.sqs, Backoff(attempts=3, sleep=no_sleep)), logger=logger,
                          clock=self.clock)
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
        batch = self.kinesis.records[start:start + size]
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
        batch = self.ddb.stream[start:start + size]
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
        event = {"Records": [{"messageId": m.message_id, "receiptHandle": "r", "body": m.body,
                              "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"}
                             for m in messages]}
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
            before = (self.kinesis_checkpoint, self.stream_checkpoint, len(self.ddb.stream),
                      sum(len(q) for q in self.sqs.queues.values()))
            self.consume(100)
            self.trigger(100)
            self.tick(901_000)  # past any SQS delay
            self.run_queue(SNAPQ)
            self.run_queue(TRIMQ)
            self.trigger(100)
            after = (self.kinesis_checkpoint, self.stream_checkpoint, len(self.ddb.stream),
                     sum(len(q) for q in self.sqs.queues.values()) - len(self.sqs.queues[FAILQ]))
            if after[:3] == before[:3] and not self.sqs.queues[SNAPQ] and not self.sqs.queues[TRIMQ]:
                return
        raise AssertionError("the pipeline did not reach quiescence")

    # what the tests compare
    def users(self) -> set[str]:
        return {parse_event(e).user_id for e in self.produced}

    def expected(self, user_id: str) -> dict:
        state = fold(parse_event(e) for e in self.produced if parse_event(e).user_id == user_id)
        return {"id": user_id, "name": state.name, "lastLogin": state.last_login,
                "recentOrderCount": state.order_count, "eventCount": state.event_count}

    def view(self, user_id: str) -> dict | None:
        item = self.ddb.tables[VIEWS].get((user_id,))
        if item is None:
            return None
        row = from_item(item)
        return {k: row.get(k) for k in ("id", "name", "lastLogin", "recentOrderCount", "eventCount")}

    def stored_state(self, user_id: str) -> dict:
        """What storage alone can rebuild: the snapshot plus the events above its watermark (I2)."""
        snap = self.rt.store.get_snapshot(user_id)
        state = fold((e.event for e in self.rt.store.query_events(user_id, after=snap.watermark)),
                     start=snap.state)
        return {"id": user_id, "name": state.name, "lastLogin": state.last_login,
                "recentOrderCount": state.order_count, "eventCount": state.event_count}

    def failure_messages(self) -> list[dict]:
        return [json.loads(m.body) for m in self.sqs.queues[FAILQ]]


def event(event_id: str, event_type: str, user_id: str, timestamp: int, name: str | None = None) -> dict:
    body: dict[str, Any] = {"id": event_id, "type": event_type, "timestamp": timestamp}
    if event_type == ORDER_SUBMITTED:
        body["order"] = {"userId": user_id, "orderId": f"o-{event_id}"}
    else:
        body["user"] = {"id": user_id} | ({"name": name} if name else {})
    return body


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


def test_events_flow_to_views_and_snapshot_then_trim_keeps_the_view():
    p = Pipeline(threshold=3)
    p.produce(event("c1", USER_CREATED, "u1", START, "Ann"))
    for i in range(5):
        p.produce(event(f"o{i}", ORDER_SUBMITTED, "u1", START + i))
    p.produce(event("l1", USER_LOGGED_IN, "u1", START + 50))
    p.consume(100)
    p.trigger(100)
    assert p.view("u1") == p.expected("u1") == {"id": "u1", "name": "Ann", "lastLogin": START + 50,
                                                 "recentOrderCount": 5, "eventCount": 7}
    assert len(p.sqs.queues[SNAPQ]) == 1  # 7 live events >= threshold 3
    p.drain()
    assert p.ddb.tables[EVENTS] == {}  # all snapshotted, then trimmed
    assert p.rt.store.get_snapshot("u1").state.event_count == 7
    assert p.view("u1") == p.expected("u1")
    row = from_item(p.ddb.tables[VIEWS][("u1",)])
    assert row["snapshotVersion"] == 1 and row["snapshotWatermark"] == p.rt.store.get_snapshot("u1").watermark


def test_redelivered_kinesis_batch_and_producer_retry_count_once():
    p = Pipeline()
    first = event("e1", ORDER_SUBMITTED, "u1", START)
    p.produce(first)
    p.consume(10, redeliver=True)
    p.produce(first)  # producer retry: same id, new sequence number, in a later batch
    p.produce(event("e2", ORDER_SUBMITTED, "u1", START))
    p.produce(first)  # and once more inside that batch
    p.consume(10, redeliver=True)
    p.drain()
    assert p.view("u1")["recentOrderCount"] == 2
    assert len([k for k in p.ddb.tables[IDS]]) == 2


def test_producer_retry_after_the_first_copy_was_snapshotted_and_trimmed_counts_once():
    p = Pipeline()
    first = event("e1", USER_LOGGED_IN, "u1", START)
    p.produce(first)
    p.consume(10)
    p.request_snapshot("u1")
    p.drain()
    assert p.ddb.tables[EVENTS] == {}
    p.produce(first)
    p.drain()
    assert p.view("u1")["eventCount"] == 1


def test_poison_goes_to_the_failure_queue_with_its_content_and_the_shard_moves_on():
    p = Pipeline()
    p.produce_poison(b"{not json")
    p.produce(event("e1", USER_LOGGED_IN, "u1", START))
    p.produce_poison(json.dumps({"id": "x", "type": "user-deleted", "timestamp": 1, "user": {"id": "u"}}).encode())
    p.consume(10)
    assert p.kinesis_checkpoint == 3
    messages = p.failure_messages()
    assert [m["record"]["data"] for m in messages] == p.poison_sent
    assert [m["source"] for m in messages] == ["consumer", "consumer"]
    assert "not valid JSON" in messages[0]["reason"] and "user-deleted" in messages[1]["reason"]
    assert messages[0]["function"] == "esjoin-test"
    assert messages[0]["record"]["sequenceNumber"] == p.kinesis.records[0]["kinesis"]["sequenceNumber"]


def test_poison_that_cannot_be_sent_is_a_batch_item_failure_and_is_retried():
    p = Pipeline()
    p.produce(event("e1", USER_LOGGED_IN, "u1", START))
    p.produce_poison(b"bad")
    p.produce(event("e2", USER_LOGGED_IN, "u1", START + 1))
    p.sqs.fail_calls = 1
    batch = copy.deepcopy(p.kinesis.records)
    result = consumer.process({"Records": batch}, Context(), p.rt)
    assert result == {"batchItemFailures": [{"itemIdentifier": batch[1]["kinesis"]["sequenceNumber"]}]}
    p.consume(10)  # the mapping retries from the failed record; e2 is rewritten, harmlessly
    p.consume(10)
    p.drain()
    assert len(p.failure_messages()) == 1
    assert p.view("u1")["eventCount"] == 2


def test_throttled_batch_writes_are_retried_until_written():
    p = Pipeline()
    for i in range(30):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, f"u{i % 4}", START))
    p.ddb.unprocessed_writes = 9  # fewer than the 10 calls in a row without progress that give up
    p.ddb.unprocessed_gets = 1
    p.consume(100)
    assert p.kinesis_checkpoint == 30
    p.drain()
    assert all(p.view(u) == p.expected(u) for u in p.users())


def test_batch_writes_give_up_after_the_retries_and_the_mapping_retries_the_batch():
    p = Pipeline()
    p.produce(event("e1", ORDER_SUBMITTED, "u1", START))
    p.ddb.unprocessed_writes = 10**6
    with pytest.raises(IncompleteBatchError, match="unprocessed"):
        consumer.process({"Records": copy.deepcopy(p.kinesis.records)}, Context(), p.rt)
    p.ddb.unprocessed_writes = 0
    p.drain()
    assert p.view("u1")["recentOrderCount"] == 1


def test_consumer_writes_each_users_events_in_sequence_order_one_round_at_a_time():
    p = Pipeline()
    for i in range(6):
        p.produce(event(f"a{i}", ORDER_SUBMITTED, "a", START))
    p.produce(event("b0", ORDER_SUBMITTED, "b", START))
    p.consume(100)
    writes = p.ddb.calls["BatchWriteItem"]
    assert writes == 6  # round 1 = a0+b0, then a1..a5 alone: never two events of one user in a call
    seqs = [k[1] for k in p.ddb.tables[EVENTS] if k[0] == "a"]
    assert seqs == sorted(seqs)


def test_a_snapshot_running_while_the_consumer_is_half_way_never_skips_an_event():
    """A snapshot with horizon 0 runs after every BatchWriteItem call of a throttled consumer batch."""
    p = Pipeline()
    for i in range(8):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START + i))
    p.ddb.unprocessed_writes = 6

    def snapshot_and_trim(_request: dict) -> None:
        p.request_snapshot("u1")
        p.run_queue(SNAPQ)
        p.run_queue(TRIMQ)
        if p.ddb.calls["BatchWriteItem"] < 40:
            p.ddb.hooks["BatchWriteItem"] = snapshot_and_trim

    p.ddb.hooks["BatchWriteItem"] = snapshot_and_trim
    p.consume(100)
    p.ddb.hooks.clear()
    p.drain()
    assert p.view("u1") == p.expected("u1")
    assert p.view("u1")["recentOrderCount"] == 8


def test_trim_between_the_triggers_query_and_its_snapshot_read_loses_nothing():
    """The trigger's sandwich: a snapshot + trim completes after the trigger queried the events."""
    p = Pipeline(threshold=100)
    for i in range(5):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)

    def snapshot_and_trim(_request: dict) -> None:
        p.request_snapshot("u1")
        p.run_queue(SNAPQ)
        p.run_queue(TRIMQ)

    p.ddb.page_size = 100
    p.ddb.hooks["Query"] = snapshot_and_trim
    p.trigger(100)
    assert p.ddb.tables[EVENTS] == {}  # trimmed after the trigger's query
    assert p.view("u1")["recentOrderCount"] == 5


def test_concurrent_snapshot_writer_is_detected_and_the_loser_retries():
    p = Pipeline()
    for i in range(4):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.tick(10_000)

    def other_writer(_request: dict) -> None:
        p.request_snapshot("u1")
        p.run_queue(SNAPQ)  # completes first: version 1

    p.ddb.hooks["PutItem:" + SNAPS] = other_writer
    p.request_snapshot("u1")
    p.run_queue(SNAPQ)
    versions = [w["version"] for w in p.ddb.snapshot_writes]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert p.rt.store.get_snapshot("u1").state.event_count == 4  # nothing folded twice
    p.drain()
    assert p.view("u1")["recentOrderCount"] == 4


def test_late_event_is_never_skipped_by_the_safe_snapshot():
    p = Pipeline(horizon_seconds=60)
    p.produce(event("new", ORDER_SUBMITTED, "u1", START))
    p.produce(event("late", USER_LOGGED_IN, "u1", START - 3_600_000))  # timestamp an hour old
    p.consume(100)
    p.request_snapshot("u1", horizon_seconds=None)
    p.run_queue(SNAPQ)
    assert p.rt.store.get_snapshot("u1").version == 0  # both arrived just now: too young
    p.drain()
    assert p.view("u1") == p.expected("u1")


def test_original_mode_loses_the_event_below_a_late_events_watermark():
    """SNAPSHOT_MODE=original exists to show this loss; the safe mode keeps the event."""
    outcomes = {}
    for mode in ("original", "safe"):
        p = Pipeline(mode=mode, horizon_seconds=60)
        p.produce(event("recent", ORDER_SUBMITTED, "u1", START))
        p.produce(event("late", ORDER_SUBMITTED, "u1", START - 3_600_000))
        p.consume(100)
        p.trigger(100)
        p.request_snapshot("u1", horizon_seconds=None)
        p.run_queue(SNAPQ)
        p.run_queue(TRIMQ)
        p.ddb.tables[VIEWS].clear()  # rebuild the view from storage
        p.request_snapshot("u1", horizon_seconds=None)
        p.run_queue(SNAPQ)
        outcomes[mode] = (p.view("u1")["recentOrderCount"], p.stored_state("u1")["recentOrderCount"])
    assert outcomes == {"original": (1, 1), "safe": (2, 2)}


def test_snapshot_runs_are_bounded_and_continue_with_a_follow_up_request():
    p = Pipeline(max_events=4, threshold=1000)
    for i in range(10):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.request_snapshot("u1")
    p.run_queue(SNAPQ)
    assert p.rt.store.get_snapshot("u1").state.event_count == 4
    [follow_up] = [json.loads(m.body) for m in p.sqs.queues[SNAPQ]]
    assert follow_up["horizonSeconds"] == 0
    p.drain()
    assert p.rt.store.get_snapshot("u1").state.event_count == 10
    assert p.ddb.tables[EVENTS] == {}


def test_malformed_sqs_messages_go_to_the_failure_queue_and_count_as_processed():
    p = Pipeline()
    p.sqs.queues[SNAPQ].append(FakeMessage("bad-1", "not json", 0))
    p.sqs.queues[TRIMQ].append(FakeMessage("bad-2", '{"type":"trim"}', 0))
    p.run_queue(SNAPQ)
    p.run_queue(TRIMQ)
    assert p.sqs.queues[SNAPQ] == [] and p.sqs.queues[TRIMQ] == []
    messages = p.failure_messages()
    assert [(m["source"], m["message"]["messageId"], m["message"]["body"]) for m in messages] == [
        ("snapshot", "bad-1", "not json"), ("trim", "bad-2", '{"type":"trim"}')]


def test_snapshot_failure_is_a_batch_item_failure_for_that_users_messages_only():
    p = Pipeline()
    p.produce(event("e1", ORDER_SUBMITTED, "u1", START))
    p.produce(event("e2", ORDER_SUBMITTED, "u2", START))
    p.consume(100)
    p.tick(5000)
    original_get = p.ddb.get_item

    def failing_get(TableName: str, Key: dict, ConsistentRead: bool = False) -> dict:
        if Key.get("userId", {}).get("S") == "u1":
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "GetItem")
        return original_get(TableName, Key, ConsistentRead)

    p.ddb.get_item = failing_get  # type: ignore[method-assign]
    records = [{"messageId": f"m-{u}", "body": json.dumps({"type": "snapshot", "userId": u}), "attributes": {}}
               for u in ("u1", "u2")]
    result = snapshot.process({"Records": records}, Context(), p.rt)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-u1"}]}
    assert p.rt.store.get_snapshot("u2").version == 1


def test_trigger_ignores_remove_only_batches_without_any_aws_call():
    p = Pipeline()
    removes = [{"eventName": "REMOVE", "dynamodb": {"Keys": {"userId": {"S": "u1"}, "seq": {"S": "0011"}},
                                                    "SequenceNumber": "5"}}]
    assert trigger.process({"Records": removes}, Context(), p.rt) == {"batchItemFailures": []}
    assert sum(p.ddb.calls.values()) == 0


def test_trigger_reports_the_lowest_sequence_number_of_the_failed_user():
    p = Pipeline()
    for u in ("u1", "u2"):
        p.produce(event(f"e-{u}", ORDER_SUBMITTED, u, START))
        p.produce(event(f"f-{u}", ORDER_SUBMITTED, u, START))
    p.consume(100)
    original_query = p.ddb.query

    def failing_query(**kwargs: Any) -> dict:
        if kwargs["ExpressionAttributeValues"][":u"]["S"] == "u2":
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "Query")
        return original_query(**kwargs)

    p.ddb.query = failing_query  # type: ignore[method-assign]
    records = copy.deepcopy(p.ddb.stream)
    result = trigger.process({"Records": records}, Context(), p.rt)
    lowest_u2 = min((r["dynamodb"]["SequenceNumber"] for r in records
                     if r["dynamodb"]["Keys"]["userId"]["S"] == "u2"), key=int)
    assert result == {"batchItemFailures": [{"itemIdentifier": lowest_u2}]}
    assert p.view("u1")["recentOrderCount"] == 2 and p.view("u2") is None


def test_view_row_watermark_moves_forward_even_when_no_new_event_arrives():
    p = Pipeline(threshold=1000)
    for i in range(3):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.drain()
    assert from_item(p.ddb.tables[VIEWS][("u1",)])["snapshotVersion"] == 0
    p.request_snapshot("u1")
    p.drain()
    row = from_item(p.ddb.tables[VIEWS][("u1",)])
    assert row["snapshotVersion"] == 1 and row["eventCount"] == 3


def test_failed_snapshot_request_send_is_asked_again_later():
    p = Pipeline(threshold=2)
    p.produce(event("e1", ORDER_SUBMITTED, "u1", START))
    p.produce(event("e2", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.sqs.fail_entries = 4  # the first call and its 3 retries
    p.trigger(100)
    assert p.sqs.queues[SNAPQ] == [] and p.sqs.fail_entries == 0
    assert "snapshotRequestedAtCount" not in from_item(p.ddb.tables[VIEWS][("u1",)])
    p.produce(event("e3", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.trigger(100)
    assert len(p.sqs.queues[SNAPQ]) == 1


def test_trim_never_passes_the_persisted_watermark_and_is_idempotent():
    p = Pipeline(threshold=1000)
    for i in range(4):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    keys = sorted(k[1] for k in p.ddb.tables[EVENTS])
    p.sqs.queues[TRIMQ].append(FakeMessage("t1", json.dumps({"type": "trim", "userId": "u1", "watermark": keys[-1]}),
                                           0))
    p.run_queue(TRIMQ, redeliver=True)
    assert len(p.ddb.tables[EVENTS]) == 4  # no snapshot: nothing is provably contained
    p.ddb.tables[SNAPS][("u1",)] = {"userId": {"S": "u1"}, "watermark": {"S": keys[1]}, "version": {"N": "1"}}
    p.sqs.queues[TRIMQ].append(FakeMessage("t2", json.dumps({"type": "trim", "userId": "u1", "watermark": keys[-1]}),
                                           0))
    p.run_queue(TRIMQ, redeliver=True)
    assert sorted(k[1] for k in p.ddb.tables[EVENTS]) == keys[2:]


def test_trim_deletes_in_batches_of_25():
    p = Pipeline(threshold=10_000)
    for i in range(60):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.tick(10_000)
    p.request_snapshot("u1")
    p.run_queue(SNAPQ)
    writes_before = p.ddb.calls["BatchWriteItem"]
    p.ddb.unprocessed_writes = 5
    p.run_queue(TRIMQ)
    assert p.ddb.tables[EVENTS] == {}
    assert p.ddb.calls["BatchWriteItem"] - writes_before >= 3  # 60 deletes = at least 3 calls


def test_command_puts_records_and_retries_only_the_failed_ones():
    p = Pipeline()
    p.kinesis.fail_records = 2
    result = command.process([{"type": ORDER_SUBMITTED, "order": {"userId": f"u{i}"}} for i in range(5)],
                             Context(), p.rt, client=p.kinesis,
                             backoff=Backoff(sleep=no_sleep))
    assert result["sent"] == 5 and result["failed"] == []
    assert sorted(json.loads(base64.b64decode(r["kinesis"]["data"]))["id"] for r in p.kinesis.records) == sorted(
        result["eventIds"])
    assert [r["kinesis"]["partitionKey"] for r in p.kinesis.records] == ["u2", "u3", "u4", "u0", "u1"]


def test_command_raises_when_records_still_fail_after_the_retries():
    p = Pipeline()
    p.kinesis.fail_records = 10**6
    with pytest.raises(command.PutRecordsFailed, match="still failed") as caught:
        command.process({"type": USER_LOGGED_IN, "userId": "u1"}, Context(), p.rt, client=p.kinesis,
                             backoff=Backoff(sleep=no_sleep))
    assert caught.value.failed[0]["errorCode"] == "ProvisionedThroughputExceededException"


# ---------------------------------------------------------------------------------------------
# The random schedule: any interleaving converges (I1-I5)
# ---------------------------------------------------------------------------------------------

USERS = ["u1", "u2", "u3"]
# Domain timestamps relative to now: current, just inside the 1 s horizon, or late (up to an hour old).
ages = st.one_of(st.just(0), st.integers(min_value=-1500, max_value=0), st.integers(min_value=-3_600_000, max_value=0))

produce_step = st.tuples(st.just("produce"), st.sampled_from(USERS),
                         st.sampled_from([USER_CREATED, USER_LOGGED_IN, ORDER_SUBMITTED, ORDER_SUBMITTED]),
                         ages, st.sampled_from(["Ann", "Bob", None]))
consume_step = st.tuples(st.just("consume"), st.integers(min_value=1, max_value=8), st.booleans())
trigger_step = st.tuples(st.just("trigger"), st.integers(min_value=1, max_value=8), st.booleans())
# one_of picks a branch uniformly: repeating a branch weights it.
steps = st.lists(st.one_of(
    produce_step, produce_step, produce_step, consume_step, consume_step, trigger_step, trigger_step,
    st.tuples(st.just("retry"), st.integers(min_value=0, max_value=100)),
    st.tuples(st.just("poison")),
    st.tuples(st.just("snapshot"), st.booleans()),
    st.tuples(st.just("trim"), st.booleans()),
    st.tuples(st.just("manual"), st.sampled_from(USERS), st.sampled_from([0, None])),
    st.tuples(st.just("tick"), st.integers(min_value=0, max_value=3000)),
    st.tuples(st.just("throttle"), st.integers(min_value=1, max_value=6)),
    st.tuples(st.just("snapshot-mid-write"), st.sampled_from(USERS)),
    st.tuples(st.just("snapshot-mid-query"), st.sampled_from(USERS)),
    st.tuples(st.just("drop-view"), st.sampled_from(USERS)),
    st.tuples(st.just("snapshot-race"), st.sampled_from(USERS)),
    st.tuples(st.just("events-mid-query"), st.sampled_from(USERS)),
), min_size=15, max_size=60)


@dataclass
class Schedule:
    pipeline: Pipeline
    ids: itertools.count = field(default_factory=itertools.count)

    def concurrent_snapshot(self, user_id: str) -> Callable[[dict], None]:
        def run(_request: dict) -> None:
            self.pipeline.request_snapshot(user_id)
            self.pipeline.run_queue(SNAPQ)
            self.pipeline.run_queue(TRIMQ)
        return run

    def newer_events(self, user_id: str) -> Callable[[dict], None]:
        """Another event is stored and its own trigger runs while this function is half way."""
        def run(_request: dict) -> None:
            p = self.pipeline
            p.produce(event(f"e{next(self.ids)}", ORDER_SUBMITTED, user_id, p.now))
            p.consume(100)
            p.trigger(100)
        return run

    def apply(self, step: tuple) -> None:
        p, kind = self.pipeline, step[0]
        if kind == "produce":
            _, user, event_type, age, name = step
            p.produce(event(f"e{next(self.ids)}", event_type, user, p.now + age, name))
        elif kind == "retry" and p.produced:
            p.produce(p.produced[step[1] % len(p.produced)])
        elif kind == "poison":
            p.produce_poison(b"\x00garbage")
        elif kind == "consume":
            p.consume(step[1], redeliver=step[2])
        elif kind == "trigger":
            p.trigger(step[1], redeliver=step[2])
        elif kind == "snapshot":
            p.run_queue(SNAPQ, redeliver=step[1])
        elif kind == "trim":
            p.run_queue(TRIMQ, redeliver=step[1])
        elif kind == "manual":
            p.request_snapshot(step[1], step[2])
        elif kind == "tick":
            p.tick(step[1])
        elif kind == "throttle":
            p.ddb.unprocessed_writes = step[1]
        elif kind == "snapshot-mid-write":
            p.ddb.hooks["BatchWriteItem"] = self.concurrent_snapshot(step[1])
        elif kind == "snapshot-mid-query":
            p.ddb.hooks["Query"] = self.concurrent_snapshot(step[1])
        elif kind == "snapshot-race":
            p.ddb.hooks["PutItem:" + SNAPS] = self.concurrent_snapshot(step[1])
        elif kind == "events-mid-query":
            p.ddb.hooks["Query"] = self.newer_events(step[1])
        elif kind == "drop-view":
            p.ddb.tables[VIEWS].pop((step[1],), None)
            p.request_snapshot(step[1], None)  # the operator's rebuild


def run_schedule(schedule: list[tuple], mode: str = "safe", page_size: int = 2) -> list[str]:
    """Run the steps, then drain; return every invariant violation found at quiescence."""
    p = Pipeline(mode=mode, horizon_seconds=1, threshold=3, max_events=5, page_size=page_size)
    runner = Schedule(p)
    for step in schedule:
        runner.apply(step)
    p.ddb.hooks.clear()
    p.ddb.unprocessed_writes = 0
    p.drain()
    problems = []
    for user in sorted(p.users()):
        if p.view(user) != p.expected(user):  # I1, I3
            problems.append(f"I1: view of {user} is {p.view(user)}, expected {p.expected(user)}")
        if p.stored_state(user) != p.expected(user):  # I2: storage still holds every event
            problems.append(f"I2: storage of {user} rebuilds {p.stored_state(user)}")
    watermarks: dict[str, list[tuple[int, str]]] = {}
    for write in p.ddb.snapshot_writes:
        watermarks.setdefault(write["userId"], []).append((write["version"], write["watermark"]))
    for user, history in watermarks.items():  # I4: versions and watermarks only move forward
        if history != sorted(history) or len({v for v, _ in history}) != len(history):
            problems.append(f"I4: snapshot writes of {user}: {history}")
    if [m["record"]["data"] for m in p.failure_messages()] != p.poison_sent:  # I5, once each
        problems.append(f"I5: failure queue {p.failure_messages()} != poison {p.poison_sent}")
    return problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.sampled_from([1, 2, 100]))
def test_any_schedule_converges_to_the_fold_of_the_accepted_events(schedule, page_size):
    assert run_schedule(schedule, page_size=page_size) == []


# Late events, one user, snapshots at any time: enough to expose the original example's bug quickly.
late_event_steps = st.lists(st.one_of(
    st.tuples(st.just("produce"), st.just("u1"), st.just(ORDER_SUBMITTED), ages, st.none()),
    st.tuples(st.just("consume"), st.integers(min_value=1, max_value=8), st.just(False)),
    st.tuples(st.just("manual"), st.just("u1"), st.sampled_from([0, None])),
    st.tuples(st.just("snapshot"), st.just(False)),
    st.tuples(st.just("tick"), st.integers(min_value=0, max_value=3000)),
), min_size=4, max_size=20)


def test_the_schedule_property_catches_the_original_snapshot_logic():
    """Proof the property above can fail: in SNAPSHOT_MODE=original hypothesis finds a schedule that
    loses an event (and the same schedule is fine in safe mode)."""
    counterexample = find(late_event_steps, lambda schedule: bool(run_schedule(schedule, mode="original")),
                          settings=settings(max_examples=3000, deadline=None, phases=[Phase.generate],
                                            derandomize=True, suppress_health_check=list(HealthCheck)))
    assert any(p.startswith(("I1", "I2")) for p in run_schedule(counterexample, mode="original"))
    assert run_schedule(counterexample, mode="safe") == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(late_event_steps)
def test_late_events_never_lose_anything_in_safe_mode(schedule):
    assert run_schedule(schedule) == []
