"""The Lambda runtime against functions that misbehave: odd results, escaping processes, huge log lines,
and an endpoint run with its user's AWS and proxy settings.

Tests use test_runtime.py's fixtures: a real LambdaRuntime, real worker processes, no HTTP. The same
scenarios through a whole endpoint (DeleteFunction, boto3 calls back to it) are in
test_endpoint_hostile_functions.py: test_runtime.py's fixtures require that no endpoint runs alongside.
Waits poll with a deadline and say what they last saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from esjoin.emulator.invocation import UNHANDLED, FunctionSpec
from esjoin.emulator.lambda_service.environment import function_environment
from esjoin.emulator.lambda_service.function_logs import MAX_EVENT_BYTES, WorkerOutputDecoder, split_message
from esjoin.emulator.lambda_service.runtime import LambdaRuntime
from esjoin.emulator.lambda_service.worker_program import log_marker
from tests.emulator import test_runtime
from tests.emulator.support.endpoint import wait_until as wait_for
from tests.emulator.test_runtime import document, invoke, process_gone

KILL_WAIT_SECONDS = 10.0

# test_runtime.py's fixtures, requested here by name.
sink = test_runtime.sink
make_runtime = test_runtime.make_runtime
runtime = test_runtime.runtime
function = test_runtime.function


# --- results that json.dumps cannot write -----------------------------------------------------------

MARSHAL = """
    class Widget:
        pass

    def handler(event, context):
        kind = event["kind"]
        if kind == "bytes":
            return b"\\x89PNG raw"
        if kind == "nested bytes":
            return {"body": "café".encode(), "parts": [b"a", b"b"]}
        if kind == "nested invalid bytes":
            return {"body": b"\\x89PNG"}
        if kind == "set":
            return {"ids": {1}}
        return {"widget": Widget()}
"""


def test_bytes_inside_a_result_are_written_as_utf8_text_as_aws_s_encoder_does(runtime, function):
    """awslambdaric encodes with simplejson (encoding="utf-8"): nested bytes become the text they hold."""
    spec = function({"app.py": MARSHAL})
    result = invoke(runtime, spec, {"kind": "nested bytes"})
    assert result.function_error is None, result.payload
    assert document(result) == {"body": "café", "parts": ["a", "b"]}


def test_bytes_that_are_not_utf8_inside_a_result_are_a_marshal_error(runtime, function):
    spec = function({"app.py": MARSHAL})
    result = invoke(runtime, spec, {"kind": "nested invalid bytes"})
    assert result.function_error == UNHANDLED
    error = document(result)
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"] == (
        "Unable to marshal response: 'utf-8' codec can't decode byte 0x89 in position 0: invalid start byte"
    )
    assert "[ERROR] Runtime.MarshalError: Unable to marshal response: 'utf-8' codec" in result.log


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("set", "Unable to marshal response: Object of type set is not JSON serializable"),
        ("object", "Unable to marshal response: Object of type Widget is not JSON serializable"),
    ],
)
def test_values_json_cannot_write_are_a_marshal_error(runtime, function, kind, message):
    spec = function({"app.py": MARSHAL})
    result = invoke(runtime, spec, {"kind": kind})
    assert result.function_error == UNHANDLED
    assert document(result)["errorType"] == "Runtime.MarshalError"
    assert document(result)["errorMessage"] == message


def test_a_bytes_result_is_the_payload_as_it_is(runtime, function):
    """awslambdaric's marshal_response returns bytes untouched (application/unknown), not a MarshalError."""
    spec = function({"app.py": MARSHAL})
    result = invoke(runtime, spec, {"kind": "bytes"})
    assert result.function_error is None
    assert result.payload == b"\x89PNG raw"


# --- processes that leave the worker's process group ------------------------------------------------

# Three ways out of the process group, each a `sleep 300` the function never waits for.
ESCAPING = """
    import json, os, pathlib, subprocess, time

    def exec_sleep():
        try:
            os.execvp("sleep", ["sleep", "300"])
        finally:
            os._exit(127)  # never run the handler's code twice

    def setsid_child():
        child = os.fork()
        if child == 0:
            os.setsid()
            exec_sleep()
        return child

    def double_fork_daemon():
        # The middle process starts a session and exits: the grandchild is an orphan of its own session.
        read_end, write_end = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                exec_sleep()
            os.write(write_end, str(grandchild).encode())
            os._exit(0)
        os.close(write_end)
        os.waitpid(middle, 0)
        pid = int(os.read(read_end, 32))
        os.close(read_end)
        return pid

    def handler(event, context):
        pids = {
            "worker": os.getpid(),
            "popen_start_new_session": subprocess.Popen(["sleep", "300"], start_new_session=True).pid,
            "fork_setsid": setsid_child(),
            "double_fork_daemon": double_fork_daemon(),
        }
        pathlib.Path(event["pids"]).write_text(json.dumps(pids))
        if event.get("hang"):
            time.sleep(60)
        return pids
"""


@pytest.fixture
def escaped() -> Iterator[Callable[[Path], dict[str, int]]]:
    """Reads the pids a function wrote; whatever is still alive at the end is killed, pass or fail."""
    seen: list[int] = []

    def read(path: Path) -> dict[str, int]:
        pids = json.loads(path.read_text())
        seen.extend(pids.values())
        return pids

    yield read
    for pid in seen:
        with contextlib.suppress(OSError):  # only our `sleep 300`, never a process that reused the pid
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00300\x00":
                os.kill(pid, signal.SIGKILL)


def alive(pids: dict[str, int]) -> dict[str, int]:
    return {name: pid for name, pid in pids.items() if not process_gone(pid)}


def assert_all_gone(pids: dict[str, int], after: str) -> None:
    wait_for(
        lambda: not alive(pids),
        f"every process the function started to die after {after}",
        timeout=KILL_WAIT_SECONDS,
        history=lambda: f"still alive: {alive(pids)}",
    )


def run_escaping(
    runtime: LambdaRuntime, spec: FunctionSpec, tmp_path: Path, escaped: Callable[[Path], dict[str, int]]
) -> dict[str, int]:
    pids_file = tmp_path / f"pids-{uuid.uuid4().hex}"
    result = invoke(runtime, spec, {"pids": str(pids_file)})
    assert result.function_error is None, result.payload
    pids = escaped(pids_file)
    assert alive(pids) == pids, "the function's processes should run until its environment ends"
    return pids


def test_retire_kills_processes_that_left_the_process_group(runtime, function, tmp_path, escaped):
    spec = function({"app.py": ESCAPING})
    pids = run_escaping(runtime, spec, tmp_path, escaped)
    runtime.retire(spec.arn)  # what UpdateFunctionCode, UpdateFunctionConfiguration, DeleteFunction do
    assert_all_gone(pids, "retire()")


def test_a_new_revision_kills_the_old_worker_s_escaped_processes(runtime, function, tmp_path, escaped):
    spec = function({"app.py": ESCAPING})
    pids = run_escaping(runtime, spec, tmp_path, escaped)
    updated = replace(spec, revision_id=str(uuid.uuid4()))
    new_pids = run_escaping(runtime, updated, tmp_path, escaped)
    assert new_pids["worker"] != pids["worker"]
    assert_all_gone(pids, "an invocation of the new revision")


def test_a_timeout_kills_processes_that_left_the_process_group(runtime, function, tmp_path, escaped):
    spec = function({"app.py": ESCAPING}, timeout_seconds=2)
    pids_file = tmp_path / "pids"
    result = invoke(runtime, spec, {"pids": str(pids_file), "hang": True})
    assert result.timed_out, result.payload
    assert_all_gone(escaped(pids_file), "the timeout")


def test_shutdown_kills_processes_that_left_the_process_group(make_runtime, function, tmp_path, escaped):
    runtime = make_runtime()
    spec = function({"app.py": ESCAPING})
    pids = run_escaping(runtime, spec, tmp_path, escaped)
    runtime.shutdown()
    assert_all_gone(pids, "shutdown()")


# --- log lines longer than a CloudWatch Logs event --------------------------------------------------

MARKER = log_marker("0123456789abcdef")


def utf8_size(message: str) -> int:
    return len(message.encode())


def feed_in_chunks(decoder: WorkerOutputDecoder, data: bytes, chunk: int = 65536) -> list[str]:
    messages: list[str] = []
    for start in range(0, len(data), chunk):
        messages.extend(decoder.feed(data[start : start + chunk]))
    return messages


def test_a_long_line_leaves_the_decoder_in_pieces_of_at_most_an_event_as_it_arrives():
    line = ("ascii é ✓ 😀 " * 80_000).encode()  # ~1.5 MB, characters of 1 to 4 bytes
    decoder = WorkerOutputDecoder(MARKER)
    early = feed_in_chunks(decoder, line)  # no newline yet
    assert len(early) >= len(line) // MAX_EVENT_BYTES - 1, "pieces must not wait for the end of the line"
    messages = early + decoder.feed(b"\n")
    assert all(utf8_size(message) <= MAX_EVENT_BYTES for message in messages)
    assert "".join(messages) == line.decode() + "\n"  # no character cut in two, nothing lost
    assert max(utf8_size(message) for message in messages) > MAX_EVENT_BYTES - 4


def test_a_long_framed_message_is_split_too():
    text = "[ERROR]\t" + "✓" * 300_000  # 900 KB: one logging record
    body = text.encode()
    decoder = WorkerOutputDecoder(MARKER)
    messages = feed_in_chunks(decoder, MARKER + b"%08x" % len(body) + body + b"plain after\n")
    assert messages[-1] == "plain after\n"
    assert all(utf8_size(message) <= MAX_EVENT_BYTES for message in messages)
    assert "".join(messages[:-1]) == text + "\n"


def test_invalid_utf8_is_split_by_the_size_of_what_it_decodes_to():
    messages = feed_in_chunks(WorkerOutputDecoder(MARKER), b"\xff" * 300_000 + b"\n")  # U+FFFD: 3 bytes each
    assert all(utf8_size(message) <= MAX_EVENT_BYTES for message in messages)
    assert "".join(messages) == "\ufffd" * 300_000 + "\n"


def test_a_trailing_newline_is_never_an_event_of_its_own():
    pieces = split_message("x" * MAX_EVENT_BYTES + "\n")
    assert pieces == ["x" * (MAX_EVENT_BYTES - 1), "x\n"]
    assert split_message("short\n") == ["short\n"]


def test_a_handler_printing_50_mb_on_one_line_gets_events_of_at_most_256_kb(runtime, function, sink):
    spec = function(
        {
            "app.py": """
                import logging

                def handler(event, context):
                    print("x" * 50_000_000)
                    logging.warning("€" * 200_000)  # 600 KB of 3-byte characters, framed
                    return "done"
            """
        },
        timeout_seconds=20,  # a decoder that rescans all it buffered on every read takes far longer
    )
    result = invoke(runtime, spec)
    assert not result.timed_out
    assert result.function_error is None, result.payload
    events = wait_for(
        lambda: [m for _, _, m in sink.events()] if any(m.startswith("REPORT") for _, _, m in sink.events()) else None,
        "the invocation's log in the sink",
    )
    assert all(utf8_size(message) <= MAX_EVENT_BYTES for message in events)
    assert "".join(events) == result.log
    printed = [message for message in events if message.startswith("x")]
    assert len(printed) == -(-50_000_001 // MAX_EVENT_BYTES)
    assert "".join(printed) == "x" * 50_000_000 + "\n"
    logged = "".join(message for message in events if "€" in message)
    assert logged.endswith("€" * 200_000 + "\n") and logged.startswith("[WARNING]\t")


# --- the endpoint's own AWS and proxy settings stay out of the functions ----------------------------

HOSTILE_ENVIRONMENT = {
    "AWS_PROFILE": "does-not-exist",
    "AWS_DEFAULT_PROFILE": "does-not-exist",
    "AWS_ACCESS_KEY_ID": "AKIAHOSTREALKEY",
    "AWS_SECRET_ACCESS_KEY": "host-secret",
    "AWS_SESSION_TOKEN": "host-session-token",
    "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/host-role",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent/token",
    "AWS_CA_BUNDLE": "/nonexistent/ca.pem",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
}
HOST_ONLY = {"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CA_BUNDLE"}
PROXIES = {name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}


@pytest.fixture
def hostile_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint's process runs with its user's profile, garbage config files and a dead proxy."""
    garbage = tmp_path / "garbage"
    garbage.write_text("[profile broken\nthis is not an ini file = = =\n")
    for name, value in {
        **HOSTILE_ENVIRONMENT,
        "AWS_CONFIG_FILE": str(garbage),
        "AWS_SHARED_CREDENTIALS_FILE": str(garbage),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


def environment_of(spec: FunctionSpec, endpoint_url: str = "http://127.0.0.1:4566") -> dict[str, str]:
    return function_environment(
        spec,
        log_stream="2024/01/01/[$LATEST]0",
        endpoint_url=endpoint_url,
        runtime_dir=Path("/runtime"),
        runtime_site=Path("/runtime-site"),
    )


def test_the_worker_environment_holds_nothing_of_the_endpoint_s(function, hostile_host):
    env = environment_of(function({"app.py": ""}))
    for name, value in HOSTILE_ENVIRONMENT.items():
        assert env.get(name) != value, name
    assert not HOST_ONLY & env.keys()
    assert not {*PROXIES, "ALL_PROXY", "NO_PROXY", "no_proxy"} & env.keys()
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SESSION_TOKEN"]) == ("test", "test")


def test_a_proxy_in_the_function_s_configuration_is_bypassed_for_the_local_endpoint(function):
    spec = function({"app.py": ""}, environment={**PROXIES, "NO_PROXY": "internal.example, .corp"})
    env = environment_of(spec, endpoint_url="http://emulator.test:4566")
    for name in ("NO_PROXY", "no_proxy"):
        entries = env[name].split(",")
        assert entries[:2] == ["internal.example", ".corp"]  # the function's own entries are kept
        assert {"127.0.0.1", "localhost", "::1", "emulator.test"} <= set(entries)
    assert {name: env[name] for name in PROXIES} == PROXIES
    assert "NO_PROXY" not in environment_of(function({"app.py": ""}))  # no proxy, no AWS-foreign variable
