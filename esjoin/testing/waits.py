"""Waiting on a condition with a deadline, never on a fixed sleep.

`eventually(check, ...)` calls `check()` until it returns something truthy and returns that the
moment it does. On timeout it fails with what was expected, the last thing seen, and whatever
`context()` adds (the invocation history, say), so a red test says what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline."""


def eventually(
    check: Callable[[], T],
    *,
    expected: str,
    deadline: float,
    interval: float = 0.05,
    max_interval: float | None = None,
    observe: Callable[[], Any] | None = None,
    context: Callable[[], str] | None = None,
) -> T:
    """Return `check()`'s first truthy result; raise WaitTimeout after `deadline` seconds.

    `interval` is the first pause between checks; pauses grow to `max_interval` (default 4x).
    `observe()` describes the state on failure (default: the last value `check()` returned).
    """
    started = time.monotonic()
    last: list[Any] = [None]
    errors: list[BaseException] = []

    def attempt() -> T | None:
        try:
            last[0] = check()
        except Exception as error:  # a transient error is "not yet"; keep the last one for the report
            errors[:] = [error]
            last[0] = None
        return last[0]

    retrying = Retrying(
        stop=stop_after_delay(deadline),
        wait=wait_exponential(multiplier=interval, min=interval, max=max_interval or interval * 4),
        retry=retry_if_result(lambda value: not value),
        reraise=False,
    )
    try:
        return retrying(attempt)
    except RetryError:
        pass
    seen = observe() if observe else last[0]
    lines = [
        f"timed out after {time.monotonic() - started:.1f}s (deadline {deadline:.1f}s) waiting for: {expected}",
        f"last seen: {seen!r}",
    ]
    if errors:
        lines.append(f"last error while checking: {type(errors[0]).__name__}: {errors[0]}")
    if context:
        lines.append(context())
    raise WaitTimeout("\n".join(lines))
