"""CPU time used by the endpoint and by each function's workers, read from /proc (Linux).

Wall-clock figures on a shared 2-core machine move with everyone else's load; CPU seconds per event
barely do. So each pipeline phase also reports how many CPU milliseconds the endpoint process and
each function's worker processes (its children, named by their AWS_LAMBDA_FUNCTION_NAME) spent per
event: where the time goes, and whether a change made the work smaller or only the machine quieter.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _function_name(pid: int) -> str:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return "?"
    for entry in environ:
        if entry.startswith(b"AWS_LAMBDA_FUNCTION_NAME="):
            return entry.split(b"=", 1)[1].decode()
    return "?"


def tree_cpu(endpoint_pid: int) -> dict[str, float]:
    """CPU seconds so far: {"endpoint": ..., "<function name>": (sum over its live workers), ...}."""
    usage: dict[str, float] = defaultdict(float)
    own = _stat(endpoint_pid)
    if own is None:
        return {}
    usage["endpoint"] = own[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[0] == endpoint_pid:
            usage[_function_name(int(entry.name))] += stat[1]
    return dict(usage)


def cpu_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two tree_cpu() readings (a worker started meanwhile counts in full)."""
    return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}
