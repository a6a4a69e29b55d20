"""Fault injection for tests (`/_esjoin/faults`): make a function fail or run late, on purpose.

A rule names a function and an action: `error` (the invocation fails as if the handler raised,
without running it) or `delay` (the handler starts `delaySeconds` late, which counts against its
timeout, so a long delay becomes a timeout). It applies to the next `count` invocations (or until
deleted) and, with `match`, only to invocations whose event contains that text. Kinesis record data
is base64 on the wire; matching looks at it decoded, so `"match": "user-42"` finds a user's events.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import threading
from dataclasses import asdict, dataclass

ERROR, DELAY = "error", "delay"


@dataclass
class FaultRule:
    id: str
    function: str
    action: str
    count: int | None = None  # invocations still to affect; None: until deleted
    delay_seconds: float = 0.0
    error_type: str = "InjectedFault"
    error_message: str = "fault injected by the esjoin control API"
    match: str | None = None
    hits: int = 0

    def to_api(self) -> dict:
        document = asdict(self)
        return {
            "id": document["id"], "function": self.function, "action": self.action, "count": self.count,
            "delaySeconds": self.delay_seconds, "errorType": self.error_type,
            "errorMessage": self.error_message, "match": self.match, "hits": self.hits,
        }


class FaultError(ValueError):
    """A malformed fault rule; the control API answers 400 with this message."""


def parse_rule(document: dict, rule_id: str) -> FaultRule:
    if not isinstance(document, dict):
        raise FaultError("a fault rule is a JSON object")
    function, action = document.get("function"), document.get("action")
    if not isinstance(function, str) or not function:
        raise FaultError("'function' (a function name) is required")
    if action not in (ERROR, DELAY):
        raise FaultError(f"'action' must be '{ERROR}' or '{DELAY}', not {action!r}")
    count = document.get("count")
    if count is not None and (not isinstance(count, int) or count < 1):
        raise FaultError("'count' must be a positive integer (omit it for 'until deleted')")
    delay = document.get("delaySeconds", 0)
    if action == DELAY and (not isinstance(delay, int | float) or delay <= 0):
        raise FaultError("'delaySeconds' must be a positive number for a delay")
    match = document.get("match")
    if match is not None and (not isinstance(match, str) or not match):
        raise FaultError("'match' must be a non-empty string")
    rule = FaultRule(id=rule_id, function=function, action=action, count=count,
                     delay_seconds=float(delay or 0), match=match)
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
        """The rule that applies to this invocation, if any, counted as used (oldest rule first)."""
        with self._lock:
            candidates = [r for r in self._rules if r.function == function]
            if not candidates:
                return None
            text = searchable_text(payload) if any(r.match for r in candidates) else ""
            for rule in candidates:
                if rule.match and rule.match not in text:
                    continue
                rule.hits += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        self._rules.remove(rule)
                return FaultRule(**asdict(rule))
            return None
