"""lambdas/trim.py in the pipeline over in-memory AWS fakes (tests/unit/support/): trim stops at the
persisted snapshot's watermark, is idempotent, and deletes in batches of 25 through throttling."""

from __future__ import annotations

import json

from lambdas.events import ORDER_SUBMITTED
from tests.unit.support.fake_aws import EVENTS, SNAPQ, SNAPS, TRIMQ, FakeMessage
from tests.unit.support.pipeline import START, Pipeline, event


def test_trim_never_passes_the_persisted_watermark_and_is_idempotent():
    p = Pipeline(threshold=1000)
    for i in range(4):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    keys = sorted(k[1] for k in p.ddb.tables[EVENTS])
    p.sqs.queues[TRIMQ].append(
        FakeMessage("t1", json.dumps({"type": "trim", "userId": "u1", "watermark": keys[-1]}), 0)
    )
    p.run_queue(TRIMQ, redeliver=True)
    assert len(p.ddb.tables[EVENTS]) == 4  # no snapshot: nothing is provably contained
    p.ddb.tables[SNAPS][("u1",)] = {"userId": {"S": "u1"}, "watermark": {"S": keys[1]}, "version": {"N": "1"}}
    p.sqs.queues[TRIMQ].append(
        FakeMessage("t2", json.dumps({"type": "trim", "userId": "u1", "watermark": keys[-1]}), 0)
    )
    p.run_queue(TRIMQ, redeliver=True)
    assert sorted(k[1] for k in p.ddb.tables[EVENTS]) == keys[2:]


def test_trim_deletes_in_batches_of_25():
    p = Pipeline(threshold=10_000)
    for i in range(60):
        p.produce(event(f"e{i}", ORDER_SUBMITTED, "u1", START))
    p.consume(100)
    p.tick(10_000)
    p.request_snapshot("u1")
    p.run_queue(SNAPQ)
    writes_before = p.ddb.calls["BatchWriteItem"]
    p.ddb.unprocessed_writes = 5
    p.run_queue(TRIMQ)
    assert p.ddb.tables[EVENTS] == {}
    assert p.ddb.calls["BatchWriteItem"] - writes_before >= 3  # 60 deletes = at least 3 calls
