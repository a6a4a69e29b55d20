"""What a benchmark part produces: figures, the conditions they were measured in, JSON and a table.

Each part fills one `PartReport` and calls `write()`: `bench/results/<part>.json` (every figure, the
command that produced it, the machine's load average while it ran) and `bench/results/<part>.md` (the
Markdown table that is also printed). Percentiles are nearest-rank, as smoke.py computes them, so
our figures and the peer's compare like for like.

The machine has 2 cores that other engineers share: every measurement records the 1-minute load
average before and after it, and repeated measurements report their spread (min and max of the
per-round figures) next to the pooled figure.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (smoke.py's definition)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary_ms(values_ms: Sequence[float]) -> dict[str, float | int]:
    """n, p50, p90, p99, max and mean of latencies already in milliseconds."""
    if not values_ms:
        return {"n": 0}
    return {
        "n": len(values_ms),
        "p50": round(statistics.median(values_ms), 3),
        "p90": round(percentile(values_ms, 90), 3),
        "p99": round(percentile(values_ms, 99), 3),
        "max": round(max(values_ms), 3),
        "mean": round(statistics.fmean(values_ms), 3),
    }


def spread(values: Iterable[float]) -> dict[str, float]:
    """min / median / max of per-round figures."""
    values = list(values)
    if not values:
        return {}
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def paced(count: int, per_second: float, started: float) -> Iterator[int]:
    """0 .. count-1, each yielded no earlier than `started + i / per_second` (time.perf_counter): a
    steady send rate that catches up after a slow send instead of drifting."""
    interval = 1.0 / per_second
    for i in range(count):
        pause = started + i * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        yield i


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def invoked_command() -> str:
    """The command line that produced these results, as typed (python -m bench ...)."""
    return " ".join(["python -m bench", *(shlex.quote(arg) for arg in sys.argv[1:])])


def source_revision() -> dict[str, Any]:
    """HEAD and whether emulator/ differs from it (read-only git calls)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "emulatorChangedSinceHead": bool(git("status", "--porcelain", "--", "emulator")),
    }


@dataclass
class Measurement:
    """One figure with its target (if any) and the conditions it was measured in."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    detail: str = ""  # spread, n, how it was measured
    load: tuple[float, float] | None = None  # 1-minute load average before, after

    def cell_value(self) -> str:
        if self.value is None:
            return "-"
        if isinstance(self.value, int):  # a count
            return f"{self.value:,} {self.unit}".rstrip()
        if self.unit == "%":
            return f"{self.value:+.1f} %"
        if abs(self.value) >= 100:
            return f"{self.value:,.0f} {self.unit}"
        return f"{self.value:.2f} {self.unit}" if self.value < 10 else f"{self.value:.1f} {self.unit}"


@dataclass
class PartReport:
    part: str
    title: str
    quick: bool
    command: str = field(default_factory=invoked_command)
    started: float = field(default_factory=time.time)
    measurements: list[Measurement] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # everything else, for the JSON
    notes: list[str] = field(default_factory=list)
    extra_tables: list[str] = field(default_factory=list)  # Markdown tables added below the main one

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        return measurement

    def markdown(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            f"`{self.command}` on {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}"
            + (" (quick mode: smaller samples)" if self.quick else ""),
            "",
        ]
        if self.measurements:
            lines += [
                "| measurement | value | target | met | detail | load avg (before-after) |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for m in self.measurements:
                met = "" if m.met is None else ("yes" if m.met else "**no**")
                load = f"{m.load[0]:.2f}-{m.load[1]:.2f}" if m.load else ""
                lines.append(f"| {m.name} | {m.cell_value()} | {m.target} | {met} | {m.detail} | {load} |")
        for table in self.extra_tables:
            lines += ["", table]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "title": self.title,
            "command": self.command,
            "quick": self.quick,
            "startedAt": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "durationSeconds": round(time.time() - self.started, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "source": source_revision(),
            "measurements": [m.__dict__ for m in self.measurements],
            "data": self.data,
            "notes": self.notes,
        }

    def write(self) -> tuple[Path, Path]:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        json_path = RESULTS_DIR / f"{self.part}.json"
        md_path = RESULTS_DIR / f"{self.part}.md"
        _write_atomically(json_path, json.dumps(self.to_json(), indent=2, default=str) + "\n")
        _write_atomically(md_path, self.markdown())
        return json_path, md_path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
