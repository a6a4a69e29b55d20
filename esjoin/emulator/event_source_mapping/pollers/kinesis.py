"""Kinesis Data Streams as a mapping's source: shards and records, read from moto's backend.

Relies on esjoin.emulator.moto_layer.fixes: sequence numbers grow across the whole stream, a reshard leaves the
parents' records in the (closed) parents, writes go to open shards only, reads are O(log n).
Events: https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from typing import Any

from esjoin.emulator.event_source_mapping import payloads
from esjoin.emulator.event_source_mapping.pollers.stream import ShardInfo, StreamRecord, StreamSource
from esjoin.emulator.invocation import default_role
from esjoin.emulator.moto_layer.fixes import kinesis_shard_sequence_numbers
from esjoin.emulator.moto_layer.moto_backends import MotoBackends

log = logging.getLogger("esjoin.esm.kinesis")


class KinesisStreamSource(StreamSource):
    kind = "kinesis"
    batch_info_field = "KinesisBatchInfo"

    def __init__(self, moto: MotoBackends, stream_arn: str, invoke_identity_arn: Callable[[str], str]) -> None:
        self.moto = moto
        self.stream_arn = stream_arn
        self.region = stream_arn.split(":")[3]
        self.stream_name = stream_arn.split(":", 5)[5].split("/", 1)[1]
        self.invoke_identity_arn = invoke_identity_arn

    def _stream(self) -> Any:
        stream = self.moto.kinesis(self.region).streams.get(self.stream_name)
        return stream if stream is not None and stream.arn == self.stream_arn else None

    def _shard(self, shard_id: str) -> Any:
        stream = self._stream()
        return stream.shards.get(shard_id) if stream is not None else None

    def describe(self) -> list[ShardInfo] | None:
        stream = self._stream()
        if stream is None:
            return None
        return [
            ShardInfo(
                shard_id=shard.shard_id,
                parent_ids=tuple(p for p in (shard.parent, shard.adjacent_parent) if p),
                closed=not shard.is_open,
                last_sequence_number=shard.get_max_sequence_number() or None,
            )
            for shard in stream.shards.values()
        ]

    def retention_seconds(self) -> float | None:
        stream = self._stream()
        return None if stream is None else float(stream.retention_period_hours) * 3600

    def starting_sequence_number(self, shard_id: str, position: str, timestamp: float | None) -> int | None:
        shard = self._stream().shards[shard_id]
        if position == "LATEST":
            return shard.get_max_sequence_number() or None
        if position == "AT_TIMESTAMP" and timestamp is not None:
            return shard.get_sequence_number_at(timestamp) or None
        return None

    def read(self, shard_id: str, after: int | None, limit: int) -> list[Any]:
        shard = self._shard(shard_id)
        if shard is None:
            return []
        records, _, _ = shard.get_records(str(after or 0), limit)
        return [(record.sequence_number, record.partition_key, record.data, record.created_at) for record in records]

    def to_record(self, shard_id: str, raw: Any, function_arn: str) -> StreamRecord:
        sequence_number, partition_key, data, arrival = raw
        event = payloads.kinesis_record(
            shard_id=shard_id,
            sequence_number=sequence_number,
            partition_key=partition_key,
            data=data,
            arrival=arrival,
            stream_arn=self.stream_arn,
            region=self.region,
            invoke_identity_arn=self._role(function_arn),
        )
        return StreamRecord(
            sequence_number=sequence_number,
            arrival=arrival,
            lane_key=partition_key,
            event_id=event["eventID"],
            encoded=payloads.encode(event),
        )

    def _role(self, function_arn: str) -> str:
        try:
            return self.invoke_identity_arn(function_arn)
        except Exception as error:  # e.g. the function was deleted: the invocation will say so
            log.debug("no role for %s (%r); using the default", function_arn, error)
            return default_role(function_arn)

    def count_after(self, shard_id: str, after: int | None) -> int:
        shard = self._shard(shard_id)
        if shard is None:
            return 0
        numbers = kinesis_shard_sequence_numbers(shard)  # ascending
        return len(numbers) - bisect.bisect_right(numbers, after or 0)
