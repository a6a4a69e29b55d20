"""Splitting work into API calls that each stay within a count and a byte limit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def bounded_batches(items: Sequence[T], max_count: int, max_bytes: int, size: Callable[[T], int]) -> list[list[T]]:
    """`items` in order, in consecutive batches of at most `max_count` items and `max_bytes` bytes
    (by `size`); an item larger than `max_bytes` on its own gets a batch of its own."""
    batches: list[list[T]] = []
    current: list[T] = []
    current_bytes = 0
    for item in items:
        item_bytes = size(item)
        if current and (len(current) == max_count or current_bytes + item_bytes > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += item_bytes
    if current:
        batches.append(current)
    return batches
