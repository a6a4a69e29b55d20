"""The test oracle: what a user's view row must be, computed from what the test sent.

Deliberately written apart from `lambdas.fold` (and in the plainest way) so a bug in the
application's fold cannot hide in the check. The rules are the ones in ARCHITECTURE.md (I1):
events de-duplicated by id; `lastLogin` the greatest login timestamp; `recentOrderCount` the number
of distinct order events; `name` from the user-created event with the greatest (timestamp, id).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

USER_CREATED, USER_LOGGED_IN, ORDER_SUBMITTED = "user-created", "user-loggedIn", "order-submitted"
KNOWN_TYPES = (USER_CREATED, USER_LOGGED_IN, ORDER_SUBMITTED)


@dataclass(frozen=True)
class ExpectedView:
    id: str
    name: str | None
    last_login: int | None
    recent_order_count: int
    event_count: int

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "lastLogin": self.last_login,
            "recentOrderCount": self.recent_order_count,
            "eventCount": self.event_count,
        }


def user_of(event: dict[str, Any]) -> str | None:
    if event.get("type") == ORDER_SUBMITTED:
        return (event.get("order") or {}).get("userId")
    return (event.get("user") or {}).get("id")


def expected_view(user_id: str, events: Iterable[dict[str, Any]]) -> ExpectedView:
    distinct: dict[str, dict[str, Any]] = {}
    for event in events:
        if user_of(event) == user_id and event.get("type") in KNOWN_TYPES:
            distinct.setdefault(event["id"], event)
    creations = [e for e in distinct.values() if e["type"] == USER_CREATED]
    logins = [e["timestamp"] for e in distinct.values() if e["type"] == USER_LOGGED_IN]
    orders = [e for e in distinct.values() if e["type"] == ORDER_SUBMITTED]
    name = None
    if creations:
        latest = max(creations, key=lambda e: (e["timestamp"], e["id"]))
        name = (latest.get("user") or {}).get("name")
    return ExpectedView(
        id=user_id,
        name=name,
        last_login=max(logins) if logins else None,
        recent_order_count=len(orders),
        event_count=len(distinct),
    )


def view_differences(expected: ExpectedView, row: dict[str, Any] | None) -> list[str]:
    """What differs between the expected view and a view row ([] when they agree)."""
    if row is None:
        return [f"no view row for {expected.id} (expected {expected.as_row()})"]
    differences = []
    for field, want in expected.as_row().items():
        have = row.get(field)
        if have != want:
            differences.append(f"{expected.id}.{field}: expected {want!r}, saw {have!r}")
    return differences
