"""The event source mapping engine: one worker per mapping, started, updated and stopped by the
Lambda API, questioned by the control API and the harness. The Lambda API creates the engine and hands
it what it needs (an `Invoker`, a role lookup); the engine never imports the Lambda service: what both
use (specs, results, errors, `default_role`) is in esjoin.emulator.invocation.

Pollers read Kinesis streams, DynamoDB streams and SQS queues from moto's backends in this process
and invoke functions through the `Invoker` the Lambda API provides, with AWS's semantics (see
pollers/stream.py and pollers/sqs.py). Checkpoints persist under `<state_dir>/checkpoints/`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from esjoin.emulator.aids.schedule import Scheduler
from esjoin.emulator.config import EmulatorConfig
from esjoin.emulator.event_source_mapping.checkpoints import CheckpointStore
from esjoin.emulator.event_source_mapping.mapping import EventSourceMapping
from esjoin.emulator.event_source_mapping.mapping_worker import EngineContext, MappingWorker
from esjoin.emulator.event_source_mapping.sender import Invoker
from esjoin.emulator.event_source_mapping.timing import PollTiming
from esjoin.emulator.invocation import LambdaServiceError, default_role
from esjoin.emulator.moto_layer.moto_backends import MotoBackends

log = logging.getLogger("esjoin.esm")

# Stopping waits this long for batches in flight to finish, so their outcome is checkpointed.
STOP_GRACE_SECONDS = 30.0


class EventSourceMappingEngine:
    def __init__(
        self,
        config: EmulatorConfig,
        moto: MotoBackends,
        invoke: Invoker,
        on_change: Callable[[str, dict], None],
        invoke_identity_arn: Callable[[str], str] | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        """`invoke_identity_arn(function_arn)`, optional: the function's execution role, which Kinesis
        events carry as invokeIdentityArn (default: arn:aws:iam::<account>:role/lambda-role)."""
        self._context = EngineContext(
            moto=moto,
            invoke=invoke,
            on_change=on_change,
            checkpoints=CheckpointStore(config.state_dir / "checkpoints"),
            timing=PollTiming.for_mode(config.timing),
            invoke_identity_arn=invoke_identity_arn or default_role,
            scheduler=scheduler,
        )
        self._workers: dict[str, MappingWorker] = {}
        self._lock = threading.Lock()
        self._shut_down = False

    # -- the Lambda API ------------------------------------------------------------------------

    def start(self, mapping: EventSourceMapping) -> None:
        """After CreateEventSourceMapping (or at endpoint start, for a mapping that exists)."""
        with self._lock:
            if self._shut_down:
                raise RuntimeError("the event source mapping engine is shut down")
            existing = self._workers.get(mapping.uuid)
        if existing is not None:
            existing.update(mapping.copy())
            return
        worker = MappingWorker(mapping.copy(), self._context)
        worker.start()
        with self._lock:
            self._workers[mapping.uuid] = worker
        log.info(
            "mapping %s started: %s -> %s (%s)",
            mapping.uuid,
            mapping.event_source_arn,
            mapping.function_arn,
            "enabled" if mapping.enabled else "disabled",
        )

    def update(self, mapping: EventSourceMapping) -> None:
        """After UpdateEventSourceMapping: applies from the next batch; Enabled starts or stops reading."""
        self._worker(mapping.uuid).update(mapping.copy())

    def stop(self, uuid: str) -> None:
        """DeleteEventSourceMapping: stop the worker (in-flight batches finish first) and forget its
        checkpoints."""
        with self._lock:
            worker = self._workers.pop(uuid, None)
        if worker is None:
            return
        worker.request_stop(STOP_GRACE_SECONDS)
        worker.join(STOP_GRACE_SECONDS + 5)
        self._context.checkpoints.delete(uuid)
        log.info("mapping %s stopped and deleted", uuid)

    # -- the control API -----------------------------------------------------------------------

    def pause(self, uuid: str) -> None:
        """Stop delivering new batches (in-flight ones finish); State does not change."""
        self._worker(uuid).pause()

    def resume(self, uuid: str) -> None:
        self._worker(uuid).resume()

    def checkpoint_documents(self) -> dict[str, str]:
        """Every mapping's checkpoint document (the file the worker resumes from), written now: for a
        state save. Pause the mappings first, so no batch completes in between."""
        with self._lock:
            workers = dict(self._workers)
        documents = {}
        for uuid, worker in workers.items():
            worker.checkpoint_now()
            path = self._context.checkpoints.path(uuid)
            if path.is_file():
                documents[uuid] = path.read_text()
        return documents

    def restore_checkpoint(self, uuid: str, document: str) -> None:
        """Put a saved checkpoint document in place before the mapping `uuid` starts (a state load)."""
        path = self._context.checkpoints.path(uuid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document)

    def duplicate_next(self, uuid: str, count: int) -> None:
        """Deliver each of the next `count` batches twice in a row (the second with origin.duplicate);
        the first delivery's outcome decides checkpoints and deletions."""
        if count < 0:
            raise LambdaServiceError(400, "InvalidParameterValueException", f"count must be >= 0, not {count}")
        self._worker(uuid).duplicate_next(count)

    def status(self, uuid: str) -> dict[str, Any]:
        return self._worker(uuid).status()

    def is_idle(self, uuid: str | None = None) -> bool:
        """Nothing pending in the source, buffered, in flight or waiting to be retried (for one mapping,
        or all). A disabled or paused mapping is idle once nothing is in flight."""
        with self._lock:
            if uuid is not None:
                worker = self._workers.get(uuid)
                workers = [worker] if worker is not None else []
            else:
                workers = list(self._workers.values())
        return all(worker.is_idle() for worker in workers)

    def shutdown(self) -> None:
        """Stop every worker (batches in flight get STOP_GRACE_SECONDS to finish); idempotent.
        Checkpoints stay: a new engine with the same state_dir resumes from them."""
        with self._lock:
            self._shut_down = True
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.request_stop(STOP_GRACE_SECONDS)
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 5
        for worker in workers:
            worker.join(max(0.1, deadline - time.monotonic()))
        if workers:
            log.info("event source mapping engine shut down (%d mappings)", len(workers))

    def _worker(self, uuid: str) -> MappingWorker:
        with self._lock:
            worker = self._workers.get(uuid)
        if worker is None:
            raise LambdaServiceError(
                404, "ResourceNotFoundException", f"The event source mapping {uuid} is not running in this endpoint"
            )
        return worker
