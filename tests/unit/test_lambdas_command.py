"""lambdas/command.py against the in-memory Kinesis fake (tests/unit/support/): PutRecords retries only
the failed records, and raises once they still fail after the retries."""

from __future__ import annotations

import base64
import json

import pytest

from lambdas import command
from lambdas.events import ORDER_SUBMITTED, USER_LOGGED_IN
from lambdas.retry import Backoff
from tests.unit.support.pipeline import Context, Pipeline, no_sleep


def test_command_puts_records_and_retries_only_the_failed_ones():
    p = Pipeline()
    p.kinesis.fail_records = 2
    result = command.process(
        [{"type": ORDER_SUBMITTED, "order": {"userId": f"u{i}"}} for i in range(5)],
        Context(),
        p.rt,
        client=p.kinesis,
        backoff=Backoff(sleep=no_sleep),
    )
    assert result["sent"] == 5 and result["failed"] == []
    assert sorted(json.loads(base64.b64decode(r["kinesis"]["data"]))["id"] for r in p.kinesis.records) == sorted(
        result["eventIds"]
    )
    assert [r["kinesis"]["partitionKey"] for r in p.kinesis.records] == ["u2", "u3", "u4", "u0", "u1"]


def test_command_raises_when_records_still_fail_after_the_retries():
    p = Pipeline()
    p.kinesis.fail_records = 10**6
    with pytest.raises(command.PutRecordsFailed, match="still failed") as caught:
        command.process(
            {"type": USER_LOGGED_IN, "userId": "u1"}, Context(), p.rt, client=p.kinesis, backoff=Backoff(sleep=no_sleep)
        )
    assert caught.value.failed[0]["errorCode"] == "ProvisionedThroughputExceededException"
