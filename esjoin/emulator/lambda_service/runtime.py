"""The Lambda runtime: uploaded Python functions run in local worker processes, as AWS runs them.

Each worker process is one execution environment ("a warm container"): it serves one function
revision, one invocation at a time, and keeps its module globals between invocations. A function gets
up to ``ESJOIN_LAMBDA_MAX_CONCURRENCY`` workers when invoked in parallel; a worker idle for
``ESJOIN_LAMBDA_IDLE_SECONDS`` is stopped. https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html

Isolation: a worker is the endpoint's interpreter run without site processing (``python -S -B``), its
``sys.path`` the function's code directory plus a directory holding only boto3 and its dependencies
(symlinks into the endpoint's site-packages, ``<state_dir>/runtime-site``). So the function imports
what its zip holds and what AWS's runtime provides, never the endpoint's own code or test tools: a
packaging mistake fails here as it would on AWS. The environment is built from scratch (AWS's reserved
variables, dummy credentials, ``AWS_ENDPOINT_URL`` pointing at this endpoint, then the function's own
variables); nothing of the endpoint's environment leaks in (no AWS_PROFILE, no proxy settings).

Killing: each worker leads its own process group and is a child subreaper (worker.py), so whatever the
function started stays its descendant even after ``setsid`` or a double fork. A timeout, a retirement
(update, DeleteFunction) or shutdown stops the worker, finds every descendant in /proc, stops and kills
them all, then kills the worker and its group (``_kill_environment``): nothing the function started
outlives its execution environment. Without /proc (not Linux) only the group kill remains.

Concurrency: when a function already runs its maximum number of workers and all are busy, invoke()
waits for one to free up, at most the function's timeout, then raises ``TooManyRequestsException``
(429). AWS throttles at once; waiting suits a local endpoint where event source mappings and tests
share one small machine, and the bound keeps a caller from hanging forever.

The worker program and its wire protocol are in ``worker.py``; log lines and delivery in ``logs.py``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.metadata
import json
import logging
import math
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from esjoin.emulator.config import EmulatorConfig
from esjoin.emulator.invocation import (
    UNHANDLED,
    FunctionSpec,
    InvocationRequest,
    InvocationResult,
    LambdaServiceError,
)
from esjoin.emulator.lambda_service import worker_program
from esjoin.emulator.lambda_service.logs import (
    LogDelivery,
    LogEvent,
    WorkerOutputDecoder,
    end_line,
    init_report_line,
    log_stream_name,
    now_ms,
    report_line,
    runtime_exit_line,
    start_line,
    timeout_line,
    timeout_message,
)

INIT_TIMEOUT_SECONDS = 10.0
"""AWS gives the init phase 10 s; past that, init goes on inside the first invocation and counts
against the function's timeout (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html#runtimes-lifecycle-ib)."""
EXIT_GRACE_SECONDS = 2.0  # after a worker closed its channel, how long it may take to exit on its own
OUTPUT_DRAIN_SECONDS = 0.5  # after a worker died, how long to wait for the last of its output
SHUTDOWN_WAIT_SECONDS = 10.0  # how long shutdown() waits for in-flight invocations to wind up
KILL_ROUNDS = 16  # /proc walks to catch processes forked while their parents were being stopped
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
READ_CHUNK = 1 << 20
RUNTIME_PACKAGES = ("boto3",)  # what AWS's Python runtime provides, with their dependencies

_log = logging.getLogger(__name__)


class LogSink(Protocol):
    def put(self, spec: FunctionSpec, log_stream: str, events: list[tuple[int, str]]) -> None:
        """Deliver log events (epoch ms, message) to CloudWatch Logs group spec.log_group."""


# --- one worker process -----------------------------------------------------------------------------


class _DeadlinePassed(Exception):
    pass


class _WorkerDied(Exception):
    pass


class WorkerProcess:
    """One execution environment: a worker process, its control channel and its log output."""

    def __init__(
        self,
        spec: FunctionSpec,
        process: subprocess.Popen,
        control: socket.socket,
        output_fd: int,
        log_token: str,
        log_stream: str,
        generation: int,
    ) -> None:
        self.revision_id = spec.revision_id
        self.generation = generation
        self.process = process
        self.pid = process.pid
        self.control = control
        self.output_fd = output_fd
        self.log_stream = log_stream
        self.max_memory_kb = 0
        self.idle_since = 0.0
        self._decoder = WorkerOutputDecoder(worker_program.log_marker(log_token))
        self._events: list[LogEvent] = []
        self._inbox = bytearray()
        self._poller = select.poll()
        self._poller.register(control.fileno(), select.POLLIN)
        self._poller.register(output_fd, select.POLLIN)
        self._output_open = True
        self._stop_lock = threading.Lock()
        self._stopped = False

    # The exchange: only the thread holding the worker (busy) calls these.

    def send(self, header: dict, body: bytes, deadline: float) -> None:
        try:
            for chunk in worker_program.encode_message(header, body):
                self.control.settimeout(_remaining(deadline))
                self.control.sendall(chunk)
        except TimeoutError:
            raise _DeadlinePassed() from None
        except OSError as error:
            raise _WorkerDied() from error

    def receive(self, deadline: float) -> tuple[dict, bytes]:
        """The worker's next message; its output so far is decoded into log events on the way."""
        while True:
            message = self._next_message()
            if message is not None:
                self._read_output()  # all it wrote before answering is in the pipe by now
                self._events.extend((now_ms(), line) for line in self._decoder.flush())
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _DeadlinePassed()
            for fd, _mask in self._poller.poll(math.ceil(remaining * 1000)):
                if fd == self.output_fd:
                    self._read_output()
                    continue
                try:
                    data = self.control.recv(READ_CHUNK)
                except (BlockingIOError, TimeoutError):
                    continue
                except OSError as error:
                    raise _WorkerDied() from error
                if not data:
                    raise _WorkerDied()
                self._inbox += data

    def take_events(self) -> list[LogEvent]:
        events, self._events = self._events, []
        return events

    def _next_message(self) -> tuple[dict, bytes] | None:
        frame = worker_program.FRAME
        if len(self._inbox) < frame.size:
            return None
        header_length, body_length = frame.unpack_from(self._inbox)
        end = frame.size + header_length + body_length
        if len(self._inbox) < end:
            return None
        header = json.loads(self._inbox[frame.size : frame.size + header_length])
        body = bytes(self._inbox[frame.size + header_length : end])
        del self._inbox[:end]
        return header, body

    def _read_output(self) -> bool:
        """Read what the pipe holds now; False once every writer closed it."""
        while self._output_open:
            try:
                data = os.read(self.output_fd, 65536)
            except BlockingIOError:
                return True
            if not data:
                self._output_open = False
                self._poller.unregister(self.output_fd)
                break
            stamp = now_ms()
            self._events.extend((stamp, line) for line in self._decoder.feed(data))
        return False

    # Life cycle: any thread.

    def exited(self) -> bool:
        """Whether the process has ended (without reaping it, so its process group id stays ours)."""
        if self._stopped:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, now; stop() reaps it."""
        with self._stop_lock:
            if not self._stopped and self.process.returncode is None:
                _kill_environment(self.pid, reaped=False)

    def stop(self, exit_grace: float = 0.0) -> None:
        """Kill the worker and everything it started, reap it, collect its last output, close the channels.

        `exit_grace`: a worker that already closed its channel is dying on its own; give it that long,
        so its exit status is its own and not our SIGKILL."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            if exit_grace > 0:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=exit_grace)
            # Also whatever the function started; a no-op once all are gone. A worker reaped by the grace
            # wait has no descendants left to find: its pid may already belong to someone else.
            _kill_environment(self.pid, reaped=self.process.returncode is not None)
            self.process.wait()
            drain_until = time.monotonic() + OUTPUT_DRAIN_SECONDS
            while (
                self._read_output()
                and time.monotonic() < drain_until
                and self._poller.poll(math.ceil(_remaining(drain_until) * 1000))
            ):
                pass  # a process outside the group may still hold the pipe: give up at the deadline
            self._events.extend((now_ms(), line) for line in self._decoder.flush())
            self.control.close()
            os.close(self.output_fd)

    def exit_reason(self) -> str:
        """Lambda's words for how the runtime ended (Runtime.ExitError's message)."""
        code = self.process.returncode
        if code is None or code == 0:
            return "Runtime exited without providing a reason"
        if code > 0:
            return f"Runtime exited with error: exit status {code}"
        # Lambda quotes Go's os.ProcessState: "signal: killed", "signal: segmentation fault", ...
        name = signal.strsignal(-code) or f"signal {-code}"
        return f"Runtime exited with error: signal: {name.lower()}"


def _kill_environment(pid: int, *, reaped: bool) -> None:
    """SIGKILL a worker and every process it started, including those that left its process group.

    The worker is stopped first, then its descendants, round after round until a walk of /proc finds no
    new one: a stopped process cannot fork, and a fork racing the stop either shows up in the next walk
    or is abandoned by the kernel (a pending signal fails it). Only then is everything killed, so no
    process re-parents out of the tree (to init) between the walk and the kill. The worker is a child
    subreaper (worker.py), so orphans (a double-forked daemon) are in its tree too. The process group is
    killed as well: it is all there is without /proc.

    `reaped`: the worker's pid has been waited for and may be reused; then only its group is killed."""
    if not reaped:
        _signal(pid, signal.SIGSTOP)
        stopped: set[int] = set()
        for _ in range(KILL_ROUNDS):
            found = _descendants(pid) - stopped
            if not found:
                break
            for descendant in found:
                _signal(descendant, signal.SIGSTOP)
            stopped |= found
        else:
            _log.warning("worker %d: its processes kept forking while being stopped; some may survive", pid)
        for descendant in stopped:
            _signal(descendant, signal.SIGKILL)
        _signal(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _descendants(root: int) -> set[int]:
    """Every process below `root` in the process tree (by the parent pid in /proc/<pid>/stat); empty
    without /proc. Zombies are included: signalling them is harmless."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:  # exited since the listing
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ")" ends it.
        fields = stat[stat.rfind(b")") + 2 :].split(maxsplit=2)
        if len(fields) >= 2 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(name))
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _remaining(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


# --- the pool ---------------------------------------------------------------------------------------


@dataclass
class _FunctionPool:
    """A function's workers. Idle ones are reused last-in first-out, so surplus ones age out."""

    arn: str
    name: str
    revision_id: str
    generation: int = 0  # bumped by retire(): older workers are stopped when they come back
    idle: list[WorkerProcess] = field(default_factory=list)
    busy: set[WorkerProcess] = field(default_factory=set)
    starting: int = 0
    invocations: int = 0
    cold_starts: int = 0
    errors: int = 0
    timeouts: int = 0
    worker_deaths: int = 0
    throttles: int = 0

    def workers(self) -> int:
        return len(self.idle) + len(self.busy) + self.starting


class LambdaRuntime:
    def __init__(self, config: EmulatorConfig, endpoint_url: str, log_sink: LogSink) -> None:
        self._config = config
        self._endpoint_url = endpoint_url
        state_dir = Path(config.state_dir).resolve()
        self._runtime_dir = state_dir / "runtime"
        self._worker_script = _install_worker(self._runtime_dir)
        self._runtime_site_dir = state_dir / "runtime-site"
        self._runtime_site: Path | None = None  # built by prepare() or by the first worker start
        self._runtime_site_lock = threading.Lock()
        self._lock = threading.Condition()
        self._pools: dict[str, _FunctionPool] = {}
        self._workers: set[WorkerProcess] = set()  # every worker process not yet stopped
        self._in_flight = 0
        self._closed = False
        self._closing = threading.Event()
        self._logs = LogDelivery(log_sink.put)
        self._reaper = threading.Thread(
            target=self._reap_idle_workers, name="lambda-idle-reaper", daemon=True
        )
        self._reaper.start()

    # --- public interface ---

    def prepare(self) -> None:
        """Build what starting a worker needs (the runtime site directory: ~0.3 s of package metadata).

        The endpoint calls this in the background once it is ready, so it does not delay readiness and
        the first cold start rarely waits for it; a worker start before then builds it itself."""
        self._site()

    def invoke(self, spec: FunctionSpec, request: InvocationRequest) -> InvocationResult:
        """Run one invocation, blocking until it ends. Function failures come back in the result.

        Raises LambdaServiceError 429 (TooManyRequestsException) only when the function has
        lambda_max_concurrency workers, all busy, and none frees up within the function's timeout."""
        with self._lock:
            if self._closed:
                raise _shut_down_error(spec)
            self._in_flight += 1
        try:
            return self._invoke(spec, request)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._lock.notify_all()

    def retire(self, function_arn: str) -> None:
        """The function's code or configuration changed, or it was deleted: stop its workers.

        Idle workers stop now; busy ones finish their invocation and then stop."""
        with self._lock:
            pool = self._pools.get(function_arn)
            if pool is None:
                return
            pool.generation += 1
            stale, pool.idle = pool.idle, []
        for worker in stale:
            self._stop(worker)

    def shutdown(self) -> None:
        """Stop every worker and join every thread; in-flight invocations end as Runtime.ExitError."""
        with self._lock:
            self._closed = True
            idle = [worker for pool in self._pools.values() for worker in pool.idle]
            for pool in self._pools.values():
                pool.idle = []
            running = list(self._workers)
            self._lock.notify_all()
        self._closing.set()
        for worker in running:
            worker.kill()
        for worker in idle:
            self._stop(worker)
        with self._lock:
            settled = self._lock.wait_for(
                lambda: self._in_flight == 0 and not self._workers, timeout=SHUTDOWN_WAIT_SECONDS
            )
            leftover = list(self._workers)
        if not settled:
            _log.warning("Lambda runtime shutdown: %d invocations did not wind up in time", len(leftover))
        for worker in leftover:
            self._stop(worker)
        self._reaper.join()
        self._logs.close()

    def status(self) -> dict:
        """Per function ARN: its workers (busy, idle, starting) and counters since the endpoint started."""
        with self._lock:
            return {
                arn: {
                    "function_name": pool.name,
                    "revision_id": pool.revision_id,
                    "workers_busy": len(pool.busy),
                    "workers_idle": len(pool.idle),
                    "workers_starting": pool.starting,
                    "invocations": pool.invocations,
                    "cold_starts": pool.cold_starts,
                    "errors": pool.errors,
                    "timeouts": pool.timeouts,
                    "worker_deaths": pool.worker_deaths,
                    "throttles": pool.throttles,
                }
                for arn, pool in self._pools.items()
            }

    # --- acquiring and releasing workers ---

    def _invoke(self, spec: FunctionSpec, request: InvocationRequest) -> InvocationResult:
        stale: list[WorkerProcess] = []
        try:
            pool, worker, generation = self._acquire(spec, stale)
        finally:
            for old in stale:
                self._stop(old)
        begin = time.monotonic()
        result: InvocationResult | None = None
        try:
            if worker is None:
                worker = self._spawn(pool, spec, generation)
                result = self._cold_invoke(worker, spec, request, begin)
            else:
                result = self._warm_invoke(worker, spec, request, begin)
            return result
        finally:
            # A worker that failed (init error, timeout, death) is already stopped; one left mid-exchange
            # by an unexpected error (result None) is stopped by _release.
            if worker is not None:
                self._release(pool, worker, result)

    def _acquire(
        self, spec: FunctionSpec, stale: list[WorkerProcess]
    ) -> tuple[_FunctionPool, WorkerProcess | None, int]:
        """An idle worker of the spec's revision, or None with a slot reserved for a new one."""
        deadline = time.monotonic() + spec.timeout_seconds
        with self._lock:
            while True:
                if self._closed:
                    raise _shut_down_error(spec)
                pool = self._pools.get(spec.arn)
                if pool is None:
                    pool = self._pools[spec.arn] = _FunctionPool(spec.arn, spec.name, spec.revision_id)
                if pool.revision_id != spec.revision_id:
                    # Updated: new invocations get new workers; busy old ones stop when released.
                    pool.revision_id = spec.revision_id
                    stale.extend(pool.idle)
                    pool.idle = []
                while pool.idle:
                    worker = pool.idle.pop()
                    if worker.exited():  # died while idle (a background thread called os._exit, ...)
                        stale.append(worker)
                        continue
                    pool.busy.add(worker)
                    return pool, worker, pool.generation
                if pool.workers() < self._config.lambda_max_concurrency:
                    pool.starting += 1
                    return pool, None, pool.generation
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pool.throttles += 1
                    raise LambdaServiceError(
                        429,
                        "TooManyRequestsException",
                        f"Rate Exceeded. Function {spec.name} is running {pool.workers()} concurrent "
                        f"invocations (ESJOIN_LAMBDA_MAX_CONCURRENCY={self._config.lambda_max_concurrency}) "
                        f"and none ended within {spec.timeout_seconds} s; retry later or raise the limit.",
                        {"Reason": "ConcurrentInvocationLimitExceeded", "Type": "User"},
                    )
                self._lock.wait(remaining)

    def _release(self, pool: _FunctionPool, worker: WorkerProcess, result: InvocationResult | None) -> None:
        with self._lock:
            pool.busy.discard(worker)
            if result is not None:
                pool.invocations += 1
                pool.errors += result.failed
                pool.timeouts += result.timed_out
                pool.worker_deaths += result.worker_died
            keep = (
                result is not None
                and not self._closed
                and worker.revision_id == pool.revision_id
                and worker.generation == pool.generation
                and not worker.exited()
            )
            if keep:
                worker.idle_since = time.monotonic()
                pool.idle.append(worker)
            self._lock.notify_all()
        if not keep:
            self._stop(worker)

    def _stop(self, worker: WorkerProcess) -> None:
        worker.stop()
        with self._lock:
            self._workers.discard(worker)
            self._lock.notify_all()

    def _reap_idle_workers(self) -> None:
        """Stop workers idle for lambda_idle_seconds. A worker that goes idle later expires later than
        any deadline computed now, so sleeping until the earliest current expiry misses none."""
        idle_seconds = self._config.lambda_idle_seconds
        while not self._closing.is_set():
            expired: list[WorkerProcess] = []
            now = time.monotonic()
            wake_at = now + idle_seconds
            with self._lock:
                for pool in self._pools.values():
                    keep = []
                    for worker in pool.idle:
                        expiry = worker.idle_since + idle_seconds
                        if expiry <= now:
                            expired.append(worker)
                        else:
                            keep.append(worker)
                            wake_at = min(wake_at, expiry)
                    pool.idle = keep
            for worker in expired:
                self._stop(worker)
            self._closing.wait(max(0.005, wake_at - time.monotonic()))

    # --- starting a worker ---

    def _spawn(self, pool: _FunctionPool, spec: FunctionSpec, generation: int) -> WorkerProcess:
        try:
            worker = self._start_process(spec, generation)
        except BaseException:
            with self._lock:
                pool.starting -= 1
                self._lock.notify_all()
            raise
        with self._lock:
            pool.starting -= 1
            pool.busy.add(worker)
            pool.cold_starts += 1
            self._workers.add(worker)
            closed = self._closed
        if closed:
            worker.kill()  # shutdown() began while the process was starting
        return worker

    def _start_process(self, spec: FunctionSpec, generation: int) -> WorkerProcess:
        log_token = secrets.token_hex(8)
        log_stream = log_stream_name(spec.version)
        environment = self._environment(spec, log_stream)
        parent_end, child_end = socket.socketpair()
        output_read, output_write = os.pipe()
        command = [
            sys.executable,
            "-S",  # no site-packages, no .pth files: the endpoint's editable install stays out
            "-B",  # no .pyc written next to the function's code
            str(self._worker_script),
            str(child_end.fileno()),
            str(self._site()),
            log_token,
            "0" if "LC_CTYPE" in environment else "1",
        ]
        try:
            process = subprocess.Popen(
                command,
                cwd=Path(spec.code_dir).resolve(),
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output_write,
                stderr=output_write,
                pass_fds=(child_end.fileno(),),
                start_new_session=True,  # its own process group: a kill takes its children too
            )
        except OSError as error:
            parent_end.close()
            os.close(output_read)
            raise LambdaServiceError(
                500,
                "ServiceException",
                f"Could not start a worker process for function {spec.name} in {spec.code_dir}: {error}",
            ) from error
        finally:
            child_end.close()
            os.close(output_write)
        os.set_blocking(output_read, False)
        return WorkerProcess(spec, process, parent_end, output_read, log_token, log_stream, generation)

    def _site(self) -> Path:
        with self._runtime_site_lock:
            if self._runtime_site is None:
                self._runtime_site = _install_runtime_site(self._runtime_site_dir)
            return self._runtime_site

    def _environment(self, spec: FunctionSpec, log_stream: str) -> dict[str, str]:
        return function_environment(
            spec,
            log_stream=log_stream,
            endpoint_url=self._endpoint_url,
            runtime_dir=self._runtime_dir,
            runtime_site=self._site(),
        )

    # --- one invocation ---

    def _cold_invoke(
        self, worker: WorkerProcess, spec: FunctionSpec, request: InvocationRequest, begin: float
    ) -> InvocationResult:
        """Wait for the new worker's init phase, then invoke. A failed init is this invocation's result
        (and the worker is discarded, so the next invocation retries init, as AWS does)."""
        request_id = request.request_id
        init_deadline = begin + INIT_TIMEOUT_SECONDS + spec.timeout_seconds
        try:
            header, body = worker.receive(init_deadline)
        except _DeadlinePassed:
            worker.stop()
            return self._platform_failure(worker, spec, request, begin, timed_out=True)
        except _WorkerDied:
            worker.stop(EXIT_GRACE_SECONDS)
            return self._platform_failure(worker, spec, request, begin, timed_out=False)
        init_ms = (time.monotonic() - begin) * 1000
        worker.max_memory_kb = header.get("max_memory_kb", 0)
        if header.get("type") == "init_error":
            worker.stop()  # the worker exits after a failed init; the next invocation starts afresh
            events = worker.take_events()
            error_type = _error_type(body)
            events.append((now_ms(), init_report_line(init_ms, error_type)))
            events.append((now_ms(), start_line(request_id, spec.version)))
            return self._complete(
                worker,
                spec,
                request,
                events,
                payload=body,
                function_error=UNHANDLED,
                duration_ms=init_ms,
                billed_ms=math.ceil(init_ms),
                status="error",
                error_type=error_type,
            )
        events = worker.take_events()
        # Past AWS's 10 s init limit the rest of init ate into the invocation's timeout.
        start = time.monotonic()
        deadline = min(start + spec.timeout_seconds, init_deadline)
        return self._run(worker, spec, request, events, start, deadline, init_ms)

    def _warm_invoke(
        self, worker: WorkerProcess, spec: FunctionSpec, request: InvocationRequest, begin: float
    ) -> InvocationResult:
        return self._run(worker, spec, request, [], begin, begin + spec.timeout_seconds, None)

    def _run(
        self,
        worker: WorkerProcess,
        spec: FunctionSpec,
        request: InvocationRequest,
        events: list[LogEvent],
        start: float,
        deadline: float,
        init_ms: float | None,
    ) -> InvocationResult:
        request_id = request.request_id
        events.append((now_ms(), start_line(request_id, spec.version)))
        header = {
            "request_id": request_id,
            "deadline_ms": time.time() * 1000 + (deadline - time.monotonic()) * 1000,
            "function_arn": spec.arn,
            "client_context": _decode_client_context(request.client_context),
            "trace_id": _trace_id(),
            "delay_seconds": request.delay_seconds,
        }
        try:
            worker.send(header, request.payload or b"{}", deadline)
            reply, body = worker.receive(deadline)
        except _DeadlinePassed:
            duration_ms = (time.monotonic() - start) * 1000
            worker.stop()
            events.extend(worker.take_events())
            events.append((now_ms(), timeout_line(request_id, spec.timeout_seconds, now_ms())))
            return self._complete(
                worker,
                spec,
                request,
                events,
                payload=_timeout_error(request_id, spec.timeout_seconds),
                function_error=UNHANDLED,
                duration_ms=duration_ms,
                billed_ms=math.ceil(spec.timeout_seconds * 1000 + (init_ms or 0)),
                init_ms=init_ms,
                status="timeout",
                timed_out=True,
            )
        except _WorkerDied:
            duration_ms = (time.monotonic() - start) * 1000
            worker.stop(EXIT_GRACE_SECONDS)
            return self._exit_error(worker, spec, request, events, duration_ms, init_ms)
        duration_ms = (time.monotonic() - start) * 1000
        worker.max_memory_kb = reply.get("max_memory_kb", worker.max_memory_kb)
        events.extend(worker.take_events())
        failed = reply.get("status") != "ok"
        error_type = _error_type(body) if failed else None
        platform_error = error_type == worker_program.RESPONSE_SIZE_TOO_LARGE
        return self._complete(
            worker,
            spec,
            request,
            events,
            payload=body,
            function_error=UNHANDLED if failed else None,
            duration_ms=duration_ms,
            billed_ms=math.ceil(duration_ms + (init_ms or 0)),
            init_ms=init_ms,
            status="error" if platform_error else None,
            error_type=error_type if platform_error else None,
        )

    def _exit_error(
        self,
        worker: WorkerProcess,
        spec: FunctionSpec,
        request: InvocationRequest,
        events: list[LogEvent],
        duration_ms: float,
        init_ms: float | None,
    ) -> InvocationResult:
        reason = worker.exit_reason()
        events.extend(worker.take_events())
        events.append((now_ms(), runtime_exit_line(request.request_id, reason)))
        return self._complete(
            worker,
            spec,
            request,
            events,
            payload=_platform_error("Runtime.ExitError", f"RequestId: {request.request_id} Error: {reason}"),
            function_error=UNHANDLED,
            duration_ms=duration_ms,
            billed_ms=math.ceil(duration_ms + (init_ms or 0)),
            init_ms=init_ms,
            status="error",
            error_type="Runtime.ExitError",
            worker_died=True,
        )

    def _platform_failure(
        self,
        worker: WorkerProcess,
        spec: FunctionSpec,
        request: InvocationRequest,
        begin: float,
        *,
        timed_out: bool,
    ) -> InvocationResult:
        """The init phase itself timed out or the process died during init."""
        duration_ms = (time.monotonic() - begin) * 1000
        events = worker.take_events()
        events.append((now_ms(), start_line(request.request_id, spec.version)))
        if not timed_out:
            return self._exit_error(worker, spec, request, events, duration_ms, None)
        events.append((now_ms(), timeout_line(request.request_id, spec.timeout_seconds, now_ms())))
        return self._complete(
            worker,
            spec,
            request,
            events,
            payload=_timeout_error(request.request_id, spec.timeout_seconds),
            function_error=UNHANDLED,
            duration_ms=duration_ms,
            billed_ms=math.ceil(duration_ms),
            status="timeout",
            timed_out=True,
        )

    def _complete(
        self,
        worker: WorkerProcess,
        spec: FunctionSpec,
        request: InvocationRequest,
        events: list[LogEvent],
        *,
        payload: bytes,
        function_error: str | None,
        duration_ms: float,
        billed_ms: int,
        init_ms: float | None = None,
        status: str | None = None,
        error_type: str | None = None,
        timed_out: bool = False,
        worker_died: bool = False,
    ) -> InvocationResult:
        """END and REPORT, the log to the sink, and the result."""
        request_id = request.request_id
        events.append((now_ms(), end_line(request_id)))
        events.append(
            (
                now_ms(),
                report_line(
                    request_id,
                    duration_ms=duration_ms,
                    billed_duration_ms=billed_ms,
                    memory_mb=spec.memory_mb,
                    max_memory_used_mb=math.ceil(worker.max_memory_kb / 1024),
                    init_duration_ms=init_ms,
                    status=status,
                    error_type=error_type,
                ),
            )
        )
        self._logs.submit(spec, worker.log_stream, events)
        return InvocationResult(
            request_id=request_id,
            payload=payload,
            function_error=function_error,
            log="".join(message for _, message in events),
            duration_ms=round(duration_ms, 2),
            billed_duration_ms=billed_ms,
            init_duration_ms=round(init_ms, 2) if init_ms is not None else None,
            timed_out=timed_out,
            worker_died=worker_died,
            executed_version=spec.version,
        )


# --- helpers ----------------------------------------------------------------------------------------


def function_environment(
    spec: FunctionSpec, *, log_stream: str, endpoint_url: str, runtime_dir: Path, runtime_site: Path
) -> dict[str, str]:
    """A worker's whole environment: AWS's runtime variables, then the function's own.

    https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
    Built from nothing, never from os.environ: the endpoint may run with AWS_PROFILE, AWS_CONFIG_FILE,
    AWS_ROLE_ARN, AWS_CA_BUNDLE or proxy settings of its user's, and a function's boto3 calls back to
    the endpoint must not see them (on AWS they could not). A proxy the function's own configuration
    names would carry those calls to a proxy that cannot reach this machine's loopback endpoint, so the
    loopback hosts and the endpoint's host are added to NO_PROXY (and no_proxy) whenever a proxy is set."""
    environment = {
        "_HANDLER": spec.handler,
        "AWS_REGION": spec.region,
        "AWS_DEFAULT_REGION": spec.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        "AWS_ENDPOINT_URL": endpoint_url,
        # A sandbox on AWS has no ~/.aws; keep the host's config and credentials files out too.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "LAMBDA_TASK_ROOT": str(Path(spec.code_dir).resolve()),
        "LAMBDA_RUNTIME_DIR": str(runtime_dir),
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        # The base interpreter's bin, not the venv's: a `python` subprocess must not see the endpoint.
        "PATH": f"{sys.base_prefix}/bin:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(runtime_site),
    }
    environment.update(spec.environment)
    if any(environment.get(name) for name in PROXY_VARIABLES):
        bypass = _no_proxy(environment, endpoint_url)
        environment["NO_PROXY"] = environment["no_proxy"] = bypass
    return environment


def _no_proxy(environment: dict[str, str], endpoint_url: str) -> str:
    """The function's NO_PROXY / no_proxy entries, then the loopback hosts and the endpoint's host."""
    entries: list[str] = []
    endpoint_host = urllib.parse.urlsplit(endpoint_url).hostname
    given = [environment.get("NO_PROXY", ""), environment.get("no_proxy", "")]
    for entry in [*",".join(given).split(","), *LOOPBACK_HOSTS, endpoint_host or ""]:
        entry = entry.strip()
        if entry and entry not in entries:
            entries.append(entry)
    return ",".join(entries)


def _shut_down_error(spec: FunctionSpec) -> LambdaServiceError:
    return LambdaServiceError(
        500, "ServiceException", f"The Lambda runtime is shut down; cannot invoke {spec.name}."
    )


def _platform_error(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}, separators=(",", ":")).encode()


def _timeout_error(request_id: str, timeout_seconds: float) -> bytes:
    message = f"RequestId: {request_id} Error: {timeout_message(timeout_seconds)}"
    return _platform_error("Sandbox.Timedout", message)


def _error_type(body: bytes) -> str:
    try:
        return str(json.loads(body).get("errorType") or "Unknown")
    except (ValueError, AttributeError):
        return "Unknown"


def _decode_client_context(client_context: str | None) -> str | None:
    """X-Amz-Client-Context is base64 JSON; the worker parses the JSON (and reports it if it is not)."""
    if not client_context:
        return None
    try:
        return base64.b64decode(client_context, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return client_context


def _trace_id() -> str:
    """An X-Ray trace header, as _X_AMZN_TRACE_ID carries one per invocation."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"


def _install_worker(runtime_dir: Path) -> Path:
    """Copy worker.py alone into its directory: the worker's own sys.path entry then holds nothing else."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    target = runtime_dir / "worker.py"
    source = Path(worker_program.__file__).read_bytes()
    if not target.is_file() or target.read_bytes() != source:
        temporary = runtime_dir / f".worker.py.{os.getpid()}.{secrets.token_hex(4)}"
        temporary.write_bytes(source)
        os.replace(temporary, target)
    return target


def _install_runtime_site(site_dir: Path) -> Path:
    """A directory with boto3 and its dependencies only (symlinks into the endpoint's site-packages).

    AWS's Python runtime provides boto3 and nothing else; anything more a function needs must be in
    its zip. Falls back to the whole site-packages directory if package metadata is unavailable."""
    try:
        entries = _runtime_package_entries()
    except importlib.metadata.PackageNotFoundError as error:
        import boto3

        fallback = Path(boto3.__file__).resolve().parent.parent
        _log.warning("no package metadata for %s; workers see all of %s", error, fallback)
        return fallback
    if site_dir.is_dir() and {p.name: p.resolve() for p in site_dir.iterdir()} == {
        name: path.resolve() for name, path in entries.items()
    }:
        return site_dir
    staging = site_dir.with_name(f".{site_dir.name}.{os.getpid()}.{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    for name, path in entries.items():
        (staging / name).symlink_to(path)
    shutil.rmtree(site_dir, ignore_errors=True)
    try:
        staging.rename(site_dir)
    except OSError:  # another runtime sharing this state directory built it at the same moment
        shutil.rmtree(staging, ignore_errors=True)
    return site_dir


def _runtime_package_entries() -> dict[str, Path]:
    """Top-level names (packages, modules, .dist-info) of RUNTIME_PACKAGES and what they require."""
    entries: dict[str, Path] = {}
    seen: set[str] = set()
    pending = list(RUNTIME_PACKAGES)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        distribution = importlib.metadata.distribution(name)
        for requirement in distribution.requires or []:
            if "extra ==" not in requirement:
                pending.append(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
        for file in distribution.files or []:
            top = file.parts[0]
            if top != ".." and top != "__pycache__":
                entries[top] = Path(distribution.locate_file(top))
    return entries

