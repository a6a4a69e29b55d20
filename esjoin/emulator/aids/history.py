"""The history of invocations, for tests and for people chasing a bug (`GET /_esjoin/history`).

One `InvocationRecord` per function invocation: who invoked (direct call or which mapping, with
the batch's record ids), what happened (outcome, error, partial failures, injected fault) and when.
A bounded ring buffer: the oldest records go first (ESJOIN_HISTORY_SIZE).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from dataclasses import asdict, dataclass, field

from esjoin.emulator.invocation import InvocationOrigin, InvocationResult

SUCCESS, ERROR, TIMEOUT, PARTIAL, THROTTLED = "success", "error", "timeout", "partial", "throttled"


@dataclass
class InvocationRecord:
    id: int
    request_id: str
    function: str
    invocation_type: str
    mapping: str | None
    source: str | None
    batch_ids: list[str]
    attempt: int
    duplicate: bool
    outcome: str
    error_type: str | None
    error_message: str | None
    batch_item_failures: list[str]
    injected_fault: str | None
    started_at: float
    ended_at: float
    duration_ms: float
    cold_start: bool
    extra: dict = field(default_factory=dict)

    def to_api(self) -> dict:
        document = asdict(self)
        return {_camel(key): value for key, value in document.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def classify(result: InvocationResult, origin: InvocationOrigin) -> tuple[str, list[str]]:
    """Outcome of an invocation and, for mapping deliveries, the reported batch item failures."""
    if result.timed_out:
        return TIMEOUT, []
    if result.failed:
        return ERROR, []
    if origin.mapping_uuid is None:
        return SUCCESS, []
    try:
        response = json.loads(result.payload or b"null")
    except ValueError:
        return SUCCESS, []
    failures = response.get("batchItemFailures") if isinstance(response, dict) else None
    if not failures:
        return SUCCESS, []
    identifiers = [str(item.get("itemIdentifier")) for item in failures if isinstance(item, dict)]
    return PARTIAL, identifiers


def _entry(
    function: str, origin: InvocationOrigin, result: InvocationResult, started_at: float, ended_at: float
) -> InvocationRecord:
    outcome, failures = classify(result, origin)
    error = result.error_document()
    return InvocationRecord(
        id=0,  # numbered when published
        request_id=result.request_id,
        function=function,
        invocation_type=origin.invocation_type,
        mapping=origin.mapping_uuid,
        source=origin.source,
        batch_ids=list(origin.batch_ids),
        attempt=origin.attempt,
        duplicate=origin.duplicate,
        outcome=outcome,
        error_type=error.get("errorType"),
        error_message=error.get("errorMessage"),
        batch_item_failures=failures,
        injected_fault=result.injected_fault,
        started_at=started_at,
        ended_at=ended_at,
        duration_ms=round(result.duration_ms, 3),
        cold_start=result.init_duration_ms is not None,
    )


@dataclass
class InvocationDetail:
    """What the console shows when a bar is opened: the event (a batch), the response and the log,
    each cut at DETAIL_LIMIT bytes (`truncated` says so)."""

    payload: bytes
    response: bytes
    log: str
    truncated: bool


DETAIL_LIMIT = 256 * 1024
DETAIL_SIZE = 500
"""The newest invocations keep their detail; older ones keep only their record."""


def _detail(payload: bytes, result: InvocationResult) -> InvocationDetail:
    truncated = len(payload) > DETAIL_LIMIT or len(result.payload or b"") > DETAIL_LIMIT
    return InvocationDetail(
        payload=payload[:DETAIL_LIMIT],
        response=(result.payload or b"")[:DETAIL_LIMIT],
        log=result.log[-DETAIL_LIMIT:],
        truncated=truncated,
    )


class InvocationHistory:
    def __init__(self, size: int) -> None:
        self._records: deque[InvocationRecord] = deque(maxlen=size)
        self._details: dict[int, InvocationDetail] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def record(
        self,
        function: str,
        origin: InvocationOrigin,
        result: InvocationResult,
        started_at: float,
        ended_at: float,
        payload: bytes = b"",
    ) -> None:
        self._append(_entry(function, origin, result, started_at, ended_at), _detail(payload, result))

    def get(self, record_id: int) -> tuple[InvocationRecord, InvocationDetail] | None:
        with self._lock:
            detail = self._details.get(record_id)
            record = next((r for r in reversed(self._records) if r.id == record_id), None) if detail else None
        return None if record is None or detail is None else (record, detail)

    def record_throttle(self, function: str, origin: InvocationOrigin, message: str, at: float) -> None:
        entry = _entry(function, origin, InvocationResult(request_id="", payload=b""), at, at)
        entry.outcome, entry.error_type, entry.error_message = THROTTLED, "TooManyRequestsException", message
        self._append(entry)

    def _append(self, entry: InvocationRecord, detail: InvocationDetail | None = None) -> None:
        """Number and publish a finished record: readers never see one still being filled in."""
        with self._lock:
            entry.id = next(self._ids)
            self._records.append(entry)
            if detail is not None:
                self._details[entry.id] = detail
                if len(self._details) > DETAIL_SIZE:
                    del self._details[next(iter(self._details))]  # the oldest: ids only grow

    def query(
        self, function: str | None = None, mapping: str | None = None, since_id: int = 0, limit: int | None = None
    ) -> list[InvocationRecord]:
        with self._lock:
            records = [
                r
                for r in self._records
                if r.id > since_id
                and (function is None or r.function == function)
                and (mapping is None or r.mapping == mapping)
            ]
        return records[-limit:] if limit else records

    def last_id(self) -> int:
        with self._lock:
            return self._records[-1].id if self._records else 0

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._details.clear()
