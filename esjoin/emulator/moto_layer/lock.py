"""The lock that makes moto linearizable, without one long request stopping all others.

moto's models are not safe under thread switching (two `attribute_not_exists` puts on one key were
both seen to win), so every moto access is serialised. One process-wide lock did that, but a Scan
of a 50,000-item table holds it for 0.7 s a page, and a PutItem on another table waited behind it
(p50 1 ms -> 251 ms, measured). The state a DynamoDB single-table operation touches is its table's
(items, indexes, stream shard), and a Kinesis or SQS operation touches only its service's backend.
So there are two modes:

- `exclusive()`: nothing else runs in moto. Everything by default: table creation and deletion,
  batch and transaction operations (several tables), DynamoDB Streams (reads tables' shards), IAM,
  STS, Logs (subscription filters write to Kinesis), and every direct backend access by the pollers.
- `shared(key)`: runs alongside other `shared` holders of other keys, never alongside `exclusive`.
  Keys: `dynamodb:<region>:<table>` for one table's item operations, `kinesis`, `sqs`.

Re-entrant: a thread already inside (either mode) enters again without waiting, as the RLock it
replaces allowed. Writers (exclusive) are preferred once waiting, so pollers are not starved by a
stream of shared requests.

Lock order: `_state` (the condition) is only held for bookkeeping, never while moto runs; a key's
lock is taken after the shared mode is granted and released before it is given back.
"""

from __future__ import annotations

import threading
from typing import Any


class MotoLock:
    def __init__(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # thread ident holding exclusive
        self._writers_waiting = 0
        self._depth = threading.local()  # per thread: how deep inside, either mode
        self._keys: dict[str, threading.Lock] = {}
        self._exclusive = _Exclusive(self)

    def exclusive(self) -> _Exclusive:
        return self._exclusive

    def shared(self, key: str) -> _Shared:
        lock = self._keys.get(key)
        if lock is None:
            with self._state:
                lock = self._keys.setdefault(key, threading.Lock())
        return _Shared(self, lock)

    def _enter_exclusive(self) -> None:
        depth = getattr(self._depth, "n", 0)
        if depth:
            self._depth.n = depth + 1
            return
        me = threading.get_ident()
        with self._state:
            self._writers_waiting += 1
            while self._writer is not None or self._readers:
                self._state.wait()
            self._writers_waiting -= 1
            self._writer = me
        self._depth.n = 1

    def _exit_exclusive(self) -> None:
        self._depth.n -= 1
        if self._depth.n:
            return
        with self._state:
            self._writer = None
            self._state.notify_all()

    def _enter_shared(self) -> bool:
        """True when this call took the shared mode (False: the thread was already inside)."""
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        if depth:
            return False
        with self._state:
            while self._writer is not None or self._writers_waiting:
                self._state.wait()
            self._readers += 1
        return True

    def _exit_shared(self, took: bool) -> None:
        self._depth.n -= 1
        if not took:
            return
        with self._state:
            self._readers -= 1
            if not self._readers:
                self._state.notify_all()


class _Exclusive:
    __slots__ = ("_lock",)

    def __init__(self, lock: MotoLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._enter_exclusive()

    def __exit__(self, *exc: Any) -> None:
        self._lock._exit_exclusive()


class _Shared:
    __slots__ = ("_key_lock", "_lock", "_took")

    def __init__(self, lock: MotoLock, key_lock: threading.Lock) -> None:
        self._lock = lock
        self._key_lock = key_lock
        self._took = False

    def __enter__(self) -> None:
        self._took = self._lock._enter_shared()
        if self._took:
            self._key_lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        if self._took:
            self._key_lock.release()
        self._lock._exit_shared(self._took)
