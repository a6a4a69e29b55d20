"""What an apply or a teardown did, resource by resource, and the pure comparisons that decide it.

The diff functions take the desired settings (from `infra.stack`) and what the endpoint reported
(GetFunction, GetEventSourceMapping, GetQueueAttributes... responses) and return one line per
difference, e.g. ``Timeout: 3 -> 30``. An empty list means "unchanged". They never call AWS, so
the decisions are unit-tested without an endpoint.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

CREATED = "created"
UPDATED = "updated"
REPLACED = "replaced"
UNCHANGED = "unchanged"
REMOVED = "removed"
ABSENT = "absent"
SKIPPED = "skipped"
DRIFTED = "drifted"
"""Only when checking (``outputs``): the resource differs from the stack; apply would update it."""
MUTATIONS = (CREATED, UPDATED, REPLACED, REMOVED)

log = logging.getLogger("infra")


@dataclass(frozen=True)
class Change:
    kind: str
    """stream, table, queue, role, function, mapping, log-group, time-to-live."""
    name: str
    action: str
    details: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"{self.action:<9} {self.kind} {self.name}"
        return f"{text}: {'; '.join(self.details)}" if self.details else text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "details": list(self.details)}


@dataclass
class ChangeReport:
    changes: list[Change] = field(default_factory=list)

    def record(self, kind: str, name: str, action: str, details: list[str] | tuple[str, ...] = ()) -> Change:
        change = Change(kind, name, action, tuple(details))
        self.changes.append(change)
        (log.warning if action in (SKIPPED, DRIFTED) else log.info)("%s", change.line())
        return change

    @property
    def changed(self) -> bool:
        return any(c.action in MUTATIONS for c in self.changes)

    def summary(self) -> str:
        """``no changes (24 unchanged)`` or ``2 created, 1 updated, 21 unchanged``."""
        counts = Counter(c.action for c in self.changes)
        order = (CREATED, UPDATED, REPLACED, REMOVED, DRIFTED, SKIPPED, ABSENT, UNCHANGED)
        parts = ", ".join(f"{counts[a]} {a}" for a in order if counts[a])
        if not self.changed and not counts[DRIFTED]:
            return f"no changes ({parts})" if parts else "no changes"
        return parts

    def to_list(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.changes]


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def diff_values(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """``key: actual -> desired`` for each key of ``desired`` whose value differs in ``actual``."""
    return [
        f"{key}: {_show(actual.get(key))} -> {_show(value)}"
        for key, value in desired.items()
        if actual.get(key) != value
    ]


def function_code_diff(local_sha256: str, deployed_sha256: str | None) -> list[str]:
    if local_sha256 == deployed_sha256:
        return []
    return [f"CodeSha256: {deployed_sha256} -> {local_sha256}"]


def function_configuration_diff(desired: Mapping[str, Any], configuration: Mapping[str, Any]) -> list[str]:
    """Desired (`FunctionSpec.configuration`) against GetFunction's ``Configuration``. Environment
    differences are listed per variable, so a changed setting reads as one line."""
    flat_desired = {k: v for k, v in desired.items() if k != "Environment"}
    differences = diff_values(flat_desired, configuration)
    wanted = dict(desired.get("Environment", {}).get("Variables", {}))
    current = dict((configuration.get("Environment") or {}).get("Variables") or {})
    for name in sorted(set(wanted) | set(current)):
        if wanted.get(name) != current.get(name):
            differences.append(f"Environment.{name}: {_show(current.get(name))} -> {_show(wanted.get(name))}")
    return differences


def _normalise_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """GetEventSourceMapping leaves out what is unset or default; compare in one shape."""
    normal = dict(values)
    if "MaximumBatchingWindowInSeconds" in normal or "BatchSize" in normal:
        normal.setdefault("MaximumBatchingWindowInSeconds", 0)
    normal["FunctionResponseTypes"] = sorted(normal.get("FunctionResponseTypes") or [])
    on_failure = ((normal.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    normal["DestinationConfig"] = {"OnFailure": {"Destination": on_failure}} if on_failure else None
    return normal


def mapping_diff(desired: Mapping[str, Any], mapping: Mapping[str, Any]) -> list[str]:
    """Desired (`MappingSpec.parameters`) against a GetEventSourceMapping / ListEventSourceMappings
    entry; only the desired keys are compared (SQS mappings carry no stream settings)."""
    wanted = _normalise_mapping(desired)
    current = _normalise_mapping(mapping)
    if "DestinationConfig" not in desired:
        wanted.pop("DestinationConfig")
    return diff_values(wanted, current)


def queue_attributes_diff(desired: Mapping[str, str], attributes: Mapping[str, str]) -> list[str]:
    """Desired (`QueueSpec.attributes`) against GetQueueAttributes. SQS returns numbers as strings
    and the redrive policy as JSON whose maxReceiveCount may be a number or a string."""
    differences = []
    for name, value in desired.items():
        current = attributes.get(name)
        if name == "RedrivePolicy":
            if _redrive(value) != _redrive(current):
                differences.append(f"RedrivePolicy: {current} -> {value}")
        elif str(current) != str(value):
            differences.append(f"{name}: {current} -> {value}")
    return differences


def _redrive(policy: str | None) -> tuple[str, int] | None:
    if not policy:
        return None
    try:
        parsed = json.loads(policy)
        return str(parsed["deadLetterTargetArn"]), int(parsed["maxReceiveCount"])
    except (ValueError, KeyError, TypeError):
        return None


def policy_diff(desired: Mapping[str, Any], actual: Mapping[str, Any] | str | None) -> list[str]:
    """IAM returns policy documents URL-decoded and parsed (boto3) or as a JSON string; compare
    the documents, not their spelling (a single Action or Resource may come back as a string)."""
    if isinstance(actual, str):
        try:
            actual = json.loads(actual)
        except ValueError:
            actual = None
    if _canonical_policy(desired) == _canonical_policy(actual):
        return []
    return ["policy document differs" if actual else "policy missing"]


def _canonical_policy(document: Any) -> Any:
    if not isinstance(document, Mapping):
        return None
    statements = document.get("Statement") or []
    if isinstance(statements, Mapping):
        statements = [statements]
    canonical = []
    for statement in statements:
        entry = {}
        for key, value in statement.items():
            if key in ("Action", "Resource", "NotAction", "NotResource"):
                value = sorted([value] if isinstance(value, str) else value)
            entry[key] = value
        canonical.append(json.dumps(entry, sort_keys=True))
    return (document.get("Version"), sorted(canonical))


def table_key_diff(desired_key_schema: list[dict[str, str]], table: Mapping[str, Any]) -> list[str]:
    """Keys cannot change in place: a difference means the table must be deleted (teardown)."""
    wanted = sorted((k["AttributeName"], k["KeyType"]) for k in desired_key_schema)
    current = sorted((k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", []))
    return [] if wanted == current else [f"KeySchema: {current} -> {wanted}"]


def table_stream_diff(stream_view_type: str | None, table: Mapping[str, Any]) -> list[str]:
    if stream_view_type is None:
        return []
    spec = table.get("StreamSpecification") or {}
    current = spec.get("StreamViewType") if spec.get("StreamEnabled") else None
    return [] if current == stream_view_type else [f"StreamViewType: {current} -> {stream_view_type}"]


def time_to_live_diff(attribute: str, description: Mapping[str, Any]) -> list[str]:
    """DescribeTimeToLive: ENABLING counts as done (AWS takes up to an hour to say ENABLED)."""
    status = description.get("TimeToLiveStatus")
    current = description.get("AttributeName")
    if status in ("ENABLED", "ENABLING") and current == attribute:
        return []
    return [f"TimeToLive: {current or '-'} ({status or 'DISABLED'}) -> {attribute} (ENABLED)"]
