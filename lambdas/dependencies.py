"""What a handler works with: settings, the repository, the queues, a logger and a clock.

One `Runtime` per warm container, built on first use (clients are reused across invocations, as
AWS recommends: https://docs.aws.amazon.com/lambda/latest/dg/best-practices.html). Tests build their
own with in-memory fakes and a fixed clock.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambdas.config import Settings, settings
from lambdas.logs import get_logger
from lambdas.queues import Queues
from lambdas.store import Store


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Runtime:
    settings: Settings
    store: Store
    queues: Queues
    logger: logging.Logger
    clock: Callable[[], int] = field(default=wall_clock_ms)

    def now_ms(self) -> int:
        return self.clock()


@functools.cache
def runtime() -> Runtime:
    current = settings()
    return Runtime(settings=current, store=Store(current), queues=Queues(), logger=get_logger(current.log_level))


def function_name(context: Any) -> str:
    """The invoked function's name, for failure messages and logs."""
    return str(getattr(context, "function_name", "") or os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""))
