"""In-memory fakes of the AWS clients the demo's functions use (DynamoDB, SQS, Kinesis; no network).

They speak the boto3 client API of lambdas/store.py, lambdas/queues.py and lambdas/command.py, enforce
AWS's batch limits, can return UnprocessedItems / failed entries, page queries small, and record the
events table's stream.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from lambdas.queues import MAX_PAYLOAD_BYTES
from lambdas.store import from_item

EVENTS, IDS, SNAPS, VIEWS = "events", "event-ids", "snapshots", "views"
SNAPQ, TRIMQ, FAILQ = "q/snapshot", "q/trim", "q/failure"


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
        self.stream.append(
            {
                "eventName": name,
                "eventSource": "aws:dynamodb",
                "dynamodb": {
                    "Keys": {"userId": item["userId"], "seq": item["seq"]},
                    "SequenceNumber": str(next(self._stream_seq)),
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
        )

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
            found = [
                copy.deepcopy(self.tables[table][self._key(table, k)])
                for k in served
                if self._key(table, k) in self.tables[table]
            ]
            if "ProjectionExpression" in request:
                names = [
                    request["ExpressionAttributeNames"][n.strip()] for n in request["ProjectionExpression"].split(",")
                ]
                found = [{n: i[n] for n in names if n in i} for i in found]
            responses[table] = found
            if left:
                unprocessed[table] = {**request, "Keys": left}
        return {"Responses": responses, "UnprocessedKeys": unprocessed}

    def batch_write_item(self, RequestItems: dict) -> dict:
        self.calls["BatchWriteItem"] += 1
        flat = [(table, r) for table, requests in RequestItems.items() for r in requests]
        assert 0 < len(flat) <= 25, "BatchWriteItem takes 1 to 25 requests"
        keys = [
            (t, self._key(t, r["PutRequest"]["Item"] if "PutRequest" in r else r["DeleteRequest"]["Key"]))
            for t, r in flat
        ]
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

    def query(
        self,
        TableName: str,
        KeyConditionExpression: str,
        ExpressionAttributeNames: dict,
        ExpressionAttributeValues: dict,
        ConsistentRead: bool = False,
        Limit: int | None = None,
        ExclusiveStartKey: dict | None = None,
        ProjectionExpression: str | None = None,
    ) -> dict:
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

    def put_item(
        self,
        TableName: str,
        Item: dict,
        ConditionExpression: str | None = None,
        ExpressionAttributeNames: dict | None = None,
        ExpressionAttributeValues: dict | None = None,
    ) -> dict:
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
            self.queues[QueueUrl].append(
                FakeMessage(f"m{next(self.ids)}", entry["MessageBody"], self.clock() + delay * 1000)
            )
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
        self.records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": partition_key,
                    "sequenceNumber": seq,
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": self.clock() / 1000,
                },
                "eventSource": "aws:kinesis",
                "eventID": f"shardId-000000000000:{seq}",
                "eventVersion": "1.0",
                "eventName": "aws:kinesis:record",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
            }
        )
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
                results.append(
                    {
                        "SequenceNumber": self.append(record["Data"], record["PartitionKey"]),
                        "ShardId": "shardId-000000000000",
                    }
                )
        return {"FailedRecordCount": failed, "Records": results}
