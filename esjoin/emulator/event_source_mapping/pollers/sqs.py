"""SQS queues as a mapping's source. https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html

- Receiving uses the queue's visibility timeout; a batch holds up to BatchSize messages (and 6 MB),
  gathered for up to MaximumBatchingWindowInSeconds (0: what is there now).
- On success Lambda deletes the batch's messages. On a function error it leaves them: they become
  visible again when the visibility timeout ends, and SQS moves a message to the queue's dead-letter
  queue once its receive count reaches the redrive policy's maxReceiveCount (moto does so on receive).
  With ReportBatchItemFailures only the messages not reported are deleted; an invalid response fails
  the whole batch. https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html
- Throttles (the function did not run) are retried with backoff while the messages are still
  invisible, then left to come back ("Lambda continues to retry the message until the message's
  timestamp exceeds your queue's visibility timeout").
- Concurrency: AWS starts with five pollers and scales up; here at most five batches are in flight,
  or ScalingConfig.MaximumConcurrency when that is set.
  https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html
- FIFO: SQS (moto, as AWS) returns no message of a group that has messages in flight, so each group
  has at most one batch in flight and stays in order; a batch may hold several groups.
- Messages that become visible again or whose delay ends produce no notification: the worker sleeps
  until the next one is due, computed from the queue, instead of polling on a timer.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from esjoin.emulator.event_source_mapping import payloads
from esjoin.emulator.event_source_mapping.pollers.base import Poller, PollerContext
from esjoin.emulator.event_source_mapping.sender import Delivery, Outcome, OutcomeKind, processing_result
from esjoin.emulator.invocation import InvocationOrigin

log = logging.getLogger("esjoin.esm.sqs")

DEFAULT_CONCURRENCY = 5


@dataclass
class SqsMessage:
    message_id: str
    receipt_handle: str
    receive_count: int
    encoded: bytes


@dataclass
class SqsBatch:
    messages: list[SqsMessage]
    invisible_until: float  # when the messages become visible again (received + visibility timeout)
    failures_in_a_row: int = 0
    not_before: float = 0.0


class SqsPoller(Poller):
    def __init__(self, mapping: Any, context: PollerContext) -> None:
        super().__init__(mapping, context)
        self.queue_arn = mapping.event_source_arn
        parts = self.queue_arn.split(":")
        self.region, self.queue_name = parts[3], parts[5]
        self._gathering: deque[SqsMessage] = deque()
        self._gathering_bytes = 0
        self._gather_started = 0.0
        self._gathering_invisible_until = 0.0
        self._retrying: list[SqsBatch] = []  # throttled batches, still invisible, to deliver again
        self._in_flight: dict[int, SqsBatch] = {}
        self._next_due: float | None = None  # the next invisible or delayed message's return
        self._source_missing = False
        self._next_look = 0.0
        self._filtered_out = 0  # messages FilterCriteria discarded (deleted, never delivered)

    @property
    def concurrency(self) -> int:
        return self.mapping.maximum_concurrency or DEFAULT_CONCURRENCY

    def prepare(self) -> None:
        pass

    # -- poll --------------------------------------------------------------------------------

    def poll(self, now: float, source_changed: bool) -> None:
        if self._source_missing and now < self._next_look and not source_changed:
            return
        for batch in list(self._retrying):
            if len(self._in_flight) >= self.concurrency:
                return
            if now >= batch.invisible_until:
                self._retrying.remove(batch)  # its messages are visible again: received anew later
            elif now >= batch.not_before:
                self._retrying.remove(batch)
                self._send(batch)
        drained = False
        while len(self._in_flight) < self.concurrency:
            wanted = self.mapping.batch_size - len(self._gathering)
            if wanted > 0 and not drained:
                received = self._receive(wanted, now)
                if received is None:
                    return
                drained = len(received) < wanted
                for message in self._discard_filtered_out(received):
                    if not self._gathering:
                        self._gather_started = now
                    self._gathering.append(message)
                    self._gathering_bytes += len(message.encoded)
            if not self._gathering:
                return
            window = self.mapping.maximum_batching_window_seconds
            full = len(self._gathering) >= self.mapping.batch_size or not payloads.fits(
                self._gathering_bytes, len(self._gathering), 0
            )
            if not (full or window <= 0 or now >= self._gather_started + window):
                return
            self._send(self._take_batch())

    def _receive(self, count: int, now: float) -> list[SqsMessage] | None:
        with self.context.moto.lock_for(self.queue_arn):
            backend = self.context.moto.sqs(self.region)
            queue = backend.queues.get(self.queue_name)
            if queue is None or queue.queue_arn != self.queue_arn:
                queue = None
            else:
                visibility = int(queue.visibility_timeout)
                received = backend.receive_message(self.queue_name, count, 0, visibility, ["All"])
                fifo = bool(queue.fifo_queue)
                self._next_due = _next_due(queue, time.time())
        if queue is None:
            if not self._source_missing:
                log.warning(
                    "mapping %s: queue %s does not exist (deleted?); looking again every %.1f s",
                    self.mapping.uuid,
                    self.queue_arn,
                    self.context.timing.source_recheck_seconds,
                )
                self.context.report(last_processing_result="PROBLEM: Event source not found")
            self._source_missing = True
            self._next_look = now + self.context.timing.source_recheck_seconds
            return None
        if self._source_missing:
            log.warning("mapping %s: queue %s is back", self.mapping.uuid, self.queue_arn)
            self._source_missing = False
        if received and not self._gathering:
            self._gathering_invisible_until = now + visibility
        return [
            SqsMessage(
                message_id=message.id,
                receipt_handle=message.receipt_handle,
                receive_count=int(message.approximate_receive_count),
                encoded=payloads.encode(
                    payloads.sqs_record(message, queue_arn=self.queue_arn, region=self.region, fifo=fifo)
                ),
            )
            for message in received
        ]

    def _discard_filtered_out(self, received: list[SqsMessage]) -> list[SqsMessage]:
        """The messages FilterCriteria accepts; the others are deleted, as AWS deletes them."""
        record_filter = self.mapping.record_filter
        if not record_filter.active:
            return received
        kept: list[SqsMessage] = []
        discarded: list[SqsMessage] = []
        for message in received:
            (kept if record_filter.accepts(json.loads(message.encoded)) else discarded).append(message)
        if discarded:
            self._delete(discarded)
            self._filtered_out += len(discarded)
            log.debug(
                "mapping %s: %d messages did not match FilterCriteria: deleted", self.mapping.uuid, len(discarded)
            )
        return kept

    def _take_batch(self) -> SqsBatch:
        messages, total = payloads.take_batch(self._gathering, self.mapping.batch_size)
        self._gathering_bytes -= total
        return SqsBatch(messages, invisible_until=self._gathering_invisible_until)

    def _send(self, batch: SqsBatch) -> None:
        self._in_flight[id(batch)] = batch
        origin = InvocationOrigin(
            invocation_type="EventSourceMapping",
            mapping_uuid=self.mapping.uuid,
            source="sqs",
            batch_ids=tuple(message.message_id for message in batch.messages),
            attempt=max(message.receive_count for message in batch.messages),
        )
        log.debug("mapping %s: delivering %d messages of %s", self.mapping.uuid, len(batch.messages), self.queue_arn)
        self.context.dispatch(
            Delivery(
                function_arn=self.mapping.function_arn,
                payload=payloads.records_payload(message.encoded for message in batch.messages),
                origin=origin,
                item_identifiers=origin.batch_ids,
                report_batch_item_failures=self.mapping.reports_batch_item_failures,
                batch=batch,
            )
        )

    # -- outcomes ----------------------------------------------------------------------------

    def complete(self, delivery: Delivery, outcome: Outcome, now: float) -> None:
        batch: SqsBatch = delivery.batch
        self._in_flight.pop(id(batch), None)
        self.context.report(last_processing_result=processing_result(outcome))
        if outcome.kind is OutcomeKind.SUCCESS:
            self._delete(batch.messages)
        elif outcome.kind is OutcomeKind.PARTIAL_FAILURE:
            failed = set(outcome.failed_identifiers)
            self._delete([message for message in batch.messages if message.message_id not in failed])
            log.info(
                "mapping %s: %d of %d messages failed; they return after the visibility timeout",
                self.mapping.uuid,
                len(failed),
                len(batch.messages),
            )
        elif outcome.kind is OutcomeKind.NOT_INVOKED:
            batch.failures_in_a_row += 1
            batch.not_before = now + self.context.timing.backoff(batch.failures_in_a_row)
            if batch.not_before < batch.invisible_until:
                self._retrying.append(batch)
            log.log(
                logging.WARNING if batch.failures_in_a_row == 1 else logging.DEBUG,
                "mapping %s: could not invoke %s (%s)",
                self.mapping.uuid,
                delivery.function_arn,
                outcome.error,
            )
        else:
            log.info(
                "mapping %s: batch of %d messages failed (%s: %s); they return after the visibility timeout",
                self.mapping.uuid,
                len(batch.messages),
                outcome.kind.value,
                outcome.reason,
            )

    def _delete(self, messages: list[SqsMessage]) -> None:
        self._for_each_receipt(
            messages, "delete", lambda backend, handle: backend.delete_message(self.queue_name, handle)
        )

    def release(self) -> None:
        """Make gathered (received, never delivered) messages visible again at once."""
        messages = [*self._gathering, *(m for batch in self._retrying for m in batch.messages)]
        self._gathering, self._gathering_bytes, self._retrying = deque(), 0, []
        self._for_each_receipt(
            messages, "release", lambda backend, handle: backend.change_message_visibility(self.queue_name, handle, 0)
        )

    def _for_each_receipt(self, messages: list[SqsMessage], what: str, call: Callable[[Any, str], None]) -> None:
        """`call(backend, receipt handle)` for each message, under the moto lock. A failure only skips
        its message: a deleted queue, a purged or redriven message leaves nothing to act on."""
        if not messages:
            return
        with self.context.moto.lock_for(self.queue_arn):
            backend = self.context.moto.sqs(self.region)
            for message in messages:
                try:
                    call(backend, message.receipt_handle)
                except Exception as error:
                    log.debug("mapping %s: %s of %s failed: %r", self.mapping.uuid, what, message.message_id, error)

    # -- the worker's questions --------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self._in_flight)

    def has_work(self) -> bool:
        return bool(self._gathering or self._retrying or self._in_flight)

    def next_deadline(self, now: float) -> float | None:
        if len(self._in_flight) >= self.concurrency:
            return None  # a completion wakes the worker
        deadlines = []
        if self._gathering:
            deadlines.append(self._gather_started + self.mapping.maximum_batching_window_seconds)
        deadlines.extend(min(batch.not_before, batch.invisible_until) for batch in self._retrying)
        if self._next_due is not None:
            deadlines.append(self._next_due)
        if self._source_missing:
            deadlines.append(self._next_look)
        return min(deadlines) if deadlines else None

    def source_pending(self, positions: Any) -> bool:
        with self.context.moto.lock_for(self.queue_arn):
            queue = self.context.moto.sqs(self.region).queues.get(self.queue_name)
            return queue is not None and queue.queue_arn == self.queue_arn and bool(queue._messages)

    def status(self) -> dict[str, Any]:
        with self.context.moto.lock_for(self.queue_arn):
            queue = self.context.moto.sqs(self.region).queues.get(self.queue_name)
            counts = (
                None
                if queue is None
                else {
                    "visible": queue.approximate_number_of_messages,
                    "notVisible": queue.approximate_number_of_messages_not_visible,
                    "delayed": queue.approximate_number_of_messages_delayed,
                }
            )
        return {
            "sourceMissing": self._source_missing,
            "queue": counts,
            "lag": None if queue is None else len(queue._messages),
            "gathering": len(self._gathering),
            "inFlightBatches": [len(batch.messages) for batch in self._in_flight.values()],
            "retryingBatches": [
                {"messages": len(b.messages), "attempt": b.failures_in_a_row + 1} for b in self._retrying
            ],
            "concurrency": self.concurrency,
            "filteredOut": self._filtered_out,
            "nextMessageDueIn": (None if self._next_due is None else round(max(0.0, self._next_due - time.time()), 3)),
        }


def _next_due(queue: Any, now: float) -> float | None:
    """When the next message that cannot be received now (in flight or delayed) comes back."""
    now_ms = now * 1000
    due = [max(message.visible_at, message.delayed_until) for message in queue._messages]
    future = [moment for moment in due if moment >= now_ms]
    # moto compares with a strict ">" in milliseconds: wake just after.
    return (min(future) + 1) / 1000 if future else None
