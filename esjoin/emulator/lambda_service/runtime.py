"""The Lambda runtime: uploaded Python functions run in local worker processes, as AWS runs them.

`LambdaRuntime` is what the Lambda service (models.py) uses: invoke a function spec, retire a
function's workers after an update or a delete, report their status, shut everything down. It wires
together the parts, each in a module of its own:

- ``pool.py``: each function's warm workers, the concurrency limit and its 429, the idle reaper;
- ``lifecycle.py``: one invocation on one worker (init, invoke, timeout, the result, the log hand-off);
- ``channel.py``: one worker process (starting it, the framed exchange over its socketpair, its output,
  killing it with everything it started);
- ``environment.py``: what a worker runs in (AWS's environment variables, NO_PROXY, the runtime site
  directory of boto3 symlinks, the installed worker program);
- ``worker_program.py``: the program inside a worker, and the wire protocol; ``logs.py``: log lines
  and their delivery.

Lock order: the runtime's locks are never nested. The pool condition (pool.py) guards bookkeeping only
and is never held across an invocation or I/O; a worker's stop lock (channel.py) and the runtime site's
lock (environment.py) are each taken under no other lock. No lock is held while a function runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol

from esjoin.emulator.aids.schedule import Scheduler
from esjoin.emulator.config import EmulatorConfig
from esjoin.emulator.invocation import FunctionSpec, InvocationRequest, InvocationResult
from esjoin.emulator.lambda_service.channel import WorkerProcess, start_worker
from esjoin.emulator.lambda_service.environment import RuntimeSite
from esjoin.emulator.lambda_service.function_logs import LogDelivery, log_stream_name
from esjoin.emulator.lambda_service.lifecycle import InvocationLifecycle
from esjoin.emulator.lambda_service.pool import WorkerPools


class LogSink(Protocol):
    def put(self, spec: FunctionSpec, log_stream: str, events: list[tuple[int, str]]) -> None:
        """Deliver log events (epoch ms, message) to CloudWatch Logs group spec.log_group."""


class LambdaRuntime:
    def __init__(
        self, config: EmulatorConfig, endpoint_url: str, log_sink: LogSink, scheduler: Scheduler | None = None
    ) -> None:
        self._site = RuntimeSite(Path(config.state_dir).resolve(), endpoint_url)
        # Deterministic mode: logs go to CloudWatch inside the invocation's own step, not on a thread.
        self._logs = LogDelivery(log_sink.put, synchronous=scheduler is not None)
        self._lifecycle = InvocationLifecycle(self._logs, scheduler)
        self._pools = WorkerPools(config, self._start_process, deterministic=scheduler is not None)
        self._scheduler = scheduler

    # --- public interface ---

    def prepare(self) -> None:
        """Build what starting a worker needs (the runtime site directory: ~0.3 s of package metadata).

        The endpoint calls this in the background once it is ready, so it does not delay readiness and
        the first cold start rarely waits for it; a worker start before then builds it itself."""
        self._site.site()

    def invoke(self, spec: FunctionSpec, request: InvocationRequest) -> InvocationResult:
        """Run one invocation, blocking until it ends. Function failures come back in the result.

        Raises LambdaServiceError 429 (TooManyRequestsException) only when the function has
        lambda_max_concurrency workers, all busy, and none frees up within the function's timeout."""
        self._pools.enter(spec)
        try:
            return self._invoke(spec, request)
        finally:
            self._pools.leave()

    def retire(self, function_arn: str) -> None:
        """The function's code or configuration changed, or it was deleted: stop its workers.

        Idle workers stop now; busy ones finish their invocation and then stop."""
        self._pools.retire(function_arn)

    def shutdown(self) -> None:
        """Stop every worker and join every thread; in-flight invocations end as Runtime.ExitError."""
        self._pools.close()
        self._logs.close()

    def status(self) -> dict:
        """Per function ARN: its workers (busy, idle, starting) and counters since the endpoint started."""
        return self._pools.status()

    # --- one invocation, on a worker from the pool ---

    def _invoke(self, spec: FunctionSpec, request: InvocationRequest) -> InvocationResult:
        pool, worker, generation = self._pools.acquire(spec)
        begin = time.monotonic()
        result: InvocationResult | None = None
        try:
            if worker is None:
                worker = self._pools.spawn(pool, spec, generation)
                result = self._lifecycle.cold_invoke(worker, spec, request, begin)
            else:
                result = self._lifecycle.warm_invoke(worker, spec, request, begin)
            return result
        finally:
            # A worker that failed (init error, timeout, death) is already stopped; one left mid-exchange
            # by an unexpected error (result None) is stopped by release().
            if worker is not None:
                self._pools.release(pool, worker, result)

    def _start_process(self, spec: FunctionSpec, generation: int) -> WorkerProcess:
        log_stream = log_stream_name(spec.version)
        environment = self._site.environment(spec, log_stream)
        deterministic = ""
        actor = self._scheduler.current() if self._scheduler is not None else None
        if actor is not None:
            environment["PYTHONHASHSEED"] = "0"  # set and dict orders the same in every run of a seed
            settings = {
                "actor": actor.name,
                "clockMs": self._scheduler.now_ms,
                "site": str(self._site.deterministic_site()),
            }
            deterministic = json.dumps(settings)
        return start_worker(
            spec,
            generation,
            worker_script=self._site.worker_script,
            site=self._site.site(),
            environment=environment,
            log_stream=log_stream,
            deterministic=deterministic,
        )
