"""Capture a real stream's records (and tables' items) into a bundle, and feed a bundle into a local stream.

    esjoin capture --endpoint URL --stream NAME [--since TIME] [--table NAME ...] --out FILE
    esjoin capture --target aws --region eu-west-1 --stream NAME ... --out FILE      (real AWS: opt-in)
    esjoin replay --inputs FILE [--stream NAME] [--endpoint URL]

Capturing only reads: ListShards, GetShardIterator, GetRecords, Scan (AWS's read-only actions; an IAM
role with `kinesis:Get*`, `kinesis:List*`, `kinesis:Describe*` and `dynamodb:Scan` is enough). Every
shard is read from `--since` (AT_TIMESTAMP) or from the oldest record kept (TRIM_HORIZON) up to the
stream's tip at the moment of capture.

The bundle is gzip-compressed JSON:

    {"format": "esjoin-capture", "version": 1, "capturedAt": ms, "source": "<endpoint or aws:<region>>",
     "stream": NAME, "since": ms | null,
     "shards": {"<shard id>": [{"sequenceNumber", "partitionKey", "data" (base64), "arrival" (ms)}, ...]},
     "tables": {"<table>": [<item in DynamoDB JSON>, ...]}}

Feeding puts the records into a local stream with their partition keys, in their order per shard, the
shards merged by arrival time: what one partition key saw, in the order it saw it, which is what the
pipeline's per-user order depends on. Items are put into local tables of the same names.
"""

from __future__ import annotations

import base64
import gzip
import heapq
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esjoin.target import Target

FORMAT = "esjoin-capture"
FORMAT_VERSION = 1
PUT_BATCH = 500  # PutRecords' limit
EMPTY_READS_AT_TIP = 2  # GetRecords calls with nothing new before a shard counts as read to its tip


class CaptureError(ValueError):
    """A bundle that cannot be read, or a capture that cannot be taken, with the reason."""


@dataclass(frozen=True)
class Bundle:
    document: dict[str, Any]

    @property
    def records(self) -> int:
        return sum(len(records) for records in self.document["shards"].values())

    def write(self, path: Path) -> None:
        path.write_bytes(gzip.compress(json.dumps(self.document, separators=(",", ":")).encode()))

    @classmethod
    def read(cls, path: Path) -> Bundle:
        try:
            document = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, EOFError, ValueError) as error:
            raise CaptureError(f"{path}: not an esjoin capture bundle ({error})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CaptureError(f"{path}: not an esjoin capture bundle")
        if document.get("version") != FORMAT_VERSION:
            raise CaptureError(
                f"{path}: bundle format version {document.get('version')!r}; this esjoin reads {FORMAT_VERSION}"
            )
        if not isinstance(document.get("shards"), dict):
            raise CaptureError(f"{path}: corrupt bundle (no shards)")
        return cls(document)


def capture(target: Target, stream: str, since_ms: int | None = None, tables: Iterable[str] = ()) -> Bundle:
    """Read `stream` (every shard, from `since_ms` or its oldest record) and `tables`, without writing."""
    clients = target.clients()
    shards: dict[str, list[dict[str, Any]]] = {}
    for shard_id in _shard_ids(clients.kinesis, stream):
        shards[shard_id] = list(_read_shard(clients.kinesis, stream, shard_id, since_ms))
    items: dict[str, list[dict[str, Any]]] = {}
    for table in tables:
        items[table] = [
            item
            for page in clients.dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
            for item in page["Items"]
        ]
    return Bundle(
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "capturedAt": int(time.time() * 1000),
            "source": target.describe(),
            "stream": stream,
            "since": since_ms,
            "shards": shards,
            "tables": items,
        }
    )


def feed(bundle: Bundle, target: Target, stream: str | None = None) -> dict[str, int]:
    """Put the bundle's records into `stream` (default: the captured stream's name) and its items into
    tables of the same names, on a local target."""
    if not target.is_local:
        raise CaptureError("feeding a bundle writes: it goes to a local endpoint only")
    clients = target.clients()
    name = stream or bundle.document["stream"]
    ordered = list(_merged(bundle.document["shards"]))
    for start in range(0, len(ordered), PUT_BATCH):
        chunk = [
            {"Data": base64.b64decode(r["data"]), "PartitionKey": r["partitionKey"]}
            for r in ordered[start : start + PUT_BATCH]
        ]
        _put_in_order(clients.kinesis, name, chunk)
    items = 0
    for table, rows in bundle.document.get("tables", {}).items():
        for item in rows:
            clients.dynamodb.put_item(TableName=table, Item=item)
            items += 1
    return {"records": len(ordered), "items": items}


def feed_scripted(bundle: Bundle, backend: Any, stream: str | None = None) -> dict[str, int]:
    """feed() for a deterministic endpoint: the same puts, submitted as scripted inputs, so its seed
    decides where each is admitted among the pipeline's steps (esjoin.testing.reproduce.Script)."""
    from esjoin.testing.reproduce import Script

    script = Script(backend)
    name = stream or bundle.document["stream"]
    ordered = list(_merged(bundle.document["shards"]))
    kinesis, dynamodb = script.client("kinesis"), script.client("dynamodb")
    for start in range(0, len(ordered), PUT_BATCH):
        records = [
            {"Data": base64.b64decode(r["data"]), "PartitionKey": r["partitionKey"]}
            for r in ordered[start : start + PUT_BATCH]
        ]
        kinesis.put_records(StreamName=name, Records=records)
    items = 0
    for table, rows in bundle.document.get("tables", {}).items():
        for item in rows:
            dynamodb.put_item(TableName=table, Item=item)
            items += 1
    backend.control.submit_inputs(script.requests, script.blobs)
    return {"records": len(ordered), "items": items}


def _shard_ids(kinesis: Any, stream: str) -> list[str]:
    ids: list[str] = []
    arguments: dict[str, Any] = {"StreamName": stream}
    while True:
        page = kinesis.list_shards(**arguments)
        ids.extend(shard["ShardId"] for shard in page["Shards"])
        if not page.get("NextToken"):
            return ids
        arguments = {"NextToken": page["NextToken"]}


def _read_shard(kinesis: Any, stream: str, shard_id: str, since_ms: int | None) -> Iterator[dict[str, Any]]:
    position: dict[str, Any] = (
        {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": since_ms / 1000}
        if since_ms is not None
        else {"ShardIteratorType": "TRIM_HORIZON"}
    )
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, **position)["ShardIterator"]
    empty = 0
    while iterator and empty < EMPTY_READS_AT_TIP:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        for record in page["Records"]:
            yield {
                "sequenceNumber": record["SequenceNumber"],
                "partitionKey": record["PartitionKey"],
                "data": base64.b64encode(record["Data"]).decode(),
                "arrival": int(record["ApproximateArrivalTimestamp"].timestamp() * 1000),
            }
        at_tip = not page["Records"] and page.get("MillisBehindLatest", 0) == 0
        empty = empty + 1 if at_tip else 0
        iterator = page.get("NextShardIterator")


def _merged(shards: dict[str, list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Every record, each shard's in its order, the shards interleaved by arrival time."""
    streams = (
        [(record["arrival"], shard, index, record) for index, record in enumerate(records)]
        for shard, records in sorted(shards.items())
    )
    for _, _, _, record in heapq.merge(*streams):
        yield record


def _put_in_order(kinesis: Any, stream: str, records: list[dict[str, Any]]) -> None:
    """PutRecords, retrying only what failed, and stopping at a partition key's first failure so that no
    record of that key overtakes an earlier one (a retry would put it after its successors)."""
    pending = records
    for _ in range(20):
        if not pending:
            return
        response = kinesis.put_records(StreamName=stream, Records=pending)
        first_failure = next((i for i, r in enumerate(response["Records"]) if "ErrorCode" in r), None)
        if first_failure is None:
            return
        pending = pending[first_failure:]
    raise CaptureError(f"PutRecords into {stream} kept failing; {len(pending)} records not fed")
