"""Change notification: a write to a stream or queue wakes whoever waits on it.

Pollers and SQS long polls react to writes instead of sleeping on a fixed interval, so a record
reaches its function as soon as it is written (`fast` timing). Keys are resource ARNs (a Kinesis
stream, a DynamoDB table's stream, an SQS queue). Two ways to hear of a write:

- `listen(key, callback)`: the callback runs in the writer's thread, right after the write (it must
  be quick and must not block: a mapping's worker sets a flag and wakes its own thread). This is how
  mapping workers hear of writes, without a thread of their own in between.
- `wait(key, seen, timeout)`: block until the key's generation counter moves past `seen`. A waiter
  remembers the generation it last saw, so a notification between two waits is never missed.

Each key has its own condition, so a write wakes only the waiters of that key. Measured with one
condition for all keys, every write woke every waiter of every key (bench/, "emulator").
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[], None]


class ChangeNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the dictionaries; never held while calling out
        self._generations: dict[str, int] = {}
        self._conditions: dict[str, threading.Condition] = {}
        self._listeners: dict[str, tuple[Listener, ...]] = {}

    def generation(self, key: str) -> int:
        with self._lock:
            return self._generations.get(key, 0)

    def notify(self, key: str) -> None:
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            condition = self._conditions.get(key)
            listeners = self._listeners.get(key, ())
        if condition is not None:
            with condition:
                condition.notify_all()
        for listener in listeners:
            listener()

    def wait(self, key: str, seen: int, timeout: float) -> int:
        """Block until `key` moves past generation `seen` or `timeout` passes; return the generation."""
        with self._lock:
            condition = self._conditions.get(key)
            if condition is None:
                condition = self._conditions[key] = threading.Condition()
        with condition:
            # notify() counts before it takes the condition: a count after this check wakes the wait.
            condition.wait_for(lambda: self.generation(key) != seen, timeout=max(0.0, timeout))
        return self.generation(key)

    def listen(self, key: str, listener: Listener) -> Callable[[], None]:
        """Call `listener()` after every write to `key`, from now on; returns the function that stops it."""
        with self._lock:
            self._listeners[key] = (*self._listeners.get(key, ()), listener)

        def stop() -> None:
            with self._lock:
                remaining = tuple(item for item in self._listeners.get(key, ()) if item is not listener)
                if remaining:
                    self._listeners[key] = remaining
                else:
                    self._listeners.pop(key, None)

        return stop
