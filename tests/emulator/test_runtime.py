"""The Lambda runtime runs functions in worker processes as AWS's Python runtime would.

Each test builds a tiny function in tmp_path and invokes it through a real LambdaRuntime (real worker
processes, no HTTP endpoint). Waits poll a condition with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import json
import os
import re
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from esjoin.emulator.config import EmulatorConfig
from esjoin.emulator.invocation import (
    UNHANDLED,
    FunctionSpec,
    InvocationRequest,
    InvocationResult,
    LambdaServiceError,
)
from esjoin.emulator.lambda_service.runtime import LambdaRuntime

ENDPOINT_URL = "http://127.0.0.1:9"  # no test function calls AWS
REGION = "us-east-1"
ACCOUNT = "000000000000"
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
LOG_STREAM = re.compile(r"^\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}$")
REPORT = re.compile(
    r"^REPORT RequestId: (?P<id>[0-9a-f-]{36})\tDuration: \d+\.\d{2} ms\tBilled Duration: \d+ ms"
    r"\tMemory Size: 128 MB\tMax Memory Used: \d+ MB(\tInit Duration: \d+\.\d{2} ms)?\t?$",
    re.MULTILINE,
)


# --- fixtures and helpers ---------------------------------------------------------------------------


class RecordingLogSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.puts: list[tuple[FunctionSpec, str, list[tuple[int, str]]]] = []

    def put(self, spec: FunctionSpec, log_stream: str, events: list[tuple[int, str]]) -> None:
        with self._lock:
            self.puts.append((spec, log_stream, list(events)))

    def events(self) -> list[tuple[str, int, str]]:
        with self._lock:
            return [(stream, ts, message) for _, stream, events in self.puts for ts, message in events]


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def process_gone(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (an orphaned grandchild under a container's PID 1)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def has_children() -> bool:
    """Whether this test process has any child process, running or unreaped."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def runtime_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lambda-")]


@pytest.fixture
def sink() -> RecordingLogSink:
    return RecordingLogSink()


@pytest.fixture
def make_runtime(tmp_path: Path, sink: RecordingLogSink) -> Iterator[Callable[..., LambdaRuntime]]:
    runtimes: list[LambdaRuntime] = []

    def make(**config: object) -> LambdaRuntime:
        settings = {"state_dir": tmp_path / "state", "lambda_max_concurrency": 4, **config}
        runtime = LambdaRuntime(EmulatorConfig(**settings), ENDPOINT_URL, sink)  # type: ignore[arg-type]
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.shutdown()
    assert not has_children(), "a worker process outlived shutdown()"
    assert not runtime_threads(), f"threads outlived shutdown(): {runtime_threads()}"


@pytest.fixture
def runtime(make_runtime: Callable[..., LambdaRuntime]) -> LambdaRuntime:
    return make_runtime()


@pytest.fixture
def function(tmp_path: Path) -> Callable[..., FunctionSpec]:
    """Write a function's code (file name -> source) and describe it as the Lambda API would."""

    def make(files: dict[str, str], handler: str = "app.handler", **overrides: object) -> FunctionSpec:
        name = str(overrides.pop("name", f"fn-{uuid.uuid4().hex[:8]}"))
        code_dir = tmp_path / "functions" / f"{name}-{uuid.uuid4().hex[:6]}"
        for relative, source in files.items():
            path = code_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        spec = FunctionSpec(
            name=name,
            arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            runtime="python3.11",
            handler=handler,
            code_dir=code_dir,
            code_sha256="c2hh",
            revision_id=str(uuid.uuid4()),
            timeout_seconds=3,
            memory_mb=128,
            environment={},
            region=REGION,
            account_id=ACCOUNT,
        )
        return replace(spec, **overrides)

    return make


def invoke(runtime: LambdaRuntime, spec: FunctionSpec, event: object = None, **request: object) -> InvocationResult:
    payload = request.pop("payload", None)
    if payload is None:
        payload = json.dumps({} if event is None else event).encode()
    return runtime.invoke(
        spec,
        InvocationRequest(payload=payload, request_id=str(uuid.uuid4()), **request),  # type: ignore[arg-type]
    )


def document(result: InvocationResult) -> object:
    return json.loads(result.payload)


ECHO = """
    import os

    def handler(event, context):
        return {"event": event, "pid": os.getpid()}
"""

# A handler that announces it started (a file) and blocks until released (another file).
BLOCKING = """
    import os, pathlib, time

    def handler(event, context):
        announcement = pathlib.Path(event["started"] + ".tmp")
        announcement.write_text(str(os.getpid()))
        announcement.replace(event["started"])  # atomically: the test reads it as soon as it exists
        deadline = time.time() + 20
        while not os.path.exists(event["release"]) and time.time() < deadline:
            time.sleep(0.01)
        return {"pid": os.getpid()}
"""


def start_blocking(runtime: LambdaRuntime, spec: FunctionSpec, tmp_path: Path) -> tuple[dict, Path]:
    """Invoke BLOCKING on a thread; returns (a dict that receives the result, the release file)."""
    marker = uuid.uuid4().hex
    started, release = tmp_path / f"started-{marker}", tmp_path / f"release-{marker}"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = invoke(runtime, spec, {"started": str(started), "release": str(release)})
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    outcome["thread"] = thread
    wait_until(started.exists, what="the blocking handler to start")
    outcome["pid"] = int(started.read_text())
    return outcome, release


# --- results, event and context ---------------------------------------------------------------------


def test_handler_result_is_the_payload_and_bytes_round_trip(runtime, function):
    spec = function(
        {
            "app.py": """
                def handler(event, context):
                    kind = event["kind"]
                    if kind == "echo":
                        return event
                    if kind == "none":
                        return None
                    return bytes(range(256)) * 4
            """
        }
    )
    event = {"kind": "echo", "text": "ünïcødé ✓ \u2028", "big": "x" * 300_000, "n": [1, 2.5, None, True]}
    echoed = invoke(runtime, spec, event)
    assert echoed.function_error is None
    assert document(echoed) == event
    assert invoke(runtime, spec, {"kind": "none"}).payload == b"null"
    assert invoke(runtime, spec, {"kind": "bytes"}).payload == bytes(range(256)) * 4


def test_context_carries_the_function_and_the_invocation(runtime, function):
    spec = function(
        {
            "app.py": """
                def handler(event, context):
                    return {
                        "function_name": context.function_name,
                        "function_version": context.function_version,
                        "invoked_function_arn": context.invoked_function_arn,
                        "memory_limit_in_mb": context.memory_limit_in_mb,
                        "aws_request_id": context.aws_request_id,
                        "log_group_name": context.log_group_name,
                        "log_stream_name": context.log_stream_name,
                        "identity": [context.identity.cognito_identity_id,
                                     context.identity.cognito_identity_pool_id],
                        "custom": context.client_context and context.client_context.custom,
                        "app_title": context.client_context and context.client_context.client.app_title,
                        "remaining": context.get_remaining_time_in_millis(),
                    }
            """
        },
        timeout_seconds=5,
    )
    client_context = base64.b64encode(json.dumps({"custom": {"k": "v"}, "client": {"app_title": "t"}}).encode())
    request_id = str(uuid.uuid4())
    result = runtime.invoke(spec, InvocationRequest(b"{}", request_id, client_context=client_context.decode()))
    seen = document(result)
    assert seen["function_name"] == spec.name
    assert seen["function_version"] == "$LATEST"
    assert seen["invoked_function_arn"] == spec.arn
    assert seen["memory_limit_in_mb"] == "128"
    assert seen["aws_request_id"] == request_id
    assert seen["log_group_name"] == f"/aws/lambda/{spec.name}"
    assert LOG_STREAM.match(seen["log_stream_name"])
    assert seen["identity"] == [None, None]
    assert seen["custom"] == {"k": "v"}
    assert seen["app_title"] == "t"
    assert 0 < seen["remaining"] <= 5000
    assert document(invoke(runtime, spec))["custom"] is None


def test_environment_is_aws_s_and_the_function_s_only(runtime, function, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "someone-real")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEY")
    monkeypatch.setenv("ESJOIN_LEAK_CANARY", "leaked")
    spec = function(
        {
            "app.py": """
                import importlib.util, os, sys

                def handler(event, context):
                    import boto3
                    return {
                        "env": dict(os.environ),
                        "importable": {name: importlib.util.find_spec(name) is not None
                                       for name in ("emulator", "lambdas", "moto", "pytest", "botocore")},
                        "boto3": boto3.__version__,
                        "sys_path": sys.path,
                        "cwd": os.getcwd(),
                    }
            """
        },
        environment={"TABLE_NAME": "views", "AWS_REGION_HINT": "x"},
    )
    seen = document(invoke(runtime, spec))
    env = seen["env"]
    expected = {
        "_HANDLER": "app.handler",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        "AWS_ENDPOINT_URL": ENDPOINT_URL,
        "LAMBDA_TASK_ROOT": str(spec.code_dir.resolve()),
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "TABLE_NAME": "views",
    }
    assert {key: env.get(key) for key in expected} == expected
    assert LOG_STREAM.match(env["AWS_LAMBDA_LOG_STREAM_NAME"])
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    for key in ("LAMBDA_RUNTIME_DIR", "PATH", "PYTHONPATH"):
        assert env[key]
    assert "AWS_PROFILE" not in env
    assert "ESJOIN_LEAK_CANARY" not in env
    assert "LC_CTYPE" not in env
    assert seen["importable"] == {
        "emulator": False,
        "lambdas": False,
        "moto": False,
        "pytest": False,
        "botocore": True,
    }
    assert seen["boto3"]
    assert seen["sys_path"][0] == str(spec.code_dir.resolve())
    assert seen["cwd"] == str(spec.code_dir.resolve())


def test_nested_handler_paths_work_as_on_aws_and_leave_no_pyc(runtime, function):
    files = {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/module.py": "from pkg import helper\ndef fn(event, context):\n    return helper.NAME\n",
        "pkg/helper.py": "NAME = 'dotted'\n",
        "src/module.py": "def fn(event, context):\n    return 'slashed'\n",
    }
    dotted = function(files, handler="pkg.sub.module.fn")
    slashed = replace(dotted, handler="src/module.fn", name="slashed", arn=dotted.arn + "-slashed")
    assert document(invoke(runtime, dotted)) == "dotted"
    assert document(invoke(runtime, slashed)) == "slashed"
    assert not list(dotted.code_dir.rglob("*.pyc"))


# --- worker reuse and concurrency ------------------------------------------------------------------


def test_a_warm_worker_keeps_its_module_state(runtime, function):
    spec = function(
        {
            "app.py": """
                import os
                invocations = 0

                def handler(event, context):
                    global invocations
                    invocations += 1
                    return {"invocations": invocations, "pid": os.getpid()}
            """
        }
    )
    first, second, third = (invoke(runtime, spec) for _ in range(3))
    assert [document(r)["invocations"] for r in (first, second, third)] == [1, 2, 3]
    assert len({document(r)["pid"] for r in (first, second, third)}) == 1
    assert first.init_duration_ms is not None and first.init_duration_ms > 0
    assert second.init_duration_ms is None and third.init_duration_ms is None
    status = runtime.status()[spec.arn]
    assert status["cold_starts"] == 1
    assert status["invocations"] == 3
    assert status["workers_idle"] == 1


RENDEZVOUS = """
    import os, pathlib, time

    def handler(event, context):
        here = pathlib.Path(event["dir"])
        (here / context.aws_request_id).write_text(str(os.getpid()))
        deadline = time.time() + 10
        while len(list(here.iterdir())) < event["expected"] and time.time() < deadline:
            time.sleep(0.005)
        return os.getpid()
"""


def test_parallel_invocations_use_several_workers_up_to_the_limit(make_runtime, function, tmp_path):
    runtime = make_runtime(lambda_max_concurrency=3)
    spec = function({"app.py": RENDEZVOUS}, timeout_seconds=15)
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    results: list[InvocationResult] = []
    lock = threading.Lock()

    def call() -> None:
        result = invoke(runtime, spec, {"dir": str(rendezvous), "expected": 3})
        with lock:
            results.append(result)

    # Five callers, three workers at most: three meet at the rendezvous, two wait for a free worker.
    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 5
    assert all(result.function_error is None for result in results)
    pids = {document(result) for result in results}
    assert len(pids) == 3
    status = runtime.status()[spec.arn]
    assert status["cold_starts"] == 3
    assert status["workers_idle"] == 3
    assert status["throttles"] == 0


def test_throttles_when_no_worker_frees_up_within_the_timeout(make_runtime, function, tmp_path):
    runtime = make_runtime(lambda_max_concurrency=1)
    spec = function({"app.py": BLOCKING}, timeout_seconds=30)
    blocked, release = start_blocking(runtime, spec, tmp_path)
    # The wait for a free worker is bounded by the function's timeout (1 s here), then it throttles.
    with pytest.raises(LambdaServiceError) as throttled:
        invoke(runtime, replace(spec, timeout_seconds=1), {"started": "-", "release": "-"})
    assert throttled.value.status == 429
    assert throttled.value.code == "TooManyRequestsException"
    assert spec.name in throttled.value.message
    release.touch()
    blocked["thread"].join(timeout=10)
    assert blocked["result"].function_error is None
    assert runtime.status()[spec.arn]["throttles"] == 1


# --- function errors -------------------------------------------------------------------------------


def test_a_handler_exception_comes_back_as_aws_error_document(runtime, function, sink):
    spec = function(
        {
            "app.py": """
                def handler(event, context):
                    return helper(event)

                def helper(event):
                    raise ValueError("bad input: " + event["what"])
            """
        }
    )
    result = invoke(runtime, spec, {"what": "nothing"})
    assert result.function_error == UNHANDLED
    error = document(result)
    assert set(error) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad input: nothing"
    assert error["requestId"] == result.request_id
    assert len(error["stackTrace"]) == 2
    assert all("app.py" in frame and "worker.py" not in frame for frame in error["stackTrace"])
    assert "[ERROR] ValueError: bad input: nothing\nTraceback (most recent call last):\n" in result.log
    # The report and its traceback are one log event, as on AWS.
    report = wait_until(
        lambda: [m for _, _, m in sink.events() if m.startswith("[ERROR] ValueError")], what="[ERROR] event"
    )
    assert "raise ValueError" in report[0]
    # The worker survives a handler exception.
    assert invoke(runtime, spec, {"what": "again"}).init_duration_ms is None


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        (
            {"app.py": "def handler(e, c):\n    return 1\n"},
            "missing.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'missing': No module named 'missing'",
        ),
        (
            # The endpoint's venv has moto; the function's zip does not.
            {"app.py": "import moto\ndef handler(e, c):\n    return 1\n"},
            "app.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'app': No module named 'moto'",
        ),
        (
            {"app.py": "def handler(e, c):\n    return 1\n"},
            "app.nope",
            "Runtime.HandlerNotFound",
            "Handler 'nope' missing on module 'app'",
        ),
        (
            {"app.py": "def handler(e, c):\n    return 1\n"},
            "app",
            "Runtime.MalformedHandlerName",
            "Bad handler 'app': not enough values to unpack (expected 2, got 1)",
        ),
    ],
    ids=["no-module", "missing-dependency", "no-function", "malformed"],
)
def test_init_errors_fail_every_invocation_and_retry_init(runtime, function, files, handler, error_type, message):
    spec = function(files, handler=handler)
    for _ in range(2):
        result = invoke(runtime, spec)
        assert result.function_error == UNHANDLED
        assert document(result) == {
            "errorMessage": message,
            "errorType": error_type,
            "requestId": "",
            "stackTrace": [],
        }
        assert f"[ERROR] {error_type}: {message}" in result.log
        assert f"Status: error\tError Type: {error_type}" in result.log
    status = runtime.status()[spec.arn]
    assert status["cold_starts"] == 2  # a failed init is retried by the next invocation
    assert status["workers_idle"] == status["workers_busy"] == 0


def test_an_exception_while_importing_is_reported_with_its_traceback(runtime, function):
    spec = function({"app.py": "raise RuntimeError('no config')\ndef handler(e, c):\n    return 1\n"})
    error = document(invoke(runtime, spec))
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "no config"
    assert any("app.py" in frame for frame in error["stackTrace"])


def test_unserialisable_and_oversized_results_are_aws_errors(runtime, function):
    spec = function(
        {
            "app.py": """
                def handler(event, context):
                    return {1, 2} if event["kind"] == "set" else "x" * 7_000_000
            """
        }
    )
    unserialisable = invoke(runtime, spec, {"kind": "set"})
    assert unserialisable.function_error == UNHANDLED
    assert document(unserialisable)["errorType"] == "Runtime.MarshalError"
    assert document(unserialisable)["errorMessage"] == (
        "Unable to marshal response: Object of type set is not JSON serializable"
    )
    oversized = invoke(runtime, spec, {"kind": "big"})
    assert oversized.function_error == UNHANDLED
    assert document(oversized) == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }


# --- timeouts, delays and dying workers ------------------------------------------------------------


def test_a_timeout_kills_the_worker_and_what_it_started(runtime, function, tmp_path):
    spec = function(
        {
            "app.py": """
                import os, pathlib, subprocess, time

                def handler(event, context):
                    if event.get("hang"):
                        child = subprocess.Popen(["sleep", "60"])
                        pathlib.Path(event["pids"]).write_text(f"{os.getpid()} {child.pid}")
                        print("about to hang")
                        time.sleep(60)
                    return os.getpid()
            """
        },
        timeout_seconds=1,
    )
    pids_file = tmp_path / "pids"
    result = invoke(runtime, spec, {"hang": True, "pids": str(pids_file)})
    assert result.timed_out
    assert result.function_error == UNHANDLED
    assert document(result) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {result.request_id} Error: Task timed out after 1.00 seconds",
    }
    assert "about to hang\n" in result.log
    assert re.search(
        rf"^{ISO_TIME} {result.request_id} Task timed out after 1.00 seconds$",
        result.log,
        re.MULTILINE,
    )
    assert "\tStatus: timeout\n" in result.log
    worker_pid, child_pid = map(int, pids_file.read_text().split())
    assert process_gone(worker_pid)
    wait_until(lambda: process_gone(child_pid), what="the function's subprocess to be killed")
    after = invoke(runtime, spec)
    assert after.function_error is None
    assert after.init_duration_ms is not None  # a fresh worker
    assert document(after) != worker_pid
    assert runtime.status()[spec.arn]["timeouts"] == 1


def test_an_injected_delay_counts_against_the_timeout(runtime, function):
    spec = function({"app.py": "def handler(e, c):\n    return c.get_remaining_time_in_millis()\n"}, timeout_seconds=1)
    delayed = invoke(runtime, spec, delay_seconds=0.3)
    assert delayed.function_error is None
    assert document(delayed) <= 700
    too_late = invoke(runtime, spec, delay_seconds=1.5)
    assert too_late.timed_out
    assert document(too_late)["errorType"] == "Sandbox.Timedout"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("sys.exit(3)", "Runtime exited with error: exit status 3"),
        ("os._exit(1)", "Runtime exited with error: exit status 1"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "Runtime exited with error: signal: killed"),
        ("ctypes.string_at(0)", "Runtime exited with error: signal: segmentation fault"),
    ],
    ids=["sys.exit", "os._exit", "sigkill", "segfault"],
)
def test_a_worker_that_dies_mid_invocation_is_replaced(runtime, function, code, reason):
    spec = function(
        {
            "app.py": f"""
                import ctypes, os, signal, sys

                def handler(event, context):
                    if event.get("die"):
                        print("dying")
                        {code}
                    return os.getpid()
            """
        }
    )
    died = invoke(runtime, spec, {"die": True})
    assert died.worker_died
    assert died.function_error == UNHANDLED
    assert document(died) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {died.request_id} Error: {reason}",
    }
    assert f"RequestId: {died.request_id} Error: {reason}\nRuntime.ExitError\n" in died.log
    assert "dying\n" in died.log
    replacement = invoke(runtime, spec)
    assert replacement.function_error is None
    assert replacement.init_duration_ms is not None
    assert runtime.status()[spec.arn]["worker_deaths"] == 1


# --- logs -----------------------------------------------------------------------------------------


def test_output_and_logging_reach_the_invocation_log_and_the_sink(runtime, function, sink):
    spec = function(
        {
            "app.py": """
                import logging, os, subprocess, sys

                print("at init")
                logger = logging.getLogger("app")

                def handler(event, context):
                    print("from print")
                    logger.info("dropped: the root logger is at WARNING")
                    logging.getLogger().setLevel(logging.INFO)
                    logger.info("kept\\nover two lines")
                    print("to stderr", file=sys.stderr)
                    os.write(1, b"from the fd\\n")
                    subprocess.run(["echo", "from a subprocess"], check=True)
                    context.log("via context.log\\n")
                    logging.getLogger().setLevel(logging.WARNING)  # module state outlives the invocation
                    return "done"
            """
        }
    )
    first = invoke(runtime, spec)
    second = invoke(runtime, spec)
    for result in (first, second):
        request_id = result.request_id
        lines = result.log.splitlines()
        start = lines.index(f"START RequestId: {request_id} Version: $LATEST")
        end = lines.index(f"END RequestId: {request_id}")
        body = lines[start + 1 : end]
        assert "from print" in body
        assert "dropped: the root logger is at WARNING" not in result.log
        assert re.match(rf"^\[INFO\]\t{ISO_TIME}\t{request_id}\tkept$", body[1])
        assert body[2] == "over two lines"
        assert body[3:] == ["to stderr", "from the fd", "from a subprocess", "via context.log"]
        report = REPORT.search(result.log)
        assert report and report.group("id") == request_id
        assert lines[-1].startswith("REPORT") and lines[end + 1] == lines[-1]
    assert first.log.startswith("at init\n")
    assert "Init Duration" in first.log and "Init Duration" not in second.log

    def delivered() -> list[tuple[str, int, str]]:
        events = sink.events()
        return events if sum(m.startswith("REPORT") for _, _, m in events) == 2 else []

    events = wait_until(delivered, what="both invocations' logs in the sink")
    assert len({stream for stream, _, _ in events}) == 1
    assert LOG_STREAM.match(events[0][0])
    assert "".join(message for _, _, message in events) == first.log + second.log
    # One event per logging call, even over several lines.
    assert sum(m.endswith("\tkept\nover two lines\n") for _, _, m in events) == 2
    timestamps = [ts for _, ts, _ in events]
    assert timestamps == sorted(timestamps)


# --- revisions, retirement, idling, shutdown -------------------------------------------------------


def test_a_new_revision_gets_new_workers_and_old_ones_stop(runtime, function, tmp_path):
    old = function({"app.py": BLOCKING}, timeout_seconds=30)
    blocked, release = start_blocking(runtime, old, tmp_path)  # one worker busy on the old revision
    busy_pid = blocked["pid"]
    no_wait = str(tmp_path / "no-wait")  # started and released at once
    idle_pid = document(invoke(runtime, old, {"started": no_wait, "release": no_wait}))["pid"]
    assert busy_pid != idle_pid  # a second worker, now idle

    new_code = old.code_dir.parent / "v2"
    new_code.mkdir()
    (new_code / "app.py").write_text("import os\ndef handler(e, c):\n    return ['v2', os.getpid()]\n")
    new = replace(old, code_dir=new_code, revision_id=str(uuid.uuid4()))
    version, new_pid = document(invoke(runtime, new))
    assert version == "v2"
    assert new_pid not in (idle_pid, busy_pid)
    wait_until(lambda: process_gone(idle_pid), what="the idle old-revision worker to stop")
    assert not process_gone(busy_pid)  # busy: it finishes its invocation first

    release.touch()
    blocked["thread"].join(timeout=10)
    assert blocked["result"].function_error is None
    wait_until(lambda: process_gone(busy_pid), what="the old-revision worker to exit after its invocation")
    assert runtime.status()[old.arn]["workers_idle"] == 1


def test_retire_stops_the_function_s_workers(runtime, function):
    spec = function({"app.py": ECHO})
    pid = document(invoke(runtime, spec))["pid"]
    runtime.retire(spec.arn)
    assert process_gone(pid)
    assert runtime.status()[spec.arn]["workers_idle"] == 0
    again = invoke(runtime, spec)
    assert again.init_duration_ms is not None
    assert document(again)["pid"] != pid


def test_idle_workers_are_stopped_after_the_idle_time(make_runtime, function):
    runtime = make_runtime(lambda_idle_seconds=0.2)
    spec = function({"app.py": ECHO})
    pid = document(invoke(runtime, spec))["pid"]
    wait_until(lambda: process_gone(pid), what="the idle worker to be stopped")
    assert runtime.status()[spec.arn]["workers_idle"] == 0


def test_shutdown_leaves_no_process_or_thread_behind(make_runtime, function, tmp_path):
    runtime = make_runtime()
    idle = function({"app.py": ECHO})
    idle_pid = document(invoke(runtime, idle))["pid"]
    busy = function({"app.py": BLOCKING}, timeout_seconds=30)
    blocked, _release = start_blocking(runtime, busy, tmp_path)  # never released: shutdown must end it

    runtime.shutdown()
    runtime.shutdown()  # idempotent
    blocked["thread"].join(timeout=10)
    assert blocked["result"].worker_died
    assert process_gone(idle_pid) and process_gone(blocked["pid"])
    assert not has_children()
    assert not runtime_threads()
    with pytest.raises(LambdaServiceError):
        invoke(runtime, idle)
