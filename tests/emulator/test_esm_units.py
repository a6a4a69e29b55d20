"""The engine's pure parts: batch responses, shard progress, checkpoint files, backoff, payload limits."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

from esjoin.emulator.event_source_mapping import payloads
from esjoin.emulator.event_source_mapping.checkpoints import CheckpointStore, ShardCheckpoint
from esjoin.emulator.event_source_mapping.destinations import iso_timestamp
from esjoin.emulator.event_source_mapping.pollers.stream import ShardProgress
from esjoin.emulator.event_source_mapping.sender import (
    InvalidBatchResponse,
    OutcomeKind,
    batch_item_failures,
    interpret,
)
from esjoin.emulator.event_source_mapping.timing import PollTiming
from esjoin.emulator.invocation import UNHANDLED, InvocationResult

IDS = ("101", "102", "103")


def failures(*identifiers: object) -> bytes:
    return json.dumps({"batchItemFailures": [{"itemIdentifier": i} for i in identifiers]}).encode()


@pytest.mark.parametrize(
    "payload",
    [b"", b"null", b"{}", b'{"batchItemFailures": []}', b'{"batchItemFailures": null}', b'{"other": 1}', b"  \n"],
)
def test_responses_that_report_no_failure(payload: bytes) -> None:
    assert batch_item_failures(payload, IDS) == []


def test_reported_failures_are_returned_once_each_in_order() -> None:
    assert batch_item_failures(failures("103", "101", "103"), IDS) == ["103", "101"]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'"done"',
        b"[]",
        b"42",
        b'{"batchItemFailures": {}}',
        failures("999"),
        failures(""),
        failures(None),
        failures(101),
        b'{"batchItemFailures": [{"ItemIdentifier": "101"}]}',
        b'{"batchItemFailures": ["101"]}',
    ],
)
def test_responses_that_fail_the_whole_batch(payload: bytes) -> None:
    with pytest.raises(InvalidBatchResponse):
        batch_item_failures(payload, IDS)


def test_interpret_distinguishes_function_errors_partial_failures_and_ignored_responses() -> None:
    error = InvocationResult("r1", b'{"errorMessage": "x"}', function_error=UNHANDLED)
    assert interpret(error, IDS, True).kind is OutcomeKind.FUNCTION_ERROR
    partial = InvocationResult("r2", failures("102"))
    assert interpret(partial, IDS, True).kind is OutcomeKind.PARTIAL_FAILURE
    assert interpret(partial, IDS, True).failed_identifiers == ("102",)
    ignored = interpret(partial, IDS, False)
    assert ignored.kind is OutcomeKind.SUCCESS, "the response matters only with ReportBatchItemFailures"
    assert interpret(InvocationResult("r3", b"junk"), IDS, True).kind is OutcomeKind.INVALID_RESPONSE


def test_shard_progress_checkpoints_the_longest_done_prefix() -> None:
    progress = ShardProgress(checkpoint=None)
    for number in (1, 2, 3, 4, 5):
        assert progress.on_read(number)
    progress.finish([2, 4])
    assert progress.checkpoint is None and progress.done_beyond_checkpoint == [2, 4]
    progress.finish([1])
    assert progress.checkpoint == 2
    progress.finish([3])
    assert progress.checkpoint == 4 and not progress.all_done
    progress.finish([5])
    assert progress.checkpoint == 5 and progress.all_done and progress.done_beyond_checkpoint == []


def test_shard_progress_after_a_restart_skips_what_was_done_beyond_the_checkpoint() -> None:
    progress = ShardProgress(checkpoint=10, done=[12, 13])
    assert progress.on_read(11) is True
    assert progress.on_read(12) is False and progress.on_read(13) is False
    assert progress.checkpoint == 10
    progress.finish([11])
    assert progress.checkpoint == 13 and progress.all_done


def test_shard_progress_rewind_forgets_what_is_not_done() -> None:
    progress = ShardProgress(checkpoint=None)
    for number in (1, 2, 3):
        progress.on_read(number)
    progress.finish([1, 3])
    progress.rewind()
    assert progress.read_upto == 1 and progress.checkpoint == 1
    assert progress.on_read(2) is True and progress.on_read(3) is False


def test_checkpoint_store_round_trip_and_atomic_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s"
    big = 49_600_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_123
    shards = {
        "shardId-000000000000": ShardCheckpoint(big, [big + 2], False),
        "shardId-000000000001": ShardCheckpoint(None, [], True),
    }
    store.save("u1", arn, shards)
    assert store.load("u1", arn) == shards
    assert store.load("u1", "arn:aws:kinesis:us-east-1:000000000000:stream/other") is None
    assert store.load("missing", arn) is None
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["u1.json"], "no temporary file left"
    (tmp_path / "checkpoints" / "u1.json").write_text("{broken")
    assert store.load("u1", arn) is None
    store.delete("u1")
    assert not (tmp_path / "checkpoints" / "u1.json").exists()


def test_backoff_doubles_up_to_its_cap() -> None:
    fast = PollTiming.for_mode("fast")
    assert [fast.backoff(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert fast.backoff(50) == fast.retry_backoff_cap_seconds
    aws = PollTiming.for_mode("aws")
    assert aws.kinesis_poll_seconds == 1.0 and aws.dynamodb_poll_seconds == 0.25
    assert fast.kinesis_poll_seconds is None


def test_payload_size_limit_is_six_megabytes() -> None:
    record = b"x" * (1024 * 1024)
    assert payloads.fits(5 * len(record), 5, len(record) - payloads.ENVELOPE_BYTES - 10)
    assert not payloads.fits(6 * len(record), 6, 1)
    payload = payloads.records_payload([b'{"a":1}', b'{"b":2}'])
    assert json.loads(payload) == {"Records": [{"a": 1}, {"b": 2}]}


def test_take_batch_stops_at_the_batch_size_or_the_payload_limit() -> None:
    @dataclass
    class Record:
        encoded: bytes

    mebibyte = Record(b"x" * (1024 * 1024))
    pending = deque([mebibyte] * 8)
    batch, total = payloads.take_batch(pending, 3)
    assert len(batch) == 3 and total == 3 * len(mebibyte.encoded) and len(pending) == 5
    batch, _ = payloads.take_batch(pending, 10)
    assert len(batch) == 5 and not pending, "five 1 MiB records fit one payload"
    pending = deque([mebibyte] * 7)
    batch, _ = payloads.take_batch(pending, 10)
    assert len(batch) == 5 and len(pending) == 2, "a sixth does not"
    oversized = Record(b"x" * (7 * 1024 * 1024))
    pending = deque([oversized, mebibyte])
    assert payloads.take_batch(pending, 10)[0] == [oversized], "an oversized record still goes, alone"


def test_iso_timestamps_as_aws_writes_them() -> None:
    assert iso_timestamp(1573691886.0213) == "2019-11-14T00:38:06.021Z"
    assert iso_timestamp(1573691886.0213, milliseconds=False) == "2019-11-14T00:38:06Z"
