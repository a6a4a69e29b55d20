"""Invoke the function with a batch and say what the outcome means for the batch.

Outcomes, as AWS distinguishes them:
- SUCCESS: the function returned; with ReportBatchItemFailures, it reported no failure.
- PARTIAL_FAILURE: with ReportBatchItemFailures, it returned {"batchItemFailures": [{"itemIdentifier":
  ...}]} naming records of this batch (sequence numbers for streams, message ids for SQS).
- FUNCTION_ERROR: the function failed (an exception, a timeout, a crashed worker).
- INVALID_RESPONSE: with ReportBatchItemFailures, a response Lambda cannot use; AWS then treats the
  whole batch as failed: "Lambda treats a batch as a complete failure if you return any of the
  following: An empty string itemIdentifier, A null itemIdentifier, An itemIdentifier with a bad key
  name, An itemIdentifier value with a [sequence number / message ID] that doesn't exist", and an
  invalid JSON response. Empty or null `batchItemFailures`, or an empty or null response, is success.
  https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-batchfailurereporting.html
  https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html#services-sqs-batchfailurereporting
  A JSON response that is not an object (a bare string, number or list) cannot be read as a batch
  response either: treated as invalid.
- NOT_INVOKED: the Lambda service refused the call (throttled, function deleted, ...). The function
  did not run: retried with backoff, not counted against MaximumRetryAttempts ("If a Lambda event
  source mapping is unable to invoke the function due to throttling or other issues, it retries
  until the records expire or exceed the maximum age").
  https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from esjoin.emulator.invocation import InvocationOrigin, InvocationResult, LambdaServiceError

log = logging.getLogger("esjoin.esm.sender")

Invoker = Callable[[str, bytes, InvocationOrigin], InvocationResult]


class OutcomeKind(enum.Enum):
    SUCCESS = "success"
    PARTIAL_FAILURE = "partial_failure"
    FUNCTION_ERROR = "function_error"
    INVALID_RESPONSE = "invalid_response"
    NOT_INVOKED = "not_invoked"


@dataclass(frozen=True)
class Delivery:
    """One batch on its way to the function."""

    function_arn: str
    payload: bytes
    origin: InvocationOrigin
    item_identifiers: tuple[str, ...]  # what a batchItemFailures entry may name
    report_batch_item_failures: bool
    batch: Any  # the poller's batch, handed back with the outcome
    duplicate: bool = False  # control API: deliver twice, the outcome of the first one counts


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    result: InvocationResult | None = None  # set when the function ran
    error: LambdaServiceError | None = None  # set for NOT_INVOKED
    failed_identifiers: tuple[str, ...] = ()  # PARTIAL_FAILURE
    detail: str = ""  # why a response was invalid

    @property
    def invoked(self) -> bool:
        return self.result is not None

    @property
    def failed(self) -> bool:
        return self.kind in (OutcomeKind.FUNCTION_ERROR, OutcomeKind.INVALID_RESPONSE, OutcomeKind.NOT_INVOKED)

    @property
    def reason(self) -> str:
        """Why the batch failed, for the log: the invalid response's defect or the function's errorMessage."""
        if self.detail or self.result is None:
            return self.detail
        return self.result.error_document().get("errorMessage", "")


def deliver(invoke: Invoker, delivery: Delivery) -> Outcome:
    """Invoke once and interpret the result; never raises."""
    try:
        result = invoke(delivery.function_arn, delivery.payload, delivery.origin)
    except LambdaServiceError as error:
        return Outcome(OutcomeKind.NOT_INVOKED, error=error)
    except Exception as error:  # a bug below the Lambda API: retried like a service error, loudly
        log.warning(
            "invoking %s for mapping %s raised %r; the batch will be retried",
            delivery.function_arn,
            delivery.origin.mapping_uuid,
            error,
            exc_info=True,
        )
        return Outcome(OutcomeKind.NOT_INVOKED, error=LambdaServiceError(500, "ServiceException", repr(error)))
    return interpret(result, delivery.item_identifiers, delivery.report_batch_item_failures)


def interpret(result: InvocationResult, item_identifiers: tuple[str, ...], report_batch_item_failures: bool) -> Outcome:
    if result.failed:
        return Outcome(OutcomeKind.FUNCTION_ERROR, result=result)
    if not report_batch_item_failures:
        return Outcome(OutcomeKind.SUCCESS, result=result)
    try:
        failed = batch_item_failures(result.payload, item_identifiers)
    except InvalidBatchResponse as error:
        return Outcome(OutcomeKind.INVALID_RESPONSE, result=result, detail=str(error))
    if not failed:
        return Outcome(OutcomeKind.SUCCESS, result=result)
    return Outcome(OutcomeKind.PARTIAL_FAILURE, result=result, failed_identifiers=tuple(failed))


class InvalidBatchResponse(ValueError):
    pass


def batch_item_failures(payload: bytes, item_identifiers: tuple[str, ...]) -> list[str]:
    """The identifiers a batch response names as failed ([] = success); raises InvalidBatchResponse."""
    text = (payload or b"").strip()
    if not text:
        return []
    try:
        document: Any = json.loads(text)
    except ValueError:
        raise InvalidBatchResponse(f"the response is not JSON: {text[:100]!r}") from None
    if document is None:
        return []
    if not isinstance(document, dict):
        raise InvalidBatchResponse(f"the response is a JSON {type(document).__name__}, not an object")
    failures = document.get("batchItemFailures")
    if failures is None:
        return []
    if not isinstance(failures, list):
        raise InvalidBatchResponse(f"batchItemFailures is a {type(failures).__name__}, not a list")
    known = set(item_identifiers)
    failed: list[str] = []
    for entry in failures:
        if not isinstance(entry, dict) or "itemIdentifier" not in entry:
            raise InvalidBatchResponse(f"batchItemFailures entry {entry!r} has no itemIdentifier")
        identifier = entry["itemIdentifier"]
        if not isinstance(identifier, str) or not identifier:
            raise InvalidBatchResponse(f"itemIdentifier {identifier!r} is empty or not a string")
        if identifier not in known:
            raise InvalidBatchResponse(f"itemIdentifier {identifier!r} is not in the batch")
        if identifier not in failed:
            failed.append(identifier)
    return failed


def processing_result(outcome: Outcome) -> str:
    """LastProcessingResult after this outcome, in AWS's words."""
    if not outcome.failed:
        return "OK"
    if outcome.kind is OutcomeKind.NOT_INVOKED and outcome.error is not None and outcome.error.status == 404:
        return "PROBLEM: Function not found"
    return "PROBLEM: Function call failed"
