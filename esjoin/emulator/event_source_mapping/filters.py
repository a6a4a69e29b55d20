"""FilterCriteria: which records an event source mapping sends to its function.

AWS's rules (https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html): up to 5
filters, each a JSON event pattern; a record is sent when it matches at least one, and otherwise
discarded: a stream's checkpoint moves past it, an SQS message is deleted. A batch whose records are
all discarded invokes nothing. Patterns are matched against the record as the function would get it,
with the payload decoded:

- Kinesis: the record's `kinesis` object, its `data` decoded from base64 and parsed as JSON (data that
  is not JSON matches no rule on `data`);
- DynamoDB Streams: the whole record (`eventName`, `dynamodb.Keys`, `dynamodb.NewImage`, ...);
- SQS: the whole record, its `body` parsed when it is a JSON object (a plain-text body is matched
  as a string: `{"body": ["text"]}`).

The pattern language (exact values, prefix, suffix, equals-ignore-case, anything-but, numeric,
exists, $or) is moto's EventBridge matcher (moto.events.models.EventPattern), so it behaves as moto's
EventBridge does; it covers the comparison operators Lambda documents.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from typing import Any

MAX_FILTERS = 5  # AWS's default quota per mapping


class FilterCriteriaError(ValueError):
    """The FilterCriteria parameter is not valid; the message says why."""


class RecordFilter:
    """Compiled FilterCriteria: `accepts(record)` for a record as it goes into {"Records": [...]}."""

    def __init__(self, source: str, patterns: list[Any]) -> None:
        self._patterns = patterns  # moto EventPattern objects
        self._view: Callable[[dict[str, Any]], dict[str, Any]] = _VIEWS[source]

    @property
    def active(self) -> bool:
        return bool(self._patterns)

    def accepts(self, record: dict[str, Any]) -> bool:
        if not self._patterns:
            return True
        view = self._view(record)
        return any(pattern.matches_event(view) for pattern in self._patterns)


def compile_criteria(source: str, criteria: dict[str, Any] | None) -> RecordFilter:
    """The filter for a mapping's FilterCriteria (None or {}: every record); FilterCriteriaError when
    it is malformed, as CreateEventSourceMapping refuses it."""
    if not criteria:
        return _ACCEPT_ALL[source]
    return _compiled(source, json.dumps(criteria, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _compiled(source: str, key: str) -> RecordFilter:
    from moto.events.exceptions import InvalidEventPatternException
    from moto.events.models import EventPattern, EventPatternParser

    criteria = json.loads(key)
    if not isinstance(criteria, dict) or set(criteria) - {"Filters"}:
        raise FilterCriteriaError("FilterCriteria must be an object with one member, Filters")
    filters = criteria.get("Filters") or []
    if not isinstance(filters, list):
        raise FilterCriteriaError("FilterCriteria.Filters must be a list")
    if len(filters) > MAX_FILTERS:
        raise FilterCriteriaError(f"FilterCriteria has {len(filters)} filters; at most {MAX_FILTERS} are allowed")
    patterns = []
    for number, entry in enumerate(filters, start=1):
        raw = entry.get("Pattern") if isinstance(entry, dict) else None
        if not isinstance(raw, str):
            raise FilterCriteriaError(f"filter {number} has no Pattern string")
        try:
            parsed = EventPatternParser(raw).parse()
        except InvalidEventPatternException as error:
            raise FilterCriteriaError(
                f"Invalid filter pattern definition in filter {number}: {error.message}"
            ) from None
        if not isinstance(parsed, dict) or not parsed:
            raise FilterCriteriaError(
                f"Invalid filter pattern definition in filter {number}: a pattern is a non-empty JSON object"
            )
        patterns.append(EventPattern(raw, parsed))
    return RecordFilter(source, patterns)


# -- what a pattern sees of each source's records ----------------------------------------------


def _kinesis_view(record: dict[str, Any]) -> dict[str, Any]:
    view = dict(record.get("kinesis") or {})
    data = _json_or_none(view.pop("data", None), decode_base64=True)
    if data is not None:
        view["data"] = data
    return view


def _dynamodb_view(record: dict[str, Any]) -> dict[str, Any]:
    return record


def _sqs_view(record: dict[str, Any]) -> dict[str, Any]:
    body = _json_or_none(record.get("body"), decode_base64=False)
    return {**record, "body": body} if isinstance(body, dict) else record


def _json_or_none(value: Any, decode_base64: bool) -> Any:
    if not isinstance(value, str):
        return None
    try:
        text = base64.b64decode(value, validate=True) if decode_base64 else value
        return json.loads(text)
    except (binascii.Error, ValueError):  # not base64, not UTF-8, not JSON
        return None


_VIEWS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "kinesis": _kinesis_view,
    "dynamodb": _dynamodb_view,
    "sqs": _sqs_view,
}
_ACCEPT_ALL = {source: RecordFilter(source, []) for source in _VIEWS}
