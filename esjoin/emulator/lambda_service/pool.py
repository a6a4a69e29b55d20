"""The runtime's worker pools: per function, its warm workers and how many may run at once.

Each worker process is one execution environment ("a warm container"): it serves one function
revision, one invocation at a time, and keeps its module globals between invocations. A function gets
up to ``ESJOIN_LAMBDA_MAX_CONCURRENCY`` workers when invoked in parallel; a worker idle for
``ESJOIN_LAMBDA_IDLE_SECONDS`` is stopped by the ``lambda-idle-reaper`` thread.
https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html

Concurrency: when a function already runs its maximum number of workers and all are busy, acquire()
waits for one to free up, at most the function's timeout, then raises ``TooManyRequestsException``
(429). AWS throttles at once; waiting suits a local endpoint where event source mappings and tests
share one small machine, and the bound keeps a caller from hanging forever.

Lock order: the pool condition (``WorkerPools._lock``) guards the bookkeeping only. It is never held
across an invocation or I/O: workers are started (the runtime site's lock), stopped and killed (a
worker's stop lock, channel.py) outside it, so no other lock is ever taken while it is held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from esjoin.emulator.config import EmulatorConfig
from esjoin.emulator.invocation import FunctionSpec, InvocationResult, LambdaServiceError
from esjoin.emulator.lambda_service.channel import WorkerProcess

SHUTDOWN_WAIT_SECONDS = 10.0  # how long shutdown() waits for in-flight invocations to wind up

_log = logging.getLogger(__name__)


@dataclass
class FunctionPool:
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


class WorkerPools:
    """Every function's pool, the invocations in flight, and the idle reaper thread."""

    def __init__(
        self,
        config: EmulatorConfig,
        start_worker: Callable[[FunctionSpec, int], WorkerProcess],
        *,
        deterministic: bool = False,
    ) -> None:
        """`deterministic` (deterministic mode): idle workers stay, so which invocation finds a warm worker
        depends on the schedule alone, never on the wall clock; and a function at its concurrency limit
        is throttled at once (the invocations that would free a worker cannot run while this one waits)."""
        self._config = config
        self._start_worker = start_worker
        self._lock = threading.Condition()
        self._pools: dict[str, FunctionPool] = {}
        self._workers: set[WorkerProcess] = set()  # every worker process not yet stopped
        self._in_flight = 0
        self._closed = False
        self._closing = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle_workers, name="lambda-idle-reaper", daemon=True)
        self._deterministic = deterministic
        if not deterministic:
            self._reaper.start()

    # --- invocations in flight ---

    def enter(self, spec: FunctionSpec) -> None:
        """An invocation begins (shutdown waits for it); raises once the runtime is shut down."""
        with self._lock:
            if self._closed:
                raise shut_down_error(spec)
            self._in_flight += 1

    def leave(self) -> None:
        """An invocation that entered has ended."""
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    # --- acquiring and releasing workers ---

    def acquire(self, spec: FunctionSpec) -> tuple[FunctionPool, WorkerProcess | None, int]:
        """An idle worker of the spec's revision, or None with a slot reserved for a new one (spawn()
        starts it), and the pool's generation; workers found stale on the way are stopped."""
        stale: list[WorkerProcess] = []
        try:
            return self._acquire(spec, stale)
        finally:
            for old in stale:
                self._stop(old)

    def _acquire(
        self, spec: FunctionSpec, stale: list[WorkerProcess]
    ) -> tuple[FunctionPool, WorkerProcess | None, int]:
        deadline = time.monotonic() + spec.timeout_seconds
        with self._lock:
            while True:
                if self._closed:
                    raise shut_down_error(spec)
                pool = self._pools.get(spec.arn)
                if pool is None:
                    pool = self._pools[spec.arn] = FunctionPool(spec.arn, spec.name, spec.revision_id)
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
                remaining = 0.0 if self._deterministic else deadline - time.monotonic()
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

    def spawn(self, pool: FunctionPool, spec: FunctionSpec, generation: int) -> WorkerProcess:
        """Start a new worker in the slot acquire() reserved; it is busy until released."""
        try:
            worker = self._start_worker(spec, generation)
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

    def release(self, pool: FunctionPool, worker: WorkerProcess, result: InvocationResult | None) -> None:
        """Count the invocation's result, then keep the worker warm or stop it (no result: it was left
        mid-exchange by an unexpected error)."""
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

    # --- retiring, reaping, shutting down ---

    def retire(self, function_arn: str) -> None:
        """Idle workers of the function stop now; busy ones finish their invocation and then stop."""
        with self._lock:
            pool = self._pools.get(function_arn)
            if pool is None:
                return
            pool.generation += 1
            stale, pool.idle = pool.idle, []
        for worker in stale:
            self._stop(worker)

    def close(self) -> None:
        """Stop every worker and the reaper; in-flight invocations end as their workers die."""
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
        if self._reaper.is_alive():
            self._reaper.join()

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


def shut_down_error(spec: FunctionSpec) -> LambdaServiceError:
    return LambdaServiceError(500, "ServiceException", f"The Lambda runtime is shut down; cannot invoke {spec.name}.")
