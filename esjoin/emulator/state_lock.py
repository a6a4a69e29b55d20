"""One endpoint per state directory: an exclusive lock file, taken only once the port is ours.

The endpoint cleans parts of its state directory when it starts (function code and checkpoints of
the previous run, which no new mapping can read: state is in memory and mapping ids are new). A
second endpoint started on the same directory must not do that to a running one, so the order is:
bind the port (a busy port fails before anything is touched), then take `<state_dir>/endpoint.lock`
with flock (released by the kernel when the process dies, so a crash leaves no stale lock), then
clean. The lock file holds the owner's pid, for the error message of whoever comes second.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "endpoint.lock"


class StateDirBusy(RuntimeError):
    """Another live endpoint holds the state directory."""


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(
                f"the state directory {self.path.parent} is in use by another endpoint (pid {holder}, "
                f"lock file {self.path}); nothing was changed. Stop that one (`make down`, or kill "
                f"{holder}) or give this one its own ESJOIN_STATE_DIR."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None
