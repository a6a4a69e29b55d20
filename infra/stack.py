"""What exists in one stage: every resource of the pipeline, described without calling AWS.

`build_stack(settings)` gives the desired state; `infra.bootstrap` makes an endpoint match it. The
few values known only once resources exist (queue URLs, ARNs) are filled in by the functions at the
bottom (`function_environment`, `role_policy`, `QueueSpec.attributes`, `MappingSpec.parameters`).

Logical keys (``events``, ``snapshotRequests``, ``consumer``...) name a resource inside the stack
and key the outputs document; physical names are ``esjoin-<stage>-<suffix>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from infra.settings import StackSettings

NAME_PREFIX = "esjoin"
RUNTIME = "python3.12"
MAX_RECEIVE_COUNT = 5
"""Receives before SQS moves a request to its dead-letter queue (each receive is a failed run)."""
RETENTION_14_DAYS = 14 * 24 * 3600
"""SQS's maximum retention: poison records and dead letters must outlive any investigation; a
dead-letter queue should keep messages longer than its source does
(https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html)."""
SQS_MAX_VISIBILITY_TIMEOUT = 12 * 3600
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"

KINESIS = "kinesis"
DYNAMODB_STREAM = "dynamodb-stream"
SQS = "sqs"

LAMBDA_TRUST_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def visibility_timeout_for(function_timeout_seconds: int) -> int:
    """A queue's VisibilityTimeout for a function that consumes it.

    AWS rejects a mapping whose queue's visibility timeout is below the function's timeout and
    recommends six times the timeout, so a message is not redelivered while throttled retries of
    its batch are still running
    (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html). Capped at SQS's
    maximum, 12 hours, and never below the timeout itself.
    """
    return max(function_timeout_seconds, min(6 * function_timeout_seconds, SQS_MAX_VISIBILITY_TIMEOUT))


@dataclass(frozen=True)
class StreamSpec:
    name: str
    shard_count: int


@dataclass(frozen=True)
class TableSpec:
    key: str
    name: str
    partition_key: str
    sort_key: str | None = None
    stream_view_type: str | None = None
    ttl_attribute: str | None = None

    def key_schema(self) -> list[dict[str, str]]:
        schema = [{"AttributeName": self.partition_key, "KeyType": "HASH"}]
        if self.sort_key:
            schema.append({"AttributeName": self.sort_key, "KeyType": "RANGE"})
        return schema

    def attribute_definitions(self) -> list[dict[str, str]]:
        return [{"AttributeName": k["AttributeName"], "AttributeType": "S"} for k in self.key_schema()]


@dataclass(frozen=True)
class QueueSpec:
    key: str
    name: str
    visibility_timeout: int | None = None
    retention_seconds: int | None = None
    dead_letter_queue: str | None = None
    """Logical key of the queue SQS moves a message to after MAX_RECEIVE_COUNT receives."""

    def attributes(self, queue_arns: dict[str, str]) -> dict[str, str]:
        """The attributes the stack sets (SQS's own defaults hold for the rest); queue_arns maps
        logical keys to ARNs, for the redrive policy."""
        attributes: dict[str, str] = {}
        if self.visibility_timeout is not None:
            attributes["VisibilityTimeout"] = str(self.visibility_timeout)
        if self.retention_seconds is not None:
            attributes["MessageRetentionPeriod"] = str(self.retention_seconds)
        if self.dead_letter_queue is not None:
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": queue_arns[self.dead_letter_queue],
                    "maxReceiveCount": MAX_RECEIVE_COUNT,
                }
            )
        return attributes


@dataclass(frozen=True)
class RoleSpec:
    name: str
    policy_name: str
    trust_policy: dict[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    key: str
    name: str
    handler: str
    runtime: str
    timeout: int
    memory_size: int

    def configuration(self, role_arn: str, environment: dict[str, str]) -> dict[str, Any]:
        """The configuration fields the bootstrap keeps in step (GetFunction's names)."""
        return {
            "Handler": self.handler,
            "Runtime": self.runtime,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "Role": role_arn,
            "Environment": {"Variables": dict(environment)},
        }


@dataclass(frozen=True)
class MappingSpec:
    """An event source mapping: `function` (logical key) reads `source` (logical key of the stream,
    the table whose stream it reads, or the queue)."""

    function: str
    source_type: str
    source: str
    batch_size: int
    maximum_batching_window: int = 0
    starting_position: str | None = None
    maximum_retry_attempts: int | None = None
    bisect_on_error: bool | None = None
    on_failure: str | None = None
    """Logical key of the queue that receives a record's metadata once retries are exhausted."""
    parallelization_factor: int | None = None

    def parameters(self, queue_arns: dict[str, str]) -> dict[str, Any]:
        """The settings UpdateEventSourceMapping can change (and CreateEventSourceMapping takes),
        in the API's names. Stream-only settings are left out for queues: SQS mappings reject them."""
        parameters: dict[str, Any] = {
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.maximum_batching_window,
            "FunctionResponseTypes": [REPORT_BATCH_ITEM_FAILURES],
        }
        if self.maximum_retry_attempts is not None:
            parameters["MaximumRetryAttempts"] = self.maximum_retry_attempts
        if self.bisect_on_error is not None:
            parameters["BisectBatchOnFunctionError"] = self.bisect_on_error
        if self.on_failure is not None:
            parameters["DestinationConfig"] = {"OnFailure": {"Destination": queue_arns[self.on_failure]}}
        if self.parallelization_factor is not None:
            parameters["ParallelizationFactor"] = self.parallelization_factor
        return parameters


@dataclass(frozen=True)
class Stack:
    settings: StackSettings
    stream: StreamSpec
    tables: tuple[TableSpec, ...]
    queues: tuple[QueueSpec, ...]
    role: RoleSpec
    functions: tuple[FunctionSpec, ...]
    mappings: tuple[MappingSpec, ...]

    @property
    def stage(self) -> str:
        return self.settings.stage

    @property
    def name_prefix(self) -> str:
        """``esjoin-<stage>-``: every physical name starts with it."""
        return f"{NAME_PREFIX}-{self.stage}-"

    @property
    def log_group_prefix(self) -> str:
        return f"/aws/lambda/{self.name_prefix}"

    def table(self, key: str) -> TableSpec:
        return _by_key(self.tables, key)

    def queue(self, key: str) -> QueueSpec:
        return _by_key(self.queues, key)

    def function(self, key: str) -> FunctionSpec:
        return _by_key(self.functions, key)


def _by_key(items: tuple[Any, ...], key: str) -> Any:
    for item in items:
        if item.key == key:
            return item
    raise KeyError(f"no resource {key!r} in the stack; known: {', '.join(i.key for i in items)}")


HANDLERS = {
    "command": "lambdas.command.handler",
    "consumer": "lambdas.consumer.handler",
    "trigger": "lambdas.trigger.handler",
    "snapshot": "lambdas.snapshot.handler",
    "trim": "lambdas.trim.handler",
}


def build_stack(settings: StackSettings | None = None) -> Stack:
    """The desired state of one stage."""
    settings = settings or StackSettings.from_env()
    prefix = f"{NAME_PREFIX}-{settings.stage}-"
    timeout = settings.function_timeout_seconds
    visibility = visibility_timeout_for(timeout)
    return Stack(
        settings=settings,
        stream=StreamSpec(name=prefix + "events-in", shard_count=settings.shard_count),
        tables=(
            TableSpec("events", prefix + "events", "userId", "seq", stream_view_type="NEW_AND_OLD_IMAGES"),
            TableSpec("eventIds", prefix + "event-ids", "eventId", ttl_attribute="expiresAt"),
            TableSpec("snapshots", prefix + "snapshots", "userId"),
            TableSpec("views", prefix + "views", "id"),
        ),
        queues=(
            # Dead-letter queues first: their ARNs go into the sources' redrive policies.
            QueueSpec("snapshotRequestsDlq", prefix + "snapshot-requests-dlq", retention_seconds=RETENTION_14_DAYS),
            QueueSpec("trimRequestsDlq", prefix + "trim-requests-dlq", retention_seconds=RETENTION_14_DAYS),
            QueueSpec(
                "snapshotRequests",
                prefix + "snapshot-requests",
                visibility_timeout=visibility,
                dead_letter_queue="snapshotRequestsDlq",
            ),
            QueueSpec(
                "trimRequests",
                prefix + "trim-requests",
                visibility_timeout=visibility,
                dead_letter_queue="trimRequestsDlq",
            ),
            QueueSpec("failures", prefix + "failures", retention_seconds=RETENTION_14_DAYS),
        ),
        role=RoleSpec(
            name=prefix + "lambda", policy_name=prefix + "lambda-resources", trust_policy=LAMBDA_TRUST_POLICY
        ),
        functions=tuple(
            FunctionSpec(key, prefix + key, handler, RUNTIME, timeout, settings.function_memory_mb)
            for key, handler in HANDLERS.items()
        ),
        mappings=(
            # https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-parameters.html
            MappingSpec(
                "consumer",
                KINESIS,
                "stream",
                batch_size=100,
                starting_position="TRIM_HORIZON",
                maximum_retry_attempts=10,
                bisect_on_error=True,
                on_failure="failures",
                parallelization_factor=settings.parallelization_factor,
            ),
            MappingSpec(
                "trigger",
                DYNAMODB_STREAM,
                "events",
                batch_size=1000,
                starting_position="TRIM_HORIZON",
                maximum_retry_attempts=10,
                bisect_on_error=True,
                on_failure="failures",
                parallelization_factor=1,
            ),
            MappingSpec("snapshot", SQS, "snapshotRequests", batch_size=10),
            MappingSpec("trim", SQS, "trimRequests", batch_size=10),
        ),
    )


def _env_number(value: float) -> str:
    """2.0 -> "2", 0.5 -> "0.5": the functions parse these with int() or float()."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def function_environment(stack: Stack, queue_urls: dict[str, str]) -> dict[str, str]:
    """Every function's environment (lambdas/config.py reads it); queue_urls maps logical keys to URLs."""
    s = stack.settings
    return {
        "EVENTS_TABLE": stack.table("events").name,
        "VIEWS_TABLE": stack.table("views").name,
        "SNAPSHOTS_TABLE": stack.table("snapshots").name,
        "EVENT_IDS_TABLE": stack.table("eventIds").name,
        "STREAM_NAME": stack.stream.name,
        "SNAPSHOT_QUEUE_URL": queue_urls["snapshotRequests"],
        "TRIM_QUEUE_URL": queue_urls["trimRequests"],
        "FAILURE_QUEUE_URL": queue_urls["failures"],
        "SNAPSHOT_HORIZON_SECONDS": _env_number(s.snapshot_horizon_seconds),
        "SNAPSHOT_THRESHOLD": str(s.snapshot_threshold),
        "SNAPSHOT_MAX_EVENTS": str(s.snapshot_max_events),
        "DEDUPE_TTL_SECONDS": str(s.dedupe_ttl_seconds),
        "SNAPSHOT_MODE": s.snapshot_mode,
        "LOG_LEVEL": s.function_log_level,
    }


def role_policy(
    stack: Stack,
    *,
    stream_arn: str,
    table_arns: dict[str, str],
    queue_arns: dict[str, str],
    region: str,
    account_id: str,
) -> dict[str, Any]:
    """The role's inline policy: these resources and nothing else (least privilege)."""
    partition = stream_arn.split(":")[1]
    log_groups = f"arn:{partition}:logs:{region}:{account_id}:log-group:{stack.log_group_prefix}*"
    work_queues = [queue_arns[k] for k in ("snapshotRequests", "trimRequests", "failures")]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EventsIn",
                "Effect": "Allow",
                "Action": [
                    "kinesis:DescribeStream",
                    "kinesis:DescribeStreamSummary",
                    "kinesis:GetRecords",
                    "kinesis:GetShardIterator",
                    "kinesis:ListShards",
                    "kinesis:SubscribeToShard",
                    "kinesis:PutRecord",
                    "kinesis:PutRecords",
                ],
                "Resource": [stream_arn],
            },
            {
                "Sid": "Tables",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:DescribeTable",
                    "dynamodb:GetItem",
                    "dynamodb:BatchGetItem",
                    "dynamodb:Query",
                    "dynamodb:Scan",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:ConditionCheckItem",
                ],
                "Resource": [table_arns[t.key] for t in stack.tables],
            },
            {
                # https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/iam-policy-example-lamda-process-dynamodb-streams.html
                "Sid": "EventsTableStream",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:ListStreams",
                ],
                # Any stream of the events table: a recreated table's new stream needs no new policy.
                "Resource": [f"{table_arns['events']}/stream/*"],
            },
            {
                # Receive/Delete for the SQS mappings; Send for requests, poison records and the
                # stream mappings' on-failure destination (sent with the function's role).
                "Sid": "Queues",
                "Effect": "Allow",
                "Action": [
                    "sqs:SendMessage",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                ],
                "Resource": work_queues,
            },
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [log_groups, f"{log_groups}:*"],
            },
        ],
    }
