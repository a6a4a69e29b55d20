"""pytest plugin, registered as `esjoin` through the pytest11 entry point: safe in anyone's test suite.

Every option is prefixed, so a project whose own conftest defines `--backend` or `--stage` is not
disturbed: --esjoin-backend embedded|localstack|aws (or ESJOIN_BACKEND), --esjoin-aws-opt-in,
--esjoin-stage, --esjoin-long, --esjoin-seed (or ESJOIN_SEED: the embedded endpoint in deterministic
mode), --esjoin-explore K (seeds per exploring scenario). Nothing here imports the demo application.

Fixtures, for any functions and any stack:
    esjoin_backend    the session's Backend: embedded (reused if one is up, else started for the
                      session and stopped at its end), localstack, or aws with the opt-in
    esjoin_endpoint   the embedded endpoint: its URL, boto3 clients (`.client("sqs")`) and control API
                      (skips the test on other backends)
    esjoin_control    the endpoint's control API: faults, history, quiescence, pause and resume
                      (skips the test on other backends)
Marker: @pytest.mark.embedded_only("why") skips on other backends and prints why.

The demo pipeline's fixtures (`stack`, `pipeline`, `new_user`, ...) are built on these in the
repository's tests/integration/conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from esjoin.testing.backends import AWS, BACKENDS, EMBEDDED, Backend, BackendError, open_backend
from esjoin.testing.control_client import ControlClient

BACKEND_OPTION = "--esjoin-backend"
AWS_OPT_IN_OPTION = "--esjoin-aws-opt-in"
STAGE_OPTION = "--esjoin-stage"
LONG_OPTION = "--esjoin-long"
SEED_OPTION = "--esjoin-seed"
EXPLORE_OPTION = "--esjoin-explore"
DEFAULT_EXPLORE_SEEDS = 10


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("esjoin", "esjoin: a local AWS endpoint for Kinesis / DynamoDB Streams / SQS / Lambda")
    group.addoption(
        BACKEND_OPTION,
        choices=BACKENDS,
        default=os.environ.get("ESJOIN_BACKEND", EMBEDDED),
        help="where the suites run (default: embedded, or ESJOIN_BACKEND)",
    )
    group.addoption(
        AWS_OPT_IN_OPTION,
        action="store_true",
        default=False,
        help="allow the aws backend to create and delete resources in a real AWS account",
    )
    group.addoption(
        STAGE_OPTION,
        default=os.environ.get("ESJOIN_TEST_STAGE"),
        help="stage name prefix for test stacks (ESJOIN_TEST_STAGE)",
    )
    group.addoption(
        LONG_OPTION,
        action="store_true",
        default=False,
        help="soak: generated (Hypothesis) suites run many more and longer examples",
    )
    group.addoption(
        SEED_OPTION,
        type=int,
        default=int(os.environ["ESJOIN_SEED"]) if os.environ.get("ESJOIN_SEED", "").isdigit() else None,
        help="run the embedded endpoint in deterministic mode with this seed (ESJOIN_SEED); a failing "
        "test's record then holds the trace that replays it",
    )
    group.addoption(
        EXPLORE_OPTION,
        type=int,
        default=DEFAULT_EXPLORE_SEEDS,
        help=f"seeds each exploring scenario runs under (default {DEFAULT_EXPLORE_SEEDS})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded_only(reason): needs the embedded endpoint's control API")
    seed = config.getoption(SEED_OPTION, None)
    if seed is not None:
        os.environ["ESJOIN_SEED"] = str(seed)  # the endpoint the session starts inherits it


@pytest.fixture(scope="session")
def esjoin_explore_seeds(request: pytest.FixtureRequest) -> int:
    """How many seeds an exploring scenario runs under (--esjoin-explore)."""
    return max(1, int(request.config.getoption(EXPLORE_OPTION)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("embedded_only")
    if marker is not None and item.config.getoption(BACKEND_OPTION) != EMBEDDED:
        reason = marker.args[0] if marker.args else "needs the embedded endpoint's control API"
        pytest.skip(f"embedded backend only: {reason}")


@pytest.fixture(scope="session")
def esjoin_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name = request.config.getoption(BACKEND_OPTION)
    try:
        opened = open_backend(
            name, aws_opt_in=request.config.getoption(AWS_OPT_IN_OPTION), stage=request.config.getoption(STAGE_OPTION)
        )
    except BackendError as error:
        pytest.exit(f"esjoin: backend {name!r} unavailable: {error}", returncode=2)
    seed = request.config.getoption(SEED_OPTION)
    if seed is not None and opened.control is not None and deterministic_seed(opened) != seed:
        opened.stop()
        pytest.exit(
            f"esjoin: {SEED_OPTION} {seed}, but the endpoint at {opened.endpoint_url} is not running with that "
            "seed (it was already up): stop it (`make down`) or set ESJOIN_REUSE_ENDPOINT=0",
            returncode=2,
        )
    yield opened
    if seed is not None and opened.control is not None:
        keep_session_trace(request.config, opened)
    opened.stop()


SESSION_TRACE = Path(".esjoin") / "session.trace.jsonl.gz"


def keep_session_trace(config: pytest.Config, backend: Backend) -> None:
    """Deterministic mode: the whole session's trace, kept beside the failure records."""
    assert backend.control is not None
    try:
        data = backend.control.trace()
    except Exception as error:  # the session's results matter more than its trace
        config.stash[TRACE_NOTE] = f"esjoin: the session's trace could not be kept: {error!r}"
        return
    SESSION_TRACE.parent.mkdir(parents=True, exist_ok=True)
    SESSION_TRACE.write_bytes(data)
    config.stash[TRACE_NOTE] = (
        f"esjoin: the session's trace ({len(data):,} bytes): {SESSION_TRACE}; esjoin replay {SESSION_TRACE} --check"
    )


TRACE_NOTE = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    note = config.stash.get(TRACE_NOTE, None)
    if note:
        terminalreporter.write_line(note)


@dataclass
class EmbeddedEndpoint:
    """The session's embedded endpoint, for tests of any functions: `url`, `client(service)`, `control`."""

    backend: Backend
    control: ControlClient

    @property
    def url(self) -> str:
        return str(self.backend.endpoint_url)

    def client(self, service: str) -> Any:
        """A boto3 client for the endpoint, with dummy credentials (never the environment's)."""
        return self.backend.client(service)


@pytest.fixture(scope="session")
def esjoin_endpoint(esjoin_backend: Backend) -> EmbeddedEndpoint:
    if esjoin_backend.control is None:
        pytest.skip(f"the {esjoin_backend.name} backend is not the embedded endpoint")
    return EmbeddedEndpoint(esjoin_backend, esjoin_backend.control)


@pytest.fixture
def esjoin_control(esjoin_backend: Backend) -> ControlClient:
    if esjoin_backend.control is None:
        pytest.skip(f"the {esjoin_backend.name} backend has no control API (embedded endpoint only)")
    return esjoin_backend.control


FAILURES_DIR = Path(".esjoin") / "failures"
"""Where a failing test on the embedded endpoint leaves what it saw (kept by .ci/run for CI artifacts)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A test that fails on the embedded endpoint leaves `.esjoin/failures/<test>/`: the endpoint's whole
    state (`state.zip`, loadable with `esjoin state load`), its invocation history and fault rules, and
    the command that runs the test again; the report names the directory."""
    outcome = yield
    report = outcome.get_result()
    backend = getattr(item, "funcargs", {}).get("esjoin_backend")
    if report.when != "call" or not report.failed or backend is None or backend.control is None:
        return
    try:
        directory = record_failure(item.nodeid, backend)
    except Exception as error:  # the test's own failure is what matters: say why nothing was kept
        report.sections.append(("esjoin", f"could not keep the endpoint's state: {error!r}"))
        return
    reproduce = reproduce_command(directory)
    report.sections.append(
        (
            "esjoin",
            f"the endpoint's state and history: {directory}/\n"
            + (f"reproduce it exactly: {reproduce}\n" if reproduce else "")
            + f"run it again: {rerun_command(item)}\n"
            f"look at the state: esjoin state load {directory}/state.zip",
        )
    )


def deterministic_seed(backend: Backend) -> int | None:
    """The seed of a deterministic embedded endpoint (None: fast mode, or not the embedded endpoint)."""
    if backend.control is None:
        return None
    return (backend.control.health().get("deterministic") or {}).get("seed")


def record_failure(nodeid: str, backend: Backend) -> Path:
    control = backend.control
    assert control is not None
    directory = FAILURES_DIR / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[-150:]
    directory.mkdir(parents=True, exist_ok=True)
    seed = deterministic_seed(backend)
    if seed is not None:  # first, so the trace ends where the test failed
        (directory / "trace.jsonl.gz").write_bytes(control.trace())
    (directory / "history.json").write_text(json.dumps(control.history(), indent=1, default=str))
    (directory / "faults.json").write_text(json.dumps(control.faults(), indent=1, default=str))
    (directory / "state.zip").write_bytes(control.save_state())
    (directory / "test.json").write_text(
        json.dumps({"test": nodeid, "backend": backend.name, "endpoint": backend.endpoint_url, "seed": seed}, indent=1)
    )
    return directory


def reproduce_command(directory: Path) -> str | None:
    """The one command that brings a failure back, when its record holds a trace."""
    trace = directory / "trace.jsonl.gz"
    return f"esjoin replay {trace} --check" if trace.is_file() else None


def rerun_command(item: pytest.Item) -> str:
    seed = item.config.getoption(SEED_OPTION)
    return f"pytest {shlex.quote(item.nodeid)} --esjoin-backend {item.config.getoption(BACKEND_OPTION)}" + (
        f" {SEED_OPTION} {seed}" if seed is not None else ""
    )


def pytest_report_header(config: pytest.Config) -> str:
    backend = config.getoption(BACKEND_OPTION)
    seed = config.getoption(SEED_OPTION)
    return (
        f"esjoin backend: {backend}"
        + (" (real AWS account!)" if backend == AWS else "")
        + (f", deterministic mode, seed {seed}" if seed is not None else "")
    )
