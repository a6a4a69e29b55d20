"""What Kinesis and DynamoDB Streams mappings share: shards, lanes, batches, retries, checkpoints.

A `StreamSource` (pollers/kinesis.py, pollers/dynamodb_streams.py) lists shards and reads records;
everything else is here, following AWS's documented behaviour:

Shards. Each shard is read in order. Shards are discovered continuously; after a reshard, "Lambda
processes a child shard only after it finishes processing its parent(s)", and closed parents are
read to their end. https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html
StartingPosition applies to the shards that exist when the mapping starts (TRIM_HORIZON: the oldest
record; LATEST: after the newest, fixed when `prepare()` returns; AT_TIMESTAMP: the first record at
or after the timestamp); shards created later are read from their start.

Lanes (ParallelizationFactor N). Each shard has N lanes, each with at most one batch in flight.
"Lambda ... processes up to 10 batches in each shard simultaneously ... Lambda ensures in-order
processing at the partition-key level": a record's lane is a hash of its partition key (Kinesis) or
of its item's hash key (DynamoDB), so a key always lands in the same lane, in order. The shard's
checkpoint moves only past records every lane has finished (`ShardProgress`).
https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html#services-kinesis-parallelization

Batching. A lane delivers when it holds BatchSize records (or 6 MB), when
MaximumBatchingWindowInSeconds has passed since its oldest waiting record arrived (0: at once), or
when its shard is closed and read to the end.
https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventsourcemapping.html#invocation-eventsourcemapping-batching

Failures. A failed batch blocks its lane and is retried (with backoff) until it succeeds, it has
been retried MaximumRetryAttempts times (-1: no limit), or its oldest record is older than
MaximumRecordAgeInSeconds (or the stream's retention); then the batch's invocation record goes to
the OnFailure destination and the lane moves on. Throttles and other Lambda service errors are
retried without counting as attempts (the function never ran). Retry counting, as implemented:
- a function error (or an invalid batch response) uses one retry attempt;
- with BisectBatchOnFunctionError, a failed batch of two or more records is split in two halves that
  are retried in order, each with the parent's attempt count: "Splitting batches doesn't consume the
  retry quota" (https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html);
  a single record that fails uses attempts as above, so a poison record is isolated, retried
  MaximumRetryAttempts times and discarded alone;
- with ReportBatchItemFailures, "Lambda uses the record with the lowest sequence number as the
  checkpoint. Lambda then retries all records starting from that checkpoint": records before it are
  done, the rest is retried as a batch using one attempt (so a function that keeps failing the same
  record still exhausts its retries). If the lowest failure is the batch's first record, it is a
  plain failure of the whole batch (and bisected, when that is on).
  https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-batchfailurereporting.html
approximateInvokeCount counts the invocations that carried the discarded records.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from esjoin.emulator.event_source_mapping import payloads
from esjoin.emulator.event_source_mapping.checkpoints import CHECKPOINT_INTERVAL_SECONDS, ShardCheckpoint
from esjoin.emulator.event_source_mapping.destinations import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    DestinationError,
    send_to_queue,
    stream_failure_record,
)
from esjoin.emulator.event_source_mapping.pollers.base import Poller, PollerContext
from esjoin.emulator.event_source_mapping.sender import Delivery, Outcome, OutcomeKind, processing_result
from esjoin.emulator.invocation import InvocationOrigin, InvocationResult, LambdaServiceError

log = logging.getLogger("esjoin.esm.stream")

GET_RECORDS_LIMIT = 10000  # Kinesis GetRecords returns at most this many (DynamoDB Streams: its max_read)


# -- what a source provides ----------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    parent_ids: tuple[str, ...]
    closed: bool  # no record will be added any more
    last_sequence_number: int | None  # the newest record (None: the shard is empty)


@dataclass
class StreamRecord:
    sequence_number: int
    arrival: float  # epoch seconds
    lane_key: str  # the partition key (Kinesis) or the item's hash key (DynamoDB)
    event_id: str
    encoded: bytes  # the record as it goes into {"Records": [...]}


class StreamSource(abc.ABC):
    """One stream, read through moto's backends. Methods marked "locked" run under moto.lock_for(the stream ARN)."""

    kind: str  # kinesis | dynamodb
    batch_info_field: str  # KinesisBatchInfo | DDBStreamBatchInfo
    max_read: int = GET_RECORDS_LIMIT

    @abc.abstractmethod
    def describe(self) -> list[ShardInfo] | None:
        """Locked. The stream's shards, or None if the stream (or table, or its stream) is gone."""

    @abc.abstractmethod
    def retention_seconds(self) -> float | None:
        """Locked. How long the stream keeps a record (a record older than that is expired)."""

    @abc.abstractmethod
    def starting_sequence_number(self, shard_id: str, position: str, timestamp: float | None) -> int | None:
        """Locked. The last record before where StartingPosition says to begin (None: from the start)."""

    @abc.abstractmethod
    def read(self, shard_id: str, after: int | None, limit: int) -> list[Any]:
        """Locked. Up to `limit` raw records after sequence number `after` (None: from the start)."""

    @abc.abstractmethod
    def to_record(self, shard_id: str, raw: Any, function_arn: str) -> StreamRecord:
        """Not locked. A raw record as the function will see it."""

    @abc.abstractmethod
    def count_after(self, shard_id: str, after: int | None) -> int:
        """Locked. Records in the shard after sequence number `after`."""


# -- progress of one shard -----------------------------------------------------------------------


class ShardProgress:
    """Which records of one shard are done, and the checkpoint: everything up to it is done.

    Records are registered in the order they are read; lanes finish them out of order. The checkpoint
    is the last record of the longest done prefix. Records done beyond it are remembered (and
    persisted), so rereading from the checkpoint after a restart does not deliver them again."""

    def __init__(self, checkpoint: int | None, done: Iterable[int] = ()) -> None:
        self.checkpoint = checkpoint
        self.read_upto = checkpoint  # the last record read (or, after rewind, to be read next after)
        self._outstanding: deque[int] = deque()
        self._done: set[int] = set(done)

    def on_read(self, sequence_number: int) -> bool:
        """Register a record just read; False if it was done before (do not deliver it again)."""
        self.read_upto = sequence_number
        deliver = sequence_number not in self._done
        self._outstanding.append(sequence_number)
        self._advance()
        return deliver

    def finish(self, sequence_numbers: Iterable[int]) -> None:
        self._done.update(sequence_numbers)
        self._advance()

    def _advance(self) -> None:
        while self._outstanding and self._outstanding[0] in self._done:
            self.checkpoint = self._outstanding.popleft()
            self._done.discard(self.checkpoint)

    @property
    def all_done(self) -> bool:
        return not self._outstanding

    @property
    def done_beyond_checkpoint(self) -> list[int]:
        return sorted(self._done)

    def rewind(self) -> None:
        """Forget what was read but is not done: it will be read again from the checkpoint."""
        self._outstanding.clear()
        self.read_upto = self.checkpoint


# -- batches and lanes ---------------------------------------------------------------------------


@dataclass
class StreamBatch:
    shard_id: str
    lane: int
    records: list[StreamRecord]
    retries: int = 0  # retry attempts used (MaximumRetryAttempts)
    invocations: int = 0  # invocations that carried these records (approximateInvokeCount)
    failures_in_a_row: int = 0  # drives the backoff
    not_before: float = 0.0
    in_flight: bool = False
    last_result: InvocationResult | None = None
    last_error: LambdaServiceError | None = None

    @property
    def sequence_numbers(self) -> list[int]:
        return [record.sequence_number for record in self.records]

    def split(self, at: int) -> tuple[StreamBatch, StreamBatch]:
        first = dataclasses.replace(self, records=self.records[:at], failures_in_a_row=0, not_before=0.0)
        second = dataclasses.replace(self, records=self.records[at:], failures_in_a_row=0, not_before=0.0)
        return first, second

    def describe(self) -> dict[str, Any]:
        return {
            "records": len(self.records),
            "firstSequenceNumber": str(self.records[0].sequence_number),
            "lastSequenceNumber": str(self.records[-1].sequence_number),
            "retryAttempt": self.retries,
            "invocations": self.invocations,
            "inFlight": self.in_flight,
        }


@dataclass
class Lane:
    pending: deque[StreamRecord] = field(default_factory=deque)  # read, not yet in a batch
    pending_bytes: int = 0
    window_started: float | None = None  # when the oldest pending record arrived in the lane
    batches: deque[StreamBatch] = field(default_factory=deque)  # formed, to be (re)delivered in order
    in_flight: StreamBatch | None = None

    @property
    def busy(self) -> bool:
        return bool(self.pending or self.batches or self.in_flight)

    def add(self, record: StreamRecord, now: float) -> None:
        if not self.pending:
            self.window_started = now
        self.pending.append(record)
        self.pending_bytes += len(record.encoded)


@dataclass
class Shard:
    shard_id: str
    progress: ShardProgress
    lanes: list[Lane]
    parent_ids: tuple[str, ...] = ()
    closed: bool = False
    last_sequence_number: int | None = None  # the source's newest record, as last seen
    finished: bool = False  # closed and every record done (children may start)
    started: bool = False  # parents finished: records may be read
    dirty: bool = True  # the source may hold records not read yet
    next_read_at: float = 0.0  # aws timing: the next GetRecords

    @property
    def buffered(self) -> int:
        return sum(len(lane.pending) + sum(len(b.records) for b in lane.batches) for lane in self.lanes)

    @property
    def exhausted(self) -> bool:
        """Closed and read to its end."""
        if not self.closed:
            return False
        last = self.last_sequence_number
        return last is None or (self.progress.read_upto is not None and self.progress.read_upto >= last)

    def checkpoint(self) -> ShardCheckpoint:
        return ShardCheckpoint(self.progress.checkpoint, self.progress.done_beyond_checkpoint, self.finished)


# -- the poller ----------------------------------------------------------------------------------


class StreamPoller(Poller):
    def __init__(self, mapping: Any, context: PollerContext, source: StreamSource) -> None:
        super().__init__(mapping, context)
        self.source = source
        self.shards: dict[str, Shard] = {}
        self._snapshot_pending = True  # StartingPosition not applied yet (no checkpoint, source missing)
        self._source_missing = False
        self._next_discovery = 0.0
        self._retention: float | None = None
        self._checkpoint_dirty = False
        self._persisted_at = 0.0  # epoch seconds of the last checkpoint write
        self._rediscover = False
        self._in_flight = 0
        self._filtered_out = 0  # records FilterCriteria discarded (checkpointed, never delivered)

    @property
    def _poll_seconds(self) -> float | None:
        timing = self.context.timing
        return timing.kinesis_poll_seconds if self.source.kind == "kinesis" else timing.dynamodb_poll_seconds

    # -- start -------------------------------------------------------------------------------

    def prepare(self) -> None:
        saved = self.context.checkpoints.load(self.mapping.uuid, self.mapping.event_source_arn)
        if saved is not None:
            for shard_id, checkpoint in saved.items():
                shard = self._new_shard(shard_id, checkpoint.checkpoint, checkpoint.done)
                shard.finished = checkpoint.finished
            self._snapshot_pending = False
            log.info(
                "mapping %s resumes %s from its checkpoints: %s",
                self.mapping.uuid,
                self.mapping.event_source_arn,
                {sid: s.progress.checkpoint for sid, s in self.shards.items()},
            )
        with self.context.moto.lock_for(self.mapping.event_source_arn):
            infos = self.source.describe()
            if infos is not None and self._snapshot_pending:
                self._apply_starting_position(infos)
        if infos is None:
            self._missing_source()
        self.persist()

    def _apply_starting_position(self, infos: list[ShardInfo]) -> None:
        """Locked. Where each existing shard starts, per StartingPosition."""
        position = self.mapping.starting_position or "TRIM_HORIZON"
        for info in infos:
            if position == "LATEST" and info.closed:
                # a closed shard has nothing after "now": done
                shard = self._new_shard(info.shard_id, info.last_sequence_number, ())
                shard.finished = True
                continue
            start = self.source.starting_sequence_number(
                info.shard_id, position, self.mapping.starting_position_timestamp
            )
            self._new_shard(info.shard_id, start, ())
        self._snapshot_pending = False

    def _new_shard(self, shard_id: str, checkpoint: int | None, done: Iterable[int]) -> Shard:
        lanes = [Lane() for _ in range(self.mapping.parallelization_factor)]
        shard = Shard(shard_id, ShardProgress(checkpoint, done), lanes)
        self.shards[shard_id] = shard
        self._checkpoint_dirty = True
        return shard

    # -- poll --------------------------------------------------------------------------------

    def poll(self, now: float, source_changed: bool) -> None:
        if source_changed:
            for shard in self.shards.values():
                shard.dirty = True
        if not self._source_missing or now >= self._next_discovery or source_changed:
            raws = self._discover_and_read(now)
            for shard, records in raws:
                self._buffer(shard, records, now)
        self._dispatch_ready(now)
        self._persist_soon(now)

    def _persist_soon(self, now: float) -> None:
        """Save checkpoints at once when nothing is in flight or buffered (a quiet mapping's file is
        always current), else at most every CHECKPOINT_INTERVAL_SECONDS: a file write per batch was 8 %
        of the endpoint's time at one record a batch (bench/, "emulator"). Disabling, stopping and
        pausing save at once (persist())."""
        if self._checkpoint_dirty and (
            now >= self._persisted_at + CHECKPOINT_INTERVAL_SECONDS or (self._in_flight == 0 and not self.has_work())
        ):
            self.persist()

    def _discover_and_read(self, now: float) -> list[tuple[Shard, list[Any]]]:
        read: list[tuple[Shard, list[Any]]] = []
        self._rediscover = False
        with self.context.moto.lock_for(self.mapping.event_source_arn):
            infos = self.source.describe()
            if infos is None:
                gone = True
            else:
                gone = False
                self._retention = self.source.retention_seconds()
                if self._snapshot_pending:
                    self._apply_starting_position(infos)
                self._update_shards(infos)
                for shard in self._readable_shards(now):
                    limit = min(self.source.max_read, self._read_ahead() - shard.buffered)
                    raws = self.source.read(shard.shard_id, shard.progress.read_upto, limit)
                    read.append((shard, raws))
                    more = len(raws) >= limit
                    shard.dirty = more
                    poll_seconds = self._poll_seconds
                    if poll_seconds is not None:
                        shard.next_read_at = now if raws else now + poll_seconds
        if gone:
            self._missing_source()
            self._next_discovery = now + self.context.timing.source_recheck_seconds
        elif self._source_missing:
            self._source_missing = False
            log.warning("mapping %s: event source %s is back", self.mapping.uuid, self.mapping.event_source_arn)
        return read

    def _missing_source(self) -> None:
        if not self._source_missing:
            log.warning(
                "mapping %s: event source %s does not exist (deleted?); looking again every %.1f s",
                self.mapping.uuid,
                self.mapping.event_source_arn,
                self.context.timing.source_recheck_seconds,
            )
            self.context.report(last_processing_result="PROBLEM: Event source not found")
        self._source_missing = True

    def _update_shards(self, infos: list[ShardInfo]) -> None:
        """Locked. Learn new shards, closures and parents; start shards whose parents are finished."""
        for info in infos:
            shard = self.shards.get(info.shard_id)
            if shard is None:
                shard = self._new_shard(info.shard_id, None, ())  # created after the mapping: from its start
                log.info(
                    "mapping %s: new shard %s (parents %s)", self.mapping.uuid, info.shard_id, info.parent_ids or "none"
                )
            shard.parent_ids = info.parent_ids
            shard.closed = info.closed
            shard.last_sequence_number = info.last_sequence_number
        existing = {info.shard_id for info in infos}
        for shard in self.shards.values():
            if shard.started or shard.finished:
                continue
            shard.started = all(
                parent not in existing or (parent in self.shards and self.shards[parent].finished)
                for parent in shard.parent_ids
            )
            if shard.started:
                shard.dirty = True

    def _readable_shards(self, now: float) -> list[Shard]:
        readable = []
        for shard in self.shards.values():
            if not shard.started or shard.finished or shard.exhausted:
                continue
            if shard.buffered >= self._read_ahead():
                continue
            if self._poll_seconds is None:
                if not shard.dirty:
                    continue
            elif now < shard.next_read_at:
                continue
            readable.append(shard)
        return readable

    def _read_ahead(self) -> int:
        """Records a shard may hold in memory: a full batch per lane, and one more batch."""
        return self.mapping.batch_size * (self.mapping.parallelization_factor + 1)

    def _buffer(self, shard: Shard, raws: list[Any], now: float) -> None:
        self._resize_lanes(shard)
        record_filter = self.mapping.record_filter
        for raw in raws:
            record = self.source.to_record(shard.shard_id, raw, self.mapping.function_arn)
            if not shard.progress.on_read(record.sequence_number):
                self._checkpoint_dirty = True
                continue  # done before a restart
            if record_filter.active and not record_filter.accepts(json.loads(record.encoded)):
                self._finish(shard, [record])  # discarded: the checkpoint moves past it, as on AWS
                self._filtered_out += 1
                continue
            lane = shard.lanes[payloads.lane_hash(record.lane_key) % len(shard.lanes)]
            lane.add(record, now)
        self._check_finished(shard)

    def _resize_lanes(self, shard: Shard) -> None:
        """Apply a new ParallelizationFactor once the shard has no batch formed or in flight, keeping
        each key's records in order (they are only buffered, never delivered, at that point)."""
        wanted = self.mapping.parallelization_factor
        if len(shard.lanes) == wanted or any(lane.batches or lane.in_flight for lane in shard.lanes):
            return
        waiting = sorted(
            (record for lane in shard.lanes for record in lane.pending), key=lambda record: record.sequence_number
        )
        started = min((lane.window_started for lane in shard.lanes if lane.window_started is not None), default=None)
        shard.lanes = [Lane() for _ in range(wanted)]
        for record in waiting:
            lane = shard.lanes[payloads.lane_hash(record.lane_key) % wanted]
            lane.add(record, started if started is not None else 0.0)

    # -- batches -----------------------------------------------------------------------------

    def _dispatch_ready(self, now: float) -> None:
        for shard in self.shards.values():
            if not shard.started or shard.finished:
                continue
            self._resize_lanes(shard)
            for index, lane in enumerate(shard.lanes):
                while lane.in_flight is None:
                    batch = self._next_batch(shard, index, lane, now)
                    if batch is None:
                        break
                    condition = self._expired(batch, now)
                    if condition:
                        self._discard(shard, lane, batch, condition, now)
                        continue
                    self._send(shard, lane, batch)
            self._check_finished(shard)

    def _next_batch(self, shard: Shard, index: int, lane: Lane, now: float) -> StreamBatch | None:
        if lane.batches:
            batch = lane.batches[0]
            return batch if now >= batch.not_before else None
        if not lane.pending:
            return None
        size = self.mapping.batch_size
        window = self.mapping.maximum_batching_window_seconds
        full = len(lane.pending) >= size or not payloads.fits(lane.pending_bytes, len(lane.pending), 0)
        window_over = window <= 0 or now >= (lane.window_started or now) + window
        if not (full or window_over or shard.exhausted):
            return None
        records, total = payloads.take_batch(lane.pending, size)
        lane.pending_bytes -= total
        lane.window_started = now if lane.pending else None
        batch = StreamBatch(shard.shard_id, index, records)
        lane.batches.append(batch)
        return batch

    def _expired(self, batch: StreamBatch, now: float) -> str | None:
        oldest = min(record.arrival for record in batch.records)
        age = now - oldest
        limit = self.mapping.maximum_record_age_seconds
        if limit != -1 and age > limit:
            return RECORD_AGE_EXCEEDED
        if self._retention is not None and age > self._retention:
            return RECORD_AGE_EXCEEDED  # the stream no longer has it: AWS skips such records
        return None

    def _send(self, shard: Shard, lane: Lane, batch: StreamBatch) -> None:
        batch.in_flight = True
        lane.in_flight = batch
        self._in_flight += 1
        origin = InvocationOrigin(
            invocation_type="EventSourceMapping",
            mapping_uuid=self.mapping.uuid,
            source=self.source.kind,
            batch_ids=tuple(record.event_id for record in batch.records),
            attempt=batch.invocations + 1,
        )
        log.debug(
            "mapping %s: delivering %d records of %s lane %d (%s..%s), attempt %d",
            self.mapping.uuid,
            len(batch.records),
            shard.shard_id,
            batch.lane,
            batch.records[0].sequence_number,
            batch.records[-1].sequence_number,
            origin.attempt,
        )
        self.context.dispatch(
            Delivery(
                function_arn=self.mapping.function_arn,
                payload=payloads.records_payload(record.encoded for record in batch.records),
                origin=origin,
                item_identifiers=tuple(str(number) for number in batch.sequence_numbers),
                report_batch_item_failures=self.mapping.reports_batch_item_failures,
                batch=batch,
            )
        )

    def complete(self, delivery: Delivery, outcome: Outcome, now: float) -> None:
        batch: StreamBatch = delivery.batch
        self._in_flight -= 1
        batch.in_flight = False
        shard = self.shards.get(batch.shard_id)
        lane = shard.lanes[batch.lane] if shard is not None and batch.lane < len(shard.lanes) else None
        if shard is None or lane is None or lane.in_flight is not batch:
            log.warning(
                "mapping %s: outcome for a batch of %s the poller no longer tracks; ignored",
                self.mapping.uuid,
                batch.shard_id,
            )
            return
        lane.in_flight = None
        if outcome.invoked:
            batch.invocations += 1
            batch.last_result = outcome.result
        else:
            batch.last_error = outcome.error
        self.context.report(last_processing_result=processing_result(outcome))
        kind = outcome.kind
        if kind is OutcomeKind.PARTIAL_FAILURE:
            lowest = min(int(identifier) for identifier in outcome.failed_identifiers)
            at = batch.sequence_numbers.index(lowest)
            if at > 0:
                done, rest = batch.split(at)
                self._finish(shard, done.records)
                lane.batches[0] = rest
                log.info(
                    "mapping %s: %s lane %d reported %d failures; checkpoint before %s, retrying %d records",
                    self.mapping.uuid,
                    shard.shard_id,
                    batch.lane,
                    len(outcome.failed_identifiers),
                    lowest,
                    len(rest.records),
                )
                self._retry(shard, lane, rest, now, outcome)
                return
            kind = OutcomeKind.FUNCTION_ERROR  # the first record failed: the whole batch did
        if kind is OutcomeKind.SUCCESS:
            lane.batches.popleft()
            self._finish(shard, batch.records)
        elif kind is OutcomeKind.NOT_INVOKED:
            batch.failures_in_a_row += 1
            batch.not_before = now + self.context.timing.backoff(batch.failures_in_a_row)
            log.log(
                logging.WARNING if batch.failures_in_a_row == 1 else logging.DEBUG,
                "mapping %s: could not invoke %s for %s (%s); retrying in %.2f s",
                self.mapping.uuid,
                delivery.function_arn,
                shard.shard_id,
                outcome.error,
                batch.not_before - now,
            )
        elif self.mapping.bisect_batch_on_function_error and len(batch.records) > 1:
            first, second = batch.split(len(batch.records) // 2)
            lane.batches.popleft()
            lane.batches.appendleft(second)
            lane.batches.appendleft(first)
            log.info(
                "mapping %s: batch of %d records of %s failed; bisected into %d + %d",
                self.mapping.uuid,
                len(batch.records),
                shard.shard_id,
                len(first.records),
                len(second.records),
            )
        else:
            self._retry(shard, lane, batch, now, outcome)
        self._check_finished(shard)

    def _retry(self, shard: Shard, lane: Lane, batch: StreamBatch, now: float, outcome: Outcome) -> None:
        """One retry attempt used: schedule it, or discard the batch once the attempts are exhausted."""
        batch.retries += 1
        batch.failures_in_a_row += 1
        limit = self.mapping.maximum_retry_attempts
        if limit != -1 and batch.retries > limit:
            self._discard(shard, lane, batch, RETRY_ATTEMPTS_EXHAUSTED, now)
            self._check_finished(shard)
            return
        batch.not_before = now + self.context.timing.backoff(batch.failures_in_a_row)
        log.info(
            "mapping %s: batch %s..%s of %s failed (%s: %s); retry %d in %.2f s",
            self.mapping.uuid,
            batch.records[0].sequence_number,
            batch.records[-1].sequence_number,
            shard.shard_id,
            outcome.kind.value,
            outcome.reason,
            batch.retries,
            batch.not_before - now,
        )

    def _discard(self, shard: Shard, lane: Lane, batch: StreamBatch, condition: str, now: float) -> None:
        """The batch is given up: its invocation record goes to the OnFailure destination."""
        if lane.batches and lane.batches[0] is batch:
            lane.batches.popleft()
        destination = self.mapping.on_failure_destination
        log.warning(
            "mapping %s: discarding %d records of %s (%s..%s): %s after %d invocations%s",
            self.mapping.uuid,
            len(batch.records),
            shard.shard_id,
            batch.records[0].sequence_number,
            batch.records[-1].sequence_number,
            condition,
            batch.invocations,
            f"; invocation record to {destination}" if destination else "; no OnFailure destination",
        )
        if destination:
            record = stream_failure_record(
                batch_info_field=self.source.batch_info_field,
                stream_arn=self.mapping.event_source_arn,
                shard_id=shard.shard_id,
                sequence_numbers=batch.sequence_numbers,
                arrivals=[r.arrival for r in batch.records],
                function_arn=self.mapping.function_arn,
                condition=condition,
                invoke_count=batch.invocations,
                last_result=batch.last_result,
                last_error=batch.last_error,
                now=now,
            )
            try:
                send_to_queue(self.context.moto, destination, record)
            except DestinationError as error:
                log.warning(
                    "mapping %s: the OnFailure destination refused the invocation record of %s "
                    "%s..%s (%s); the records are skipped",
                    self.mapping.uuid,
                    shard.shard_id,
                    batch.records[0].sequence_number,
                    batch.records[-1].sequence_number,
                    error,
                )
        self._finish(shard, batch.records)

    def _finish(self, shard: Shard, records: list[StreamRecord]) -> None:
        shard.progress.finish(record.sequence_number for record in records)
        self._checkpoint_dirty = True

    def _check_finished(self, shard: Shard) -> None:
        if (
            not shard.finished
            and shard.exhausted
            and shard.progress.all_done
            and not any(lane.busy for lane in shard.lanes)
        ):
            shard.finished = True
            self._checkpoint_dirty = True
            log.info("mapping %s: shard %s is closed and fully processed", self.mapping.uuid, shard.shard_id)
            self._rediscover = True  # its children may start (decided at the next discovery)

    # -- the worker's questions --------------------------------------------------------------

    def in_flight(self) -> int:
        return self._in_flight

    def has_work(self) -> bool:
        return any(lane.busy for shard in self.shards.values() for lane in shard.lanes)

    def next_deadline(self, now: float) -> float | None:
        deadlines: list[float] = []
        window = self.mapping.maximum_batching_window_seconds
        for shard in self.shards.values():
            if not shard.started or shard.finished:
                if not shard.finished and self._poll_seconds is not None:
                    deadlines.append(now + self._poll_seconds)
                continue
            for lane in shard.lanes:
                if lane.in_flight is not None:
                    continue
                if lane.batches:
                    deadlines.append(lane.batches[0].not_before)
                elif lane.pending:
                    deadlines.append((lane.window_started or now) + window)
            if self._poll_seconds is not None and not shard.exhausted and shard.buffered < self._read_ahead():
                deadlines.append(shard.next_read_at)
        if self._rediscover:
            deadlines.append(now)  # a parent just finished: its children may start
        if self._source_missing:
            deadlines.append(self._next_discovery)
        if self._checkpoint_dirty:
            deadlines.append(self._persisted_at + CHECKPOINT_INTERVAL_SECONDS)
        return min(deadlines) if deadlines else None

    def read_positions(self) -> dict[str, tuple[bool, int | None]]:
        return {shard_id: (shard.finished, shard.progress.read_upto) for shard_id, shard in self.shards.items()}

    def source_pending(self, positions: dict[str, tuple[bool, int | None]]) -> bool:
        with self.context.moto.lock_for(self.mapping.event_source_arn):
            infos = self.source.describe()
        if infos is None:
            return False
        for info in infos:
            if info.last_sequence_number is None:
                continue
            if info.shard_id not in positions:
                return True  # a new shard, read from its start
            finished, read_upto = positions[info.shard_id]
            if not finished and (read_upto is None or info.last_sequence_number > read_upto):
                return True
        return False

    def rewind(self) -> None:
        for shard in self.shards.values():
            shard.progress.rewind()
            shard.lanes = [Lane() for _ in range(self.mapping.parallelization_factor)]
            shard.dirty = True
            shard.next_read_at = 0.0

    def persist(self) -> None:
        if not self._checkpoint_dirty:
            return
        self._checkpoint_dirty = False
        self._persisted_at = time.time()
        try:
            shards = {shard_id: shard.checkpoint() for shard_id, shard in self.shards.items()}
            self.context.checkpoints.save(self.mapping.uuid, self.mapping.event_source_arn, shards)
        except OSError as error:
            self._checkpoint_dirty = True
            log.warning("mapping %s: cannot save checkpoints (%s); will try again", self.mapping.uuid, error)

    def status(self) -> dict[str, Any]:
        lags: dict[str, int | None] = {}
        with self.context.moto.lock_for(self.mapping.event_source_arn):
            infos = {info.shard_id: info for info in (self.source.describe() or [])}
            for shard_id, shard in self.shards.items():
                if shard_id not in infos:
                    lags[shard_id] = None
                    continue
                lags[shard_id] = max(
                    0,
                    self.source.count_after(shard_id, shard.progress.checkpoint)
                    - len(shard.progress.done_beyond_checkpoint),
                )
        shards = {}
        for shard_id, shard in sorted(self.shards.items()):
            shards[shard_id] = {
                "checkpoint": None if shard.progress.checkpoint is None else str(shard.progress.checkpoint),
                "readPosition": None if shard.progress.read_upto is None else str(shard.progress.read_upto),
                "doneBeyondCheckpoint": len(shard.progress.done_beyond_checkpoint),
                "lag": lags.get(shard_id),
                "parents": list(shard.parent_ids),
                "closed": shard.closed,
                "started": shard.started,
                "finished": shard.finished,
                "lanes": [
                    {
                        "pending": len(lane.pending),
                        "inFlight": lane.in_flight.describe() if lane.in_flight else None,
                        "waiting": [batch.describe() for batch in lane.batches if batch is not lane.in_flight],
                    }
                    for lane in shard.lanes
                ],
            }
        return {
            "sourceMissing": self._source_missing,
            "shards": shards,
            "lag": sum(lag or 0 for lag in lags.values()),
            "filteredOut": self._filtered_out,
        }
