"""Make one endpoint match the stack, resource by resource: read, compare, create or update, wait.

`Provisioner.run()` reads each resource once, decides with the pure diffs of `infra.changes`, and
records what it did in a `ChangeReport`. Readiness comes from the same reads where possible, so a
run that changes nothing costs about 25 calls and no waiting. With ``check=True`` it changes
nothing: a missing resource raises `NotDeployed`, a difference is recorded as ``drifted`` (this is
what ``python -m infra.bootstrap outputs`` uses).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, WaiterError

from esjoin.target import Target
from infra import changes as c
from infra.changes import ChangeReport
from infra.outputs import Outputs
from infra.package import Package, build_package
from infra.stack import DYNAMODB_STREAM, KINESIS, SQS, MappingSpec, Stack, function_environment, role_policy
from infra.waits import ResourceFailed, WaitTimeout, wait_for

log = logging.getLogger("infra")

TRANSITIONAL_MAPPING_STATES = ("Creating", "Enabling", "Updating", "Disabling")
IAM_PROPAGATION_SECONDS = 60.0
"""A new role or policy takes seconds to be usable by Lambda on AWS
(https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency)."""
LAMBDA_WAITER_DELAY = 0.25


class BootstrapError(RuntimeError):
    """A resource could not be made to match the stack; the message says which and why."""


class NotDeployed(BootstrapError):
    """Checking found a resource missing: the stage is not (fully) deployed."""


def _mapping_detail(mapping: dict[str, Any]) -> str:
    return (
        f"{mapping.get('State')} ({mapping.get('StateTransitionReason', '-')}; "
        f"last processing result {mapping.get('LastProcessingResult', '-')})"
    )


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _message(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Message", "") or str(error)


@contextlib.contextmanager
def naming_errors(target: Target, kind: str, name: str, error: type[Exception]) -> Iterator[None]:
    """Turn botocore's errors into one `error` whose message names the resource (apply and teardown)."""
    try:
        yield
    except EndpointConnectionError as exc:
        raise error(f"cannot reach {target.describe()}: {exc}; is the endpoint running?") from exc
    except ClientError as exc:
        operation = getattr(exc, "operation_name", "call")
        raise error(f"{kind} {name}: {operation} failed: {error_code(exc)}: {_message(exc)}") from exc
    except BotoCoreError as exc:
        raise error(f"{kind} {name}: {exc}") from exc


@dataclass
class Provisioner:
    stack: Stack
    target: Target
    clients: Any
    report: ChangeReport = field(default_factory=ChangeReport)
    check: bool = False
    timeout: float = 60.0
    lambdas_dir: Path | None = None

    # What the run learns, for the outputs and for the resources that depend on it.
    account_id: str = ""
    stream: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_arns: dict[str, str] = field(default_factory=dict)
    role_arn: str = ""
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    mappings: dict[str, dict[str, Any]] = field(default_factory=dict)
    _created_tables: set[str] = field(default_factory=set)

    # ---------------------------------------------------------------- the run

    def run(self) -> Outputs:
        """Role, stream, tables, queues, policy, functions; wait for the sources; mappings."""
        with self._context("endpoint", self.target.describe()):
            self.ensure_role()
            self.ensure_stream()
            self.ensure_tables()
            self.ensure_queues()
            self.ensure_role_policy()
            self.ensure_functions()
            # Mappings need ACTIVE sources: a Kinesis stream still CREATING, or a table stream
            # still ENABLING (LocalStack: ~0.5 s), is rejected or loses the first writes.
            self.wait_for_stream()
            self.wait_for_tables()
            self.ensure_time_to_live()
            self.ensure_mappings()
        return self.outputs()

    def outputs(self) -> Outputs:
        return Outputs(
            target=self.target.kind,
            endpoint=self.target.endpoint_url,
            region=self.target.region,
            account_id=self.account_id,
            stage=self.stack.stage,
            stream={
                "name": self.stack.stream.name,
                "arn": self.stream.get("StreamARN"),
                "shardCount": self.stack.stream.shard_count,
            },
            tables={
                t.key: {
                    "name": t.name,
                    "arn": self.tables[t.key].get("TableArn"),
                    **({"streamArn": self.tables[t.key].get("LatestStreamArn")} if t.stream_view_type else {}),
                }
                for t in self.stack.tables
            },
            queues={
                q.key: {"name": q.name, "url": self.queue_urls[q.key], "arn": self.queue_arns[q.key]}
                for q in self.stack.queues
            },
            role={"name": self.stack.role.name, "arn": self.role_arn},
            functions={
                f.key: {
                    "name": f.name,
                    "arn": self.functions[f.key].get("FunctionArn"),
                    "handler": f.handler,
                    "codeSha256": self.functions[f.key].get("CodeSha256"),
                }
                for f in self.stack.functions
            },
            mappings=dict(self.mappings),
            settings=self.stack.settings.to_dict(),
            changes=self.report.to_list(),
            summary=self.report.summary(),
        )

    # ---------------------------------------------------------------- helpers

    def _context(self, kind: str, name: str) -> contextlib.AbstractContextManager[None]:
        return naming_errors(self.target, kind, name, BootstrapError)

    def _must_create(self, kind: str, name: str) -> None:
        if self.check:
            raise NotDeployed(
                f"{kind} {name} does not exist: stage {self.stack.stage!r} is not deployed "
                f"on {self.target.describe()}; run apply"
            )

    def _differs(self, kind: str, name: str, details: list[str]) -> bool:
        """True when the caller should update; in check mode, record the drift instead."""
        if self.check:
            self.report.record(kind, name, c.DRIFTED, details)
            return False
        return True

    def _retry_iam(self, call: Callable[[], Any]) -> Any:
        """On AWS a just-created role or policy may not be usable yet: Lambda answers
        InvalidParameterValueException ("cannot be assumed", "does not have permissions")."""
        if self.target.is_local:
            return call()
        deadline = time.monotonic() + IAM_PROPAGATION_SECONDS
        delay = 1.0
        while True:
            try:
                return call()
            except ClientError as exc:
                retryable = error_code(exc) == "InvalidParameterValueException" and "role" in _message(exc).lower()
                if not retryable or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 1.5, 5.0)

    # ---------------------------------------------------------------- IAM

    def ensure_role(self) -> None:
        iam, spec = self.clients.iam, self.stack.role
        with self._context("role", spec.name):
            try:
                role = iam.get_role(RoleName=spec.name)["Role"]
            except ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                self._must_create("role", spec.name)
                role = iam.create_role(
                    RoleName=spec.name,
                    AssumeRolePolicyDocument=json.dumps(spec.trust_policy),
                    Description=f"esjoin stage {self.stack.stage}: the functions' execution role",
                )["Role"]
                self.report.record("role", spec.name, c.CREATED)
            else:
                details = c.policy_diff(spec.trust_policy, role.get("AssumeRolePolicyDocument"))
                if details and self._differs("role", spec.name, details):
                    iam.update_assume_role_policy(RoleName=spec.name, PolicyDocument=json.dumps(spec.trust_policy))
                    self.report.record("role", spec.name, c.UPDATED, ["trust policy"])
                elif not details:
                    self.report.record("role", spec.name, c.UNCHANGED)
            self.role_arn = role["Arn"]
            # arn:aws:iam::<account>:role/<name>: the account every other ARN carries.
            self.account_id = self.role_arn.split(":")[4]

    def ensure_role_policy(self) -> None:
        iam, spec = self.clients.iam, self.stack.role
        document = role_policy(
            self.stack,
            stream_arn=self.stream["StreamARN"],
            table_arns={k: t["TableArn"] for k, t in self.tables.items()},
            queue_arns=self.queue_arns,
            region=self.target.region,
            account_id=self.account_id,
        )
        name = f"{spec.name}/{spec.policy_name}"
        with self._context("role-policy", name):
            try:
                current = iam.get_role_policy(RoleName=spec.name, PolicyName=spec.policy_name)["PolicyDocument"]
            except ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                current = None
            details = c.policy_diff(document, current)
            if not details:
                self.report.record("role-policy", name, c.UNCHANGED)
                return
            if current is None:
                self._must_create("role-policy", name)
            elif not self._differs("role-policy", name, details):
                return
            iam.put_role_policy(RoleName=spec.name, PolicyName=spec.policy_name, PolicyDocument=json.dumps(document))
            self.report.record("role-policy", name, c.CREATED if current is None else c.UPDATED, details)

    # ---------------------------------------------------------------- Kinesis

    def _describe_stream(self) -> dict[str, Any] | None:
        try:
            return self.clients.kinesis.describe_stream_summary(StreamName=self.stack.stream.name)[
                "StreamDescriptionSummary"
            ]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def _wait_gone(self, what: str, describe: Callable[[], Any]) -> None:
        """Wait until a resource being deleted (a teardown just ran) is gone: its name is free only then."""
        wait_for(
            describe, ready=lambda found: found is None, what=what, state=lambda found: "DELETING", timeout=self.timeout
        )

    def ensure_stream(self) -> None:
        kinesis, spec = self.clients.kinesis, self.stack.stream
        with self._context("stream", spec.name):
            summary = self._describe_stream()
            if summary is not None and summary.get("StreamStatus") == "DELETING":
                self._wait_gone(f"stream {spec.name}", self._describe_stream)
                summary = None
            if summary is None:
                self._must_create("stream", spec.name)
                kinesis.create_stream(StreamName=spec.name, ShardCount=spec.shard_count)
                self.report.record("stream", spec.name, c.CREATED, [f"ShardCount {spec.shard_count}"])
                summary = self._describe_stream() or {}
            else:
                current = summary.get("OpenShardCount")
                details = [] if current == spec.shard_count else [f"OpenShardCount: {current} -> {spec.shard_count}"]
                if details and self._differs("stream", spec.name, details):
                    self.wait_for_stream(summary)
                    kinesis.update_shard_count(
                        StreamName=spec.name, TargetShardCount=spec.shard_count, ScalingType="UNIFORM_SCALING"
                    )
                    self.report.record("stream", spec.name, c.UPDATED, details)
                    summary = self._describe_stream() or {}
                elif not details:
                    self.report.record("stream", spec.name, c.UNCHANGED)
            self.stream = summary

    def wait_for_stream(self, summary: dict[str, Any] | None = None) -> None:
        summary = summary or self.stream
        if summary.get("StreamStatus") == "ACTIVE":
            return
        name = self.stack.stream.name
        with self._context("stream", name):
            self.stream = wait_for(
                self._describe_stream,
                ready=lambda s: bool(s) and s.get("StreamStatus") == "ACTIVE",
                what=f"Kinesis stream {name}",
                state=lambda s: (s or {}).get("StreamStatus", "missing"),
                timeout=self.timeout,
            )

    # ---------------------------------------------------------------- DynamoDB

    def _describe_table(self, name: str) -> dict[str, Any] | None:
        try:
            return self.clients.dynamodb.describe_table(TableName=name)["Table"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def ensure_tables(self) -> None:
        dynamodb = self.clients.dynamodb
        for spec in self.stack.tables:
            with self._context("table", spec.name):
                table = self._describe_table(spec.name)
                if table is not None and table.get("TableStatus") == "DELETING":
                    self._wait_gone(f"table {spec.name}", lambda n=spec.name: self._describe_table(n))
                    table = None
                if table is None:
                    self._must_create("table", spec.name)
                    extra = {}
                    if spec.stream_view_type:
                        extra["StreamSpecification"] = {
                            "StreamEnabled": True,
                            "StreamViewType": spec.stream_view_type,
                        }
                    table = dynamodb.create_table(
                        TableName=spec.name,
                        KeySchema=spec.key_schema(),
                        AttributeDefinitions=spec.attribute_definitions(),
                        BillingMode="PAY_PER_REQUEST",
                        **extra,
                    )["TableDescription"]
                    self.report.record("table", spec.name, c.CREATED)
                    self._created_tables.add(spec.name)
                else:
                    if key_details := c.table_key_diff(spec.key_schema(), table):
                        raise BootstrapError(
                            f"table {spec.name} has another key ({key_details[0]}); keys cannot change in "
                            "place: run teardown for this stage, then apply"
                        )
                    details = c.table_stream_diff(spec.stream_view_type, table)
                    if details and self._differs("table", spec.name, details):
                        if (table.get("StreamSpecification") or {}).get("StreamEnabled"):
                            raise BootstrapError(
                                f"table {spec.name} streams another view type ({details[0]}); run teardown, then apply"
                            )
                        self._wait_table_active(spec.name, table)
                        table = dynamodb.update_table(
                            TableName=spec.name,
                            StreamSpecification={
                                "StreamEnabled": True,
                                "StreamViewType": spec.stream_view_type,
                            },
                        )["TableDescription"]
                        self.report.record("table", spec.name, c.UPDATED, details)
                    elif not details:
                        self.report.record("table", spec.name, c.UNCHANGED)
                self.tables[spec.key] = table

    def ensure_time_to_live(self) -> None:
        """After the tables are ACTIVE (UpdateTimeToLive needs that on AWS)."""
        for spec in self.stack.tables:
            if spec.ttl_attribute:
                self._ensure_time_to_live(spec.name, spec.ttl_attribute, created=spec.name in self._created_tables)

    def _ensure_time_to_live(self, table: str, attribute: str, *, created: bool) -> None:
        """TTL is housekeeping, not correctness (dedupe works without expiry): an endpoint that
        does not support it gets a warning, not a failed apply."""
        dynamodb = self.clients.dynamodb
        try:
            if created:  # a new table has no TTL: save the read
                description: dict[str, Any] = {"TimeToLiveStatus": "DISABLED"}
            else:
                description = dynamodb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
            details = c.time_to_live_diff(attribute, description)
            if not details:
                self.report.record("time-to-live", table, c.UNCHANGED)
                return
            if not self._differs("time-to-live", table, details):
                return
            dynamodb.update_time_to_live(
                TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
            )
            self.report.record("time-to-live", table, c.CREATED if created else c.UPDATED, details)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException" and self.check:
                raise
            self.report.record(
                "time-to-live",
                table,
                c.SKIPPED,
                [f"endpoint does not support it ({error_code(exc)}: {_message(exc)})"],
            )

    def _wait_table_active(self, name: str, table: dict[str, Any] | None) -> dict[str, Any]:
        if table and table.get("TableStatus") == "ACTIVE":
            return table
        return wait_for(
            lambda: self._describe_table(name),
            ready=lambda t: bool(t) and t["TableStatus"] == "ACTIVE",
            what=f"table {name}",
            state=lambda t: (t or {}).get("TableStatus", "missing"),
            timeout=self.timeout,
        )

    def wait_for_tables(self) -> None:
        for spec in self.stack.tables:
            with self._context("table", spec.name):
                self.tables[spec.key] = self._wait_table_active(spec.name, self.tables[spec.key])
        events = self.tables["events"]
        stream_arn = events.get("LatestStreamArn")
        if not stream_arn:
            raise BootstrapError(
                f"table {events.get('TableName')} reports no LatestStreamArn although its stream "
                "is enabled; the endpoint does not support DynamoDB Streams"
            )
        streams = self.clients.dynamodbstreams
        with self._context("table stream", stream_arn):
            wait_for(
                lambda: streams.describe_stream(StreamArn=stream_arn)["StreamDescription"],
                ready=lambda d: d.get("StreamStatus") == "ENABLED",
                what=f"stream of table {events.get('TableName')}",
                state=lambda d: d.get("StreamStatus"),
                timeout=self.timeout,
            )

    # ---------------------------------------------------------------- SQS

    def _list_queues(self) -> dict[str, str]:
        """name -> URL for this stage's queues, in one call (ListQueues by prefix)."""
        urls: dict[str, str] = {}
        for page in self.clients.sqs.get_paginator("list_queues").paginate(
            QueueNamePrefix=self.stack.name_prefix, MaxResults=1000
        ):
            for url in page.get("QueueUrls", []):
                urls[url.rstrip("/").rsplit("/", 1)[-1]] = url
        return urls

    def ensure_queues(self) -> None:
        sqs = self.clients.sqs
        with self._context("queues", f"{self.stack.name_prefix}*"):
            existing = self._list_queues()
        for spec in self.stack.queues:  # dead-letter queues come first: sources name their ARNs
            desired = spec.attributes(self.queue_arns)
            with self._context("queue", spec.name):
                url = existing.get(spec.name)
                if url is None:
                    # ListQueues is eventually consistent on AWS; CreateQueue with the same
                    # attributes returns the existing queue, and different ones fail (handled below).
                    self._must_create("queue", spec.name)
                    try:
                        url = sqs.create_queue(QueueName=spec.name, Attributes=desired)["QueueUrl"]
                        created = True
                    except ClientError as exc:
                        if "QueueAlreadyExists" not in error_code(exc) and "QueueNameExists" not in error_code(exc):
                            raise
                        url = sqs.get_queue_url(QueueName=spec.name)["QueueUrl"]
                        created = False
                    if created:
                        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
                        self.report.record("queue", spec.name, c.CREATED)
                        self._remember_queue(spec.key, url, arn["QueueArn"])
                        continue
                attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
                details = c.queue_attributes_diff(desired, attributes)
                if details and self._differs("queue", spec.name, details):
                    sqs.set_queue_attributes(QueueUrl=url, Attributes=desired)
                    self.report.record("queue", spec.name, c.UPDATED, details)
                elif not details:
                    self.report.record("queue", spec.name, c.UNCHANGED)
                self._remember_queue(spec.key, url, attributes["QueueArn"])

    def _remember_queue(self, key: str, url: str, arn: str) -> None:
        self.queue_urls[key] = url
        self.queue_arns[key] = arn

    # ---------------------------------------------------------------- Lambda functions

    def _get_function(self, name: str) -> dict[str, Any] | None:
        try:
            return self.clients.lambda_.get_function(FunctionName=name)["Configuration"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def _lambda_wait(self, waiter: str, name: str, field_name: str) -> dict[str, Any]:
        """Lambda's own waiters (function_active_v2, function_updated_v2), with a deadline and an
        error that names the function and its last state."""
        attempts = max(1, math.ceil(self.timeout / LAMBDA_WAITER_DELAY))
        try:
            self.clients.lambda_.get_waiter(waiter).wait(
                FunctionName=name, WaiterConfig={"Delay": LAMBDA_WAITER_DELAY, "MaxAttempts": attempts}
            )
        except WaiterError as exc:
            configuration = (exc.last_response or {}).get("Configuration", {})
            state = configuration.get(field_name, "unknown")
            reason = configuration.get("StateReason") or configuration.get("LastUpdateStatusReason") or exc
            if state == "Failed":
                raise ResourceFailed(f"function {name} is {field_name} Failed: {reason}") from exc
            raise WaitTimeout(
                f"function {name} still {state} after {self.timeout:g} s ({waiter}); last state {reason}"
            ) from exc
        return self._get_function(name) or {}

    def ensure_functions(self) -> None:
        lambda_ = self.clients.lambda_
        package = build_package(self.lambdas_dir)
        environment = function_environment(self.stack, self.queue_urls)
        pending: list[tuple[str, str, str]] = []  # (key, waiter, field it watches)
        for spec in self.stack.functions:
            desired = spec.configuration(self.role_arn, environment)
            with self._context("function", spec.name):
                configuration = self._get_function(spec.name)
                if configuration is None:
                    self._must_create("function", spec.name)
                    configuration = self._retry_iam(
                        lambda s=spec, d=desired: lambda_.create_function(
                            FunctionName=s.name,
                            Code={"ZipFile": package.zip_bytes},
                            PackageType="Zip",
                            Description=f"esjoin stage {self.stack.stage}: {s.key}",
                            Publish=False,
                            **d,
                        )
                    )
                    self.report.record("function", spec.name, c.CREATED, [f"{package.size} bytes"])
                    pending.append((spec.key, "function_active_v2", "State"))
                elif self._update_function(spec.name, desired, configuration, package):
                    pending.append((spec.key, "function_updated_v2", "LastUpdateStatus"))
                elif configuration.get("State") not in ("Active", "Inactive"):
                    # Pending after an interrupted run. (Inactive functions, idle for weeks on
                    # AWS, become Active again on their next invocation.)
                    pending.append((spec.key, "function_active_v2", "State"))
                self.functions[spec.key] = configuration
        # Creations and updates were all started before waiting: their transitions overlap.
        for key, waiter, field_name in pending:
            name = self.stack.function(key).name
            with self._context("function", name):
                self.functions[key] = self._lambda_wait(waiter, name, field_name)

    def _update_function(
        self, name: str, desired: dict[str, Any], configuration: dict[str, Any], package: Package
    ) -> bool:
        """Start the updates the function needs; True if one was started (the caller waits)."""
        lambda_ = self.clients.lambda_
        code = c.function_code_diff(package.code_sha256, configuration.get("CodeSha256"))
        settings = c.function_configuration_diff(desired, configuration)
        if not code and not settings:
            self.report.record("function", name, c.UNCHANGED)
            return False
        if not self._differs("function", name, code + settings):
            return False
        # One update at a time: Lambda answers ResourceConflictException while LastUpdateStatus
        # is InProgress (https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html).
        if configuration.get("LastUpdateStatus") == "InProgress" or configuration.get("State") == "Pending":
            self._lambda_wait("function_updated_v2", name, "LastUpdateStatus")
        if code:
            lambda_.update_function_code(FunctionName=name, ZipFile=package.zip_bytes)
            if settings:
                self._lambda_wait("function_updated_v2", name, "LastUpdateStatus")
        if settings:
            self._retry_iam(lambda: lambda_.update_function_configuration(FunctionName=name, **desired))
        self.report.record("function", name, c.UPDATED, code + settings)
        return True

    # ---------------------------------------------------------------- event source mappings

    def _source_arn(self, mapping: MappingSpec) -> str:
        if mapping.source_type == KINESIS:
            return self.stream["StreamARN"]
        if mapping.source_type == DYNAMODB_STREAM:
            return self.tables[mapping.source]["LatestStreamArn"]
        if mapping.source_type == SQS:
            return self.queue_arns[mapping.source]
        raise ValueError(f"unknown source type {mapping.source_type!r}")

    def _source_label(self, mapping: MappingSpec) -> str:
        if mapping.source_type == KINESIS:
            return self.stack.stream.name
        if mapping.source_type == DYNAMODB_STREAM:
            return f"{self.stack.table(mapping.source).name} (stream)"
        return self.stack.queue(mapping.source).name

    def _list_mappings(self, function_name: str) -> list[dict[str, Any]]:
        paginator = self.clients.lambda_.get_paginator("list_event_source_mappings")
        return [
            m for page in paginator.paginate(FunctionName=function_name) for m in page.get("EventSourceMappings", [])
        ]

    def _get_mapping(self, uuid: str) -> dict[str, Any]:
        return self.clients.lambda_.get_event_source_mapping(UUID=uuid)

    def _settle_mapping(self, mapping: dict[str, Any], function_name: str) -> dict[str, Any]:
        """Wait out a transition left by an earlier run: Lambda rejects updates meanwhile."""
        if mapping.get("State") not in TRANSITIONAL_MAPPING_STATES:
            return mapping
        return self._wait_mapping(
            mapping["UUID"], function_name, lambda m: m.get("State") not in TRANSITIONAL_MAPPING_STATES
        )

    def _wait_mapping(self, uuid: str, function_name: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        return wait_for(
            lambda: self._get_mapping(uuid),
            ready=ready,
            what=f"mapping {uuid} for {function_name}",
            state=lambda m: m.get("State", "unknown"),
            timeout=self.timeout,
            detail=_mapping_detail,
        )

    def ensure_mappings(self) -> None:
        pending: list[str] = []
        for spec in self.stack.mappings:
            function_name = self.stack.function(spec.function).name
            source = self._source_arn(spec)
            label = f"{function_name} <- {self._source_label(spec)}"
            with self._context("mapping", label):
                mapping, changed = self._ensure_mapping(spec, function_name, source, label)
            self.mappings[spec.function] = self._mapping_output(mapping, function_name)
            if changed:
                pending.append(spec.function)
        for key in pending:  # all created or updated first: their transitions overlap
            entry = self.mappings[key]
            with self._context("mapping", entry["uuid"]):
                mapping = self._wait_mapping(entry["uuid"], entry["function"], lambda m: m.get("State") == "Enabled")
                entry["state"] = mapping["State"]

    def _ensure_mapping(
        self, spec: MappingSpec, function_name: str, source: str, label: str
    ) -> tuple[dict[str, Any], bool]:
        """The function's one mapping from ``source``: (mapping, created or updated?)."""
        lambda_ = self.clients.lambda_
        desired = spec.parameters(self.queue_arns)
        current: dict[str, Any] | None = None
        for mapping in self._list_mappings(function_name):
            if mapping.get("State") == "Deleting":
                continue
            if current is None and mapping.get("EventSourceArn") == source:
                current = self._settle_mapping(mapping, function_name)
                continue
            # Another source (e.g. the stream of a table since recreated) or a duplicate.
            stale = f"{function_name} <- {mapping.get('EventSourceArn')}"
            if self._differs("mapping", stale, [f"UUID {mapping['UUID']} is not in the stack"]):
                lambda_.delete_event_source_mapping(UUID=mapping["UUID"])
                self.report.record("mapping", stale, c.REMOVED, [f"UUID {mapping['UUID']}: not in the stack"])

        action = c.CREATED
        if current is not None:
            position = current.get("StartingPosition")
            if spec.starting_position and position and position != spec.starting_position:
                # StartingPosition cannot be updated in place: replace the mapping.
                details = [f"StartingPosition: {position} -> {spec.starting_position}"]
                if not self._differs("mapping", label, details):
                    return current, False
                lambda_.delete_event_source_mapping(UUID=current["UUID"])
                current, action = None, c.REPLACED

        if current is None:
            self._must_create("mapping", label)
            extra = {"StartingPosition": spec.starting_position} if spec.starting_position else {}
            created = self._retry_iam(
                lambda: lambda_.create_event_source_mapping(
                    FunctionName=function_name, EventSourceArn=source, Enabled=True, **desired, **extra
                )
            )
            self.report.record("mapping", label, action, [f"UUID {created['UUID']}"])
            return created, True

        details = c.mapping_diff(desired, current)
        if current.get("State") != "Enabled":
            details.append(f"State: {current.get('State')} -> Enabled")
        if not details:
            self.report.record("mapping", label, c.UNCHANGED)
            return current, False
        if not self._differs("mapping", label, details):
            return current, False
        updated = self._retry_iam(
            lambda: lambda_.update_event_source_mapping(UUID=current["UUID"], Enabled=True, **desired)
        )
        self.report.record("mapping", label, c.UPDATED, details)
        return updated, True

    @staticmethod
    def _mapping_output(mapping: dict[str, Any], function_name: str) -> dict[str, Any]:
        return {
            "uuid": mapping["UUID"],
            "function": function_name,
            "source": mapping.get("EventSourceArn"),
            "state": mapping.get("State"),
        }
