"""A broken AWS setup on the machine (a profile that does not exist, a config or credentials file that
does not parse) never reaches a local run: every client the project builds for a local endpoint signs
with test/test from a session that reads no profile and no file.

Signing is observed without a server: a `before-send` handler (botocore emits it after signing, before
the HTTP session) captures the request and stops the call."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import BotoCoreError

from esjoin.target import local_target
from esjoin.testing.backends import EMBEDDED, TIMING, Backend, free_port
from infra import bootstrap

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = "http://127.0.0.1:4566"
BROKEN_SETTINGS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "all")


class Signed(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__(request.url)
        self.request = request


@pytest.fixture(params=BROKEN_SETTINGS)
def broken_aws_setup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """One broken setting (or all of them) in the environment; plain boto3 fails on it."""
    garbage = tmp_path / "garbage"
    garbage.write_text("[[[ this is not an ini file\n= =\n")
    broken = {
        "AWS_PROFILE": "does-not-exist",
        "AWS_DEFAULT_PROFILE": "does-not-exist",
        "AWS_CONFIG_FILE": str(garbage),
        "AWS_SHARED_CREDENTIALS_FILE": str(garbage),
    }
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in broken.items():
        if request.param in (variable, "all"):
            monkeypatch.setenv(variable, value)
    # The control: the setting really is broken for anything that reads the profile or the files.
    with pytest.raises(BotoCoreError):
        boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1").client(
            "sts", endpoint_url=ENDPOINT
        )
    return request.param


def signing_key(client: Any) -> str:
    """The access key `client` signs a call with, read from the Authorization header it would send."""

    def capture(request: AWSPreparedRequest, **_: Any) -> None:
        raise Signed(request)

    client.meta.events.register("before-send", capture)
    with pytest.raises(Signed) as signed:
        client.get_caller_identity()
    authorization = signed.value.request.headers["Authorization"].decode()
    return authorization.split("Credential=", 1)[1].split("/", 1)[0]


def bench_client(endpoint: str, service: str) -> Any:
    """bench/ runs as `python -m bench` from the checkout; it is not an installed package."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("bench.endpoints").client(endpoint, service)


CLIENT_MAKERS: dict[str, Callable[[], Any]] = {
    "infra Target.clients()": lambda: local_target(ENDPOINT, "us-east-1", environ={}).clients().sts,
    "harness Backend.client()": lambda: Backend(
        EMBEDDED, local_target(ENDPOINT, "us-east-1", environ={}), TIMING[EMBEDDED]
    ).client("sts"),
    "bench endpoints.client()": lambda: bench_client(ENDPOINT, "sts"),
}


@pytest.mark.parametrize("maker", CLIENT_MAKERS.values(), ids=CLIENT_MAKERS.keys())
def test_local_clients_sign_with_the_dummy_credentials_whatever_is_broken(
    broken_aws_setup: str, maker: Callable[[], Any]
) -> None:
    client = maker()
    assert client.meta.endpoint_url == ENDPOINT and client.meta.region_name == "us-east-1"
    assert signing_key(client) == "test"


def test_a_local_target_session_has_the_dummy_credentials(broken_aws_setup: str) -> None:
    credentials = local_target(ENDPOINT, "us-east-1", environ={}).session().get_credentials()
    assert credentials is not None
    frozen = credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("test", "test", None)


def test_bootstrap_reports_the_endpoint_not_the_profile(
    broken_aws_setup: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on the port: the run gets as far as its first call and says so.
    endpoint = f"http://127.0.0.1:{free_port()}"
    code = bootstrap.main(["outputs", "--endpoint", endpoint, "--outputs", str(tmp_path / "outputs.json"), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach {endpoint}" in err
    assert "profile" not in err.lower() and "config file" not in err.lower()
