"""Exponential backoff with full jitter for the retries AWS leaves to the caller.

boto3 retries throttled *calls* itself; it does not retry the items a successful BatchGetItem,
BatchWriteItem, SendMessageBatch or PutRecords call returns as unprocessed or failed. AWS asks for
exponential backoff there (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/
Programming.Errors.html#Programming.Errors.BatchOperations;
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 0.05
    cap_seconds: float = 2.0
    attempts: int = 10
    """Retries after the first call before giving up (about 8 s of waiting in the worst case)."""
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        return random.uniform(0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))

    def wait(self, attempt: int) -> None:
        self.sleep(self.delay(attempt))
