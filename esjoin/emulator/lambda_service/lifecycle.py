"""One invocation's life cycle on one worker: init, invoke, timeout, the result and the log hand-off.

A new worker's init phase is awaited first (cold_invoke: AWS's 10 s init limit, a failed init is the
invocation's result); then the request goes over the worker's channel (channel.py) and the reply, a
timeout or the worker's death becomes an InvocationResult in AWS's terms (``Sandbox.Timedout``,
``Runtime.ExitError``, the function's own error document). Its log, START to REPORT, is handed to the
LogDelivery (logs.py) and returned with the result. Which worker runs it is pool.py's concern; a worker
that failed is stopped here, a healthy one is left to the pool. No lock is taken here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import time

from esjoin.emulator.aids.schedule import Scheduler
from esjoin.emulator.invocation import UNHANDLED, FunctionSpec, InvocationRequest, InvocationResult
from esjoin.emulator.lambda_service import worker_program
from esjoin.emulator.lambda_service.channel import EXIT_GRACE_SECONDS, DeadlinePassed, WorkerDied, WorkerProcess
from esjoin.emulator.lambda_service.function_logs import (
    LogDelivery,
    LogEvent,
    end_line,
    init_report_line,
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


class InvocationLifecycle:
    """Runs invocations on workers the pool hands out, and hands their logs to `logs`."""

    def __init__(self, logs: LogDelivery, scheduler: Scheduler | None = None) -> None:
        self._logs = logs
        self._scheduler = scheduler

    def cold_invoke(
        self, worker: WorkerProcess, spec: FunctionSpec, request: InvocationRequest, begin: float
    ) -> InvocationResult:
        """Wait for the new worker's init phase, then invoke. A failed init is this invocation's result
        (and the worker is discarded, so the next invocation retries init, as AWS does)."""
        request_id = request.request_id
        init_deadline = begin + INIT_TIMEOUT_SECONDS + spec.timeout_seconds
        try:
            header, body = worker.receive(init_deadline)
        except DeadlinePassed:
            worker.stop()
            return self._platform_failure(worker, spec, request, begin, timed_out=True)
        except WorkerDied:
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

    def warm_invoke(
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
        actor = self._scheduler.current() if self._scheduler is not None else None
        if actor is not None:  # the worker follows the virtual clock and seeds random and uuid4 per invocation
            seed = self._scheduler.new_id() >> 65
            header["det"] = {"actor": actor.name, "clockMs": self._scheduler.now_ms, "seed": seed}
        try:
            worker.send(header, request.payload or b"{}", deadline)
            reply, body = worker.receive(deadline)
        except DeadlinePassed:
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
        except WorkerDied:
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
