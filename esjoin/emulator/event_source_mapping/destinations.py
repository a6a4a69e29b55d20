"""On-failure destinations of stream mappings: the invocation record of a discarded batch.

When a stream batch runs out of retries (condition RetryAttemptsExhausted) or its records are too old
(RecordAgeExceeded), Lambda sends a JSON document describing it (not the records themselves) to the
mapping's OnFailure destination, and the shard moves on. Shape, from AWS's examples:
https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html
https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html

    {"requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
     "responseContext": {"statusCode", "executedVersion", "functionError"},
     "version": "1.0", "timestamp": "2019-11-14T00:38:06.021Z",
     "KinesisBatchInfo" | "DDBStreamBatchInfo": {"shardId", "startSequenceNumber", "endSequenceNumber",
        "approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord", "batchSize", "streamArn"}}

Kinesis arrival times carry milliseconds; DynamoDB's are whole seconds (as its creation times are).
Only SQS queues are emulated as destinations (mapping.py refuses SNS and S3).
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Sequence
from typing import Any

from esjoin.emulator.invocation import InvocationResult, LambdaServiceError
from esjoin.emulator.moto_layer.moto_backends import MotoBackends

RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


class DestinationError(Exception):
    pass


def iso_timestamp(epoch_seconds: float, milliseconds: bool = True) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds" if milliseconds else "seconds").replace("+00:00", "Z")


def stream_failure_record(
    *,
    batch_info_field: str,
    stream_arn: str,
    shard_id: str,
    sequence_numbers: Sequence[int],
    arrivals: Sequence[float],
    function_arn: str,
    condition: str,
    invoke_count: int,
    last_result: InvocationResult | None,
    last_error: LambdaServiceError | None,
    now: float,
) -> dict[str, Any]:
    """The invocation record of a discarded stream batch."""
    with_milliseconds = batch_info_field == "KinesisBatchInfo"
    response_context: dict[str, Any]
    if last_result is not None:
        response_context = {"statusCode": 200, "executedVersion": last_result.executed_version}
        if last_result.function_error:
            response_context["functionError"] = last_result.function_error
        request_id = last_result.request_id
    elif last_error is not None:  # never ran: the Lambda service refused every attempt
        response_context = {"statusCode": last_error.status, "executedVersion": "$LATEST"}
        request_id = str(uuid.uuid4())
    else:  # expired before its first attempt
        response_context = {"statusCode": 200, "executedVersion": "$LATEST"}
        request_id = str(uuid.uuid4())
    return {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response_context,
        "version": "1.0",
        "timestamp": iso_timestamp(now),
        batch_info_field: {
            "shardId": shard_id,
            "startSequenceNumber": str(sequence_numbers[0]),
            "endSequenceNumber": str(sequence_numbers[-1]),
            "approximateArrivalOfFirstRecord": iso_timestamp(arrivals[0], with_milliseconds),
            "approximateArrivalOfLastRecord": iso_timestamp(arrivals[-1], with_milliseconds),
            "batchSize": len(sequence_numbers),
            "streamArn": stream_arn,
        },
    }


def send_to_queue(moto: MotoBackends, queue_arn: str, record: dict[str, Any]) -> str:
    """Send `record` as one message to the SQS queue `queue_arn`; returns the message id.

    Takes the moto lock itself (briefly, never waiting). Raises DestinationError with context."""
    parts = queue_arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        raise DestinationError(f"{queue_arn} is not an SQS queue ARN")
    region, queue_name = parts[3], parts[5]
    body = json.dumps(record)
    with moto.lock_for(queue_arn):
        try:
            backend = moto.sqs(region)
            queue = backend.get_queue(queue_name)
            if queue.queue_arn != queue_arn:
                raise DestinationError(f"queue {queue_name} has ARN {queue.queue_arn}, not {queue_arn}")
            message = backend.send_message(queue_name, body)
        except DestinationError:
            raise
        except Exception as error:  # moto's QueueDoesNotExist and the like
            raise DestinationError(f"cannot send to {queue_arn}: {error!r}") from error
    return message.id
