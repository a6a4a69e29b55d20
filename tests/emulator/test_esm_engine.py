"""The engine's life cycle and control: Enabled, checkpoints across restarts, pause and resume,
duplicate delivery, idleness, State reporting, shutdown."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from esjoin.emulator.invocation import LambdaServiceError
from tests.emulator.support.esm import (
    REGION,
    EngineHarness,
    Gate,
    create_queue,
    create_stream,
    create_table,
    fail,
    ok,
    put_item,
    put_record,
    send_message,
    updated,
    wait_until,
)


def write(harness: EngineHarness, stream: str, numbers: range, keys: int = 3) -> None:
    """Write {"n"} records, all at once (moto's lock held: the pollers see them together)."""
    with harness.moto.lock():
        for n in numbers:
            put_record(harness.moto, stream, f"key-{n % keys}", {"n": n})


def delivered_numbers(harness: EngineHarness) -> list[int]:
    return [item["n"] for item in harness.function.delivered()]


def test_state_is_reported_enabled_then_disabled(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    created = harness.start(stream)
    assert harness.reported(created.uuid, "state") == ["Enabled"]
    harness.engine.update(updated(created, enabled=False))
    harness.wait_reported(created.uuid, "state", "Disabled")
    assert harness.engine.status(created.uuid)["state"] == "Disabled"


def test_disable_then_enable_resumes_from_the_checkpoint_exactly(harness: EngineHarness) -> None:
    """Without loss or duplicates: records done are not delivered again, records written while
    disabled are delivered once enabled."""
    stream = create_stream(harness.moto, shards=2)
    created = harness.start(stream, BatchSize=3, ParallelizationFactor=2)
    write(harness, stream, range(10))
    harness.wait_idle(created.uuid)

    disabled = updated(created, enabled=False)
    harness.engine.update(disabled)
    harness.wait_reported(created.uuid, "state", "Disabled")
    write(harness, stream, range(10, 20))
    assert harness.engine.is_idle(created.uuid), "a disabled mapping has nothing to do"
    assert harness.engine.status(created.uuid)["lag"] == 10
    assert sorted(delivered_numbers(harness)) == list(range(10))

    harness.engine.update(updated(created, enabled=True))
    assert not harness.engine.is_idle(created.uuid), "enabled: 10 records wait in the stream"
    harness.wait_idle(created.uuid)
    assert sorted(delivered_numbers(harness)) == list(range(20))
    assert harness.reported(created.uuid, "state") == ["Enabled", "Disabled", "Enabled"]


def test_disabling_lets_the_batch_in_flight_finish_and_checkpoints_it(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    gate = Gate()
    harness.function.respond = lambda call: (gate.wait(), ok())[1]
    created = harness.start(stream, BatchSize=2)
    write(harness, stream, range(4))
    harness.function.wait_in_flight(1)
    harness.engine.update(updated(created, enabled=False))
    assert not harness.engine.is_idle(created.uuid), "a batch is still in flight"
    gate.open()
    harness.wait_reported(created.uuid, "state", "Disabled")
    harness.engine.update(updated(created, enabled=True))
    harness.wait_idle(created.uuid)
    assert delivered_numbers(harness) == [0, 1, 2, 3], "the batch in flight is not delivered again"


def test_checkpoints_survive_an_engine_restart(harness: EngineHarness, tmp_path: Path) -> None:
    stream = create_stream(harness.moto)
    created = harness.start(stream, StartingPosition="LATEST", BatchSize=2)
    write(harness, stream, range(5))
    harness.wait_idle(created.uuid)
    harness.engine.shutdown()
    checkpoint_file = tmp_path / "checkpoints" / f"{created.uuid}.json"
    saved = json.loads(checkpoint_file.read_text())
    assert saved["eventSourceArn"] == stream and saved["shards"]["shardId-000000000000"]["checkpoint"]

    write(harness, stream, range(5, 9))  # written while the endpoint is down
    restarted = harness.new_engine()
    restarted.start(created.copy())  # LATEST would skip 5..8: the checkpoint wins
    harness.engine = restarted
    harness.wait_idle(created.uuid)
    assert delivered_numbers(harness) == list(range(9))


def test_deleting_a_mapping_removes_its_checkpoints(harness: EngineHarness, tmp_path: Path) -> None:
    stream = create_stream(harness.moto)
    created = harness.start(stream)
    assert (tmp_path / "checkpoints" / f"{created.uuid}.json").exists()
    harness.engine.stop(created.uuid)
    assert not (tmp_path / "checkpoints" / f"{created.uuid}.json").exists()
    assert harness.engine.is_idle(created.uuid)
    with pytest.raises(LambdaServiceError):
        harness.engine.status(created.uuid)


def test_pause_holds_deliveries_and_resume_releases_them(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    paused = harness.start(stream)
    witness = harness.start(stream)  # the same stream, never paused: proves the writes were seen
    harness.engine.pause(paused.uuid)
    write(harness, stream, range(3))
    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 3, "the witness")
    harness.wait_idle(witness.uuid)
    assert all(call.origin.mapping_uuid == witness.uuid for call in harness.function.calls)
    status = harness.engine.status(paused.uuid)
    assert status["paused"] is True and status["lag"] == 3 and status["state"] == "Enabled"

    harness.engine.resume(paused.uuid)
    harness.function.wait_for(lambda calls: sum(len(c.records) for c in calls) >= 6, "the paused mapping")
    harness.wait_idle(paused.uuid)
    assert harness.reported(paused.uuid, "state") == ["Enabled"], "pausing does not change State"


def test_duplicate_next_delivers_a_batch_twice_and_the_first_outcome_counts(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    harness.function.respond = lambda call: fail("duplicate rejected") if call.origin.duplicate else ok()
    created = harness.start(stream, BatchSize=10)
    harness.engine.duplicate_next(created.uuid, 1)
    write(harness, stream, range(3))
    harness.wait_idle(created.uuid)
    write(harness, stream, range(3, 5))
    harness.wait_idle(created.uuid)

    calls = harness.function.calls
    assert [(call.origin.duplicate, [d["n"] for d in call.data]) for call in calls] == [
        (False, [0, 1, 2]),
        (True, [0, 1, 2]),
        (False, [3, 4]),
    ]
    assert calls[0].payload == calls[1].payload
    assert harness.engine.status(created.uuid)["duplicatesPending"] == 0


def test_duplicate_next_on_sqs_keeps_the_deletion_of_the_first_delivery(harness: EngineHarness) -> None:
    queue = create_queue(harness.moto)
    created = harness.start(queue)
    harness.engine.duplicate_next(created.uuid, 1)
    send_message(harness.moto, queue, "once")
    harness.function.wait_for_calls(2)
    harness.wait_idle(created.uuid)
    assert [call.origin.duplicate for call in harness.function.calls] == [False, True]


def test_is_idle_sees_a_record_the_worker_has_not_read_yet(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    queue = create_queue(harness.moto)
    table, ddb_stream = create_table(harness.moto)
    gate = Gate()
    harness.function.respond = lambda call: (gate.wait(), ok())[1]
    mappings = [harness.start(stream), harness.start(queue), harness.start(ddb_stream)]
    assert harness.engine.is_idle()
    with harness.moto.lock():  # hold moto: the workers cannot have read the writes when is_idle is asked
        put_record(harness.moto, stream, "k", {"n": 1})
        send_message(harness.moto, queue, "m")
        put_item(harness.moto, table, {"pk": {"S": "x"}})
        assert not any(harness.engine.is_idle(m.uuid) for m in mappings)
    harness.function.wait_in_flight(3)
    assert not harness.engine.is_idle(), "batches in flight"
    gate.open()
    harness.wait_idle()
    assert len(harness.function.calls) == 3


def test_is_idle_is_false_while_a_failed_batch_waits_for_its_retry(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    attempts = iter([fail(), fail()])
    release = threading.Event()

    def respond(call):
        if call.index < 2:
            return next(attempts)
        release.wait(10)
        return ok()

    harness.function.respond = respond
    created = harness.start(stream)
    write(harness, stream, range(1))
    harness.function.wait_for_calls(3)
    assert not harness.engine.is_idle(created.uuid)
    release.set()
    harness.wait_idle(created.uuid)
    assert harness.engine.status(created.uuid)["lag"] == 0


def test_a_function_that_keeps_failing_is_never_idle(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    harness.function.respond = lambda call: fail()
    created = harness.start(stream)
    write(harness, stream, range(1))
    harness.function.wait_for_calls(3)
    assert not harness.engine.is_idle(created.uuid)
    status = harness.engine.status(created.uuid)
    [lane] = status["shards"]["shardId-000000000000"]["lanes"]
    assert status["lag"] == 1 and (lane["inFlight"] or lane["waiting"])


def test_an_invoker_bug_is_logged_and_retried_not_fatal(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    crashes = iter([RuntimeError("bug in the invoker")])

    def respond(call):
        error = next(crashes, None)
        if error:
            raise error
        return ok()

    harness.function.respond = respond
    created = harness.start(stream)
    write(harness, stream, range(2))
    harness.wait_idle(created.uuid)
    assert [d["n"] for d in harness.function.calls[-1].data] == [0, 1]


def test_shutdown_stops_every_thread_and_is_idempotent(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto, shards=2)
    queue = create_queue(harness.moto)
    _, ddb_stream = create_table(harness.moto)
    for source in (stream, queue, ddb_stream):
        harness.start(source)
    write(harness, stream, range(4))
    send_message(harness.moto, queue, "m")
    harness.wait_idle()
    assert any(thread.name.startswith("esm-") for thread in threading.enumerate())

    harness.engine.shutdown()
    harness.engine.shutdown()
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("esm-")],
        "no esm threads",
        timeout=2,
        history=lambda: [t.name for t in threading.enumerate()],
    )
    with pytest.raises(RuntimeError):
        harness.start(stream)


def test_the_region_comes_from_the_source_arn(harness: EngineHarness) -> None:
    stream = create_stream(harness.moto)
    created = harness.start(stream)
    write(harness, stream, range(1))
    [call] = harness.function.wait_for_calls(1)
    assert call.records[0]["awsRegion"] == REGION == created.event_source_arn.split(":")[3]


@pytest.mark.parametrize("source", ["kinesis", "dynamodb"])
def test_aws_timing_polls_streams_at_aws_rates_and_still_delivers(tmp_path: Path, source: str) -> None:
    harness = EngineHarness(tmp_path, timing="aws")
    try:
        if source == "kinesis":
            arn = create_stream(harness.moto)
            created = harness.start(arn)
            write(harness, arn, range(3))
        else:
            table, arn = create_table(harness.moto)
            created = harness.start(arn)
            put_item(harness.moto, table, {"pk": {"S": "x"}})
        assert not harness.engine.is_idle(created.uuid)
        harness.wait_idle(created.uuid, timeout=5)
        assert len(harness.function.delivered()) == (3 if source == "kinesis" else 1)
    finally:
        harness.close()


def test_an_update_reports_the_state_again_once_applied(harness: EngineHarness) -> None:
    """The API shows Updating until the engine says the update is applied (State back to Enabled)."""
    queue = create_queue(harness.moto)
    created = harness.start(queue)
    harness.engine.update(updated(created, batch_size=5))
    assert harness.reported(created.uuid, "state") == ["Enabled", "Enabled"]
    harness.engine.update(updated(created, batch_size=5, enabled=False))
    harness.wait_reported(created.uuid, "state", "Disabled")
    harness.engine.update(updated(created, batch_size=7, enabled=False))
    assert harness.reported(created.uuid, "state") == ["Enabled", "Enabled", "Disabled", "Disabled"]
