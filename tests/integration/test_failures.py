"""Scenarios: functions fail, Lambda retries, and what cannot succeed goes to the failure destination
(I3, I5). Failures are injected through the control API for this test's users only (`match`).

- The consumer fails a few times for a user's records: the mapping retries (blocking that shard's
  lane meanwhile) and the records arrive, once each.
- The consumer fails for a user's record more often than the mapping's MaximumRetryAttempts: Lambda
  discards the batch, sends its description (KinesisBatchInfo) to the OnFailure queue, and the shard
  moves on. https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html
- DynamoDB refuses a consumer's BatchWriteItem twice (throttling): the write is retried.
- The trigger fails twice: its batch is retried and the view is right.
The invocation history shows each attempt.
"""

from __future__ import annotations

import pytest

from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from tests.integration.support.scenario import (
    describe_invocations,
    history_mark,
    invocations,
    kinesis_event_id,
    shard_of,
    user_on_shard,
    wait_for_failure_message,
    wait_for_rule_used,
    wait_for_view_count,
)

pytestmark = pytest.mark.embedded_only("injects function and request faults through the control API")


def test_consumer_failures_below_the_retry_limit_are_retried_until_the_records_arrive(pipeline, new_user, faults):
    user = new_user("flaky")
    mark = history_mark(faults.control)
    # Given the consumer fails the next three invocations that carry this user's records
    rule = faults.add(
        "error",
        function=pipeline.function("consumer"),
        match=user,
        count=3,
        error_type="RuntimeError",
        error_message="injected: the consumer crashed",
    )
    # When the user's events are sent
    now = now_ms()
    sent = pipeline.put_events(
        [user_created(user, "Flaky", now - 3_000), logged_in(user, now - 2_000), order_submitted(user, now - 1_000)]
    )
    # Then they arrive, once each
    assert_converged(pipeline, [user])
    assert faults.active(rule) is None
    # and the history shows the three failed attempts, then a successful retry of the same records
    mine = {kinesis_event_id(r) for r in sent}
    history = [r for r in invocations(faults.control, pipeline.function("consumer"), mark) if mine & set(r["batchIds"])]
    failed = [r for r in history if r["injectedFault"] == rule["id"]]
    assert len(failed) == 3 and all(r["outcome"] == "error" for r in failed), describe_invocations(history)
    succeeded = [r for r in history if r["outcome"] == "success"]
    assert mine <= {i for r in succeeded for i in r["batchIds"]}, describe_invocations(history)
    assert max(r["attempt"] for r in history) >= 2, describe_invocations(history)
    assert min(r["id"] for r in succeeded) > min(r["id"] for r in failed)


def test_a_batch_failing_past_the_retry_limit_goes_to_the_failure_queue_and_the_shard_moves_on(
    pipeline, new_user, faults
):
    doomed = new_user("doomed")
    shard = shard_of(pipeline, doomed)
    survivor = user_on_shard(pipeline, new_user, "survivor", shard)
    retries = pipeline.lambda_.get_event_source_mapping(UUID=pipeline.mapping_uuid("consumer"))["MaximumRetryAttempts"]
    # Given the consumer fails every invocation that carries the doomed user's record (until the rule
    # is removed: more often than MaximumRetryAttempts allows)
    rule = faults.add(
        "error",
        function=pipeline.function("consumer"),
        match=doomed,
        error_type="RuntimeError",
        error_message="injected: the consumer always fails",
    )
    # When the doomed user's event is sent, and another user's events behind it on the same shard
    [record] = pipeline.put_events([user_created(doomed, "Doomed")])
    pipeline.put_events([user_created(survivor, "Survivor"), logged_in(survivor)])
    # Then, once the retries are spent, the batch's description goes to the OnFailure queue
    info = wait_for_failure_message(
        pipeline,
        lambda m: (m.get("KinesisBatchInfo") or {}).get("startSequenceNumber") == record["sequenceNumber"],
        f"KinesisBatchInfo for {kinesis_event_id(record)}",
    )
    faults.remove(rule)
    batch = info["KinesisBatchInfo"]
    assert (batch["shardId"], batch["endSequenceNumber"], batch["batchSize"]) == (shard, record["sequenceNumber"], 1)
    assert batch["streamArn"] == pipeline.outputs.stream["arn"]
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted", info
    assert info["requestContext"]["approximateInvokeCount"] >= retries + 1, info
    assert info["requestContext"]["functionArn"].endswith(pipeline.function("consumer")), info
    # and the shard moved on: the other user's events arrive; the doomed event was never stored
    assert_converged(pipeline, [survivor])
    assert pipeline.views([doomed]) == {} and pipeline.stored_events(doomed) == []


def test_throttled_dynamodb_writes_are_retried(pipeline, new_user, faults):
    user = new_user("throttled")
    # Given DynamoDB refuses the next two BatchWriteItem calls that carry this user's events
    rule = faults.add("error", operation="BatchWriteItem", service="dynamodb", match=user, count=2)
    # When the user's events are sent
    pipeline.put_events([user_created(user, "Throttled"), logged_in(user), order_submitted(user)])
    # Then the writes were refused twice and retried: the events arrive, once each
    wait_for_rule_used(pipeline, faults, rule)
    assert_converged(pipeline, [user])


def test_a_failing_trigger_is_retried(pipeline, new_user, faults):
    user = new_user("trigger")
    mark = history_mark(faults.control)
    # Given the trigger fails the next two invocations that carry this user's stream records
    rule = faults.add(
        "error",
        function=pipeline.function("trigger"),
        match=user,
        count=2,
        error_type="RuntimeError",
        error_message="injected: the trigger crashed",
    )
    # When the user's events are sent
    pipeline.put_events([user_created(user, "Retried"), logged_in(user)])
    # Then the view is right
    wait_for_view_count(pipeline, user, 2)
    assert_converged(pipeline, [user])
    # and the history shows the two failed attempts, then the same stream records delivered again
    history = invocations(faults.control, pipeline.function("trigger"), mark)
    failed = [r for r in history if r["injectedFault"] == rule["id"]]
    assert len(failed) == 2 and all(r["outcome"] == "error" for r in failed), describe_invocations(history)
    retried = {i for r in history if r["outcome"] == "success" and r["id"] > failed[0]["id"] for i in r["batchIds"]}
    assert set(failed[0]["batchIds"]) <= retried, describe_invocations(history)
    assert max(r["attempt"] for r in history if set(r["batchIds"]) & retried) >= 2, describe_invocations(history)
