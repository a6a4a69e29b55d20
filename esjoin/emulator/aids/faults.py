"""Fault injection for tests (`/_esjoin/faults`): make things fail or run late, on purpose.

Two kinds of rule, each with an action, `error` or `delay`:
- Function rules (`"function": "<name>"`): `error` fails the invocation as if the handler raised,
  without running it; `delay` starts the handler `delaySeconds` late, which counts against its
  timeout (so a long delay becomes a timeout).
- Request rules (`"operation": "PutItem"`, optionally `"service": "dynamodb"`): AWS API requests to
  the endpoint (JSON protocol: DynamoDB, Kinesis, SQS, Logs). `error` answers with an AWS error
  (default ProvisionedThroughputExceededException, 400) without executing the request; `delay` holds
  the request `delaySeconds` before executing it, e.g. to widen a race between two writers.
A rule applies to the next `count` matches (or until deleted) and, with `match`, only where that text
appears: in a function's event (Kinesis record data decoded from base64, so `"match": "user-42"`
finds a user's events) or in a request's body (a table name, a user id).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

ERROR, DELAY = "error", "delay"


@dataclass
class FaultRule:
    id: str
    action: str
    function: str | None = None  # a function rule...
    operation: str | None = None  # ...or a request rule: the API operation (PutItem, GetRecords, ...)
    service: str | None = None  # request rules: the X-Amz-Target prefix's service, e.g. dynamodb
    count: int | None = None  # matches still to affect; None: until deleted
    delay_seconds: float = 0.0
    error_type: str = "InjectedFault"
    error_message: str = "fault injected by the esjoin control API"
    status_code: int = 400  # request rules' error status
    match: str | None = None
    hits: int = 0

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "action": self.action,
            "function": self.function,
            "operation": self.operation,
            "service": self.service,
            "count": self.count,
            "delaySeconds": self.delay_seconds,
            "errorType": self.error_type,
            "errorMessage": self.error_message,
            "statusCode": self.status_code,
            "match": self.match,
            "hits": self.hits,
        }


class FaultError(ValueError):
    """A malformed fault rule; the control API answers 400 with this message."""


def parse_rule(document: dict, rule_id: str) -> FaultRule:
    if not isinstance(document, dict):
        raise FaultError("a fault rule is a JSON object")
    function, operation, action = document.get("function"), document.get("operation"), document.get("action")
    if bool(function) == bool(operation):
        raise FaultError("give either 'function' (a function name) or 'operation' (an API operation, e.g. PutItem)")
    for name, value in (("function", function), ("operation", operation), ("service", document.get("service"))):
        if value is not None and (not isinstance(value, str) or not value):
            raise FaultError(f"'{name}' must be a non-empty string")
    if action not in (ERROR, DELAY):
        raise FaultError(f"'action' must be '{ERROR}' or '{DELAY}', not {action!r}")
    count = document.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise FaultError("'count' must be a positive integer (omit it for 'until deleted')")
    delay = document.get("delaySeconds", 0)
    if action == DELAY and (not isinstance(delay, int | float) or delay <= 0 or delay > 900):
        raise FaultError("'delaySeconds' must be a number between 0 and 900 for a delay")
    match = document.get("match")
    if match is not None and (not isinstance(match, str) or not match):
        raise FaultError("'match' must be a non-empty string")
    status = document.get("statusCode", 400)
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise FaultError("'statusCode' must be an HTTP error status (400-599)")
    rule = FaultRule(
        id=rule_id,
        action=action,
        function=function,
        operation=operation,
        service=(document.get("service") or "").lower() or None,
        count=count,
        delay_seconds=float(delay or 0),
        match=match,
        status_code=status,
    )
    if operation:
        rule.error_type = "ProvisionedThroughputExceededException"
        rule.error_message = "fault injected by the esjoin control API (request rule)"
    if document.get("errorType"):
        rule.error_type = str(document["errorType"])
    if document.get("errorMessage"):
        rule.error_message = str(document["errorMessage"])
    return rule


def searchable_text(payload: bytes) -> str:
    """The event as text, with each Kinesis record's base64 `data` decoded next to it."""
    text = payload.decode(errors="replace")
    try:
        event = json.loads(payload or b"null")
    except ValueError:
        return text
    records = event.get("Records") if isinstance(event, dict) else None
    decoded = []
    for record in records if isinstance(records, list) else []:
        data = (record.get("kinesis") or {}).get("data") if isinstance(record, dict) else None
        if isinstance(data, str):
            try:
                decoded.append(base64.b64decode(data).decode(errors="replace"))
            except (binascii.Error, ValueError):
                continue
    return "\n".join([text, *decoded])


class FaultInjector:
    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, document: dict) -> FaultRule:
        with self._lock:
            rule = parse_rule(document, f"fault-{next(self._ids)}")
            self._rules.append(rule)
            return rule

    def list(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def remove(self, rule_id: str | None = None) -> int:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if rule_id is not None and r.id != rule_id]
            return before - len(self._rules)

    def take(self, function: str, payload: bytes) -> FaultRule | None:
        """The function rule that applies to this invocation, if any, counted as used."""
        return self._take(lambda r: r.function == function, lambda: searchable_text(payload))

    def take_request(self, service: str, operation: str, body: bytes) -> FaultRule | None:
        """The request rule that applies to this API request, if any, counted as used."""
        return self._take(
            lambda r: r.operation == operation and r.service in (None, service), lambda: body.decode(errors="replace")
        )

    def _take(self, applies: Callable[[FaultRule], bool], text_of: Callable[[], str]) -> FaultRule | None:
        if not self._rules:  # the hot path (every request and invocation): no rules, no lock, no work
            return None
        with self._lock:
            candidates = [r for r in self._rules if applies(r)]
            if not candidates:
                return None
            text = text_of() if any(r.match for r in candidates) else ""
            for rule in candidates:  # oldest first
                if rule.match and rule.match not in text:
                    continue
                rule.hits += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        self._rules.remove(rule)
                return replace(rule)
            return None
