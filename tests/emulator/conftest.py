"""Fixtures for the endpoint's black-box tests (tests/emulator/test_endpoint_*.py), and `harness`
for the mapping engine's in-process tests (tests/emulator/test_esm_*.py; helpers in support/esm.py).

One endpoint per test module, started in this process on a free port (`endpoint`), boto3 clients
for it with dummy credentials, the control API, a function factory that deletes what it created, and
a "probe" factory: a function that records every event it receives in a DynamoDB table.

Module scope, not session scope: the endpoint's Lambda runtime owns threads and child processes, and
test_runtime.py asserts that none exist once its own runtimes shut down; an endpoint left running for
the whole session would fail those checks. Stopping it at the end of each module (and checking that
stop() left no thread behind) keeps the other tests in this directory as if this file did not exist.
`speed_patches` and `moto_app` serve the comparisons of the speed patches and the direct dispatch with
moto's own code (test_speed_*.py, test_dispatch_equivalence.py; helpers in support/moto_speed.py).
Fixtures only, nothing autouse. Helpers live in support/endpoint.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from esjoin.emulator.moto_layer import fixes as moto_fixes
from esjoin.emulator.moto_layer.notifier import ChangeNotifier
from tests.emulator.support.endpoint import (
    PROBE_SOURCE,
    Control,
    Endpoint,
    Functions,
    Probe,
    make_zip,
    start_endpoint,
    unique,
    wait_until,
)
from tests.emulator.support.esm import EngineHarness
from tests.emulator.support.moto_speed import ACCOUNT


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    threads_before = set(threading.enumerate())
    started = start_endpoint(tmp_path_factory.mktemp("endpoint"))
    try:
        yield started
    finally:
        started.emulator.stop()

    def leftovers() -> list[str]:
        return [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]

    wait_until(lambda: not leftovers(), "the endpoint's threads to end after stop()", history=leftovers)


@pytest.fixture(scope="module")
def control(endpoint: Endpoint) -> Control:
    return Control(endpoint.url)


@pytest.fixture(scope="module")
def lambda_client(endpoint: Endpoint) -> Any:
    return endpoint.client("lambda")


@pytest.fixture(scope="module")
def dynamodb(endpoint: Endpoint) -> Any:
    return endpoint.client("dynamodb")


@pytest.fixture(scope="module")
def dynamodbstreams(endpoint: Endpoint) -> Any:
    return endpoint.client("dynamodbstreams")


@pytest.fixture(scope="module")
def kinesis(endpoint: Endpoint) -> Any:
    return endpoint.client("kinesis")


@pytest.fixture(scope="module")
def sqs(endpoint: Endpoint) -> Any:
    return endpoint.client("sqs")


@pytest.fixture(scope="module")
def logs(endpoint: Endpoint) -> Any:
    return endpoint.client("logs")


@pytest.fixture
def build_zip() -> Callable[[dict[str, str]], bytes]:
    """make_zip: {file name: Python source} -> the bytes of a deployment package."""
    return make_zip


@pytest.fixture
def functions(lambda_client: Any) -> Iterator[Functions]:
    """Create functions (unique names); deleted with their mappings when the test ends."""
    factory = Functions(lambda_client)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="module")
def probe_table(dynamodb: Any) -> str:
    name = unique("probe-events")
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "function", "KeyType": "HASH"}, {"AttributeName": "at", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "function", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "S"},
        ],
    )
    return name


@pytest.fixture
def probe(
    functions: Functions, probe_table: str, dynamodb: Any, control: Control, lambda_client: Any
) -> Callable[..., Probe]:
    """probe(mode="ok"|"report-failures", **CreateFunction params) -> a recording function."""

    def make(mode: str = "ok", **params: Any) -> Probe:
        environment = {"PROBE_TABLE": probe_table, "PROBE_MODE": mode}
        name = functions.create(
            PROBE_SOURCE,
            prefix="probe",
            Timeout=params.pop("Timeout", 10),
            Environment={"Variables": environment},
            **params,
        )
        arn = lambda_client.get_function_configuration(FunctionName=name)["FunctionArn"]
        return Probe(name, arn, probe_table, dynamodb, control)

    return make


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[EngineHarness]:
    """The mapping engine on the shared moto backends with a scripted function; closed afterwards."""
    harness = EngineHarness(tmp_path)
    yield harness
    harness.close()


# -- moto in this process, patched as the endpoint patches it ---------------------------------------


@pytest.fixture(scope="module")
def speed_patches() -> Iterator[None]:
    """moto patched as the endpoint patches it (moto_fixes.apply applies moto_speed too), answering for
    ACCOUNT (an endpoint started in this process before sets MOTO_ACCOUNT_ID to its own)."""
    notifier = ChangeNotifier()
    moto_fixes.apply(notifier)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("MOTO_ACCOUNT_ID", ACCOUNT)
        try:
            yield
        finally:
            moto_fixes.release(notifier)


@pytest.fixture(scope="module")
def moto_app(speed_patches: None) -> Any:
    """moto's own WSGI app (DomainDispatcherApplication), as esjoin.emulator.moto_layer.moto_backends builds it."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)
