"""SQS long polling: a waiting ReceiveMessage returns as soon as a message arrives, an empty one after
WaitTimeSeconds, and it never holds up other clients.
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-short-and-long-polling.html

Behaviour checks, not benchmarks: the bounds are the wait itself, not a latency target.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.emulator.support.endpoint import Endpoint, create_queue, create_table, unique


class LongPoll:
    """A ReceiveMessage on its own thread and client; `sent` is set once the request leaves the client."""

    def __init__(self, endpoint: Endpoint, queue_url: str, wait_seconds: int | None) -> None:
        self.sqs = endpoint.client("sqs")
        self.sent = threading.Event()
        self.sqs.meta.events.register("before-send.sqs.ReceiveMessage", self._before_send)
        self.result: dict[str, Any] = {}
        self.elapsed: float | None = None
        arguments: dict[str, Any] = {"QueueUrl": queue_url, "MaxNumberOfMessages": 1}
        if wait_seconds is not None:
            arguments["WaitTimeSeconds"] = wait_seconds
        self._thread = threading.Thread(target=self._receive, args=(arguments,), daemon=True)

    def _before_send(self, **_: Any) -> None:
        self.sent.set()

    def _receive(self, arguments: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            self.result = self.sqs.receive_message(**arguments)
        finally:
            self.elapsed = time.monotonic() - started

    def start(self) -> LongPoll:
        self._thread.start()
        assert self.sent.wait(10), "the ReceiveMessage request was never sent"
        return self

    def join(self, timeout: float = 30) -> dict[str, Any]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"ReceiveMessage still waiting after {timeout} s"
        return self.result

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def test_a_long_poll_returns_as_soon_as_a_message_is_sent(endpoint: Endpoint, sqs: Any) -> None:
    url, _ = create_queue(sqs)
    poll = LongPoll(endpoint, url, wait_seconds=5).start()

    sqs.send_message(QueueUrl=url, MessageBody="wake up")

    received = poll.join()
    assert [m["Body"] for m in received.get("Messages", [])] == ["wake up"]
    assert poll.elapsed is not None and poll.elapsed < 5, f"returned after {poll.elapsed:.2f} s, not at once"


def test_an_empty_long_poll_returns_after_wait_time_seconds(endpoint: Endpoint, sqs: Any) -> None:
    url, _ = create_queue(sqs)

    poll = LongPoll(endpoint, url, wait_seconds=1).start()

    assert poll.join().get("Messages", []) == []
    # It waited (a short poll answers at once), and it did not wait for ever.
    assert poll.elapsed is not None and 0.9 <= poll.elapsed < 5, f"returned after {poll.elapsed:.2f} s"


def test_the_queues_receive_wait_time_applies_when_the_call_gives_none(endpoint: Endpoint, sqs: Any) -> None:
    url, _ = create_queue(sqs, ReceiveMessageWaitTimeSeconds="5")
    poll = LongPoll(endpoint, url, wait_seconds=None).start()
    sqs.send_message(QueueUrl=url, MessageBody="late")

    received = poll.join()

    assert [m["Body"] for m in received.get("Messages", [])] == ["late"]


def test_a_long_poll_does_not_block_other_requests(endpoint: Endpoint, sqs: Any, dynamodb: Any) -> None:
    url, _ = create_queue(sqs)
    table, _ = create_table(dynamodb)
    poll = LongPoll(endpoint, url, wait_seconds=10).start()

    for i in range(5):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
    other_queue = sqs.create_queue(QueueName=unique("other"))["QueueUrl"]
    sqs.send_message(QueueUrl=other_queue, MessageBody="elsewhere")
    finished_while_polling = not poll.done

    assert finished_while_polling, "the writes waited for the long poll to end"
    assert dynamodb.scan(TableName=table, Select="COUNT")["Count"] == 5
    sqs.send_message(QueueUrl=url, MessageBody="release")  # end the long poll now
    assert [m["Body"] for m in poll.join().get("Messages", [])] == ["release"]
