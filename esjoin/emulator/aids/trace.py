"""A deterministic run's trace: versioned JSON lines, gzip-compressed (docs/formats.md, "Traces").

Line 1 is the header: ``{"format": "esjoin-trace", "version": 1, "seed", "clockStartMs", "pace",
"esjoin"}``. Every other line is one JSON object with a ``step`` (the scheduler's decision count when it
was written) and one of:

- ``grant``: the scheduler let an actor take its next step (``actor``, ``label``, virtual time ``t``
  in epoch ms); an outside request's grant carries the ``request`` itself, which is what replay feeds;
- ``advance``: nothing could run, the virtual clock moved to ``t`` (a timer is due, or the wall clock
  moved on while an outside client was quiet);
- ``response``: what an outside request was answered (``actor``, ``status``, ``digest`` of the body);
- ``delivery``: a batch an event source mapping delivered and its outcome;
- ``fault``: an injected fault that fired;
- ``blob``: content stored once per SHA-256 (function code, big bodies), named from requests by
  ``{"$blob": sha256}``.

Keys are sorted and separators fixed, so one run gives one byte sequence and a hash compares runs.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRACE_FORMAT = "esjoin-trace"
TRACE_VERSION = 1
BLOB_MIN_BYTES = 2048  # a request body this big is stored once, by hash


class TraceError(ValueError):
    """A trace file that cannot be replayed: names the file and the problem."""


def encode(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class TraceRecorder:
    """The lines of one run, in memory (a CI run's trace is a few MB before compression)."""

    def __init__(self, header: dict[str, Any]) -> None:
        self.header = {"format": TRACE_FORMAT, "version": TRACE_VERSION, **header}
        self._lines: list[bytes] = [encode(self.header)]
        self._blobs: set[str] = set()
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        line = encode(entry)
        with self._lock:
            self._lines.append(line)

    def blob(self, data: bytes) -> dict[str, str]:
        """Store `data` once; the reference that stands for it in a request."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest not in self._blobs:
                self._blobs.add(digest)
                self._lines.append(encode({"blob": digest, "data": base64.b64encode(data).decode()}))
        return {"$blob": digest}

    def lines(self) -> list[bytes]:
        with self._lock:
            return list(self._lines)

    def compressed(self) -> bytes:
        """The trace file's bytes (gzip with no timestamp, so equal runs give equal files)."""
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
            for line in self.lines():
                stream.write(line)
        return buffer.getvalue()

    def digest(self) -> str:
        """SHA-256 of the lines, blobs included."""
        hasher = hashlib.sha256()
        for line in self.lines():
            hasher.update(line)
        return hasher.hexdigest()


@dataclass
class Trace:
    """A trace read back: the header, the entries (blobs resolved into `blobs`) in order."""

    path: str
    header: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.header["seed"])

    @property
    def last_step(self) -> int:
        return max((e["step"] for e in self.entries if "grant" in e or "advance" in e), default=0)

    def decisions(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if "grant" in e or "advance" in e]

    def observations(self) -> list[dict[str, Any]]:
        """What a run must reproduce: every line but the blobs."""
        return [e for e in self.entries if "blob" not in e]


def read_trace(path: str | Path) -> Trace:
    """Read and check a trace file; TraceError names the file and what is wrong with it."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise TraceError(f"{name}: cannot read the trace: {error.strerror or error}") from None
    return parse_trace(raw, name)


def parse_trace(raw: bytes, name: str = "the trace") -> Trace:
    """A trace from its bytes (a file's, or an endpoint's GET /_esjoin/trace); TraceError names `name`."""
    try:
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError) as error:
        raise TraceError(f"{name}: the trace is truncated or not gzip ({error})") from None
    lines = text.splitlines()
    if not lines:
        raise TraceError(f"{name}: the trace is empty")
    try:
        header = json.loads(lines[0])
    except ValueError:
        raise TraceError(f"{name}: line 1 is not a trace header (not JSON)") from None
    if not isinstance(header, dict) or header.get("format") != TRACE_FORMAT:
        raise TraceError(f'{name}: not an esjoin trace (line 1 has no "format": "{TRACE_FORMAT}")')
    if header.get("version") != TRACE_VERSION:
        raise TraceError(
            f"{name}: trace format version {header.get('version')!r}; this esjoin reads version "
            f"{TRACE_VERSION} (record the run again with this version)"
        )
    if not isinstance(header.get("seed"), int):
        raise TraceError(f"{name}: the header has no integer seed")
    trace = Trace(name, header)
    for number, line in enumerate(lines[1:], start=2):
        try:
            entry = json.loads(line)
        except ValueError:
            raise TraceError(f"{name}: line {number} is not JSON (a truncated trace?)") from None
        if not isinstance(entry, dict):
            raise TraceError(f"{name}: line {number} is not a JSON object")
        if "blob" in entry:
            try:
                data = base64.b64decode(entry["data"], validate=True)
            except (KeyError, TypeError, ValueError):
                raise TraceError(f"{name}: line {number}: a blob without valid base64 data") from None
            if hashlib.sha256(data).hexdigest() != entry["blob"]:
                raise TraceError(f"{name}: line {number}: blob {entry['blob'][:12]} does not match its content")
            trace.blobs[entry["blob"]] = data
        trace.entries.append(entry)
    if not text.endswith(b"\n"):
        raise TraceError(f"{name}: the last line is cut off (a truncated trace)")
    return trace


def comparable(trace: Trace, until_step: int) -> list[dict[str, Any]]:
    """What a replay must reproduce, up to a step: every line but blobs and divergence notes."""
    return [e for e in trace.observations() if e.get("step", 0) <= until_step and "divergence" not in e]


def first_difference(recorded: Trace, replayed: Trace, until_step: int | None = None) -> dict[str, Any] | None:
    """The first line where a replay differs from its recording (None: the same, line for line)."""
    until = recorded.last_step if until_step is None else until_step
    expected, actual = comparable(recorded, until), comparable(replayed, until)
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            return {"line": index + 2, "step": want.get("step"), "expected": want, "actual": got}
    if len(expected) != len(actual):
        index = min(len(expected), len(actual))
        return {
            "line": index + 2,
            "step": (expected[index] if index < len(expected) else actual[index]).get("step"),
            "expected": expected[index] if index < len(expected) else None,
            "actual": actual[index] if index < len(actual) else None,
        }
    return None
