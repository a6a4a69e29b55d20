"""Consumer: Kinesis batch -> events table (handler ``lambdas.consumer.handler``).

1. Decode each record; poison (bad base64/JSON, unknown type, no user id, ...) is set aside with a reason.
2. De-duplicate the batch by event id, keeping the lowest sequence number.
3. Look the ids up in the event-ids table: accept an event that is new, or known with the SAME
   sequence number (a redelivery of this very record: rewriting it is harmless, and needed if an
   earlier attempt stopped half way). Known with another sequence number = a producer retry: skip (I3).
4. Write in rounds: round k holds the k-th accepted event (by seq) of each user, and is fully written
   (retrying UnprocessedItems) before round k+1 starts. So a user's events become visible in sequence
   order even though BatchWriteItem may apply any subset of a call, which is what lets a snapshot
   watermark mean "every event at or below it" (see snapshot.py).
5. Send poison to the failure queue (once: a marker in the event-ids table remembers it was sent);
   what cannot be sent is reported as a batch item failure so the mapping retries from there
   (https://docs.aws.amazon.com/lambda/latest/dg/kinesis-batchfailurereporting.html). Everything
   else keeps moving (I5).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lambdas.dependencies import Runtime, function_name, runtime
from lambdas.events import InvalidEvent, PoisonRecord, StoredEvent, decode_kinesis_record
from lambdas.logs import log
from lambdas.queues import OutgoingMessage, failure_message
from lambdas.records import KinesisRecord


def decode_records(records: Iterable[KinesisRecord], now_ms: int) -> tuple[list[StoredEvent], list[PoisonRecord]]:
    events: list[StoredEvent] = []
    poison: list[PoisonRecord] = []
    for record in records:
        try:
            events.append(decode_kinesis_record(record, stored_at=now_ms))
        except InvalidEvent as error:
            poison.append(PoisonRecord(record=record, reason=error.reason))
    return events, poison


def dedupe_within_batch(events: Iterable[StoredEvent]) -> list[StoredEvent]:
    """One event per id: the copy with the lowest sequence number (the first the producer got in)."""
    first: dict[str, StoredEvent] = {}
    for event in events:
        known = first.get(event.event.event_id)
        if known is None or event.seq < known.seq:
            first[event.event.event_id] = event
    return sorted(first.values(), key=lambda e: e.seq)


@dataclass(frozen=True)
class Acceptance:
    accepted: list[StoredEvent]
    producer_retries: list[StoredEvent]  # same id as an event accepted earlier with another seq


def accept(events: Iterable[StoredEvent], seen: Mapping[str, str]) -> Acceptance:
    """Decide against the dedupe index (`seen`: event id -> seq it was accepted with)."""
    accepted, retries = [], []
    for event in events:
        known_seq = seen.get(event.event.event_id)
        if known_seq is None or known_seq == event.seq:
            accepted.append(event)
        else:
            retries.append(event)
    return Acceptance(accepted=accepted, producer_retries=retries)


def write_rounds(events: Iterable[StoredEvent]) -> list[list[StoredEvent]]:
    """Round k = the k-th event (by seq) of each user; rounds are written strictly one after another."""
    per_user: dict[str, list[StoredEvent]] = {}
    for event in sorted(events, key=lambda e: e.seq):
        per_user.setdefault(event.event.user_id, []).append(event)
    depth = max((len(v) for v in per_user.values()), default=0)
    return [[queue[k] for queue in per_user.values() if k < len(queue)] for k in range(depth)]


def batch_item_failures(sequence_numbers: Iterable[str]) -> list[dict[str, str]]:
    unique = sorted(set(sequence_numbers), key=lambda s: (len(s), s))
    return [{"itemIdentifier": s} for s in unique]


def _write(rt: Runtime, rounds: Sequence[Sequence[StoredEvent]]) -> None:
    ttl = rt.settings.dedupe_ttl_seconds
    for round_events in rounds:
        now = rt.now_ms()
        expires_at = now // 1000 + ttl
        requests = []
        for event in round_events:
            requests.extend(rt.store.event_write_requests(replace(event, stored_at=now), expires_at))
        rt.store.batch_write(requests)


def _send_poison(rt: Runtime, context: Any, poison: Sequence[PoisonRecord]) -> list[str]:
    """Send poison to the failure queue; return the sequence numbers that could not be sent."""
    if not poison:
        return []
    name = function_name(context)
    for item in poison:
        log(
            rt.logger,
            logging.ERROR,
            "poison record",
            function=name,
            reason=item.reason,
            shardId=item.record.shard_id,
            sequenceNumber=item.record.sequence_number,
            record=item.record.as_failure_content(),
            action="sent to the failure queue"
            if rt.settings.failure_queue_url
            else "FAILURE_QUEUE_URL is not set: this log line is the only copy",
        )
    if not rt.settings.failure_queue_url:
        return []
    now = rt.now_ms()
    messages = [
        OutgoingMessage(
            key=item.record.sequence_number,
            body=failure_message(
                "consumer", item.reason, name, now, "record", item.record.as_failure_content(), bulky_field="data"
            ),
        )
        for item in poison
    ]
    failures = rt.queues.send(rt.settings.failure_queue_url, messages)
    for failure in failures:
        log(
            rt.logger,
            logging.ERROR,
            "poison record not sent to the failure queue",
            function=name,
            sequenceNumber=failure.key,
            code=failure.code,
            error=failure.message,
            action="reported as a batch item failure; the mapping retries from this record",
        )
    return [f.key for f in failures]


def poison_marker(record: KinesisRecord) -> str | None:
    """The event-ids key that records "this poison record is in the failure queue", so a redelivered
    batch does not send it twice (I3). None if the record has no sequence number to name it by."""
    if not record.sequence_number:
        return None
    return f"poison#{record.shard_id}#{record.sequence_number}"


def fresh_poison(poison: Iterable[PoisonRecord], seen: Mapping[str, str]) -> list[PoisonRecord]:
    """The poison records not already sent by an earlier delivery of the batch."""
    return [p for p in poison if (poison_marker(p.record) or "") not in seen]


def _remember_poison(rt: Runtime, sent: Sequence[PoisonRecord]) -> None:
    markers = [m for m in (poison_marker(p.record) for p in sent) if m]
    if not markers:
        return
    expires_at = rt.now_ms() // 1000 + rt.settings.dedupe_ttl_seconds
    try:
        rt.store.batch_write(rt.store.marker_write_requests(markers, expires_at))
    except Exception as error:  # the poison is safe in the failure queue; a redelivery may send it again
        log(rt.logger, logging.WARNING, "poison markers not written", markers=markers, error=repr(error))


def process(event: dict[str, Any], context: Any, rt: Runtime) -> dict[str, Any]:
    records = [KinesisRecord.from_lambda(r) for r in event.get("Records") or []]
    decoded, poison = decode_records(records, rt.now_ms())
    candidates = dedupe_within_batch(decoded)
    markers = [m for m in (poison_marker(p.record) for p in poison) if m]
    lookups = [e.event.event_id for e in candidates] + markers
    seen = rt.store.seen_event_ids(lookups)
    decision = accept(candidates, seen)
    _write(rt, write_rounds(decision.accepted))
    to_send = fresh_poison(poison, seen)
    unsent = _send_poison(rt, context, to_send)
    _remember_poison(rt, [p for p in to_send if p.record.sequence_number not in unsent])
    log(
        rt.logger,
        logging.INFO,
        "consumer batch",
        function=function_name(context),
        records=len(records),
        accepted=len(decision.accepted),
        duplicatesInBatch=len(decoded) - len(candidates),
        producerRetries=len(decision.producer_retries),
        poison=len(poison),
        poisonAlreadySent=len(poison) - len(to_send),
        poisonUnsent=len(unsent),
    )
    return {"batchItemFailures": batch_item_failures(unsent)}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process(event, context, runtime())
