"""lambdas/consumer.py in the pipeline over in-memory AWS fakes (tests/unit/support/): Kinesis
redeliveries and producer retries count once, poison goes to the failure queue (or is retried when it
cannot be sent), throttled writes are retried, and a user's events are written in sequence order one
round at a time, even with a snapshot running while the consumer is half way."""

from __future__ import annotations

import copy
import json

import pytest

from lambdas import consumer
from lambdas.events import ORDER_SUBMITTED, USER_LOGGED_IN
from lambdas.store import IncompleteBatchError
from tests.unit.support.fake_aws import EVENTS, IDS, SNAPQ, TRIMQ
from tests.unit.support.pipeline import START, Context, Pipeline, event


def test_redelivered_kinesis_batch_and_producer_retry_count_once():
    p = Pipeline()
    first = event("e1", ORDER_SUBMITTED, "u1", START)
    p.produce(first)
    p.consume(10, redeliver=True)
    p.produce(first)  # producer retry: same id, new sequence number, in a later batch
    p.produce(event("e2", ORDER_SUBMITTED, "u1", START))
    p.produce(first)  # and once more inside that batch
    p.consume(10, redeliver=True)
    p.drain()
    assert p.view("u1")["recentOrderCount"] == 2
    assert len([k for k in p.ddb.tables[IDS]]) == 2


def test_producer_retry_after_the_first_copy_was_snapshotted_and_trimmed_counts_once():
    p = Pipeline()
    first = event("e1", USER_LOGGED_IN, "u1", START)
    p.produce(first)
    p.consume(10)
    p.request_snapshot("u1")
    p.drain()
    assert p.ddb.tables[EVENTS] == {}
    p.produce(first)
    p.drain()
    assert p.view("u1")["eventCount"] == 1


def test_poison_goes_to_the_failure_queue_with_its_content_and_the_shard_moves_on():
    p = Pipeline()
    p.produce_poison(b"{not json")
    p.produce(event("e1", USER_LOGGED_IN, "u1", START))
    p.produce_poison(json.dumps({"id": "x", "type": "user-deleted", "timestamp": 1, "user": {"id": "u"}}).encode())
    p.consume(10)
    assert p.kinesis_checkpoint == 3
    messages = p.failure_messages()
    assert [m["record"]["data"] for m in messages] == p.poison_sent
    assert [m["source"] for m in messages] == ["consumer", "consumer"]
    assert "not valid JSON" in messages[0]["reason"] and "user-deleted" in messages[1]["reason"]
    assert messages[0]["function"] == "esjoin-test"
    assert messages[0]["record"]["sequenceNumber"] == p.kinesis.records[0]["kinesis"]["sequenceNumber"]


def test_poison_that_cannot_be_sent_is_a_batch_item_failure_and_is_retried():
    p = Pipeline()
    p.produce(event("e1", USER_LOGGED_IN, "u1", START))
    p.produce_poison(b"bad")
    p.produce(event("e2", USER_LOGGED_IN, "u1", START + 1))
    p.sqs.fail_calls = 1
    batch = copy.deepcopy(p.kinesis.records)
    result = consumer.process({"Records": batch}, Context(), p.rt)
    assert result == {"batchItemFailures": [{"itemIdentifier": batch[1]["kinesis"]["sequenceNumber"]}]}
    p.consume(10)  # the mapping retries from the failed record; e2 is rewritten, harmlessly
    p.consume(10)
    p.drain()
    assert len(p.failure_messages()) == 1
    assert p.view("u1")["eventCount"] == 2


def test_throttled_batch_writes_are_retried_until_written():
    p = Pipeline()
    for i in range(30):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, f"u{i % 4}", START))
    p.ddb.unprocessed_writes = 9  # fewer than the 10 calls in a row without progress that give up
    p.ddb.unprocessed_gets = 1
    p.consume(100)
    assert p.kinesis_checkpoint == 30
    p.drain()
    assert all(p.view(u) == p.expected(u) for u in p.users())


def test_batch_writes_give_up_after_the_retries_and_the_mapping_retries_the_batch():
    p = Pipeline()
    p.produce(event("e1", ORDER_SUBMITTED, "u1", START))
    p.ddb.unprocessed_writes = 10**6
    with pytest.raises(IncompleteBatchError, match="unprocessed"):
        consumer.process({"Records": copy.deepcopy(p.kinesis.records)}, Context(), p.rt)
    p.ddb.unprocessed_writes = 0
    p.drain()
    assert p.view("u1")["recentOrderCount"] == 1


def test_consumer_writes_each_users_events_in_sequence_order_one_round_at_a_time():
    p = Pipeline()
    for i in range(6):
        p.produce(event(f"a{i}", ORDER_SUBMITTED, "a", START))
    p.produce(event("b0", ORDER_SUBMITTED, "b", START))
    p.consume(100)
    writes = p.ddb.calls["BatchWriteItem"]
    assert writes == 6  # round 1 = a0+b0, then a1..a5 alone: never two events of one user in a call
    seqs = [k[1] for k in p.ddb.tables[EVENTS] if k[0] == "a"]
    assert seqs == sorted(seqs)


def test_a_snapshot_running_while_the_consumer_is_half_way_never_skips_an_event():
    """A snapshot with horizon 0 runs after every BatchWriteItem call of a throttled consumer batch."""
    p = Pipeline()
    for i in range(8):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START + i))
    p.ddb.unprocessed_writes = 6

    def snapshot_and_trim(_request: dict) -> None:
        p.request_snapshot("u1")
        p.run_queue(SNAPQ)
        p.run_queue(TRIMQ)
        if p.ddb.calls["BatchWriteItem"] < 40:
            p.ddb.hooks["BatchWriteItem"] = snapshot_and_trim

    p.ddb.hooks["BatchWriteItem"] = snapshot_and_trim
    p.consume(100)
    p.ddb.hooks.clear()
    p.drain()
    assert p.view("u1") == p.expected("u1")
    assert p.view("u1")["recentOrderCount"] == 8
