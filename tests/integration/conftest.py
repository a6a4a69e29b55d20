"""The demo pipeline's fixtures, built on the esjoin plugin's `esjoin_backend` and `esjoin_control`
(helpers are in support/scenario.py).

    backend          the session's Backend (the plugin's esjoin_backend)
    stack            the test stage's outputs, bootstrapped once per session (short snapshot horizon)
    stack_factory    another stage with other settings: stack_factory("broken", snapshot_mode="original")
    pipeline         a Pipeline on `stack` with a fresh event log
    new_user         unique user ids per test: new_user("alice") -> "u-<test>-<random>-alice"
    control          the embedded endpoint's control API (skips the test elsewhere)
    long_run         True with --esjoin-long (the generated suite's soak bounds)
    faults           fault rules through the control API, removed when the test ends (embedded only)
    maybe_faults     the same where the backend has a control API, else None (the test runs without)
    broken_pipeline  a Pipeline on the "broken" stage: the original example's snapshot logic
                     (SNAPSHOT_MODE=original), to show that a scenario catches it
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from esjoin.testing.backends import EMBEDDED, STATE_DIR, Backend
from esjoin.testing.control_client import ControlClient
from esjoin.testing.pipeline import Pipeline
from esjoin.testing.pytest_plugin import LONG_OPTION, STAGE_OPTION
from tests.integration.support.own_endpoint import TEST_SETTINGS
from tests.integration.support.scenario import Faults

DEFAULT_TEST_STAGE = "test"

BROKEN_STAGE_SETTINGS: dict[str, Any] = {
    "snapshot_mode": "original",  # ONLY to demonstrate the original's data loss (lambdas/snapshot.py)
    # A 30 s horizon keeps "young" events young while a scenario runs, on any backend.
    "snapshot_horizon_seconds": 30,
    # No automatic snapshot requests: the scenarios ask by hand, and a trigger's request would sit in
    # SQS for the 30 s horizon (keeping the endpoint from quiescence).
    "snapshot_threshold": 1_000_000,
}


@pytest.fixture(scope="session")
def backend(esjoin_backend: Backend) -> Backend:
    return esjoin_backend


@contextlib.contextmanager
def stage_lock(stage: str) -> Iterator[None]:
    """One bootstrap of a stage at a time (pytest-xdist workers may share an endpoint)."""
    STATE_DIR.mkdir(exist_ok=True)
    with open(STATE_DIR / f"bootstrap-{stage}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def stack_factory(backend: Backend, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    from infra.bootstrap import apply, teardown
    from infra.settings import StackSettings
    from infra.stack import build_stack

    base = request.config.getoption(STAGE_OPTION) or DEFAULT_TEST_STAGE
    made: dict[str, Any] = {}

    def make(suffix: str = "", **settings: Any) -> Any:
        stage = f"{base}-{suffix}" if suffix else base
        values = {**TEST_SETTINGS, **settings, "stage": stage, "region": backend.region}
        wanted = StackSettings.from_env(environ={}, overrides=values)
        if stage not in made:
            stack = build_stack(wanted)
            with stage_lock(stage):
                made[stage] = (stack, apply(stack, backend.target, outputs_path=STATE_DIR / f"outputs-{stage}.json"))
        elif made[stage][0].settings != wanted:
            # A stage is made once per session: a second caller asking for other settings would
            # silently run on the first caller's (and pass or fail for the wrong reason).
            raise ValueError(
                f"stage {stage!r} was already made with {made[stage][0].settings}; "
                f"asked again with {wanted}: use another suffix"
            )
        return made[stage][1]

    yield make
    if backend.name != EMBEDDED:  # the embedded endpoint's state goes with it; elsewhere, clean up
        for stack, _ in made.values():
            teardown(stack, backend.target, outputs_path=None)


@pytest.fixture(scope="session")
def stack(stack_factory: Callable[..., Any]) -> Any:
    return stack_factory()


@pytest.fixture
def pipeline(backend: Backend, stack: Any) -> Pipeline:
    return Pipeline(backend, stack)


@pytest.fixture
def new_user(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique user ids for this test, readable in failure reports: u-<test>-<run>-<label>."""
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[-24:]
    run = uuid.uuid4().hex[:6]
    return lambda label="user": f"u-{test}-{run}-{label}"


@pytest.fixture
def control(esjoin_control: ControlClient) -> ControlClient:
    return esjoin_control


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption(LONG_OPTION))


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
