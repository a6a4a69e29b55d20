"""Probe functions and the resources around them, for measuring the endpoint without the application.

- `hop1`: Kinesis batch -> one PutItem per record into the `hop` table (its stream is on);
- `hop2`: the `hop` table's stream -> one PutItem per record into the `out` table, with `written_at`,
  the function's own clock just before the write (the worker shares the machine's clock);
- `counter`: Kinesis batch -> counts the records, nothing else (the mapping's own cost, not the
  function's).
Everything is named `bench-<run>-...` so two runs on one endpoint never collide.
"""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLE = "arn:aws:iam::000000000000:role/bench-probe"
RUNTIME = "python3.12"

HOP1 = """
import base64, json, os, time
import boto3
ddb = boto3.client("dynamodb")
TABLE = os.environ["HOP_TABLE"]
def handler(event, context):
    for record in event["Records"]:
        doc = json.loads(base64.b64decode(record["kinesis"]["data"]))
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": doc["id"]}, "sent_at": {"N": repr(doc["sent_at"])},
                                            "hop1_at": {"N": repr(time.time())}})
    return {"n": len(event["Records"])}
"""

HOP2 = """
import os, time
import boto3
ddb = boto3.client("dynamodb")
TABLE = os.environ["OUT_TABLE"]
def handler(event, context):
    for record in event["Records"]:
        new = record["dynamodb"].get("NewImage")
        if not new:
            continue
        ddb.put_item(TableName=TABLE, Item={"pk": new["pk"], "sent_at": new["sent_at"], "hop1_at": new["hop1_at"],
                                            "written_at": {"N": repr(time.time())}})
    return {"n": len(event["Records"])}
"""

COUNTER = """
count = 0
def handler(event, context):
    global count
    count += len(event["Records"])
    return {"count": count}
"""


def zip_source(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("handler.py")
        info.external_attr = 0o644 << 16
        archive.writestr(info, source)
    return buffer.getvalue()


def wait_for(what: str, condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; raise with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")


def count_items(dynamodb: Any, table: str) -> int:
    total, kwargs = 0, {}
    while True:
        page = dynamodb.scan(TableName=table, Select="COUNT", **kwargs)
        total += page["Count"]
        if "LastEvaluatedKey" not in page:
            return total
        kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def scan_items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items, kwargs = [], {}
    while True:
        page = dynamodb.scan(TableName=table, **kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


@dataclass
class ProbeResources:
    """Creates streams, tables, functions and mappings on one endpoint through its AWS APIs."""

    clients: Callable[[str], Any]  # service name -> boto3 client
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def name(self, suffix: str) -> str:
        return f"bench-{self.run}-{suffix}"

    def stream(self, suffix: str, shards: int = 1) -> str:
        """A Kinesis stream, ACTIVE; returns its ARN."""
        kinesis = self.clients("kinesis")
        name = self.name(suffix)
        kinesis.create_stream(StreamName=name, ShardCount=shards)
        return wait_for(f"stream {name} ACTIVE", lambda: _active_stream_arn(kinesis, name), 30)

    def table(self, suffix: str, stream: bool = False) -> tuple[str, str | None]:
        """A table keyed by `pk`; (name, stream ARN or None)."""
        dynamodb = self.clients("dynamodb")
        name = self.name(suffix)
        extra = {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}} if stream else {}
        created = dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            **extra,
        )["TableDescription"]
        return name, created.get("LatestStreamArn")

    def queue(self, suffix: str) -> str:
        return self.clients("sqs").create_queue(QueueName=self.name(suffix))["QueueUrl"]

    def function(self, suffix: str, source: str, environment: dict[str, str] | None = None, timeout: int = 30) -> str:
        lambda_ = self.clients("lambda")
        name = self.name(suffix)
        lambda_.create_function(
            FunctionName=name,
            Runtime=RUNTIME,
            Role=ROLE,
            Handler="handler.handler",
            Code={"ZipFile": zip_source(source)},
            Timeout=timeout,
            Environment={"Variables": environment or {}},
        )
        return name

    def mapping(
        self,
        function: str,
        source_arn: str,
        batch_size: int,
        enabled: bool = True,
        starting_position: str = "TRIM_HORIZON",
    ) -> str:
        lambda_ = self.clients("lambda")
        uuid_ = lambda_.create_event_source_mapping(
            FunctionName=function,
            EventSourceArn=source_arn,
            BatchSize=batch_size,
            StartingPosition=starting_position,
            MaximumBatchingWindowInSeconds=0,
            Enabled=enabled,
        )["UUID"]
        state = "Enabled" if enabled else "Disabled"
        wait_for(f"mapping {uuid_} {state}", lambda: lambda_.get_event_source_mapping(UUID=uuid_)["State"] == state, 30)
        return uuid_


def _active_stream_arn(kinesis: Any, name: str) -> str | None:
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    return summary["StreamARN"] if summary["StreamStatus"] == "ACTIVE" else None
