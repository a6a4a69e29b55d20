"""Backends the harness can drive: the embedded endpoint (default), LocalStack, or real AWS.

Each backend knows how to reach its endpoint, which credentials to use, and how fast it is (its
`TimingProfile`): scenarios never hard-code sleeps, they wait with the backend's deadlines.

- embedded: reuses an endpoint already up (e.g. `make up`, or ESJOIN_ENDPOINT) if it answers
  /_esjoin/health, else starts one for the session on a free port and stops it at the end.
- localstack: a running LocalStack at ESJOIN_LOCALSTACK_ENDPOINT (default http://127.0.0.1:4566),
  or, with ESJOIN_LOCALSTACK_START=testcontainers, one started with testcontainers.
- aws: real AWS, only with the explicit opt-in flag and a stage of its own.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.config import Config

from esjoin.target import Target, aws_target, local_target
from esjoin.testing.control_client import ControlClient
from esjoin.testing.health import direct_opener

EMBEDDED, LOCALSTACK, AWS = "embedded", "localstack", "aws"
BACKENDS = (EMBEDDED, LOCALSTACK, AWS)
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
STATE_DIR = Path(".esjoin")


@dataclass(frozen=True)
class TimingProfile:
    """How long to wait on a backend, measured there: a record crosses the embedded pipeline in tens
    of milliseconds, LocalStack's pollers take about a second a hop (5 s after an idle spell), AWS
    a few seconds."""

    deadline: float  # seconds a scenario may wait for the pipeline to converge
    interval: float  # first pause between checks
    max_interval: float  # longest pause between checks
    settle: float  # quiet time that stands in for quiescence where it cannot be observed


TIMING = {
    EMBEDDED: TimingProfile(deadline=45.0, interval=0.02, max_interval=0.2, settle=0.0),
    LOCALSTACK: TimingProfile(deadline=150.0, interval=0.25, max_interval=1.0, settle=6.0),
    AWS: TimingProfile(deadline=300.0, interval=1.0, max_interval=5.0, settle=20.0),
}

# LocalStack's event source mapping pollers (its config.py, "LAMBDA_EVENT_SOURCE_MAPPING_*"): how often
# they poll, and how long an idle or failing one backs off (LocalStack's defaults: 1 s, 10 s, 60 s).
# Most of a LocalStack suite's time was those backoffs. The compose profile and the testcontainers path
# start LocalStack with these test values, `make ... BACKEND=localstack` exports them, and the settle
# time the harness waits on LocalStack is derived from the values it sees.
LOCALSTACK_POLL_INTERVAL = "LAMBDA_EVENT_SOURCE_MAPPING_POLL_INTERVAL_SEC"
LOCALSTACK_EMPTY_POLL_BACKOFF = "LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC"
LOCALSTACK_ERROR_BACKOFF = "LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_ERROR_SEC"
LOCALSTACK_TEST_POLLING = {
    LOCALSTACK_POLL_INTERVAL: "0.1",
    LOCALSTACK_EMPTY_POLL_BACKOFF: "0.5",
    LOCALSTACK_ERROR_BACKOFF: "2",
}
LOCALSTACK_DEFAULT_POLLING = {LOCALSTACK_POLL_INTERVAL: 1.0, LOCALSTACK_EMPTY_POLL_BACKOFF: 10.0}
FUNCTION_HOP_SECONDS = 1.0  # a batch through a LocalStack Lambda container and back, with margin


def localstack_timing(environ: Mapping[str, str] | None = None) -> TimingProfile:
    """LocalStack's profile, its settle time derived from the poll settings in `environ` (LocalStack's
    defaults when unset): the longest an idle poller waits before it polls again, one poll, one hop."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in LOCALSTACK_DEFAULT_POLLING.items():
        try:
            values[name] = max(0.0, float(environ.get(name) or default))
        except ValueError:
            raise BackendError(f"{name}={environ[name]!r} is not a number of seconds") from None
    settle = values[LOCALSTACK_EMPTY_POLL_BACKOFF] + values[LOCALSTACK_POLL_INTERVAL] + FUNCTION_HOP_SECONDS
    return dataclasses.replace(TIMING[LOCALSTACK], settle=round(settle, 2))


@dataclass
class Backend:
    name: str
    target: Target  # infra's target: the local-endpoint guard and credentials (dummy ones locally)
    timing: TimingProfile
    control: ControlClient | None = None  # the embedded endpoint's control API, else None
    _process: Any = field(default=None, repr=False)  # what this backend started, to stop it
    _session: Any = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str | None:
        return self.target.endpoint_url

    @property
    def region(self) -> str:
        return self.target.region

    def client(self, service: str) -> Any:
        if self._session is None:
            self._session = self.target.session()
        config = self.target.client_config().merge(Config(max_pool_connections=32))
        return self._session.client(service, endpoint_url=self.endpoint_url, config=config)

    def stop(self) -> None:
        """Stop what this backend started (nothing, if it reused a running endpoint)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


class BackendError(RuntimeError):
    """The backend cannot be used; the message says what to do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_embedded(
    port: int,
    state_dir: Path,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    detach: bool = False,
    deadline: float = 30.0,
    args: list[str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start `python -m esjoin.emulator [args]` on 127.0.0.1:<port>; return once /_esjoin/health says ready."""
    endpoint = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ESJOIN_PORT": str(port),
        "ESJOIN_HOST": "127.0.0.1",
        "ESJOIN_STATE_DIR": str(state_dir),
        **(extra_env or {}),
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "esjoin.emulator", *(args or [])],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=detach,
        )
    control = ControlClient(endpoint, timeout=2.0)
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if control.is_ready():
            return process, endpoint
        if process.poll() is not None:
            raise BackendError(
                f"the embedded endpoint exited with status {process.returncode} while starting; "
                f"see {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.05)  # polling a process we just started: nothing to wait on but its port
    process.kill()
    raise BackendError(f"the embedded endpoint was not ready after {deadline:.0f}s; see {log_path}:\n{tail(log_path)}")


def own_embedded(
    directory: Path,
    *,
    port: int | None = None,
    region: str = "us-east-1",
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
    control_timeout: float = 10.0,
) -> Backend:
    """A `python -m esjoin.emulator` of the caller's own, on `port` (default: a free one), its state and
    log under `directory`; `stop()` ends it."""
    process, url = start_embedded(
        port or free_port(), directory / "state", directory / "emulator.log", extra_env=extra_env, args=args
    )
    control = ControlClient(url, timeout=control_timeout)
    return Backend(EMBEDDED, local_target(url, region), TIMING[EMBEDDED], control, _process=process)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def answers_health(url: str, path: str) -> bool:
    """A 200 from `url` + `path`, asked directly (no proxy: the endpoint is a local one)."""
    try:
        with direct_opener().open(url.rstrip("/") + path, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def open_backend(name: str, region: str = "us-east-1", aws_opt_in: bool = False, stage: str | None = None) -> Backend:
    if name == EMBEDDED:
        return _open_embedded(region)
    if name == LOCALSTACK:
        return _open_localstack(region)
    if name == AWS:
        if not aws_opt_in:
            raise BackendError(
                "the aws backend runs against a real AWS account: pass --esjoin-aws-opt-in "
                "(and --esjoin-stage with a stage of its own) to confirm"
            )
        if not stage or stage in ("local", "test"):
            raise BackendError("the aws backend needs its own stage: pass --esjoin-stage <name> (not 'local'/'test')")
        return Backend(AWS, aws_target(region, stage), TIMING[AWS])
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def configured_endpoint(environ: dict[str, str] | None = None) -> str:
    """The embedded endpoint's URL: ESJOIN_ENDPOINT, else http://127.0.0.1:$ESJOIN_PORT (what the endpoint
    binds), else the default; the same rule as the `esjoin` command. Both naming different ports: an error."""
    environ = dict(os.environ) if environ is None else environ
    endpoint, port = environ.get("ESJOIN_ENDPOINT", "").strip(), environ.get("ESJOIN_PORT", "").strip()
    if endpoint and port and str(urlsplit(endpoint).port or "") != port:
        raise BackendError(
            f"ESJOIN_PORT={port} and the endpoint {endpoint} (ESJOIN_ENDPOINT or --endpoint) name different ports: "
            "set one of them"
        )
    return endpoint or (f"http://127.0.0.1:{port}" if port else DEFAULT_ENDPOINT)


def _open_embedded(region: str) -> Backend:
    endpoint = configured_endpoint()
    reuse = os.environ.get("ESJOIN_REUSE_ENDPOINT", "1") != "0"
    target = local_target(endpoint, region)  # before any request: never probe a host that is not local
    if reuse and ControlClient(target.endpoint_url, timeout=2.0).is_ready():
        return Backend(EMBEDDED, target, TIMING[EMBEDDED], ControlClient(target.endpoint_url))
    port = free_port()
    return own_embedded(STATE_DIR / f"test-endpoint-{port}", port=port, region=region)


def _open_localstack(region: str) -> Backend:
    endpoint = os.environ.get("ESJOIN_LOCALSTACK_ENDPOINT", DEFAULT_ENDPOINT)
    target = local_target(endpoint, region)  # before any request: never probe a host that is not local
    if answers_health(endpoint, "/_localstack/health"):
        return Backend(LOCALSTACK, target, localstack_timing())
    if os.environ.get("ESJOIN_LOCALSTACK_START") == "testcontainers":
        from esjoin.testing.localstack_container import start_localstack

        container, endpoint = start_localstack()
        # the container was started with the test polling values (unless the environment names others)
        timing = localstack_timing({**LOCALSTACK_TEST_POLLING, **os.environ})
        return Backend(LOCALSTACK, local_target(endpoint, region), timing, _process=container)
    raise BackendError(
        f"LocalStack is not reachable at {endpoint}. Start LocalStack (make up BACKEND=localstack, or your own) "
        "and point ESJOIN_LOCALSTACK_ENDPOINT at it, or set ESJOIN_LOCALSTACK_START=testcontainers to start "
        "one with Docker."
    )
