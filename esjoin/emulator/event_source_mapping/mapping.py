"""An event source mapping's configuration: AWS's fields, defaults, limits and states.

The Lambda API (esjoin.emulator.lambda_service) creates, updates and renders these; the engine
(esjoin.emulator.event_source_mapping.engine) runs them. Defaults and limits follow
https://docs.aws.amazon.com/lambda/latest/api/API_CreateEventSourceMapping.html
"""

from __future__ import annotations

import dataclasses
import time
import uuid as uuid_module
from dataclasses import dataclass, field
from typing import Any

from esjoin.emulator.event_source_mapping.filters import FilterCriteriaError, RecordFilter, compile_criteria
from esjoin.emulator.invocation import LambdaServiceError

KINESIS = "kinesis"
DYNAMODB = "dynamodb"
SQS = "sqs"

# States as AWS names them. The API answers "Creating"/"Enabling"/... and moves on once the engine
# has started or stopped the mapping's worker.
CREATING, ENABLING, ENABLED = "Creating", "Enabling", "Enabled"
DISABLING, DISABLED, UPDATING, DELETING = "Disabling", "Disabled", "Updating", "Deleting"

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
STREAM_STARTING_POSITIONS = {KINESIS: {"TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"}, DYNAMODB: {"TRIM_HORIZON", "LATEST"}}


def source_type(event_source_arn: str) -> str:
    """kinesis | dynamodb | sqs, from an ARN; anything else is not supported here."""
    parts = event_source_arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn":
        service, resource = parts[2], parts[5]
        if service == "kinesis" and resource.startswith("stream/"):
            return KINESIS
        if service == "dynamodb" and "/stream/" in resource:
            return DYNAMODB
        if service == "sqs":
            return SQS
    raise LambdaServiceError(
        400,
        "InvalidParameterValueException",
        f"Unsupported event source: {event_source_arn}. This endpoint maps Kinesis streams, "
        "DynamoDB streams and SQS queues.",
    )


def _invalid(message: str) -> LambdaServiceError:
    return LambdaServiceError(400, "InvalidParameterValueException", message)


@dataclass
class EventSourceMapping:
    uuid: str
    event_source_arn: str
    function_arn: str
    source: str  # kinesis | dynamodb | sqs
    batch_size: int
    maximum_batching_window_seconds: int = 0
    starting_position: str | None = None
    starting_position_timestamp: float | None = None
    parallelization_factor: int = 1
    maximum_retry_attempts: int = -1  # -1: retry until the record expires
    maximum_record_age_seconds: int = -1  # -1: no limit but the stream's retention
    bisect_batch_on_function_error: bool = False
    on_failure_destination: str | None = None  # SQS queue ARN (SNS and S3 are not emulated)
    function_response_types: list[str] = field(default_factory=list)
    tumbling_window_seconds: int = 0
    maximum_concurrency: int | None = None  # SQS ScalingConfig.MaximumConcurrency
    filter_criteria: dict | None = None
    enabled: bool = True
    state: str = CREATING
    state_transition_reason: str = "USER_INITIATED"
    last_modified: float = field(default_factory=time.time)
    last_processing_result: str = "No records processed"
    region: str = "us-east-1"
    account_id: str = "000000000000"

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:event-source-mapping:{self.uuid}"

    @property
    def is_stream(self) -> bool:
        return self.source in (KINESIS, DYNAMODB)

    @property
    def reports_batch_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    @property
    def record_filter(self) -> RecordFilter:
        """FilterCriteria, compiled (cached): which records the pollers send to the function."""
        return compile_criteria(self.source, self.filter_criteria)

    # -- construction and update, from API parameters ------------------------------------------

    @classmethod
    def create(cls, params: dict[str, Any], function_arn: str, region: str, account_id: str) -> EventSourceMapping:
        arn = params.get("EventSourceArn")
        if not arn:
            raise _invalid("EventSourceArn is required")
        source = source_type(arn)
        is_stream = source in (KINESIS, DYNAMODB)
        if is_stream:
            position = params.get("StartingPosition")
            if position not in STREAM_STARTING_POSITIONS[source]:
                allowed = ", ".join(sorted(STREAM_STARTING_POSITIONS[source]))
                raise _invalid(f"StartingPosition must be one of {allowed} for {source} streams, not {position!r}")
            if position == "AT_TIMESTAMP" and params.get("StartingPositionTimestamp") is None:
                raise _invalid("StartingPositionTimestamp is required with StartingPosition AT_TIMESTAMP")
        elif params.get("StartingPosition") is not None:
            raise _invalid("StartingPosition is not valid for SQS event sources")
        mapping = cls(
            uuid=str(uuid_module.uuid4()),
            event_source_arn=arn,
            function_arn=function_arn,
            source=source,
            batch_size=100 if is_stream else 10,
            starting_position=params.get("StartingPosition"),
            starting_position_timestamp=_timestamp(params.get("StartingPositionTimestamp")),
            region=region,
            account_id=account_id,
        )
        mapping.apply(params, creating=True)
        return mapping

    def apply(self, params: dict[str, Any], creating: bool = False) -> None:
        """Set the given API parameters (create or update), validating each against AWS's limits."""
        if not creating:
            fixed = sorted(set(params) & {"EventSourceArn", "StartingPosition", "StartingPositionTimestamp"})
            if fixed:
                raise _invalid(f"{', '.join(fixed)} cannot be changed; delete and recreate the mapping")
        if "Enabled" in params:
            self.enabled = bool(params["Enabled"])
        if params.get("BatchSize") is not None:
            self.batch_size = _int(params, "BatchSize", 1, 10000)
        if params.get("MaximumBatchingWindowInSeconds") is not None:
            self.maximum_batching_window_seconds = _int(params, "MaximumBatchingWindowInSeconds", 0, 300)
        if self.source == SQS:
            self._apply_sqs(params)
        else:
            self._apply_stream(params)
        if params.get("FunctionResponseTypes") is not None:
            types = list(params["FunctionResponseTypes"])
            if any(t != REPORT_BATCH_ITEM_FAILURES for t in types):
                raise _invalid(f"FunctionResponseTypes may only contain {REPORT_BATCH_ITEM_FAILURES}, not {types}")
            self.function_response_types = types
        if "FilterCriteria" in params:  # {} (or no Filters) removes the filters, as on AWS
            criteria = params["FilterCriteria"] or None
            try:
                compile_criteria(self.source, criteria)
            except FilterCriteriaError as error:
                raise _invalid(str(error)) from None
            self.filter_criteria = criteria if criteria and criteria.get("Filters") else None
        self.last_modified = time.time()

    def _apply_sqs(self, params: dict[str, Any]) -> None:
        stream_only = sorted(
            name
            for name in (
                "ParallelizationFactor",
                "MaximumRetryAttempts",
                "MaximumRecordAgeInSeconds",
                "BisectBatchOnFunctionError",
                "DestinationConfig",
                "TumblingWindowInSeconds",
            )
            if params.get(name) not in (None, {}, {"OnFailure": {}})
        )
        if stream_only:
            raise _invalid(
                f"{', '.join(stream_only)} apply to stream sources only, not SQS "
                "(SQS failures go to the queue's redrive policy)"
            )
        if self.event_source_arn.endswith(".fifo") and self.batch_size > 10:
            raise _invalid("BatchSize must be at most 10 for FIFO queues")
        if self.batch_size > 10 and self.maximum_batching_window_seconds < 1:
            raise _invalid("MaximumBatchingWindowInSeconds must be at least 1 when BatchSize is greater than 10")
        scaling = params.get("ScalingConfig")
        if scaling is not None:
            concurrency = scaling.get("MaximumConcurrency")
            if concurrency is not None and not 2 <= int(concurrency) <= 1000:
                raise _invalid("ScalingConfig.MaximumConcurrency must be between 2 and 1000")
            self.maximum_concurrency = None if concurrency is None else int(concurrency)

    def _apply_stream(self, params: dict[str, Any]) -> None:
        if params.get("ParallelizationFactor") is not None:
            self.parallelization_factor = _int(params, "ParallelizationFactor", 1, 10)
        if params.get("MaximumRetryAttempts") is not None:
            self.maximum_retry_attempts = _int(params, "MaximumRetryAttempts", -1, 10000)
        if params.get("MaximumRecordAgeInSeconds") is not None:
            age = _int(params, "MaximumRecordAgeInSeconds", -1, 604800)
            if 0 <= age < 60:
                raise _invalid("MaximumRecordAgeInSeconds must be -1 or between 60 and 604800")
            self.maximum_record_age_seconds = age
        if params.get("BisectBatchOnFunctionError") is not None:
            self.bisect_batch_on_function_error = bool(params["BisectBatchOnFunctionError"])
        if params.get("TumblingWindowInSeconds") is not None:
            self.tumbling_window_seconds = _int(params, "TumblingWindowInSeconds", 0, 900)
        if "DestinationConfig" in params:
            destination = ((params.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
            if destination and not destination.startswith("arn:aws:sqs:"):
                raise _invalid(f"OnFailure destination {destination} is not supported here: use an SQS queue ARN")
            self.on_failure_destination = destination or None

    # -- rendering ------------------------------------------------------------------------------

    def to_api(self) -> dict[str, Any]:
        """The mapping as Get/Create/Update/ListEventSourceMappings return it."""
        document: dict[str, Any] = {
            "UUID": self.uuid,
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.maximum_batching_window_seconds,
            "EventSourceArn": self.event_source_arn,
            "FunctionArn": self.function_arn,
            "LastModified": self.last_modified,
            "State": self.state,
            "StateTransitionReason": self.state_transition_reason,
            "FunctionResponseTypes": list(self.function_response_types),
            "EventSourceMappingArn": self.arn,
        }
        if self.is_stream:
            document.update(
                {
                    "StartingPosition": self.starting_position,
                    "ParallelizationFactor": self.parallelization_factor,
                    "LastProcessingResult": self.last_processing_result,
                    "DestinationConfig": {
                        "OnFailure": (
                            {"Destination": self.on_failure_destination} if self.on_failure_destination else {}
                        )
                    },
                    "MaximumRecordAgeInSeconds": self.maximum_record_age_seconds,
                    "BisectBatchOnFunctionError": self.bisect_batch_on_function_error,
                    "MaximumRetryAttempts": self.maximum_retry_attempts,
                    "TumblingWindowInSeconds": self.tumbling_window_seconds,
                }
            )
            if self.starting_position_timestamp is not None:
                document["StartingPositionTimestamp"] = self.starting_position_timestamp
        elif self.maximum_concurrency is not None:
            document["ScalingConfig"] = {"MaximumConcurrency": self.maximum_concurrency}
        if self.filter_criteria:
            document["FilterCriteria"] = self.filter_criteria
        return document

    def copy(self) -> EventSourceMapping:
        return dataclasses.replace(self, function_response_types=list(self.function_response_types))


def _int(params: dict[str, Any], name: str, low: int, high: int) -> int:
    try:
        value = int(params[name])
    except (TypeError, ValueError):
        raise _invalid(f"{name} must be an integer, not {params[name]!r}") from None
    if not low <= value <= high:
        raise _invalid(f"{name} must be between {low} and {high}, not {value}")
    return value


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _invalid(f"StartingPositionTimestamp must be epoch seconds, not {value!r}") from None
