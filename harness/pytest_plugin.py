"""pytest plugin (registered as `esjoin` through the pytest11 entry point).

Options: --backend embedded|localstack|aws (or ESJOIN_BACKEND), --aws-opt-in, --stage, --long.
Fixtures:
    backend        the session's Backend (embedded: reused if one is up, else started and stopped)
    stack          the test stage's outputs, bootstrapped once per session (short snapshot horizon)
    stack_factory  another stage with other settings: stack_factory("broken", snapshot_mode="original")
    pipeline       a Pipeline on `stack` with a fresh event log
    new_user       unique user ids per test: new_user("alice") -> "u-<test>-<random>-alice"
    control        the embedded endpoint's control API (skips the test elsewhere)
    long_run       True with --long (the generated suite's soak bounds)
Marker: @pytest.mark.embedded_only("why") skips on other backends and prints why.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.backends import AWS, BACKENDS, EMBEDDED, STATE_DIR, Backend, BackendError, open_backend
from harness.control import ControlClient
from harness.pipeline import Pipeline

# The stage every scenario shares: a 2-second snapshot horizon (the default is 60 s) so snapshots
# and trims happen within a test; a low snapshot threshold so the trigger asks for them; a short
# function timeout so a failed SQS message is retried within seconds (visibility = 6 x timeout).
TEST_SETTINGS: dict[str, Any] = {
    "shard_count": 2,
    "snapshot_horizon_seconds": 2,
    "snapshot_threshold": 5,
    "function_timeout_seconds": 5,
    "function_log_level": "INFO",
}
DEFAULT_TEST_STAGE = "test"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("esjoin", "esjoin integration harness")
    group.addoption("--backend", choices=BACKENDS, default=os.environ.get("ESJOIN_BACKEND", EMBEDDED),
                    help="where the integration suites run (default: embedded, or ESJOIN_BACKEND)")
    group.addoption("--aws-opt-in", action="store_true", default=False,
                    help="allow the aws backend to create and delete resources in a real AWS account")
    group.addoption("--stage", default=os.environ.get("ESJOIN_TEST_STAGE"),
                    help=f"stage name prefix for the test stacks (default: {DEFAULT_TEST_STAGE})")
    group.addoption("--long", action="store_true", default=False,
                    help="soak: run the generated (Hypothesis) suite with many more and longer examples")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded_only(reason): needs the embedded endpoint's control API")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("embedded_only")
    if marker is not None and item.config.getoption("--backend") != EMBEDDED:
        reason = marker.args[0] if marker.args else "needs the embedded endpoint's control API"
        pytest.skip(f"embedded backend only: {reason}")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name = request.config.getoption("--backend")
    try:
        opened = open_backend(name, aws_opt_in=request.config.getoption("--aws-opt-in"),
                              stage=request.config.getoption("--stage"))
    except BackendError as error:
        pytest.exit(f"esjoin: backend {name!r} unavailable: {error}", returncode=2)
    yield opened
    opened.stop()


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

    base = request.config.getoption("--stage") or DEFAULT_TEST_STAGE
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
            raise ValueError(f"stage {stage!r} was already made with {made[stage][0].settings}; "
                             f"asked again with {wanted}: use another suffix")
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
def control(backend: Backend) -> ControlClient:
    if backend.control is None:
        pytest.skip(f"the {backend.name} backend has no control API (embedded endpoint only)")
    return backend.control


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))


def pytest_report_header(config: pytest.Config) -> str:
    backend = config.getoption("--backend")
    return f"esjoin backend: {backend}" + (" (real AWS account!)" if backend == AWS else "")
