"""One mapping's worker: a thread that owns the mapping's poller from start() to stop().

The worker thread does all the poller's work (read, batch, interpret outcomes, checkpoint) in short
steps under the mapping's state lock, and sleeps between steps until something happens:
- the source is written: the ChangeNotifier calls the worker's listener in the writer's thread, which
  sets a flag and wakes the worker (no thread in between: each thread a write has to wake costs a
  GIL handoff, measured at several milliseconds a hop under load);
- a delivery completes: each delivery runs on its own invocation thread (the invoke call blocks for
  as long as the function runs), which hands its outcome back and wakes the worker;
- a deadline passes: batching window, retry backoff, AWS-timing poll, a message becoming visible;
- the API or control API changes something (update, pause, resume, stop).
The state lock is never held while waiting or invoking, and callbacks to the Lambda API (on_change)
are made with no lock held, so the API may call back into the engine.

Lock order: the state lock, then moto's lock. is_idle() takes neither the state lock nor moto's for
long: it reads an `IdleView` the worker publishes after every change, then compares it with the source
under moto's lock, so it is safe to call anywhere (even holding moto's lock). The other methods must
not be called while holding moto's lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from esjoin.emulator.aids.schedule import Actor, Scheduler
from esjoin.emulator.event_source_mapping.checkpoints import CheckpointStore
from esjoin.emulator.event_source_mapping.mapping import DISABLED, DYNAMODB, ENABLED, KINESIS, EventSourceMapping
from esjoin.emulator.event_source_mapping.pollers.base import Poller, PollerContext
from esjoin.emulator.event_source_mapping.pollers.dynamodb_streams import DynamoDBStreamSource
from esjoin.emulator.event_source_mapping.pollers.kinesis import KinesisStreamSource
from esjoin.emulator.event_source_mapping.pollers.sqs import SqsPoller
from esjoin.emulator.event_source_mapping.pollers.stream import StreamPoller
from esjoin.emulator.event_source_mapping.sender import Delivery, Invoker, Outcome, OutcomeKind, deliver
from esjoin.emulator.event_source_mapping.timing import PollTiming
from esjoin.emulator.invocation import LambdaServiceError
from esjoin.emulator.moto_layer.moto_backends import MotoBackends

log = logging.getLogger("esjoin.esm")

INVOCATION_JOIN_SECONDS = 0.1  # at join(), how long each finished invocation thread may take to exit
ERROR_PAUSE_SECONDS = 1.0  # after an unexpected error in a step, before trying again


@dataclass(frozen=True)
class IdleView:
    """What is_idle() needs, published by the worker under its state lock whenever it changes."""

    busy: bool  # in flight, buffered, waiting to be retried, or a report to the API under way
    held: bool  # disabled, paused or stopping: nothing happens until that changes
    positions: Any  # what was read, for the poller's source_pending()


@dataclass
class EngineContext:
    moto: MotoBackends
    invoke: Invoker
    on_change: Callable[[str, dict], None]
    checkpoints: CheckpointStore
    timing: PollTiming
    invoke_identity_arn: Callable[[str], str]
    scheduler: Scheduler | None = None  # deterministic mode: every step is granted (aids/schedule.py)


def make_poller(
    mapping: EventSourceMapping, context: PollerContext, invoke_identity_arn: Callable[[str], str]
) -> Poller:
    if mapping.source == KINESIS:
        source = KinesisStreamSource(context.moto, mapping.event_source_arn, invoke_identity_arn)
        return StreamPoller(mapping, context, source)
    if mapping.source == DYNAMODB:
        return StreamPoller(mapping, context, DynamoDBStreamSource(context.moto, mapping.event_source_arn))
    return SqsPoller(mapping, context)


class MappingWorker:
    def __init__(self, mapping: EventSourceMapping, engine: EngineContext) -> None:
        self.uuid = mapping.uuid
        self.mapping = mapping
        self.engine = engine
        self._state = threading.RLock()  # the poller's state: held for each step, API calls and status()
        self._wake = threading.Condition()  # guards what other threads hand to the worker
        self._completions: deque[tuple[Delivery, Outcome]] = deque()
        self._source_changed = True
        self._changed_while_held = False  # a write came while paused or disabled: read it on resuming
        self._kicked = False
        self._stopping = False
        self._stop_deadline = 0.0
        self._invocations: set[threading.Thread] = set()
        self._paused = False
        self._duplicates = 0
        self._active = mapping.enabled  # Enabled (reading) or Disabled, as last reported
        self._deadline: float | None = None
        self._reported: dict[str, Any] = {}
        self._unreported: dict[str, Any] = {}
        self._reporting = 0  # on_change calls under way (is_idle() waits for them: the API is up to date)
        self._idle_lock = threading.Lock()
        self._idle_view = IdleView(busy=True, held=False, positions=None)
        self.poller = make_poller(
            mapping,
            PollerContext(
                moto=engine.moto,
                timing=engine.timing,
                checkpoints=engine.checkpoints,
                dispatch=self._dispatch,
                report=self._report,
            ),
            engine.invoke_identity_arn,
        )
        self._stop_listening: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"esm-{mapping.uuid[:8]}", daemon=True)
        self._actor: Actor | None = None  # deterministic mode: this worker as the scheduler's actor

    # -- lifecycle (called by the engine) --------------------------------------------------------

    def start(self) -> None:
        # Listen before prepare(): a write after it is heard (_source_changed also starts True).
        self._stop_listening = self.engine.moto.notifier.listen(self.mapping.event_source_arn, self._on_source_write)
        with self._state:
            self.poller.prepare()  # LATEST is fixed here: a record written after start() returns is delivered
            self._report(state=ENABLED if self.mapping.enabled else DISABLED)
            self._publish()
        self._flush_reports()
        if self.engine.scheduler is not None:
            self._actor = self.engine.scheduler.spawn("esm")
        self._thread.start()

    def update(self, mapping: EventSourceMapping) -> None:
        with self._state:
            was_enabled = self.mapping.enabled
            self.mapping = mapping
            self.poller.mapping = mapping
            if was_enabled and not mapping.enabled:
                self.poller.release()
            if mapping.enabled and not self._active:
                # Enabling takes effect now (the checkpoint was rewound to when disabling completed), so
                # is_idle() right after update() already sees the records waiting in the source.
                self._active = True
                log.info("mapping %s enabled", self.uuid)
            if mapping.enabled == self._active:
                # Applied (from the next batch): the API moves from Updating/Enabling back to the state.
                # Disabling is reported by _transition() once the batches in flight are done.
                self._reported.pop("state", None)
                self._report(state=ENABLED if self._active else DISABLED)
            self._publish()
        self._flush_reports()
        self._kick()

    def pause(self) -> None:
        with self._state:
            self._paused = True
            self.poller.release()
            self._publish()
        self._kick()

    def resume(self) -> None:
        with self._state:
            self._paused = False
            self._changed_while_held = True
            self._publish()
        self._kick()

    def checkpoint_now(self) -> None:
        """Write the checkpoints now (a state save), under the state lock as the worker's own steps do."""
        with self._state:
            self.poller.persist()

    def duplicate_next(self, count: int) -> None:
        with self._state:
            self._duplicates += count

    def request_stop(self, grace_seconds: float) -> None:
        self._listen_no_more()  # the worker no longer needs waking by writes
        with self._wake:
            if not self._stopping:
                self._stopping = True
                self._stop_deadline = time.monotonic() + grace_seconds
            self._wake.notify()
        with self._idle_lock:
            self._idle_view = dataclasses.replace(self._idle_view, held=True)

    def join(self, timeout: float | None = None) -> None:
        scheduler, actor = self.engine.scheduler, self._actor
        if scheduler is not None and actor is not None:  # the worker stops when granted: let it
            scheduler.wait_until(f"stop {actor.name}", lambda: scheduler.done(actor))
        self._thread.join(timeout)
        self._listen_no_more()
        with self._wake:
            invocations = list(self._invocations)
        for thread in invocations:  # finished their delivery; only handing the outcome back
            thread.join(INVOCATION_JOIN_SECONDS)
        if self._thread.is_alive():
            log.warning("mapping %s: worker did not stop within %.1f s", self.uuid, timeout or 0)

    # -- questions -------------------------------------------------------------------------------

    def is_idle(self) -> bool:
        """Exact: a record or message written before the call makes it False until it is processed.

        The view may lag the worker by one step, never in the unsafe direction: new work needs new
        records, which the source check sees beyond the view's positions."""
        with self._idle_lock:
            view = self._idle_view
        if view.busy:
            return False
        if view.held:
            return True  # disabled, paused or stopping, nothing in flight: nothing will happen
        return not self.poller.source_pending(view.positions)

    def _publish(self) -> None:
        """Under the state lock: refresh the view is_idle() reads."""
        held = not self._running
        busy = bool(
            self.poller.in_flight() or self._unreported or self._reporting or (not held and self.poller.has_work())
        )
        view = IdleView(busy=busy, held=held, positions=None if busy or held else self.poller.read_positions())
        with self._idle_lock:
            self._idle_view = view

    def status(self) -> dict[str, Any]:
        with self._state:
            document = {
                "uuid": self.uuid,
                "eventSourceArn": self.mapping.event_source_arn,
                "functionArn": self.mapping.function_arn,
                "state": ENABLED if self._active else DISABLED,
                "enabled": self.mapping.enabled,
                "paused": self._paused,
                "lastProcessingResult": self._reported.get(
                    "last_processing_result", self.mapping.last_processing_result
                ),
                "inFlight": self.poller.in_flight(),
                "duplicatesPending": self._duplicates,
                **self.poller.status(),
            }
            document["idle"] = self.is_idle()
            return document

    @property
    def _running(self) -> bool:
        return self.mapping.enabled and self._active and not self._paused and not self._stopping

    # -- the worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        if self._actor is not None and self._run_scheduled(self._actor):
            return
        log.debug(
            "mapping %s: worker started for %s -> %s",
            self.uuid,
            self.mapping.event_source_arn,
            self.mapping.function_arn,
        )
        while True:
            with self._wake:
                if not (self._completions or self._source_changed or self._kicked or self._stopping):
                    self._wake.wait(self._timeout())
            if self._take_step():
                break
        log.debug("mapping %s: worker stopped", self.uuid)

    def _take_step(self) -> bool:
        """Take what other threads handed over and do one step; True when the worker is done."""
        with self._wake:
            completions = list(self._completions)
            self._completions.clear()
            source_changed, self._source_changed, self._kicked = self._source_changed, False, False
            stopping = self._stopping
        try:
            return self._step(completions, source_changed, stopping)
        except Exception:
            log.exception(
                "mapping %s (%s -> %s): unexpected error; the worker carries on in %.0f s",
                self.uuid,
                self.mapping.event_source_arn,
                self.mapping.function_arn,
                ERROR_PAUSE_SECONDS,
            )
            self._deadline = time.time() + ERROR_PAUSE_SECONDS
            return False
        finally:
            self._flush_reports()

    def _run_scheduled(self, actor: Actor) -> bool:
        """Deterministic mode: the same steps, each one granted by the scheduler; deadlines are virtual.
        True once the worker is done; False when the scheduler stopped first (the endpoint is stopping:
        the worker goes on unscheduled)."""
        scheduler = self.engine.scheduler
        assert scheduler is not None
        try:
            while True:
                due = None if self._deadline is None else int(self._deadline * 1000)
                scheduler.wait(actor, f"poll {self.mapping.event_source_arn.rsplit(':', 1)[-1]}", self._has_news, due)
                if scheduler.stopped:
                    return False
                if self._take_step():
                    break
        finally:
            scheduler.finish(actor)
        return True

    def _has_news(self) -> bool:
        """Deterministic mode: whether a step has something to do now (read without locks: written only
        by the actor holding the baton, read by the scheduler while none does)."""
        if self._completions or self._source_changed or self._kicked:
            return True
        return self._stopping and self.poller.in_flight() == 0

    def _timeout(self) -> float:
        idle = self.engine.timing.idle_recheck_seconds
        if self._stopping:
            return min(idle, max(0.0, self._stop_deadline - time.monotonic()))
        if self._deadline is None:
            return idle
        return min(idle, max(0.0, self._deadline - time.time()))

    def _step(self, completions: list[tuple[Delivery, Outcome]], source_changed: bool, stopping: bool) -> bool:
        """One round of work; True when the worker is done (stopping and nothing left in flight)."""
        now = time.time()
        with self._state:
            try:
                return self._step_locked(now, completions, source_changed, stopping)
            finally:
                self._publish()

    def _step_locked(
        self, now: float, completions: list[tuple[Delivery, Outcome]], source_changed: bool, stopping: bool
    ) -> bool:
        for delivery, outcome in completions:
            try:
                self.poller.complete(delivery, outcome, now)
            except Exception:
                log.exception(
                    "mapping %s: handling the outcome (%s) of batch %s failed",
                    self.uuid,
                    outcome.kind.value,
                    list(delivery.origin.batch_ids[:3]),
                )
        if stopping:
            self.poller.release()
            in_flight = self.poller.in_flight()
            if in_flight and time.monotonic() < self._stop_deadline:
                return False
            if in_flight:
                log.warning(
                    "mapping %s: stopping with %d deliveries still running; their outcome is "
                    "lost (the records will be delivered again)",
                    self.uuid,
                    in_flight,
                )
            self.poller.persist()
            return True
        self._transition()
        if self._running:
            self.poller.poll(now, source_changed or self._changed_while_held)
            self._changed_while_held = False
            self._deadline = self.poller.next_deadline(now)
        else:
            self._changed_while_held |= source_changed
            self.poller.persist()
            self._deadline = None
        return False

    def _transition(self) -> None:
        """Follow Enabled: a mapping being disabled stops reading, lets its in-flight batches finish,
        then forgets what is not checkpointed (enabling resumes from the checkpoint). Enabling needs no
        step here: update() applies it at once."""
        if not self.mapping.enabled and self._active and self.poller.in_flight() == 0:
            self.poller.release()
            self.poller.persist()
            self.poller.rewind()
            self._active = False
            log.info("mapping %s disabled", self.uuid)
            self._report(state=DISABLED)

    # -- deliveries ------------------------------------------------------------------------------

    def _dispatch(self, delivery: Delivery) -> None:
        """Called by the poller (worker thread, state lock held): start an invocation thread."""
        if self._duplicates > 0:
            self._duplicates -= 1
            delivery = dataclasses.replace(delivery, duplicate=True)
        actor = self.engine.scheduler.spawn("delivery") if self.engine.scheduler is not None else None
        thread = threading.Thread(
            target=self._deliver, args=(delivery, actor), daemon=True, name=f"esm-{self.uuid[:8]}-invoke"
        )
        with self._wake:
            self._invocations.add(thread)
        thread.start()

    def _deliver(self, delivery: Delivery, actor: Actor | None = None) -> None:
        outcome = Outcome(
            OutcomeKind.NOT_INVOKED, error=LambdaServiceError(500, "ServiceException", "the delivery did not complete")
        )
        scheduler = self.engine.scheduler
        if scheduler is not None and actor is not None:
            function = delivery.function_arn.split(":function:", 1)[-1]
            origin = delivery.origin
            scheduler.park(actor, f"deliver {len(origin.batch_ids)} to {function} (attempt {origin.attempt})")
        try:
            outcome = deliver(self.engine.invoke, delivery)
            if scheduler is not None:
                scheduler.note({"delivery": delivery_record(self.uuid, delivery, outcome)})
            if delivery.duplicate:
                # At-least-once on purpose: the same batch again, right after; its outcome is ignored.
                origin = dataclasses.replace(delivery.origin, duplicate=True)
                deliver(self.engine.invoke, dataclasses.replace(delivery, origin=origin))
        except BaseException:
            log.exception("mapping %s: delivering batch %s failed", self.uuid, list(delivery.origin.batch_ids[:3]))
        finally:
            with self._wake:
                self._completions.append((delivery, outcome))
                self._invocations.discard(threading.current_thread())
                self._wake.notify()
            if scheduler is not None and actor is not None:
                scheduler.finish(actor)

    # -- waking up -------------------------------------------------------------------------------

    def _kick(self) -> None:
        with self._wake:
            self._kicked = True
            self._wake.notify()

    def _on_source_write(self) -> None:
        """The ChangeNotifier's listener: runs in the writer's thread, under moto's lock (lock order:
        moto's lock, then `_wake`, which is never held while taking moto's)."""
        with self._wake:
            self._source_changed = True
            self._wake.notify()

    def _listen_no_more(self) -> None:
        stop, self._stop_listening = self._stop_listening, None
        if stop is not None:
            stop()

    # -- reporting -------------------------------------------------------------------------------

    def _report(self, **changes: Any) -> None:
        """Record a change the Lambda API shows (State, LastProcessingResult); sent by _flush_reports."""
        for key, value in changes.items():
            if self._reported.get(key) != value:
                self._reported[key] = value
                self._unreported[key] = value

    def _flush_reports(self) -> None:
        with self._state:
            changes, self._unreported = self._unreported, {}
            if not changes:
                return
            self._reporting += 1
        try:
            self.engine.on_change(self.uuid, changes)
        except Exception:
            log.exception("mapping %s: on_change(%s) failed", self.uuid, changes)
        finally:
            with self._state:
                self._reporting -= 1
                self._publish()


def delivery_record(uuid: str, delivery: Delivery, outcome: Outcome) -> dict[str, Any]:
    """What a trace keeps of one delivery: the mapping, the batch, the attempt and what came of it."""
    origin = delivery.origin
    record: dict[str, Any] = {
        "mapping": uuid,
        "function": delivery.function_arn.split(":function:", 1)[-1],
        "records": list(origin.batch_ids),
        "attempt": origin.attempt,
        "outcome": outcome.kind.value,
    }
    if delivery.duplicate:
        record["duplicate"] = True
    if outcome.failed_identifiers:
        record["batchItemFailures"] = list(outcome.failed_identifiers)
    if outcome.result is not None and outcome.result.function_error:
        record["error"] = outcome.reason[:200]
    return record
