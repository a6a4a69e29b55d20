"""Where moto 5.2.5 differs from AWS in ways the pipeline's correctness or speed depends on, fixed.

Each fix is a small patch of one moto model method, applied once by `apply()` through
`esjoin.emulator.moto_layer.patching.replace`, which checks the signature it replaces (a mismatch fails
start-up naming the patch) and lists it in docs/moto-patches.md. Differences left as they are are listed
in the README ("Differences from AWS"). Measured with moto 5.2.5; `apply()` refuses other versions,
because these patches lean on moto's internals.

DynamoDB
- A write that changes nothing emits no stream record (moto emits MODIFY). AWS: "If you perform a
  PutItem or UpdateItem operation that does not change any data in an item, DynamoDB Streams does
  not write a stream record for that operation."
  https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.html
- UpdateItem on a missing item emits one INSERT (moto emits two: a keys-only one, then the item).
- Query reads only the queried partition (moto scans the whole table: 98 ms at 10,000 items).
- Stream records carry the table's region and `eventVersion` 1.1, as GetRecords does on AWS.
- DynamoDB Streams shard iterators are not stored server-side (moto keeps every iterator it ever
  handed out; a poller leaks one per GetRecords call).
Kinesis
- Sequence numbers grow across the whole stream, shards and reshards included (moto restarts at
  "1" on every shard, so a child shard's records sort before its parent's).
- PutRecord refuses data over 1 MiB (moto checked PutRecords only).
- PutRecord routes to open shards only (moto can route to a closed parent after a split).
- A split or merge leaves the parent's records in the parent, readable until they expire (moto
  moves them into the children under new sequence numbers, so a consumer sees them twice).
- Appending and reading are O(log n) instead of O(n) in the shard's size.
All streams and queues
- Every write to a Kinesis stream, a table with a stream, or an SQS queue notifies the
  `ChangeNotifier`, so pollers wake at once instead of polling on a timer.

Speed: moto, doing the same for less work, is esjoin.emulator.moto_layer.speed (applied with these fixes).
"""

from __future__ import annotations

import base64
import bisect
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from esjoin.emulator.moto_layer import patching
from esjoin.emulator.moto_layer import speed as moto_speed
from esjoin.emulator.moto_layer.notifier import ChangeNotifier
from esjoin.emulator.moto_layer.patching import Graft, PatchKind

MOTO_VERSION = "5.2.5"
FIX = PatchKind.FIX

# AWS sequence numbers are decimal strings of up to 128 bits, 56 digits in practice. Ours have 59 (this
# base): starting high keeps them one width, so lexicographic and numeric order agree for 10^54 records.
KINESIS_SEQUENCE_BASE = 49_600_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000
KINESIS_MAX_RECORD_BYTES = 1024 * 1024
_kinesis_sequence = itertools.count(1)
_kinesis_sequence_lock = threading.Lock()

# Declared here, read only through this Graft (kinesis_shard_sequence_numbers): no module names the attribute.
SHARD_SEQUENCE_NUMBERS: Graft[list[int]] = patching.graft(
    "moto.kinesis.models.Shard",
    "_esjoin_sequence_numbers",
    doc="the shard's sequence numbers, ascending, parallel to its records: O(log n) reads, and the Kinesis "
    "poller counts what a mapping has yet to read",
)

_local = threading.local()
_applied = False
# moto's backends are global to the process, so every endpoint in it (tests start several) hears of
# every write: each registers its notifier here.
_notifiers: list[ChangeNotifier] = []
_notifiers_lock = threading.Lock()


def apply(notifier: ChangeNotifier) -> None:
    """Patch moto's models in this process (once) and register `notifier` for write notifications."""
    global _applied
    with _notifiers_lock:
        if notifier not in _notifiers:
            _notifiers.append(notifier)
        if _applied:
            return
        found = patching.moto_version()
        if found != MOTO_VERSION:
            raise RuntimeError(
                f"esjoin.emulator.moto_layer.fixes is written against moto {MOTO_VERSION}, found {found}; "
                "pin moto in pyproject.toml or review the patches (docs/moto-patches.md)"
            )
        install_patches()
        _applied = True


def install_patches() -> None:
    """Install the speed patches and these fixes. Running it again installs them afresh on moto's own
    code (patching.replace hands each patch moto's original, never an earlier patch); `apply()` runs it
    once a process."""
    moto_speed.apply()
    _patch_dynamodb()
    _patch_dynamodbstreams()
    _patch_kinesis()
    _patch_sqs()


def release(notifier: ChangeNotifier) -> None:
    """Stop notifying `notifier` (its endpoint stopped)."""
    with _notifiers_lock:
        if notifier in _notifiers:
            _notifiers.remove(notifier)


def notify(arn: str) -> None:
    for notifier in list(_notifiers):
        notifier.notify(arn)


def next_kinesis_sequence_number() -> int:
    with _kinesis_sequence_lock:
        return KINESIS_SEQUENCE_BASE + next(_kinesis_sequence)


def continue_kinesis_sequence(kinesis_regions: dict[str, Any]) -> None:
    """After a state load: the next sequence number follows the highest one in the loaded streams, so a
    record written now sorts after everything a mapping's checkpoint has passed (a new process counts from
    the base again, and its records would sort, and be skipped, before the restored ones)."""
    global _kinesis_sequence
    highest = KINESIS_SEQUENCE_BASE
    for backend in kinesis_regions.values():
        for stream in backend.streams.values():
            for shard in stream.shards.values():
                numbers = kinesis_shard_sequence_numbers(shard)
                if numbers:
                    highest = max(highest, numbers[-1])
    with _kinesis_sequence_lock:
        current = next(_kinesis_sequence)
        _kinesis_sequence = itertools.count(max(current, highest - KINESIS_SEQUENCE_BASE + 1))


def kinesis_shard_sequence_numbers(shard: Any) -> list[int]:
    """A moto Kinesis shard's sequence numbers, ascending (kept by these fixes; do not change the list)."""
    return SHARD_SEQUENCE_NUMBERS.get(shard)


# -- DynamoDB and DynamoDB Streams ---------------------------------------------------------------


def table_stream_arn(table: Any) -> str | None:
    if not table.latest_stream_label:
        return None
    return f"{table.table_arn}/stream/{table.latest_stream_label}"


def _patch_dynamodb() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamRecord, StreamShard, Table

    # Each original_* is moto's own function, as patching.replace returns it below.

    def add(self: StreamShard, old: Any, new: Any) -> None:
        if getattr(_local, "suppress_stream", False):
            return
        if old is not None and new is not None and old.to_json() == new.to_json():
            return  # no change, no record (AWS)
        # Never hand records to moto's own Lambda delivery: mappings live in our Lambda service.
        self.table.lambda_event_source_mappings = {}
        original_add(self, old, new)
        arn = table_stream_arn(self.table)
        if arn:
            notify(arn)

    def record_init(self: StreamRecord, table: Any, *args: Any, **kwargs: Any) -> None:
        original_record_init(self, table, *args, **kwargs)
        self.record["eventVersion"] = "1.1"
        self.record["awsRegion"] = table.region_name

    def update_item(self: Any, *args: Any, **kwargs: Any) -> Any:
        _local.in_update_item = True
        try:
            return original_update_item(self, *args, **kwargs)
        finally:
            _local.in_update_item = False

    def table_put_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        # UpdateItem creates a missing item with a keys-only put, then updates it and records the
        # change itself: the keys-only put must not reach the stream.
        if not getattr(_local, "in_update_item", False):
            return original_table_put_item(self, *args, **kwargs)
        _local.suppress_stream = True
        try:
            return original_table_put_item(self, *args, **kwargs)
        finally:
            _local.suppress_stream = False

    def query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("index_name") or hash_key is None:
            return original_query(self, hash_key, *args, **kwargs)
        return original_query(_Partition(self, hash_key), hash_key, *args, **kwargs)

    original_add = patching.replace(
        StreamShard,
        "add",
        add,
        kind=FIX,
        expect="(self, old, new)",
        reason="a write that changes nothing emits no stream record (moto emits MODIFY); moto's own Lambda "
        "delivery off; pollers notified",
    )
    original_record_init = patching.replace(
        StreamRecord,
        "__init__",
        record_init,
        kind=FIX,
        expect="(self, table, stream_type, event_name, old, new, seq)",
        reason="stream records carry the table's region and eventVersion 1.1, as GetRecords does on AWS",
    )
    original_update_item = patching.replace(
        DynamoDBBackend,
        "update_item",
        update_item,
        kind=FIX,
        expect="(self, table_name, key, update_expression, expression_attribute_names, expression_attribute_values, "
        "attribute_updates=None, expected=None, condition_expression=None, "
        "return_values_on_condition_check_failure=None)",
        reason="marks an UpdateItem, so its keys-only put of a missing item stays out of the stream",
    )
    original_table_put_item = patching.replace(
        Table,
        "put_item",
        table_put_item,
        kind=FIX,
        expect="(self, item_attrs, expected=None, condition_expression=None, expression_attribute_names=None, "
        "expression_attribute_values=None, overwrite=False, return_values_on_condition_check_failure=None)",
        reason="UpdateItem on a missing item emits one INSERT (moto emits two: a keys-only one, then the item)",
    )
    original_query = patching.replace(
        Table,
        "query",
        query,
        kind=FIX,
        expect="(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward, "
        "projection_expressions, index_name=None, consistent_read=False, filter_expression=None, "
        "hash_key_conditions=None, range_key_conditions=None, **filter_kwargs)",
        reason="Query reads only the queried partition (moto scans the whole table: 98 ms at 10,000 items)",
    )


class _Partition:
    """A table seen through one partition key, so moto's Query walks that partition only."""

    def __init__(self, table: Any, hash_key: Any) -> None:
        self._table = table
        self._hash_key = hash_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def all_items(self) -> list[Any]:
        partition = self._table.items.get(self._hash_key)
        if partition is None:
            return []
        if self._table.range_key_attr:
            return list(partition.values())
        return [partition]


def _patch_dynamodbstreams() -> None:
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator

    def encode(iterator: ShardIterator) -> str:
        table = iterator.stream_shard.table
        token = f"{table.name}|{iterator.stream_shard.id}|{iterator.sequence_number}"
        return f"{table_stream_arn(table)}|1|{base64.urlsafe_b64encode(token.encode()).decode()}"

    def decode(backend: DynamoDBStreamsBackend, iterator_arn: str) -> ShardIterator:
        from moto.dynamodbstreams.models import ShardIterator as Iterator

        token = iterator_arn.rsplit("|", 1)[-1]
        try:
            table_name, _shard_id, sequence = base64.urlsafe_b64decode(token.encode()).decode().split("|")
            table = backend.dynamodb.get_table(table_name)
        except Exception as error:  # any malformed or foreign iterator
            from moto.dynamodb.exceptions import MockValidationException

            raise MockValidationException(f"Invalid ShardIterator: {iterator_arn[:64]}...") from error
        return Iterator(backend, table.stream_shard, "AT_SEQUENCE_NUMBER", int(sequence))

    def get_shard_iterator(self: DynamoDBStreamsBackend, *args: Any, **kwargs: Any) -> Any:
        iterator = original_get_shard_iterator(self, *args, **kwargs)
        self.shard_iterators.clear()
        return _StatelessIterator(encode(iterator))

    def get_records(self: DynamoDBStreamsBackend, iterator_arn: str, limit: int) -> dict[str, Any]:
        iterator = decode(self, iterator_arn)
        start = iterator.sequence_number
        records = iterator.stream_shard.get(start, limit)
        if records:
            start = max(int(r["dynamodb"]["SequenceNumber"]) for r in records) + 1
        iterator.sequence_number = start
        return {"NextShardIterator": encode(iterator), "Records": records}

    original_get_shard_iterator = patching.replace(
        DynamoDBStreamsBackend,
        "get_shard_iterator",
        get_shard_iterator,
        kind=FIX,
        expect="(self, arn, shard_id, shard_iterator_type, sequence_number=None)",
        reason="shard iterators are encoded, not stored server-side (moto keeps every iterator it hands out)",
    )
    patching.replace(
        DynamoDBStreamsBackend,
        "get_records",
        get_records,
        kind=FIX,
        expect="(self, iterator_arn, limit)",
        reason="reads the stateless shard iterators get_shard_iterator hands out",
    )


class _StatelessIterator:
    """What moto's responses layer reads from a shard iterator (`.arn`), without server state."""

    def __init__(self, arn: str) -> None:
        self.arn = arn


# -- Kinesis --------------------------------------------------------------------------------------


def _patch_kinesis() -> None:
    from moto.kinesis.models import KinesisBackend, Record, Shard, Stream

    SHARD_SEQUENCE_NUMBERS.verify()
    sequence_numbers = SHARD_SEQUENCE_NUMBERS.get
    # Each original_* is moto's own function, as patching.replace returns it below.

    def backend_put_record(
        self: KinesisBackend, stream_arn: str, stream_name: str, partition_key: str, explicit_hash_key: str, data: str
    ) -> tuple[str, str]:
        # PutRecords checks each record's size; PutRecord did not (AWS: 1 MiB of data at most).
        if len(base64.b64decode(data or "")) > KINESIS_MAX_RECORD_BYTES:
            from moto.core.exceptions import JsonRESTError

            raise JsonRESTError(
                "ValidationException",
                "1 validation error detected: Value at 'data' failed to "
                f"satisfy constraint: Member must have length less than or equal to "
                f"{KINESIS_MAX_RECORD_BYTES}",
            )
        return original_backend_put_record(self, stream_arn, stream_name, partition_key, explicit_hash_key, data)

    def shard_init(self: Shard, *args: Any, **kwargs: Any) -> None:
        original_shard_init(self, *args, **kwargs)
        SHARD_SEQUENCE_NUMBERS.set(self, [])  # ascending, parallel to self.records

    def shard_put_record(self: Shard, partition_key: str, data: str, explicit_hash_key: str) -> str:
        sequence_number = next_kinesis_sequence_number()
        self.records[sequence_number] = Record(partition_key, data, sequence_number, explicit_hash_key)
        sequence_numbers(self).append(sequence_number)
        return str(sequence_number)

    def shard_get_records(self: Shard, last_sequence_id: str, limit: int | None) -> tuple[list, int, int]:
        numbers = sequence_numbers(self)
        last = int(last_sequence_id)
        start = bisect.bisect_right(numbers, last)
        end = len(numbers) if not limit else min(len(numbers), start + int(limit))
        records = [self.records[number] for number in numbers[start:end]]
        if not records:
            return [], last, 0
        behind = self.records[numbers[-1]].created_at - records[-1].created_at
        return records, records[-1].sequence_number, int(behind * 1000)

    def shard_min_sequence_number(self: Shard) -> int:
        numbers = sequence_numbers(self)
        return numbers[0] if numbers else 0

    def shard_max_sequence_number(self: Shard) -> int:
        numbers = sequence_numbers(self)
        return numbers[-1] if numbers else 0

    def shard_sequence_number_at(self: Shard, at_timestamp: float) -> int:
        """The last record written before `at_timestamp` (0: read from the start)."""
        numbers = sequence_numbers(self)
        times = [self.records[number].created_at for number in numbers]
        index = bisect.bisect_left(times, at_timestamp)
        return numbers[index - 1] if index > 0 else 0

    def get_shard_for_key(self: Stream, partition_key: str, explicit_hash_key: str) -> Shard | None:
        from moto.kinesis.exceptions import InvalidArgumentError
        from moto.utilities.utils import md5_hash

        if not isinstance(partition_key, str) or not 1 <= len(partition_key) <= 256:
            raise InvalidArgumentError("partition_key")
        if explicit_hash_key:
            key = int(explicit_hash_key)
            if not 0 <= key < 2**128:
                raise InvalidArgumentError("explicit_hash_key")
        else:
            key = int(md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
        for shard in self.shards.values():
            if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
                return shard
        return None

    def stream_put_record(self: Stream, *args: Any, **kwargs: Any) -> tuple[str, str]:
        self.lambda_event_source_mappings = {}  # delivery is ours, never moto's
        result = original_stream_put_record(self, *args, **kwargs)
        notify(self.arn)
        return result

    def keeping_parent_records(original: Callable[..., None]) -> Callable[..., None]:
        def reshard(self: Stream, *shard_ids: str) -> None:
            parents = [self.shards[shard_id] for shard_id in shard_ids if shard_id in self.shards]
            kept = [(shard, shard.records) for shard in parents]
            for shard in parents:
                shard.records = OrderedDict()  # nothing for moto to move
            try:
                original(self, *shard_ids)
            finally:
                for shard, records in kept:
                    shard.records = records
            notify(self.arn)

        return reshard

    original_backend_put_record = patching.replace(
        KinesisBackend,
        "put_record",
        backend_put_record,
        kind=FIX,
        expect="(self, stream_arn, stream_name, partition_key, explicit_hash_key, data)",
        reason="PutRecord refuses data over 1 MiB (moto checked PutRecords only)",
    )
    original_shard_init = patching.replace(
        Shard,
        "__init__",
        shard_init,
        kind=FIX,
        expect="(self, shard_id, starting_hash, ending_hash, parent=None, adjacent_parent=None)",
        reason="each shard keeps its sequence numbers in an ascending list (SHARD_SEQUENCE_NUMBERS)",
    )
    patching.replace(
        Shard,
        "put_record",
        shard_put_record,
        kind=FIX,
        expect="(self, partition_key, data, explicit_hash_key)",
        reason="sequence numbers grow across the whole stream, shards and reshards included (moto "
        "restarts at 1 on every shard); appending is O(1)",
    )
    patching.replace(
        Shard,
        "get_records",
        shard_get_records,
        kind=FIX,
        expect="(self, last_sequence_id, limit)",
        reason="reading is O(log n) in the shard's size (bisect), not O(n)",
    )
    patching.replace(
        Shard,
        "get_min_sequence_number",
        shard_min_sequence_number,
        kind=FIX,
        expect="(self)",
        reason="O(1), from the ascending sequence numbers",
    )
    patching.replace(
        Shard,
        "get_max_sequence_number",
        shard_max_sequence_number,
        kind=FIX,
        expect="(self)",
        reason="O(1), from the ascending sequence numbers",
    )
    patching.replace(
        Shard,
        "get_sequence_number_at",
        shard_sequence_number_at,
        kind=FIX,
        expect="(self, at_timestamp)",
        reason="AT_TIMESTAMP by binary search over the records' arrival times",
    )
    patching.replace(
        Stream,
        "get_shard_for_key",
        get_shard_for_key,
        kind=FIX,
        expect="(self, partition_key, explicit_hash_key)",
        reason="PutRecord routes to open shards only (moto can route to a closed parent after a split)",
    )
    original_stream_put_record = patching.replace(
        Stream,
        "put_record",
        stream_put_record,
        kind=FIX,
        expect="(self, partition_key, explicit_hash_key, data)",
        reason="moto's own Lambda delivery off; pollers notified of the write",
    )
    patching.replace(
        Stream,
        "split_shard",
        wrap=keeping_parent_records,
        kind=FIX,
        expect="(self, shard_to_split, new_starting_hash_key)",
        reason="a split leaves the parent's records in the parent, readable until they expire (moto "
        "moves them into the children under new sequence numbers)",
    )
    patching.replace(
        Stream,
        "merge_shards",
        wrap=keeping_parent_records,
        kind=FIX,
        expect="(self, shard_to_merge, adjacent_shard_to_merge)",
        reason="a merge leaves the parents' records in the parents, readable until they expire (moto "
        "moves them into the child under new sequence numbers)",
    )


# -- SQS ------------------------------------------------------------------------------------------


def _patch_sqs() -> None:
    from moto.sqs.models import Queue, SQSBackend

    # Each original_* is moto's own function, as patching.replace returns it below.

    def add_message(self: Queue, message: Any) -> None:
        self.lambda_event_source_mappings = {}  # delivery is ours, never moto's
        original_add_message(self, message)
        notify(self.queue_arn)

    def change_message_visibility(self: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> None:
        original_change_visibility(self, queue_name, *args, **kwargs)
        notify(self.get_queue(queue_name).queue_arn)

    original_add_message = patching.replace(
        Queue,
        "add_message",
        add_message,
        kind=FIX,
        expect="(self, message)",
        reason="moto's own Lambda delivery off; pollers notified of the write",
    )
    original_change_visibility = patching.replace(
        SQSBackend,
        "change_message_visibility",
        change_message_visibility,
        kind=FIX,
        expect="(self, queue_name, receipt_handle, visibility_timeout)",
        reason="pollers notified: a message made visible again is work for them",
    )
