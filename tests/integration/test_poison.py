"""Scenarios: input that can never be processed goes to the failure queue, kept whole, and nothing
else waits for it (I5).

The original example threw on a record it could not parse, so Lambda retried the batch until the
record expired: the shard stood still for everyone. Here the consumer sets a poison record aside with
its reason, sends it (as delivered: data still base64) to the failure queue, and carries on; a
malformed snapshot or trim request goes there too.
"""

from __future__ import annotations

import base64
import json

from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, new_id, now_ms, order_submitted, user_created
from tests.integration.support.scenario import (
    kinesis_event_id,
    put_mixed,
    shard_of,
    user_on_shard,
    wait_for_failure_message,
)


def test_poison_records_go_to_the_failure_queue_and_the_shard_keeps_moving(pipeline, new_user):
    user = new_user("victim")
    now = now_ms()
    poison = {
        "bad JSON": b'{"id": "' + new_id().encode() + b'", "type": "user-loggedIn", ',
        "unknown type": json.dumps(
            {"id": new_id(), "type": "user-deleted", "timestamp": now, "user": {"id": user}}
        ).encode(),
        "missing user id": json.dumps(
            {"id": new_id(), "type": "order-submitted", "timestamp": now, "order": {"amount": 5}}
        ).encode(),
    }
    reasons = {"bad JSON": "not valid JSON", "unknown type": "unknown event type", "missing user id": "missing user id"}
    # Given good events with poison records between them, in one batch on one shard
    items = [
        user_created(user, "Victim", now - 5_000),
        poison["bad JSON"],
        logged_in(user, now - 4_000),
        poison["unknown type"],
        order_submitted(user, now - 3_000),
        poison["missing user id"],
        order_submitted(user, now - 2_000),
    ]
    results = put_mixed(pipeline, items, partition_key=user)
    # and, after that batch, another user's events on the same shard
    neighbour = user_on_shard(pipeline, new_user, "after", shard_of(pipeline, user))
    pipeline.put_events([user_created(neighbour, "After", now), logged_in(neighbour, now)])
    # Then the good events reach the views, the later ones too (the shard was not blocked)
    assert_converged(pipeline, [user, neighbour])
    assert pipeline.views([user])[user]["recentOrderCount"] == 2
    # and each poison record is in the failure queue with its reason and its data exactly as sent
    for kind, data in poison.items():
        event_id = kinesis_event_id(results[items.index(data)])
        message = wait_for_failure_message(
            pipeline, lambda m, e=event_id: (m.get("record") or {}).get("eventID") == e, f"the {kind} record {event_id}"
        )
        assert message["source"] == "consumer" and message["function"] == pipeline.function("consumer"), message
        assert reasons[kind] in message["reason"], message
        assert base64.b64decode(message["record"]["data"]) == data
        assert message["record"]["partitionKey"] == user


def test_malformed_snapshot_and_trim_requests_go_to_the_failure_queue(pipeline, new_user):
    user = new_user("malformed")
    # Given requests no function can serve (a user id that is not a string, a watermark that is no
    # sequence number), each marked so the test can find it
    snapshot_body = json.dumps({"type": "snapshot", "userId": 42, "note": user})
    trim_body = json.dumps({"type": "trim", "userId": user, "watermark": "yesterday"})
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url("snapshotRequests"), MessageBody=snapshot_body)
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url("trimRequests"), MessageBody=trim_body)
    # and good events and a good snapshot request for the same user
    pipeline.put_events([user_created(user, "Malformed"), logged_in(user)])
    pipeline.request_snapshot(user, horizon_seconds=0)
    # Then both land in the failure queue with their bodies, and the rest goes on
    snapshot_failure = wait_for_failure_message(
        pipeline, lambda m: (m.get("message") or {}).get("body") == snapshot_body, "the malformed snapshot request"
    )
    trim_failure = wait_for_failure_message(
        pipeline, lambda m: (m.get("message") or {}).get("body") == trim_body, "the malformed trim request"
    )
    assert snapshot_failure["source"] == "snapshot" and "userId" in snapshot_failure["reason"], snapshot_failure
    assert trim_failure["source"] == "trim" and "watermark" in trim_failure["reason"], trim_failure
    assert_converged(pipeline, [user])
