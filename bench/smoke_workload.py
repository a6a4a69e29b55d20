"""The smoke workload: the event pipeline's paths end to end on any local endpoint, with per-record latency.

    Kinesis -> function `ingest` -> DynamoDB `events` (stream on) -> function `project` -> DynamoDB `views`
    SQS -> function `enqueue` -> DynamoDB `views`

It measures, on whatever answers at the endpoint URL (ours, LocalStack, anything with these APIs):

- the time to create its resources (IAM role, stream, tables, queue, four functions, three mappings);
- cold start: the first direct invocation of a function just created, then a second (warm) one;
- warm-up: a few records through both paths, the first the pipeline's functions see;
- latency of `records` records per path sent at a steady rate: Kinesis -> fn -> DynamoDB (one hop),
  Kinesis -> fn -> DynamoDB -> stream -> fn -> DynamoDB (two hops), SQS -> fn -> DynamoDB; each record's
  latency runs from just before its put to the function's own clock when it writes the row (functions
  run on this machine, in a worker process or a container, and share its clock). Percentiles are
  nearest-rank (`bench.report.summary_ms`);
- one record per path after `idle_seconds` of silence (pollers that back off when idle show it here);
- the whole run's time.

Everything it creates is named `bench-<run>-...` (`bench.probes.ProbeResources`), so runs never collide,
and it is deleted at the end whatever happened. Waits poll with deadlines; the only sleeps that are not
polls are the steady send rate and the deliberate idle spell. Clients carry dummy credentials and refuse
non-local endpoints (`bench.endpoints.client`). Reproduce one column of `python -m bench smoke` with
`python -m bench.smoke_workload --endpoint URL`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from bench.endpoints import CLIENT_CONFIG, client
from bench.probes import RUNTIME, ProbeResources, scan_items, wait_for, zip_source
from bench.report import load_average, paced, summary_ms

# A first invocation on LocalStack may start a container (or pull its image): give calls room.
WORKLOAD_CLIENT_CONFIG = CLIENT_CONFIG.merge(Config(read_timeout=300))
POLL_SECONDS = 0.1  # between looks at the views table; latencies come from the functions' clocks, not from this
FUNCTIONS = ("ingest", "project", "enqueue", "probe")
PATHS = ("kinesisOneHop", "kinesisTwoHops", "sqs")
TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)

# Producers put {"key": <the views row's key>, "sent_at": <epoch seconds>}; every row carries sent_at
# and the clock readings of the functions it went through.
INGEST = """
import base64, json, os, time
import boto3
table, dynamodb = os.environ["EVENTS_TABLE"], boto3.client("dynamodb")
def handler(event, context):
    for record in event["Records"]:
        body = json.loads(base64.b64decode(record["kinesis"]["data"]))
        dynamodb.put_item(TableName=table, Item={"pk": {"S": body["key"]}, "sent_at": {"N": repr(body["sent_at"])},
                                                 "ingest_at": {"N": repr(time.time())}})
    return {"records": len(event["Records"])}
"""

PROJECT = """
import os, time
import boto3
table, dynamodb = os.environ["VIEWS_TABLE"], boto3.client("dynamodb")
def handler(event, context):
    for record in event["Records"]:
        image = record["dynamodb"].get("NewImage")
        if image:
            dynamodb.put_item(TableName=table, Item={**image, "arrived_at": {"N": repr(time.time())}})
    return {"records": len(event["Records"])}
"""

ENQUEUE = """
import json, os, time
import boto3
table, dynamodb = os.environ["VIEWS_TABLE"], boto3.client("dynamodb")
def handler(event, context):
    for record in event["Records"]:
        body = json.loads(record["body"])
        dynamodb.put_item(TableName=table, Item={"pk": {"S": body["key"]}, "sent_at": {"N": repr(body["sent_at"])},
                                                 "arrived_at": {"N": repr(time.time())}})
    return {"batchItemFailures": []}
"""

PROBE = """
def handler(event, context):
    return {"function": context.function_name, "round": event.get("round")}
"""


@dataclass(frozen=True)
class WorkloadSettings:
    records: int = 50  # per path, after the warm-up
    per_second: float = 10.0  # send rate of the measured records (each goes to both paths)
    idle_seconds: float = 15.0  # the silence before the after-idle records (0: skip them)
    warm_up_records: int = 3
    deadline: float = 180.0  # longest any one wait may take (a first container start included)

    @classmethod
    def quick(cls) -> WorkloadSettings:
        return cls(records=20, idle_seconds=5.0)

    def command(self, endpoint: str) -> str:
        """The command that runs this workload alone against `endpoint`."""
        return (
            f"python -m bench.smoke_workload --endpoint {endpoint} --records {self.records} "
            f"--idle-seconds {self.idle_seconds:g}"
        )


@dataclass
class SmokeWorkload:
    endpoint: str
    settings: WorkloadSettings = field(default_factory=WorkloadSettings)
    log: Callable[[str], None] = lambda line: None

    def __post_init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self.resources = ProbeResources(self.client)
        self.result: dict[str, Any] = {
            "endpoint": self.endpoint,
            "settings": asdict(self.settings),
            "paths": {},
            "afterIdle": {},
            "failures": [],
            "cleanupErrors": [],
        }
        self._created: list[tuple[str, Callable[[], Any]]] = []  # (what, how to delete it), in creation order
        self._names: dict[str, str] = {}
        self._stream = self._queue_url = self._events = self._views = ""

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = client(self.endpoint, service, WORKLOAD_CLIENT_CONFIG)
        return self._clients[service]

    # -- the run ---------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every step, then the cleanup; the figures and failures in a dict (never raises for the endpoint's
        sake: an error becomes a failure, and the steps after it are skipped)."""
        load_before, began = load_average(), time.monotonic()
        try:
            self._step("resourcesSeconds", self.create_resources)
            self.invoke_directly()
            self._step("warmUpSeconds", self.warm_up)
            self.measure()
            if self.settings.idle_seconds > 0:
                self.after_idle()
        except Exception as error:  # reported, then cleaned up
            self.result["failures"].append(f"{type(error).__name__}: {error}"[:2000])
            self.log(f"failed: {type(error).__name__}: {error}")
        finally:
            self.cleanup()
        self.result["seconds"] = round(time.monotonic() - began, 2)
        self.result["load"] = (load_before, load_average())
        self.result["passed"] = not self.result["failures"]
        return self.result

    def _step(self, key: str, step: Callable[[], None]) -> None:
        began = time.monotonic()
        step()
        self.result[key] = round(time.monotonic() - began, 3)
        self.log(f"{key}: {self.result[key]:.2f} s")

    def create_resources(self) -> None:
        resources, dynamodb = self.resources, self.client("dynamodb")
        iam, sqs = self.client("iam"), self.client("sqs")

        role_name = resources.name("role")
        role_arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=TRUST_POLICY)["Role"]["Arn"]
        self._created.append((f"role {role_name}", lambda: iam.delete_role(RoleName=role_name)))

        kinesis, self._stream = self.client("kinesis"), resources.name("in")
        kinesis.create_stream(StreamName=self._stream, ShardCount=1)
        self._created.append(
            (
                f"stream {self._stream}",
                lambda: kinesis.delete_stream(StreamName=self._stream, EnforceConsumerDeletion=True),
            )
        )

        self._events, events_stream_arn = resources.table("events", stream=True)
        self._created.append((f"table {self._events}", lambda: dynamodb.delete_table(TableName=self._events)))
        self._views, _ = resources.table("views")
        self._created.append((f"table {self._views}", lambda: dynamodb.delete_table(TableName=self._views)))
        if not events_stream_arn:
            raise RuntimeError(f"CreateTable {self._events} returned no LatestStreamArn")

        self._queue_url = resources.queue("queue")
        self._created.append((f"queue {self._queue_url}", lambda: sqs.delete_queue(QueueUrl=self._queue_url)))
        queue_arn = sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

        environment = {"EVENTS_TABLE": self._events, "VIEWS_TABLE": self._views}
        for name, source in (("ingest", INGEST), ("project", PROJECT), ("enqueue", ENQUEUE), ("probe", PROBE)):
            self._names[name] = self._create_function(name, source, role_arn, environment)
        for name in FUNCTIONS:
            wait_for(
                f"function {self._names[name]} Active",
                lambda name=name: self._function_active(name),
                self.settings.deadline,
                POLL_SECONDS,
            )
        for table in (self._events, self._views):
            wait_for(
                f"table {table} ACTIVE",
                lambda table=table: dynamodb.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE",
                self.settings.deadline,
                POLL_SECONDS,
            )
        streams = self.client("dynamodbstreams")
        wait_for(
            f"stream of {self._events} ENABLED",
            lambda: (
                streams.describe_stream(StreamArn=events_stream_arn)["StreamDescription"]["StreamStatus"] == "ENABLED"
            ),
            self.settings.deadline,
            POLL_SECONDS,
        )

        kinesis_arn = wait_for(
            f"stream {self._stream} ACTIVE", self._active_stream_arn, self.settings.deadline, POLL_SECONDS
        )
        self._mapping("ingest", kinesis_arn, StartingPosition="TRIM_HORIZON")
        self._mapping("project", events_stream_arn, StartingPosition="TRIM_HORIZON")
        self._mapping("enqueue", queue_arn)

    def _active_stream_arn(self) -> str | None:
        summary = self.client("kinesis").describe_stream_summary(StreamName=self._stream)["StreamDescriptionSummary"]
        return summary["StreamARN"] if summary["StreamStatus"] == "ACTIVE" else None

    def _create_function(self, suffix: str, source: str, role_arn: str, environment: dict[str, str]) -> str:
        lambda_, name = self.client("lambda"), self.resources.name(suffix)

        def create() -> bool:
            try:
                lambda_.create_function(
                    FunctionName=name,
                    Runtime=RUNTIME,
                    Role=role_arn,
                    Handler="handler.handler",
                    Code={"ZipFile": zip_source(source)},
                    Timeout=30,
                    Environment={"Variables": environment},
                )
            except ClientError as error:  # a role just created may not be assumable yet (AWS: seconds)
                if error.response["Error"]["Code"] == "InvalidParameterValueException" and "role" in str(error):
                    return False
                raise
            return True

        wait_for(f"function {name} created", create, self.settings.deadline, 1.0)
        self._created.append((f"function {name}", lambda: lambda_.delete_function(FunctionName=name)))
        return name

    def _function_active(self, suffix: str) -> bool:
        configuration = self.client("lambda").get_function(FunctionName=self._names[suffix])["Configuration"]
        state = configuration.get("State", "Active")
        if state == "Failed":
            raise RuntimeError(f"function {self._names[suffix]} failed to start: {configuration.get('StateReason')}")
        return state == "Active"

    def _mapping(self, function: str, source_arn: str, **extra: Any) -> None:
        lambda_ = self.client("lambda")
        uuid_ = lambda_.create_event_source_mapping(
            FunctionName=self._names[function],
            EventSourceArn=source_arn,
            BatchSize=10,
            MaximumBatchingWindowInSeconds=0,
            **extra,
        )["UUID"]
        self._created.append((f"mapping {uuid_}", lambda: lambda_.delete_event_source_mapping(UUID=uuid_)))
        wait_for(
            f"mapping {uuid_} Enabled",
            lambda: lambda_.get_event_source_mapping(UUID=uuid_)["State"] == "Enabled",
            self.settings.deadline,
            POLL_SECONDS,
        )

    def invoke_directly(self) -> None:
        """The probe function's first invocation (cold start), then a second one (warm)."""
        lambda_, name = self.client("lambda"), self._names["probe"]
        for key, round_ in (("coldStartSeconds", 1), ("warmInvokeSeconds", 2)):
            began = time.monotonic()
            response = lambda_.invoke(FunctionName=name, Payload=json.dumps({"round": round_}).encode())
            self.result[key] = round(time.monotonic() - began, 3)
            payload = json.loads(response["Payload"].read() or b"null")
            if response.get("FunctionError") or payload != {"function": name, "round": round_}:
                raise RuntimeError(f"invocation {round_} of {name}: {response.get('FunctionError')} {payload!r}")
            self.log(f"{key}: {self.result[key]:.2f} s")

    def warm_up(self) -> None:
        keys = [f"warm{i}" for i in range(self.settings.warm_up_records)]
        for key in keys:
            self._send(key)
        self._wait_rows([f"k-{key}" for key in keys] + [f"q-{key}" for key in keys], "warm-up")

    def measure(self) -> None:
        keys = [f"r{i:04d}" for i in range(self.settings.records)]
        sent: dict[str, float] = {}
        for i in paced(len(keys), self.settings.per_second, time.perf_counter()):
            sent.update(self._send(keys[i]))
        rows = self._wait_rows(list(sent), "measured records")
        one_hop = [1000 * (float(rows[f"k-{key}"]["ingest_at"]["N"]) - sent[f"k-{key}"]) for key in keys]
        two_hops = [1000 * (float(rows[f"k-{key}"]["arrived_at"]["N"]) - sent[f"k-{key}"]) for key in keys]
        sqs = [1000 * (float(rows[f"q-{key}"]["arrived_at"]["N"]) - sent[f"q-{key}"]) for key in keys]
        for path, latencies in zip(PATHS, (one_hop, two_hops, sqs), strict=True):
            self.result["paths"][path] = {
                **summary_ms(latencies),
                "samplesMs": [round(v, 3) for v in latencies],  # bench/plots.py draws their CDF
            }
            figures = self.result["paths"][path]
            self.log(f"{path}: n={figures['n']} p50={figures['p50']:.1f} ms p99={figures['p99']:.1f} ms")

    def after_idle(self) -> None:
        time.sleep(self.settings.idle_seconds)  # deliberate: the silence is what is measured, not a wait
        self.result["idleSeconds"] = self.settings.idle_seconds
        sent = self._send("idle")
        rows = self._wait_rows(list(sent), "after-idle records")
        self.result["afterIdle"] = {
            "kinesisTwoHops": round(1000 * (float(rows["k-idle"]["arrived_at"]["N"]) - sent["k-idle"]), 3),
            "sqs": round(1000 * (float(rows["q-idle"]["arrived_at"]["N"]) - sent["q-idle"]), 3),
        }
        self.log(f"after {self.settings.idle_seconds:g} s idle: {self.result['afterIdle']}")

    # -- producers and the views table ------------------------------------------------------------------
    def _send(self, key: str) -> dict[str, float]:
        """One record to each path; the views row key of each -> the time just before its put."""
        sent = {}
        sent_at = sent[f"k-{key}"] = time.time()
        self.client("kinesis").put_record(
            StreamName=self._stream, PartitionKey=key, Data=json.dumps({"key": f"k-{key}", "sent_at": sent_at}).encode()
        )
        sent_at = sent[f"q-{key}"] = time.time()
        self.client("sqs").send_message(
            QueueUrl=self._queue_url, MessageBody=json.dumps({"key": f"q-{key}", "sent_at": sent_at})
        )
        return sent

    def _wait_rows(self, keys: list[str], what: str) -> dict[str, dict[str, Any]]:
        """The views rows once every one of `keys` is there (a failure naming the missing ones after the deadline)."""
        dynamodb = self.client("dynamodb")
        latest: dict[str, dict[str, Any]] = {}

        def complete() -> bool:
            latest.clear()
            latest.update((item["pk"]["S"], item) for item in scan_items(dynamodb, self._views))
            return all(key in latest and "arrived_at" in latest[key] for key in keys)

        try:
            wait_for(f"{what} in {self._views}", complete, self.settings.deadline, POLL_SECONDS)
        except TimeoutError:
            missing = [key for key in keys if key not in latest]
            raise TimeoutError(
                f"{what}: {len(missing)} of {len(keys)} rows missing after "
                f"{self.settings.deadline:.0f} s, e.g. {missing[:5]}"
            ) from None
        return dict(latest)

    def cleanup(self) -> None:
        """Deletes what was created, last first; errors are recorded, not raised."""
        began = time.monotonic()
        for what, delete in reversed(self._created):
            try:
                delete()
            except Exception as error:  # a leftover is reported, the rest still goes
                self.result["cleanupErrors"].append(f"{what}: {type(error).__name__}: {error}"[:500])
        self._created.clear()
        self.result["cleanupSeconds"] = round(time.monotonic() - began, 3)


def run_workload(
    endpoint: str, settings: WorkloadSettings | None = None, log: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """The workload against `endpoint` (a local URL): its figures, failures and the command that reruns it."""
    settings = settings or WorkloadSettings()
    try:
        result = SmokeWorkload(endpoint, settings, log).run()
    except Exception as error:  # e.g. a refused (non-local) endpoint
        result = {"endpoint": endpoint, "passed": False, "failures": [f"{type(error).__name__}: {error}"]}
    result["command"] = settings.command(endpoint)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smoke_workload", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:4566", help="a local endpoint URL")
    parser.add_argument("--records", type=int, default=WorkloadSettings.records, help="records per path")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=WorkloadSettings.idle_seconds,
        help="silence before the after-idle records (0: skip them)",
    )
    args = parser.parse_args(argv)
    settings = WorkloadSettings(records=args.records, idle_seconds=args.idle_seconds)
    result = run_workload(args.endpoint, settings, log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2, default=str))
    return 0 if result.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
