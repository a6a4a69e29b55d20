"""The control API under /_esjoin/ (emulator/control.py): history, faults, quiescence, mappings."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tests.emulator.support.endpoint import (
    Control,
    Functions,
    Probe,
    create_stream,
    kinesis_data,
    wait_mapping_state,
    wait_until,
)

ECHO = """
    def handler(event, context):
        return {"event": event}
"""

REMAINING = """
    def handler(event, context):
        return context.get_remaining_time_in_millis()
"""

SLEEPER = """
    import time

    def handler(event, context):
        time.sleep(event.get("sleep", 0))
        return "slept"
"""


def kinesis_probe_mapping(lambda_client: Any, kinesis: Any, recorder: Probe, **params: Any) -> tuple[str, str]:
    """A one-shard stream mapped (TRIM_HORIZON) to the probe, Enabled; returns (stream name, mapping UUID)."""
    stream, arn = create_stream(kinesis)
    mapping = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=arn, StartingPosition="TRIM_HORIZON", **params
    )
    wait_mapping_state(lambda_client, mapping["UUID"], "Enabled")
    return stream, mapping["UUID"]


def put(kinesis: Any, stream: str, document: dict[str, Any]) -> str:
    return kinesis.put_record(StreamName=stream, Data=json.dumps(document).encode(), PartitionKey=document["user"])[
        "SequenceNumber"
    ]


# -- history ----------------------------------------------------------------------------------------------


def test_history_filters_by_function_since_and_limit(functions: Functions, control: Control) -> None:
    first, second = functions.create(ECHO), functions.create(ECHO)
    request_ids = [functions.invoke(first, {"i": i})[0]["ResponseMetadata"]["RequestId"] for i in range(2)]
    functions.invoke(second)

    history = control.history(first)
    assert [r["requestId"] for r in history] == request_ids
    assert {(r["function"], r["invocationType"], r["outcome"], r["mapping"]) for r in history} == {
        (first, "RequestResponse", "success", None)
    }
    assert [r["function"] for r in control.history(second)] == [second]

    last_id = control.ok("GET", "history")["lastId"]
    newest = functions.invoke(first, {"i": 2})[0]["ResponseMetadata"]["RequestId"]
    assert [r["requestId"] for r in control.history(first, since=last_id)] == [newest]
    assert [r["requestId"] for r in control.history(first, limit=1)] == [newest]
    assert control.history(second, since=last_id) == []


# -- faults ------------------------------------------------------------------------------------------------


def test_an_error_fault_fails_the_next_n_invocations_without_running_the_function(
    probe: Any, functions: Functions, control: Control
) -> None:
    recorder: Probe = probe()
    created = control.post(
        "faults",
        {
            "function": recorder.name,
            "action": "error",
            "count": 2,
            "errorType": "Boom",
            "errorMessage": "injected on purpose",
        },
    )
    assert created.status == 201, created
    rule = created.body
    assert (rule["function"], rule["action"], rule["count"], rule["hits"]) == (recorder.name, "error", 2, 0)
    assert rule["id"] in [f["id"] for f in control.ok("GET", "faults")["faults"]]

    outcomes = []
    for i in range(3):
        response, payload = functions.invoke(recorder.name, {"i": i})
        outcomes.append((response.get("FunctionError"), payload.get("errorType"), payload.get("errorMessage")))

    assert outcomes == [("Unhandled", "Boom", "injected on purpose")] * 2 + [(None, None, None)]
    assert recorder.events() == [{"i": 2}], "the faulted invocations did not run the function"
    assert rule["id"] not in [f["id"] for f in control.ok("GET", "faults")["faults"]], "used up, gone"
    assert [r["injectedFault"] for r in recorder.history()] == [rule["id"], rule["id"], None]
    assert [r["outcome"] for r in recorder.history()] == ["error", "error", "success"]


def test_a_delay_fault_starts_the_handler_late_against_its_timeout(functions: Functions, control: Control) -> None:
    name = functions.create(REMAINING, Timeout=3)
    control.add_fault(function=name, action="delay", delaySeconds=0.6, count=1)

    delayed = functions.invoke(name)[1]
    undelayed = functions.invoke(name)[1]

    assert delayed <= 3000 - 600, f"{delayed} ms left after a 0.6 s delay of a 3 s function"
    assert undelayed > 3000 - 600
    assert control.history(name)[0]["injectedFault"] is not None


def test_a_fault_matches_decoded_kinesis_data_in_a_mapping_delivered_event(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, uuid_ = kinesis_probe_mapping(lambda_client, kinesis, recorder)
    rule = control.add_fault(function=recorder.name, action="error", match="user-42", count=1)

    put(kinesis, stream, {"user": "user-7", "n": 1})
    recorder.wait_records(1)
    put(kinesis, stream, {"user": "user-42", "n": 2})
    recorder.wait_records(2)
    wait_until(control.quiescent, "quiescence")  # the probe stores records before its invocation ends

    history = recorder.history()
    assert [(r["injectedFault"], r["outcome"], r["attempt"]) for r in history] == [
        (None, "success", 1),
        (rule["id"], "error", 1),
        (None, "success", 2),
    ], history
    assert all(r["mapping"] == uuid_ and r["source"] == "kinesis" for r in history)
    assert history[1]["batchIds"] == history[2]["batchIds"], "the failed batch was retried as it was"
    assert [kinesis_data(r)["user"] for r in recorder.records()] == ["user-7", "user-42"]


def test_fault_rules_are_listed_and_deleted(control: Control) -> None:
    first = control.add_fault(function="nobody-a", action="error")
    second = control.add_fault(function="nobody-b", action="delay", delaySeconds=1, match="x")
    listed = {f["id"]: f for f in control.ok("GET", "faults")["faults"]}
    assert listed[first["id"]]["count"] is None, "no count: until deleted"
    assert (listed[second["id"]]["delaySeconds"], listed[second["id"]]["match"]) == (1.0, "x")

    assert control.delete(f"faults/{first['id']}").body == {"removed": 1}
    assert control.delete(f"faults/{first['id']}").status == 404
    assert control.get(f"faults/{second['id']}").status == 405
    assert control.delete("faults").body["removed"] >= 1
    assert control.ok("GET", "faults")["faults"] == []


# -- quiescence --------------------------------------------------------------------------------------------


def test_quiescence_is_false_while_an_invocation_runs(functions: Functions, control: Control) -> None:
    name = functions.create(SLEEPER, Timeout=10)
    functions.invoke(name)  # warm: the next call's time is all in the handler
    caller = threading.Thread(target=functions.invoke, args=(name, {"sleep": 1}))
    caller.start()
    try:
        busy = wait_until(
            lambda: (q := control.ok("GET", "quiescence"))["inFlight"] >= 1 and q, "the invocation in flight"
        )
        assert busy["quiescent"] is False
    finally:
        caller.join(30)
    wait_until(control.quiescent, "quiescence after the invocation")


def test_at_quiescence_every_record_written_before_has_been_delivered(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, _ = kinesis_probe_mapping(lambda_client, kinesis, recorder)

    for n in range(20):
        put(kinesis, stream, {"user": f"user-{n % 3}", "n": n})
    wait_until(control.quiescent, "quiescence", history=recorder.history)

    assert sorted(kinesis_data(r)["n"] for r in recorder.records()) == list(range(20))


# -- mappings: status, pause, resume, duplicate ---------------------------------------------------------


def test_mapping_status_lists_the_mapping_with_its_engine_state(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    _, uuid_ = kinesis_probe_mapping(lambda_client, kinesis, recorder)

    status = control.ok("GET", f"mappings/{uuid_}")
    assert (status["UUID"], status["State"], status["FunctionArn"]) == (uuid_, "Enabled", recorder.arn)
    assert status["engine"]["state"] == "Enabled" and status["engine"]["paused"] is False
    assert uuid_ in [m["UUID"] for m in control.ok("GET", "mappings")["mappings"]]
    missing = control.get("mappings/00000000-0000-0000-0000-000000000000")
    assert missing.status == 404 and missing.body["error"] == "ResourceNotFoundException"


def test_pause_holds_delivery_and_resume_delivers_what_was_held(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, uuid_ = kinesis_probe_mapping(lambda_client, kinesis, recorder)
    put(kinesis, stream, {"user": "u", "n": 1})
    recorder.wait_records(1)

    paused = control.ok("POST", f"mappings/{uuid_}/pause")
    assert paused["engine"]["paused"] is True and paused["State"] == "Enabled", "pausing does not change State"
    put(kinesis, stream, {"user": "u", "n": 2})
    wait_until(lambda: control.ok("GET", f"mappings/{uuid_}")["engine"]["lag"] == 1, "the held record in the lag")
    assert control.quiescent(), "a paused mapping is idle"
    assert [kinesis_data(r)["n"] for r in recorder.records()] == [1], "nothing delivered while paused"

    assert control.ok("POST", f"mappings/{uuid_}/resume")["engine"]["paused"] is False
    recorder.wait_records(2)
    wait_until(control.quiescent, "quiescence")
    assert [kinesis_data(r)["n"] for r in recorder.records()] == [1, 2]


def test_duplicate_delivers_the_next_batch_twice(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, uuid_ = kinesis_probe_mapping(lambda_client, kinesis, recorder)

    assert control.ok("POST", f"mappings/{uuid_}/duplicate", {"count": 1})["engine"]["duplicatesPending"] == 1
    sequence = put(kinesis, stream, {"user": "u", "n": 1})
    recorder.wait_records(2)
    put(kinesis, stream, {"user": "u", "n": 2})
    recorder.wait_records(3)
    wait_until(control.quiescent, "quiescence")

    assert [r["kinesis"]["sequenceNumber"] for r in recorder.records()[:2]] == [sequence, sequence]
    assert [kinesis_data(r)["n"] for r in recorder.records()] == [1, 1, 2]
    assert [r["duplicate"] for r in recorder.history()] == [False, True, False]


# -- bad requests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "faults", b"{not json", id="faults-not-json"),
        pytest.param("POST", "faults", b"[1, 2]", id="faults-not-an-object"),
        pytest.param("POST", "faults", b"{}", id="faults-no-function"),
        pytest.param("POST", "faults", b'{"function": "f", "action": "explode"}', id="faults-unknown-action"),
        pytest.param("POST", "faults", b'{"function": "f", "action": "error", "count": 0}', id="faults-count-0"),
        pytest.param("POST", "faults", b'{"function": "f", "action": "error", "count": "2"}', id="faults-count-text"),
        pytest.param("POST", "faults", b'{"function": "f", "action": "delay"}', id="faults-delay-without-seconds"),
        pytest.param("POST", "faults", b'{"function": "f", "action": "error", "match": ""}', id="faults-empty-match"),
        pytest.param("GET", "history?since=yesterday", None, id="history-since-not-a-number"),
        pytest.param("GET", "history?limit=many", None, id="history-limit-not-a-number"),
    ],
)
def test_a_bad_control_request_is_400_with_a_message(
    control: Control, method: str, path: str, body: bytes | None
) -> None:
    response = control.request(method, path, raw=body)

    assert response.status == 400, response
    assert response.body["error"] == "BadRequest" and response.body["message"], response
    assert control.ok("GET", "faults")["faults"] == [], "no rule was added"


def test_a_bad_duplicate_count_is_400(probe: Any, lambda_client: Any, kinesis: Any, control: Control) -> None:
    recorder: Probe = probe()
    _, uuid_ = kinesis_probe_mapping(lambda_client, kinesis, recorder)
    for body in ({"count": 0}, {"count": "two"}):
        response = control.post(f"mappings/{uuid_}/duplicate", body)
        assert response.status == 400 and "count" in response.body["message"], response


def test_an_unknown_control_path_is_404_with_a_message(control: Control) -> None:
    response = control.get("frobnicate")
    assert response.status == 404 and "no control API" in response.body["message"], response
    assert control.get("mappings/nope/pause").status == 405
