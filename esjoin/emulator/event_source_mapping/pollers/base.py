"""What a mapping's worker (esjoin.emulator.event_source_mapping.mapping_worker) asks of a poller.

A poller knows one kind of source: it reads records, forms batches, hands them to `dispatch` and
decides what each outcome means (checkpoint, retry, bisect, on-failure, delete). It never waits and
never invokes: the worker calls it from its own thread, under the mapping's state lock, and runs
each delivery on an invocation thread. Every moto access is inside a short `moto.lock_for(source ARN)`
block (esjoin.emulator.moto_layer.lock).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from esjoin.emulator.event_source_mapping.checkpoints import CheckpointStore
from esjoin.emulator.event_source_mapping.mapping import EventSourceMapping
from esjoin.emulator.event_source_mapping.sender import Delivery, Outcome
from esjoin.emulator.event_source_mapping.timing import PollTiming
from esjoin.emulator.moto_layer.moto_backends import MotoBackends


@dataclass
class PollerContext:
    moto: MotoBackends
    timing: PollTiming
    checkpoints: CheckpointStore
    dispatch: Callable[[Delivery], None]  # start delivering a batch (the outcome comes to complete())
    report: Callable[..., None]  # report(last_processing_result=...): what the Lambda API shows


class Poller(abc.ABC):
    def __init__(self, mapping: EventSourceMapping, context: PollerContext) -> None:
        self.mapping = mapping  # replaced by the worker on update(); read at each batch
        self.context = context

    @abc.abstractmethod
    def prepare(self) -> None:
        """Before the worker starts: restore checkpoints or fix the starting position now."""

    @abc.abstractmethod
    def poll(self, now: float, source_changed: bool) -> None:
        """Read what is due, dispatch the batches that are ready."""

    @abc.abstractmethod
    def complete(self, delivery: Delivery, outcome: Outcome, now: float) -> None:
        """A delivery came back: checkpoint, delete, retry, bisect or discard."""

    @abc.abstractmethod
    def in_flight(self) -> int:
        """Deliveries started and not completed."""

    @abc.abstractmethod
    def next_deadline(self, now: float) -> float | None:
        """When poll() next has something to do without a write or a completion (None: never)."""

    @abc.abstractmethod
    def has_work(self) -> bool:
        """Records read and not yet done: buffered, in flight or waiting to be retried."""

    def read_positions(self) -> Any:
        """What has been read, as source_pending() needs it (a snapshot: it is used without the
        state lock)."""
        return None

    @abc.abstractmethod
    def source_pending(self, positions: Any) -> bool:
        """Whether the source holds records beyond `positions` (from read_positions()) that this
        mapping has yet to process. Takes the moto lock; touches no poller state."""

    def release(self) -> None:  # noqa: B027 - optional hook
        """Pausing, disabling or stopping: give back what was read but not delivered."""

    def rewind(self) -> None:  # noqa: B027 - optional hook
        """Disabled, nothing in flight: forget progress that is not checkpointed (enabling resumes
        from the checkpoint)."""

    def persist(self) -> None:  # noqa: B027 - optional hook
        """Save checkpoints now if they changed."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """Checkpoints, lag, in-flight and retrying batches, for the control API."""
