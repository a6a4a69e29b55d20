"""lambdas/work_requests.py through the two SQS handlers (snapshot, trim) over in-memory AWS fakes
(tests/unit/support/): a malformed request goes to the failure queue and counts as processed."""

from __future__ import annotations

from tests.unit.support.fake_aws import SNAPQ, TRIMQ, FakeMessage
from tests.unit.support.pipeline import Pipeline


def test_malformed_sqs_messages_go_to_the_failure_queue_and_count_as_processed():
    p = Pipeline()
    p.sqs.queues[SNAPQ].append(FakeMessage("bad-1", "not json", 0))
    p.sqs.queues[TRIMQ].append(FakeMessage("bad-2", '{"type":"trim"}', 0))
    p.run_queue(SNAPQ)
    p.run_queue(TRIMQ)
    assert p.sqs.queues[SNAPQ] == [] and p.sqs.queues[TRIMQ] == []
    messages = p.failure_messages()
    assert [(m["source"], m["message"]["messageId"], m["message"]["body"]) for m in messages] == [
        ("snapshot", "bad-1", "not json"),
        ("trim", "bad-2", '{"type":"trim"}'),
    ]
