"""Change notification: a write to a stream or queue wakes whoever waits on it.

Pollers and SQS long polls wait here instead of sleeping on a fixed interval, so a record reaches
its function as soon as it is written (`fast` timing). Keys are resource ARNs (a Kinesis stream, a
DynamoDB table's stream, an SQS queue). Each key has a generation counter: a waiter remembers the
generation it last saw, so a notification between two waits is never missed.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class ChangeNotifier:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generations: dict[str, int] = defaultdict(int)

    def generation(self, key: str) -> int:
        with self._condition:
            return self._generations[key]

    def notify(self, key: str) -> None:
        with self._condition:
            self._generations[key] += 1
            self._condition.notify_all()

    def wait(self, key: str, seen: int, timeout: float) -> int:
        """Block until `key` moves past generation `seen` or `timeout` passes; return the generation."""
        with self._condition:
            self._condition.wait_for(lambda: self._generations[key] != seen, timeout=max(0.0, timeout))
            return self._generations[key]
