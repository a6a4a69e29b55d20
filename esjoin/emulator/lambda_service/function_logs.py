"""Lambda's log lines, the decoding of a worker's output into log events, and their delivery.

Every message keeps AWS's trailing newline (a CloudWatch Logs event from Lambda reads
``"START RequestId: ... Version: $LATEST\\n"``), so an invocation's log text is its messages joined.
The platform lines follow what Lambda writes today:
https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from esjoin.emulator.invocation import FunctionSpec

LogEvent = tuple[int, str]  # (epoch milliseconds, message)

MAX_EVENT_BYTES = 262_144 - 26
"""The longest message a CloudWatch Logs event holds, in UTF-8 bytes: an event is at most 256 KB
counting 26 bytes of per-event overhead (PutLogEvents: "Each log event can be no larger than 256 KB",
the batch size counts "26 bytes for each log event";
https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html). Lambda
splits a longer line into several events at that size (observed at 2^18 - 26 bytes:
https://stackoverflow.com/questions/77175643), and so does WorkerOutputDecoder."""

_log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_timestamp(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def log_stream_name(version: str) -> str:
    """One stream per execution environment: ``2024/05/01/[$LATEST]<32 hex>``."""
    return f"{datetime.now(tz=UTC):%Y/%m/%d}/[{version}]{uuid.uuid4().hex}"


def start_line(request_id: str, version: str) -> str:
    return f"START RequestId: {request_id} Version: {version}\n"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}\n"


def report_line(
    request_id: str,
    *,
    duration_ms: float,
    billed_duration_ms: int,
    memory_mb: int,
    max_memory_used_mb: int,
    init_duration_ms: float | None = None,
    status: str | None = None,
    error_type: str | None = None,
) -> str:
    """AWS's REPORT line: tab-separated, a trailing tab when it ends without a Status field."""
    fields = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {billed_duration_ms} ms",
        f"Memory Size: {memory_mb} MB",
        f"Max Memory Used: {max_memory_used_mb} MB",
    ]
    if init_duration_ms is not None:
        fields.append(f"Init Duration: {init_duration_ms:.2f} ms")
    if status is None:
        return "\t".join(fields) + "\t\n"
    fields.append(f"Status: {status}")
    if error_type:
        fields.append(f"Error Type: {error_type}")
    return "\t".join(fields) + "\n"


def init_report_line(init_duration_ms: float, error_type: str) -> str:
    """Logged when the init phase fails (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html)."""
    return (
        f"INIT_REPORT Init Duration: {init_duration_ms:.2f} ms\tPhase: init\tStatus: error\tError Type: {error_type}\n"
    )


def timeout_message(timeout_seconds: float) -> str:
    return f"Task timed out after {timeout_seconds:.2f} seconds"


def timeout_line(request_id: str, timeout_seconds: float, epoch_ms: int) -> str:
    return f"{iso_timestamp(epoch_ms)} {request_id} {timeout_message(timeout_seconds)}\n"


def runtime_exit_line(request_id: str, reason: str) -> str:
    return f"RequestId: {request_id} Error: {reason}\nRuntime.ExitError\n"


class WorkerOutputDecoder:
    """Turns the bytes a worker writes to fd 1/2 into log messages.

    Plain output is split into lines (one event each, as Lambda splits stdout); a framed message
    (marker, 8 hex digits of length, text) is one event whatever it contains. Either is cut into
    several events once longer than MAX_EVENT_BYTES, and those pieces leave as soon as they are
    complete: a handler printing 50 MB on one line never has the decoder hold more than about one event
    (nor rescan a growing buffer for the marker on every read)."""

    def __init__(self, marker: bytes, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._marker = marker
        self._limit = max_event_bytes
        self._pending = bytearray()
        self._frame_left = 0  # bytes of a framed message still to come, once its header is read

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        messages: list[str] = []
        header = len(self._marker) + 8
        while self._pending:
            if self._frame_left:
                if not self._frame_body(messages):
                    break
                continue
            start = self._pending.find(self._marker)
            if start < 0:
                # Emit whole lines; keep a tail that may be the start of a marker or of a line.
                end = self._pending.rfind(b"\n")
                if end >= 0:
                    messages.extend(self._lines(self._pending[: end + 1]))
                    del self._pending[: end + 1]
                # A line too long for one event leaves in pieces; the last len(marker) - 1 bytes stay
                # behind, as they may begin a marker.
                while len(self._pending) >= self._limit + len(self._marker):
                    messages.extend(self._piece(self._limit))
                break
            if start > 0:
                messages.extend(self._lines(self._pending[:start]))
                del self._pending[:start]
                continue
            if len(self._pending) < header:
                break
            try:
                length = int(self._pending[len(self._marker) : header], 16)
            except ValueError:  # not a frame after all: let the marker pass as text
                messages.extend(self._lines(self._pending[: len(self._marker)]))
                del self._pending[: len(self._marker)]
                continue
            del self._pending[:header]
            self._frame_left = length
            if length == 0:
                messages.append("\n")
        return messages

    def flush(self) -> list[str]:
        """The end of a phase: a partial last line becomes an event of its own."""
        if not self._pending or self._frame_left or self._pending.startswith(self._marker):
            return []  # nothing, or a frame still being written
        messages = self._lines(self._pending)
        self._pending.clear()
        return messages

    def _frame_body(self, messages: list[str]) -> bool:
        """Emit what is complete of the framed message being read; False when it needs more bytes."""
        if len(self._pending) >= self._frame_left:
            body = self._pending[: self._frame_left]
            del self._pending[: self._frame_left]
            self._frame_left = 0
            messages.extend(split_message(_with_newline(body.decode("utf-8", "replace")), self._limit))
            return True
        if len(self._pending) < self._limit or self._frame_left <= self._limit + 1:
            return False  # the rest is at most one event and a newline: split_message cuts it well
        before = len(self._pending)
        messages.extend(self._piece(self._limit))
        self._frame_left -= before - len(self._pending)
        return True

    def _piece(self, size: int) -> list[str]:
        """Take about `size` bytes off the front of the pending output (never half a UTF-8 character)
        as a piece of a longer message: no newline added."""
        cut = _character_start(self._pending, size)
        piece = self._pending[:cut].decode("utf-8", "replace")
        del self._pending[:cut]
        return split_message(piece, self._limit)

    def _lines(self, data: bytes | bytearray) -> list[str]:
        # Split on b"\n" only: str.splitlines would also break at \r, \x1c, \u2028, ...
        lines = bytes(data).split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        messages: list[str] = []
        for line in lines:
            messages.extend(split_message(_with_newline(line.decode("utf-8", "replace")), self._limit))
        return messages


def split_message(message: str, limit: int = MAX_EVENT_BYTES) -> list[str]:
    """`message` as pieces of at most `limit` UTF-8 bytes each, cut between characters; joined they are
    `message` again. A trailing newline stays with the text before it, never an event of its own."""
    if len(message) * 4 <= limit:  # the common case: too short to be too long, whatever it holds
        return [message]
    data = message.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return [message]
    pieces: list[str] = []
    start = 0
    while len(data) - start > limit:
        cut = _character_start(data, start + limit)
        if cut == len(data) - 1 and data.endswith(b"\n"):
            cut = _character_start(data, cut - 1)  # leave a character for the newline's event
        if cut <= start:  # cannot happen for limit >= 4; never loop forever
            cut = start + limit
        pieces.append(data[start:cut].decode("utf-8", "surrogatepass"))
        start = cut
    pieces.append(data[start:].decode("utf-8", "surrogatepass"))
    return pieces


def _character_start(data: bytes | bytearray, index: int) -> int:
    """The last position <= index where a UTF-8 character starts (a byte that is not 10xxxxxx). At most
    3 bytes back: in invalid UTF-8 (a run of continuation bytes) any position will do."""
    if index >= len(data):
        return len(data)
    for position in range(index, max(index - 3, 0) - 1, -1):
        if data[position] & 0xC0 != 0x80:
            return position
    return index


def _with_newline(message: str) -> str:
    return message if message.endswith("\n") else message + "\n"


class LogDelivery:
    """Hands log events to the LogSink on a thread of its own, so an invocation never waits for it.

    Batches whatever queued up while the sink was busy, one put() per log stream."""

    _STOP = object()

    def __init__(self, put: Callable[[FunctionSpec, str, list[LogEvent]], None], *, synchronous: bool = False) -> None:
        """`synchronous` (deterministic mode): submit() delivers in the caller's thread, in its step."""
        self._put = put
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="lambda-log-delivery", daemon=True)
        self._thread.start()

    def submit(self, spec: FunctionSpec, log_stream: str, events: list[LogEvent]) -> None:
        if events and self._synchronous:
            try:
                self._put(spec, log_stream, events)
            except Exception:
                _log.exception("could not deliver %d log events to %s %s", len(events), spec.log_group, log_stream)
        elif events:
            self._queue.put((spec, log_stream, events))

    def close(self) -> None:
        """Deliver what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batches: dict[tuple[str, str], tuple[FunctionSpec, list[LogEvent]]] = {}
            for item in items:
                if item is self._STOP:
                    stopping = True
                    continue
                spec, log_stream, events = item
                batch = batches.setdefault((spec.log_group, log_stream), (spec, []))
                batch[1].extend(events)
            for (log_group, log_stream), (spec, events) in batches.items():
                try:
                    self._put(spec, log_stream, events)
                except Exception:
                    _log.exception("could not deliver %d log events to %s %s", len(events), log_group, log_stream)
