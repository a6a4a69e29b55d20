"""Helpers for the endpoint's black-box tests (no tests here; fixtures are in conftest.py).

Everything goes through real HTTP: boto3 clients with dummy credentials, the AWS CLI as a
subprocess, and `Control` for the endpoint's own /_esjoin/ API. Waits poll a condition until a
deadline and, when they time out, say what they last saw (and the invocation history if given).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config

REGION = "us-east-1"
ACCOUNT = "000000000000"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lambda-role"
RUNTIME = "python3.11"
WAIT_SECONDS = 15.0
# No retries: a test sees the endpoint's first answer, so a 500 or a throttle is never hidden.
CLIENT_CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60, max_pool_connections=50)

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    condition: Callable[[], T],
    what: str,
    timeout: float = WAIT_SECONDS,
    history: Callable[[], Any] | None = None,
    interval: float = 0.02,
) -> T:
    """`condition()`'s first truthy value; AssertionError (with what was seen) after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except AssertionError as error:  # a check that is not true yet
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            seen = f"; history: {history()}" if history else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}{seen}")
        time.sleep(interval)


def make_zip(files: dict[str, str]) -> bytes:
    """A deployment package: file name -> Python source (dedented)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in files.items():
            archive.writestr(name, textwrap.dedent(source))
    return buffer.getvalue()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def client(endpoint_url: str, service: str, region: str = REGION, config: Config = CLIENT_CONFIG) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=config,
    )


@dataclass
class Endpoint:
    """A started Emulator and its URL; `client(service)` makes a boto3 client for it."""

    emulator: Any
    url: str

    def client(self, service: str, region: str = REGION) -> Any:
        return client(self.url, service, region)


def start_endpoint(state_dir: Path, **config: Any) -> Endpoint:
    """An Emulator on a free port, as `python -m esjoin.emulator` would run it (ESJOIN_* apply, then `config`),
    in fast mode whatever ESJOIN_SEED says: these endpoints run in the test's own process, where deterministic
    mode would move the test's clock too (test_deterministic.py runs deterministic endpoints as processes)."""
    from esjoin.emulator.config import EmulatorConfig
    from esjoin.emulator.server import Emulator

    environ = {key: value for key, value in os.environ.items() if key != "ESJOIN_SEED"}
    emulator = Emulator(EmulatorConfig.from_env(environ, port=free_port(), state_dir=state_dir, **config))
    try:
        emulator.start()
    except BaseException:
        emulator.stop()
        raise
    return Endpoint(emulator, emulator.endpoint_url)


# -- the control API -----------------------------------------------------------------------------


@dataclass
class ControlResponse:
    status: int
    body: Any

    def __repr__(self) -> str:
        return f"{self.status} {self.body!r}"


class Control:
    """The /_esjoin/ API over HTTP. Every call returns (status, parsed JSON), errors included."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None, **params: Any
    ) -> ControlResponse:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.endpoint_url}/_esjoin/{path.lstrip('/')}" + (f"?{query}" if query else "")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text.decode(errors="replace")
        return ControlResponse(status, parsed)

    def get(self, path: str, **params: Any) -> ControlResponse:
        return self.request("GET", path, **params)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> ControlResponse:
        return self.request("POST", path, body, **kwargs)

    def delete(self, path: str) -> ControlResponse:
        return self.request("DELETE", path)

    def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.request(method, path, body, **params)
        assert 200 <= response.status < 300, f"{method} /_esjoin/{path}: {response}"
        return response.body

    def history(self, function: str | None = None, **params: Any) -> list[dict[str, Any]]:
        return self.ok("GET", "history", function=function, **params)["invocations"]

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        return self.ok("POST", "faults", rule)

    def quiescent(self) -> bool:
        return bool(self.ok("GET", "quiescence")["quiescent"])


# -- functions ------------------------------------------------------------------------------------


@dataclass
class Functions:
    """Creates functions with unique names; `cleanup()` deletes them and their mappings."""

    lambda_client: Any
    created: list[str] = field(default_factory=list)

    def create(
        self,
        source: str | None = None,
        *,
        files: dict[str, str] | None = None,
        handler: str = "app.handler",
        prefix: str = "fn",
        **params: Any,
    ) -> str:
        name = unique(prefix)
        package = make_zip(files if files is not None else {"app.py": source or ""})
        self.lambda_client.create_function(
            FunctionName=name,
            Runtime=params.pop("Runtime", RUNTIME),
            Role=params.pop("Role", ROLE),
            Handler=handler,
            Code={"ZipFile": package},
            **params,
        )
        self.created.append(name)
        return name

    def invoke(self, name: str, event: Any = None, **params: Any) -> tuple[dict[str, Any], Any]:
        """Invoke synchronously; returns (the response, the decoded payload)."""
        response = self.lambda_client.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **params)
        body = response["Payload"].read()
        return response, json.loads(body) if body else None

    def cleanup(self) -> None:
        errors = []
        for name in self.created:
            try:
                mappings = self.lambda_client.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
                for mapping in mappings:
                    self.lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])
                self.lambda_client.delete_function(FunctionName=name)
            except self.lambda_client.exceptions.ResourceNotFoundException:
                continue  # the test deleted it
            except Exception as error:  # keep cleaning the others; report at the end
                errors.append(f"{name}: {error!r}")
        self.created.clear()
        assert not errors, f"cleanup failed: {errors}"


# -- the probe: a function that records every event it receives ----------------------------------

PROBE_SOURCE = """
    import json
    import os
    import time

    import boto3

    TABLE = os.environ["PROBE_TABLE"]
    MODE = os.environ.get("PROBE_MODE", "ok")
    dynamodb = boto3.client("dynamodb")


    def handler(event, context):
        dynamodb.put_item(TableName=TABLE, Item={
            "function": {"S": context.function_name},
            "at": {"S": f"{time.time_ns():020d}-{context.aws_request_id}"},
            "requestId": {"S": context.aws_request_id},
            "event": {"S": json.dumps(event)},
        })
        print(f"probe received {len(event.get('Records', []))} records")
        if MODE == "report-failures":
            # Fail the SQS messages whose body says FAIL, on their first receive only.
            failed = [{"itemIdentifier": record["messageId"]} for record in event.get("Records", [])
                      if "FAIL" in record.get("body", "") and record["attributes"]["ApproximateReceiveCount"] == "1"]
            return {"batchItemFailures": failed}
        return {"records": len(event.get("Records", []))}
"""


@dataclass
class Probe:
    name: str
    arn: str
    table: str
    dynamodb: Any
    control: Control

    def events(self) -> list[dict[str, Any]]:
        """Every event the probe received, oldest first."""
        items: list[dict[str, Any]] = []
        arguments: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#f = :f",
            "ConsistentRead": True,
            "ExpressionAttributeNames": {"#f": "function"},
            "ExpressionAttributeValues": {":f": {"S": self.name}},
        }
        while True:
            page = self.dynamodb.query(**arguments)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [json.loads(item["event"]["S"]) for item in items]

    def records(self) -> list[dict[str, Any]]:
        return [record for event in self.events() for record in event.get("Records", [])]

    def history(self) -> list[dict[str, Any]]:
        return self.control.history(self.name)

    def wait_records(self, count: int, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        """Wait until the probe has received at least `count` records; returns them all."""
        return wait_until(
            lambda: (records := self.records()) and len(records) >= count and records,
            f"{count} records delivered to {self.name}",
            timeout,
            history=self.history,
        )


def kinesis_data(record: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(record["kinesis"]["data"]))


def stream_arn(kinesis: Any, name: str) -> str:
    """Create a Kinesis stream, wait until it is ACTIVE, return its ARN."""
    description = wait_until(
        lambda: (d := kinesis.describe_stream(StreamName=name)["StreamDescription"])["StreamStatus"] == "ACTIVE" and d,
        f"stream {name} ACTIVE",
    )
    return description["StreamARN"]


def create_stream(kinesis: Any, shards: int = 1) -> tuple[str, str]:
    name = unique("stream")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    return name, stream_arn(kinesis, name)


def create_table(dynamodb: Any, *, range_key: bool = False, stream_view: str | None = None) -> tuple[str, str | None]:
    """A PAY_PER_REQUEST table (pk string [, sk string]); returns (name, stream ARN or None)."""
    name = unique("table")
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "sk", "AttributeType": "S"})
    extra: dict[str, Any] = {}
    if stream_view:
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream_view}
    table = dynamodb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST", **extra
    )["TableDescription"]
    return name, table.get("LatestStreamArn")


def create_queue(sqs: Any, **attributes: str) -> tuple[str, str]:
    """An SQS queue; returns (URL, ARN)."""
    url = sqs.create_queue(QueueName=unique("queue"), Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def wait_mapping_state(lambda_client: Any, uuid_: str, state: str, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
    return wait_until(
        lambda: (m := lambda_client.get_event_source_mapping(UUID=uuid_))["State"] == state and m,
        f"mapping {uuid_} {state}",
        timeout,
    )
