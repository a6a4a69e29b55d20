"""Domain events in the pipeline's wire format, for scenarios and the demo.

{"id": <uuid>, "type": "user-created"|"user-loggedIn"|"order-submitted", "timestamp": <ms epoch>,
 "user": {"id", "name"?}}   or   {..., "order": {"userId", "id", ...}}
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from esjoin.testing.oracle import ORDER_SUBMITTED, USER_CREATED, USER_LOGGED_IN, user_of


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return str(uuid.uuid4())


def user_created(user_id: str, name: str, timestamp: int | None = None) -> dict[str, Any]:
    return {
        "id": new_id(),
        "type": USER_CREATED,
        "timestamp": timestamp or now_ms(),
        "user": {"id": user_id, "name": name},
    }


def logged_in(user_id: str, timestamp: int | None = None) -> dict[str, Any]:
    return {"id": new_id(), "type": USER_LOGGED_IN, "timestamp": timestamp or now_ms(), "user": {"id": user_id}}


def order_submitted(user_id: str, timestamp: int | None = None, amount: int = 10) -> dict[str, Any]:
    return {
        "id": new_id(),
        "type": ORDER_SUBMITTED,
        "timestamp": timestamp or now_ms(),
        "order": {"userId": user_id, "id": new_id(), "amount": amount},
    }


def partition_key(event: dict[str, Any]) -> str:
    user = user_of(event)
    if not user:
        raise ValueError(f"event {event.get('id')} has no user id")
    return user


def sample_events(prefix: str = "demo") -> list[dict[str, Any]]:
    """The original example's sample: two users created, some logins, some orders."""
    alice, bob = f"{prefix}-alice", f"{prefix}-bob"
    base = now_ms() - 60_000
    return [
        user_created(alice, "Alice", base),
        user_created(bob, "Bob", base + 1),
        logged_in(alice, base + 1000),
        order_submitted(alice, base + 2000, 25),
        logged_in(bob, base + 3000),
        order_submitted(alice, base + 4000, 40),
        order_submitted(bob, base + 5000, 15),
        logged_in(alice, base + 6000),
    ]


def event_of_kind(kind: str, user_id: str, timestamp: int) -> dict[str, Any]:
    """An event of type `kind` for a user (a generated suite's step)."""
    if kind == USER_CREATED:
        return user_created(user_id, f"Name at {timestamp}", timestamp)
    if kind == USER_LOGGED_IN:
        return logged_in(user_id, timestamp)
    return order_submitted(user_id, timestamp)
