#!/usr/bin/python3
"""The Lambda runtime init of esjoin's offline LocalStack image (docs/backends.md, "Offline image").

LocalStack starts every Lambda container with /var/rapid/init as its entrypoint: normally its own
Go build of AWS's Runtime Interface Emulator, downloaded from GitHub at first use, which this
image cannot reach. This file takes its place (the image installs it where LocalStack's installer
would have put the binary). It is a translator between two documented protocols and runs nothing
of its own in between:

- towards LocalStack, the init's protocol (localstack/services/lambda_/invocation/executor_endpoint.py):
    <- POST :9563/invoke {"invoke-id", "invoked-function-arn", "payload", "trace-id"}, answered at once
    -> POST $LOCALSTACK_RUNTIME_ENDPOINT/status/$LOCALSTACK_RUNTIME_ID/ready    (or /error) after init
    -> POST $LOCALSTACK_RUNTIME_ENDPOINT/invocations/<id>/logs {"logs": ...}, then /response or /error
- towards the function, AWS's Lambda Runtime API on 127.0.0.1:9001
  (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html), served to AWS's own Python
  runtime interface client, awslambdaric (`python3 -m awslambdaric <handler>`), installed in the
  runtime image. Handler loading, the context object, error shapes and log formats are therefore
  AWS's, not a copy of them.

What the init itself does, as Lambda does: frames each invocation's output with START / END / REPORT
lines, enforces the function's timeout (the runtime is killed, the invocation fails with "Task timed
out after N.00 seconds", and the next one starts a fresh runtime), reports a runtime that exits
during an invocation as Runtime.ExitError, and runs the runtime as LOCALSTACK_USER when that user
exists in the image. Standard library only: it runs on the runtime image's /usr/bin/python3.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pwd
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INVOKE_PORT = 9563
RUNTIME_API = ("127.0.0.1", 9001)
RUNTIME_API_PREFIX = "/2018-06-01/runtime"
TASK_ROOT = os.environ.get("LAMBDA_TASK_ROOT") or "/var/task"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def say(message: str) -> None:
    """The init's own lines go to the container log, not to the function's logs."""
    sys.stderr.write(f"esjoin-lambda-init: {message}\n")
    sys.stderr.flush()


def post_to_localstack(path: str, body: bytes) -> None:
    url = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"].rstrip("/") + path
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with NO_PROXY.open(request, timeout=30) as response:
            response.read()
    except OSError as error:
        say(f"POST {url} failed: {error}")


@dataclass
class Invocation:
    request_id: str
    function_arn: str
    payload: bytes
    trace_id: str
    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    deadline_ms: int = 0
    done: bool = False
    prelude: str = ""  # what the runtime wrote before this invocation began (its init, say)

    def __post_init__(self) -> None:
        self.deadline_ms = int(time.time() * 1000 + self.timeout_s * 1000)


class Output:
    """The runtime's stdout and stderr (one pipe), kept for the current invocation's logs and echoed
    to the container log. drain() reads whatever the pipe holds now: called when the runtime posts a
    result, it takes everything the runtime wrote before posting (its writes returned first)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self.closed = False
        threading.Thread(target=self._follow, name="runtime-output", daemon=True).start()

    def _follow(self) -> None:
        while not self.closed:
            select.select([self.fd], [], [], 1.0)
            self.drain()

    def drain(self) -> None:
        with self._lock:
            while not self.closed:
                try:
                    chunk = os.read(self.fd, 65536)
                except BlockingIOError:
                    return
                if not chunk:
                    self.closed = True
                    os.close(self.fd)
                    return
                self._chunks.append(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()

    def take(self) -> str:
        self.drain()
        with self._lock:
            data, self._chunks = b"".join(self._chunks), []
        return data.decode("utf-8", errors="replace")


class Init:
    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.pending: Invocation | None = None  # received from LocalStack, not yet taken by the runtime
        self.current: Invocation | None = None  # taken by the runtime, no result yet
        self.ready_sent = False
        self.init_failed = False
        self.timeout_s = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT") or 3)
        self.memory_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or "128"
        self.version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION") or "$LATEST"
        self.process: subprocess.Popen | None = None
        self.output: Output | None = None
        self.peak_memory_kb = 0

    # ---- the runtime process -------------------------------------------------------------------

    def start_runtime(self) -> None:
        handler = os.environ.get("_HANDLER", "")
        env = dict(os.environ)
        for name in ("LOCALSTACK_CHMOD_PATHS", "LOCALSTACK_USER", "LOCALSTACK_RUNTIME_ENDPOINT"):
            env.pop(name, None)
        env.update(
            AWS_LAMBDA_RUNTIME_API="{}:{}".format(*RUNTIME_API),
            LAMBDA_TASK_ROOT=TASK_ROOT,
            LAMBDA_RUNTIME_DIR="/var/runtime",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join([TASK_ROOT, "/opt/python"]),
        )
        if env.get("AWS_EXECUTION_ENV", "AWS_Lambda_rapid") == "AWS_Lambda_rapid":
            env["AWS_EXECUTION_ENV"] = "AWS_Lambda_python{}.{}".format(*sys.version_info[:2])
        read_end, write_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", handler],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            cwd=TASK_ROOT,
            env=env,
            start_new_session=True,
            **runtime_user(),
        )
        os.close(write_end)
        self.output = Output(read_end)
        self.peak_memory_kb = 0
        threading.Thread(target=self._watch, args=(self.process,), name="runtime-watch", daemon=True).start()

    def _watch(self, process: subprocess.Popen) -> None:
        """A runtime that exits by itself: an init failure before ready, Runtime.ExitError during an
        invocation, a fresh runtime for the next one either way (unless init failed)."""
        code = process.wait()
        with self.changed:
            if process is not self.process:
                return  # killed on purpose (timeout): that path has already restarted it
            current, self.current = self.current, None
            ready = self.ready_sent
        if not ready:
            if not self.init_failed:
                self.init_failed = True
                error = exit_error(f"Runtime exited with error: exit status {code}")
                post_to_localstack(f"/status/{os.environ['LOCALSTACK_RUNTIME_ID']}/error", error)
            return
        if current is not None and not current.done:
            current.done = True
            message = f"RequestId: {current.request_id} Error: Runtime exited with error: exit status {code}"
            self.finish(current, "error", exit_error(message), status="error")
        self.start_runtime()

    def note_memory(self) -> None:
        """Lambda's "Max Memory Used": the runtime's peak resident set (VmHWM), read while it lives."""
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak_memory_kb = max(self.peak_memory_kb, int(line.split()[1]))
        except (OSError, ValueError, AttributeError):
            pass

    # ---- LocalStack's side ---------------------------------------------------------------------

    def invoke(self, request: dict) -> None:
        invocation = Invocation(
            request_id=request["invoke-id"],
            function_arn=request.get("invoked-function-arn", ""),
            payload=(request.get("payload") or "").encode(),
            trace_id=request.get("trace-id") or "",
            timeout_s=self.timeout_s,
        )
        with self.changed:
            self.pending = invocation
            self.changed.notify_all()
        timer = threading.Timer(self.timeout_s, self.time_out, args=(invocation,))
        timer.daemon = True
        timer.start()

    def time_out(self, invocation: Invocation) -> None:
        with self.changed:
            if invocation.done:
                return
            invocation.done = True
            if self.pending is invocation:
                self.pending = None
            self.current = None
            process, self.process = self.process, None
        if process is not None:
            with_suppressed(os.killpg, process.pid, signal.SIGKILL)
            process.wait()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        message = f"{stamp} {invocation.request_id} Task timed out after {self.timeout_s:.2f} seconds"
        error = {"errorType": "Sandbox.Timedout", "errorMessage": message}
        self.finish(invocation, "error", json.dumps(error).encode(), status="timeout", extra=message + "\n")
        self.start_runtime()

    def finish(self, invocation: Invocation, kind: str, body: bytes, status: str = "", extra: str = "") -> None:
        """Logs first (LocalStack attaches them to the result it is about to get), then the result."""
        self.note_memory()
        text = self.output.take() if self.output else ""
        elapsed_ms = (time.monotonic() - invocation.started) * 1000
        used_mb = max(1, math.ceil(self.peak_memory_kb / 1024)) if self.peak_memory_kb else self.memory_mb
        status_field = f"\tStatus: {status}" if status else ""
        logs = (
            f"{invocation.prelude}START RequestId: {invocation.request_id} Version: {self.version}\n"
            f"{text}{extra}END RequestId: {invocation.request_id}\n"
            f"REPORT RequestId: {invocation.request_id}\tDuration: {elapsed_ms:.2f} ms\t"
            f"Billed Duration: {math.ceil(elapsed_ms)} ms\tMemory Size: {self.memory_mb} MB\t"
            f"Max Memory Used: {used_mb} MB{status_field}\n"
        )
        post_to_localstack(f"/invocations/{invocation.request_id}/logs", json.dumps({"logs": logs}).encode())
        post_to_localstack(f"/invocations/{invocation.request_id}/{kind}", body)

    # ---- the Runtime API side ------------------------------------------------------------------

    def next_invocation(self) -> Invocation:
        with self.changed:
            first = not self.ready_sent
            self.ready_sent = True
        if first:
            post_to_localstack(f"/status/{os.environ['LOCALSTACK_RUNTIME_ID']}/ready", b"{}")
        with self.changed:
            while self.pending is None:
                self.changed.wait()
            invocation, self.pending = self.pending, None
            self.current = invocation
        invocation.prelude = self.output.take() if self.output else ""
        invocation.started = time.monotonic()
        return invocation

    def result(self, request_id: str, kind: str, body: bytes) -> bool:
        with self.changed:
            invocation = self.current
            if invocation is None or invocation.request_id != request_id or invocation.done:
                return False
            invocation.done = True
            self.current = None
        self.finish(invocation, kind, body)
        return True

    def init_error(self, body: bytes) -> None:
        with self.changed:
            self.init_failed = True
            self.ready_sent = True  # LocalStack takes one startup verdict
        post_to_localstack(f"/status/{os.environ['LOCALSTACK_RUNTIME_ID']}/error", body)


def with_suppressed(function, *args) -> None:
    with contextlib.suppress(OSError):
        function(*args)


def exit_error(message: str) -> bytes:
    return json.dumps({"errorType": "Runtime.ExitError", "errorMessage": message}).encode()


def runtime_user() -> dict:
    """Run the handler unprivileged as Lambda does: as LOCALSTACK_USER (LocalStack's LAMBDA_INIT_USER)
    or, like LocalStack's own init, sbx_user1051 when unset, if the image has that user."""
    name = os.environ.get("LOCALSTACK_USER", "sbx_user1051")
    if not name or name == "root" or os.getuid() != 0:
        return {}
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        say(f"no user {name!r} in the runtime image: the handler runs as root")
        return {}
    with_suppressed(os.chown, "/tmp", user.pw_uid, user.pw_gid)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def apply_chmod_paths() -> None:
    for entry in json.loads(os.environ.get("LOCALSTACK_CHMOD_PATHS") or "[]"):
        with_suppressed(os.chmod, entry["path"], int(entry["mode"], 8))


def is_result(parts: list[str]) -> bool:
    """invocation/<request id>/response or invocation/<request id>/error"""
    return len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error")


def make_handler(init: Init, runtime_side: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # awslambdaric keeps its connection open

        def log_message(self, format: str, *args) -> None:
            pass

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if runtime_side and self.path == f"{RUNTIME_API_PREFIX}/invocation/next":
                invocation = init.next_invocation()
                headers = {
                    "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
                    "Lambda-Runtime-Trace-Id": invocation.trace_id,
                }
                self.answer(200, invocation.payload, headers)
                return
            self.answer(404, b'{"errorType": "NotFound"}')

        def do_POST(self) -> None:
            body = self.body()
            if not runtime_side:
                if self.path == "/invoke":
                    init.invoke(json.loads(body))
                    self.answer(200, b"{}")
                else:
                    self.answer(404, b'{"errorType": "NotFound"}')
                return
            parts = self.path[len(RUNTIME_API_PREFIX) :].strip("/").split("/")
            if self.path.startswith(RUNTIME_API_PREFIX) and parts == ["init", "error"]:
                init.init_error(body)
                self.answer(202, b'{"status": "OK"}')
            elif self.path.startswith(RUNTIME_API_PREFIX) and is_result(parts):
                if init.result(parts[1], parts[2], body):
                    self.answer(202, b'{"status": "OK"}')
                else:
                    self.answer(400, b'{"errorType": "InvalidRequestID", "errorMessage": "no invocation in progress"}')
            else:
                self.answer(404, b'{"errorType": "NotFound"}')

    return Handler


def main() -> None:
    apply_chmod_paths()
    init = Init()
    runtime_api = ThreadingHTTPServer(RUNTIME_API, make_handler(init, runtime_side=True))
    invoke_api = ThreadingHTTPServer(("0.0.0.0", INVOKE_PORT), make_handler(init, runtime_side=False))
    for server in (runtime_api, invoke_api):
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    init.start_runtime()
    threading.Event().wait()


if __name__ == "__main__":
    main()
