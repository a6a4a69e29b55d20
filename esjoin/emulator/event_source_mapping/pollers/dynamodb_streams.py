"""A DynamoDB table's stream as a mapping's source, read from moto's backend.

moto keeps one shard per stream (AWS has several, split as the table grows): the poller's shard
handling covers more, moto just never creates them. A stream ARN names one stream label: if the
table is deleted or its stream replaced (disabled and enabled again: a new label), this source is
gone. A disabled stream is a closed shard: its records are still read to the end.
Events: https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html
"""

from __future__ import annotations

import json
from typing import Any

from esjoin.emulator.event_source_mapping import payloads
from esjoin.emulator.event_source_mapping.pollers.stream import ShardInfo, StreamRecord, StreamSource
from esjoin.emulator.moto_layer.moto_backends import MotoBackends

# DynamoDB Streams keeps records for 24 hours.
# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.html
RETENTION_SECONDS = 24 * 3600


class DynamoDBStreamSource(StreamSource):
    kind = "dynamodb"
    batch_info_field = "DDBStreamBatchInfo"
    max_read = 1000  # GetRecords returns at most 1000 stream records

    def __init__(self, moto: MotoBackends, stream_arn: str) -> None:
        self.moto = moto
        self.stream_arn = stream_arn
        self.region = stream_arn.split(":")[3]
        resource = stream_arn.split(":", 5)[5]  # table/<name>/stream/<label>
        _, self.table_name, _, self.label = resource.split("/", 3)

    def _table(self) -> Any:
        table = self.moto.dynamodb(self.region).tables.get(self.table_name)
        if table is None or table.latest_stream_label != self.label or table.stream_shard is None:
            return None
        return table

    def describe(self) -> list[ShardInfo] | None:
        table = self._table()
        if table is None:
            return None
        shard = table.stream_shard
        enabled = bool((table.stream_specification or {}).get("StreamEnabled"))
        return [
            ShardInfo(
                shard_id=shard.id, parent_ids=(), closed=not enabled, last_sequence_number=_last_sequence_number(shard)
            )
        ]

    def retention_seconds(self) -> float | None:
        return RETENTION_SECONDS

    def starting_sequence_number(self, shard_id: str, position: str, timestamp: float | None) -> int | None:
        return _last_sequence_number(self._table().stream_shard) if position == "LATEST" else None

    def read(self, shard_id: str, after: int | None, limit: int) -> list[Any]:
        table = self._table()
        if table is None or table.stream_shard.id != shard_id:
            return []
        shard = table.stream_shard
        start = _index_after(shard, after)
        hash_key = table.hash_key_attr
        return [(item.record, hash_key) for item in shard.items[start : start + limit]]

    def to_record(self, shard_id: str, raw: Any, function_arn: str) -> StreamRecord:
        record, hash_key = raw
        event = payloads.dynamodb_record(record, stream_arn=self.stream_arn, region=self.region)
        change = event["dynamodb"]
        lane_key = json.dumps(change["Keys"].get(hash_key, change["Keys"]), sort_keys=True)
        return StreamRecord(
            sequence_number=int(change["SequenceNumber"]),
            arrival=payloads.epoch_seconds(record["dynamodb"]["ApproximateCreationDateTime"]),
            lane_key=lane_key,
            event_id=event["eventID"],
            encoded=payloads.encode(event),
        )

    def count_after(self, shard_id: str, after: int | None) -> int:
        table = self._table()
        if table is None or table.stream_shard.id != shard_id:
            return 0
        shard = table.stream_shard
        return max(0, len(shard.items) - _index_after(shard, after))


# moto numbers a stream shard's records consecutively from its starting_sequence_number.
def _last_sequence_number(shard: Any) -> int | None:
    return shard.starting_sequence_number + len(shard.items) - 1 if shard.items else None


def _index_after(shard: Any, after: int | None) -> int:
    """The index in shard.items of the first record after sequence number `after` (None: the start)."""
    return 0 if after is None else max(0, after + 1 - shard.starting_sequence_number)
