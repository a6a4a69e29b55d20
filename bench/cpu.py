"""CPU time and memory of the endpoint and of each function's workers, read from /proc (Linux).

Wall-clock figures on a shared 2-core machine move with everyone else's load; CPU seconds per event
barely do. So each pipeline phase also reports how many CPU milliseconds the endpoint process and
each function's worker processes (its children, named by their AWS_LAMBDA_FUNCTION_NAME) spent per
event: where the time goes, and whether a change made the work smaller or only the machine quieter.
`tree_rss` reads the resident memory of the same processes (the robustness part: does the endpoint
grow under sustained load, or when its workers keep dying).
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


def children(parent: int) -> list[int]:
    """The live processes whose parent is `parent` (a walk of /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] == parent:
                found.append(int(entry.name))
    return found


def function_name(pid: int) -> str:
    """The AWS_LAMBDA_FUNCTION_NAME of a worker process ("?" if it has none or is gone)."""
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
    for pid in children(endpoint_pid):
        stat = _stat(pid)
        if stat is not None:
            usage[function_name(pid)] += stat[1]
    return dict(usage)


def rss_kib(pid: int) -> int | None:
    """VmRSS of a live process in KiB (/proc/<pid>/status), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_rss(endpoint_pid: int) -> dict[str, int]:
    """Resident memory now, KiB: the endpoint process, the sum over its children (the Lambda workers),
    and how many children there are."""
    sizes = [size for pid in children(endpoint_pid) if (size := rss_kib(pid)) is not None]
    return {"endpointKiB": rss_kib(endpoint_pid) or 0, "workersKiB": sum(sizes), "workers": len(sizes)}


def cpu_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two tree_cpu() readings (a worker started meanwhile counts in full)."""
    return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}
