"""esjoin.emulator.moto_layer.speed's SQS receive and count shortcuts against moto's own code on the same
operations, with moto's clock (replaced here only) moved across visibility, delay and retention boundaries
(support/moto_speed.py)."""

from __future__ import annotations

import contextlib
import datetime
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.emulator.support.equivalence import examples
from tests.emulator.support.moto_speed import (
    ACCOUNT,
    ORIGINAL_REGION,
    PATCHED_REGION,
    SERIALS,
    moto_own_code,
    original,
)


class Clock:
    """moto's clock (moto.core.utils.utcnow, which every SQS time read goes through), moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.datetime(2025, 1, 1, 12, 0, 0)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, milliseconds: int) -> None:
        self.now += datetime.timedelta(milliseconds=milliseconds)


SEND = st.tuples(st.just("send"), st.sampled_from([0, 0, 1, 3]))  # delay seconds
RECEIVE = st.tuples(st.just("receive"), st.integers(1, 4), st.sampled_from([0, 1, 3]))  # count, visibility timeout
# Milliseconds; past the 60 s retention rarely (an expired message ends every later receive in moto).
ADVANCE = st.tuples(st.just("advance"), st.sampled_from([0, 1, 999, 1000, 1000, 1001, 1001, 3001, 3001, 60_000]))
SQS_OPERATIONS = st.lists(
    st.one_of(
        SEND,
        SEND,
        RECEIVE,
        RECEIVE,
        ADVANCE,
        ADVANCE,
        st.tuples(st.just("delete"), st.integers(0, 5)),  # the n-th receipt handle received (if any)
        st.tuples(st.just("change visibility"), st.integers(0, 5), st.sampled_from([0, 1, 3])),
    ),
    min_size=1,
    max_size=30,
)
# Each run covers these at least: redrive to the dead-letter queue after two receives, expiry by
# retention (60 s), a delayed message becoming visible, a visibility change ending a receive's timeout.
SQS_SCENARIOS = [
    (
        [("send", 0), ("receive", 1, 1), ("advance", 1001), ("receive", 1, 1), ("advance", 1001), ("receive", 1, 1)],
        True,
    ),
    (
        [
            ("send", 0),
            ("advance", 60_000),
            ("receive", 4, 1),
            ("advance", 1),
            ("receive", 4, 1),
            ("send", 0),
            ("receive", 4, 0),
            ("advance", 61_000),
            ("receive", 4, 1),
        ],
        False,
    ),  # at the retention limit, then past it
    ([("send", 1), ("receive", 1, 0), ("advance", 1000), ("receive", 1, 0), ("advance", 1), ("receive", 1, 3)], False),
    (
        [
            ("send", 0),
            ("receive", 1, 3),
            ("change visibility", 0, 0),
            ("advance", 1),
            ("receive", 1, 3),
            ("delete", 1),
            ("delete", 0),
        ],
        False,
    ),
]


@dataclass
class SqsWorld:
    backend: Any
    queue: Any
    handles: list[str]
    own_code: bool
    messages_sent: int = 0

    def run(self, operation: tuple[Any, ...], clock: Clock) -> Any:
        with moto_own_code() if self.own_code else contextlib.nullcontext():
            return self._run(operation, clock)

    def _run(self, operation: tuple[Any, ...], clock: Clock) -> Any:
        kind, *arguments = operation
        name = self.queue.name
        try:
            if kind == "send":
                self.messages_sent += 1
                self.backend.send_message(name, f"message {self.messages_sent}", delay_seconds=arguments[0])
                result: Any = None
            elif kind == "receive":
                received = self.backend.receive_message(name, arguments[0], 0, arguments[1])
                self.handles += [message.receipt_handle for message in received]
                result = [(message.body, message.approximate_receive_count) for message in received]
            elif kind == "advance":  # the test moves the clock, once for both
                result = None
            elif arguments[0] >= len(self.handles):
                result = "no such handle"
            elif kind == "delete":
                self.backend.delete_message(name, self.handles[arguments[0]])
                result = None
            else:
                self.backend.change_message_visibility(name, self.handles[arguments[0]], arguments[1])
                result = None
        except Exception as error:
            result = f"{type(error).__name__}: {error}"
        attributes = self.backend.get_queue_attributes(name, ["All"])
        return result, {key: value for key, value in attributes.items() if "Arn" not in key and "Redrive" not in key}


@examples(120)
@given(operations=SQS_OPERATIONS, redrive=st.booleans())
@example(*SQS_SCENARIOS[0])
@example(*SQS_SCENARIOS[1])
@example(*SQS_SCENARIOS[2])
@example(*SQS_SCENARIOS[3])
def test_sqs_receives_and_counts_are_moto_s(
    speed_patches: None, operations: list[tuple[Any, ...]], redrive: bool
) -> None:
    """Sends (delayed), receives (with visibility timeouts), deletes and visibility changes, with moto's
    clock moved across visibility, delay and retention (60 s) boundaries: each step answers the same,
    and the queue's counts read the same, with moto's own code and with the patches."""
    from moto.sqs.models import Queue, sqs_backends

    clock = Clock()
    number = next(SERIALS)
    worlds = []
    with pytest.MonkeyPatch.context() as patch:
        import moto.core.utils

        patch.setattr(moto.core.utils, "utcnow", clock)
        for region, own_code in ((ORIGINAL_REGION, True), (PATCHED_REGION, False)):
            backend = sqs_backends[ACCOUNT][region]
            attributes = {"MessageRetentionPeriod": "60", "VisibilityTimeout": "1"}
            if redrive:
                dead_letters = backend.create_queue(f"dead-letters-{number}")
                attributes["RedrivePolicy"] = json.dumps(
                    {"deadLetterTargetArn": dead_letters.queue_arn, "maxReceiveCount": 2}
                )
            worlds.append(SqsWorld(backend, backend.create_queue(f"speed-{number}", **attributes), [], own_code))
        own, patched = worlds
        for step, operation in enumerate(operations):
            if operation[0] == "advance":
                clock.advance(operation[1])
            assert patched.run(operation, clock) == own.run(operation, clock), f"step {step}: {operation}"
            queue = patched.queue  # the patched properties and moto's own, on one queue, at one instant
            for name in (
                "messages",
                "approximate_number_of_messages_delayed",
                "approximate_number_of_messages_not_visible",
            ):
                assert getattr(queue, name) == original(Queue, name).fget(queue), f"step {step}: {name}"
            for message in queue._messages:
                assert patched.backend.is_message_valid_based_on_retention_period(queue.name, message) == original(
                    type(patched.backend), "is_message_valid_based_on_retention_period"
                )(patched.backend, queue.name, message)
        for world in worlds:
            world.backend.delete_queue(world.queue.name)
            if redrive:
                world.backend.delete_queue(f"dead-letters-{number}")
