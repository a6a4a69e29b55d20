"""Local fixtures of the scenario suites (helpers are in integration_support.py).

    faults           fault rules through the control API, removed when the test ends (embedded only)
    maybe_faults     the same where the backend has a control API, else None (the test runs without)
    broken_pipeline  a Pipeline on the "broken" stage: the original example's snapshot logic
                     (SNAPSHOT_MODE=original), to show that a scenario catches it
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from integration_support import Faults

from harness.backends import Backend
from harness.control import ControlClient
from harness.pipeline import Pipeline

BROKEN_STAGE_SETTINGS: dict[str, Any] = {
    "snapshot_mode": "original",  # ONLY to demonstrate the original's data loss (lambdas/snapshot.py)
    # A 30 s horizon keeps "young" events young while a scenario runs, on any backend.
    "snapshot_horizon_seconds": 30,
    # No automatic snapshot requests: the scenarios ask by hand, and a trigger's request would sit in
    # SQS for the 30 s horizon (keeping the endpoint from quiescence).
    "snapshot_threshold": 1_000_000,
}


@pytest.fixture
def faults(control: ControlClient) -> Iterator[Faults]:
    added = Faults(control)
    yield added
    added.remove_all()


@pytest.fixture
def maybe_faults(backend: Backend) -> Iterator[Faults | None]:
    if backend.control is None:
        yield None
        return
    added = Faults(backend.control)
    yield added
    added.remove_all()


@pytest.fixture
def broken_pipeline(backend: Backend, stack_factory: Callable[..., Any]) -> Pipeline:
    return Pipeline(backend, stack_factory("broken", **BROKEN_STAGE_SETTINGS))
