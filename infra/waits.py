"""Waiting for resources to become usable: poll a condition until a deadline, never a fixed sleep.

The first poll happens at once (an existing resource is usually ready already), then the interval
grows from 50 ms to 1 s: quick on a local endpoint, gentle on AWS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_INTERVAL = 0.05
MAX_INTERVAL = 1.0


class WaitTimeout(RuntimeError):
    """A resource did not become ready in time; the message names it and its last state."""


class ResourceFailed(RuntimeError):
    """A resource reached a state it will not leave (e.g. a function in state Failed)."""


def wait_for(
    describe: Callable[[], T],
    *,
    ready: Callable[[T], bool],
    what: str,
    state: Callable[[T], str],
    timeout: float = 60.0,
    failed: Callable[[T], str | None] | None = None,
    detail: Callable[[T], str] | None = None,
) -> T:
    """Call ``describe`` until ``ready(result)``; raise WaitTimeout after ``timeout`` seconds with
    ``"<what> still <state> after <timeout> s; last state <detail>"`` (detail defaults to the last
    result), or ResourceFailed as soon as ``failed(result)`` returns a reason."""
    deadline = time.monotonic() + timeout
    interval = FIRST_INTERVAL
    while True:
        result = describe()
        if ready(result):
            return result
        if failed is not None and (reason := failed(result)):
            raise ResourceFailed(f"{what} failed: {reason}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            last = detail(result) if detail is not None else _shorten(repr(result))
            raise WaitTimeout(f"{what} still {state(result)} after {timeout:g} s; last state {last}")
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.6, MAX_INTERVAL)


def _shorten(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
