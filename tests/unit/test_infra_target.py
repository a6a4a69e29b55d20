"""The local-endpoint guard: local runs stay on this machine with dummy credentials; real AWS only
on explicit request with an explicit stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from esjoin.target import (
    AWS,
    LOCAL,
    Target,
    TargetRefused,
    allowed_hosts,
    is_local_host,
    local_target,
    resolve_target,
)
from infra import bootstrap


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:4566",
        "http://127.0.0.1:4599/",
        "https://127.8.9.10",
        "http://localhost:4566",
        "http://LOCALHOST:4566",
        "http://localstack.localhost:4566",
        "http://[::1]:4566",
        "http://[::ffff:127.0.0.1]:4566",
    ],
)
def test_loopback_and_localhost_endpoints_are_local(endpoint: str) -> None:
    target = local_target(endpoint, "us-east-1", environ={})
    assert target.kind == LOCAL and target.endpoint_url == endpoint.rstrip("/")


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://example.com:4566",
        "https://kinesis.us-east-1.amazonaws.com",
        "http://0.0.0.0:4566",
        "http://10.0.0.5:4566",
        "http://192.168.1.2",
        "http://localhost.evil.example:4566",
        "http://127.0.0.1@evil.example:4566",
        "http://localstack:4566",
        "http://sqs.us-east-1.localhost.localstack.cloud",
    ],
)
def test_anything_else_is_refused(endpoint: str) -> None:
    with pytest.raises(TargetRefused, match="not local"):
        local_target(endpoint, "us-east-1", environ={})


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:4566", "localhost", "ftp://127.0.0.1", "http://", "http://127.0.0.1:99999"]
)
def test_malformed_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(TargetRefused):
        local_target(endpoint, "us-east-1", environ={})


def test_allowed_hosts_admit_compose_service_names() -> None:
    environ = {"ESJOIN_ALLOWED_HOSTS": "localstack, Emulator ,"}
    assert allowed_hosts(environ) == {"localstack", "emulator"}
    assert local_target("http://localstack:4566", "us-east-1", environ).endpoint_url == "http://localstack:4566"
    assert local_target("http://emulator:4566", "us-east-1", environ).is_local
    with pytest.raises(TargetRefused, match="ESJOIN_ALLOWED_HOSTS"):
        local_target("http://other:4566", "us-east-1", environ)


def test_is_local_host_does_not_match_suffix_tricks() -> None:
    assert is_local_host("a.b.localhost")
    assert not is_local_host("notlocalhost")
    assert not is_local_host("localhost.com")
    assert not is_local_host("")


def test_local_default_endpoint_comes_from_aws_endpoint_url_then_the_embedded_port() -> None:
    assert (
        resolve_target(LOCAL, endpoint_url=None, region="us-east-1", stage=None, environ={}).endpoint_url
        == "http://127.0.0.1:4566"
    )
    environ = {"AWS_ENDPOINT_URL": "http://localhost:4599"}
    assert (
        resolve_target(LOCAL, endpoint_url=None, region="us-east-1", stage=None, environ=environ).endpoint_url
        == "http://localhost:4599"
    )
    with pytest.raises(TargetRefused):
        resolve_target(
            LOCAL,
            endpoint_url=None,
            region="us-east-1",
            stage=None,
            environ={"AWS_ENDPOINT_URL": "https://dynamodb.us-east-1.amazonaws.com"},
        )


@pytest.mark.parametrize("stage", [None, "", "local"])
def test_aws_needs_an_explicit_non_default_stage(stage: str | None) -> None:
    with pytest.raises(TargetRefused, match="explicit --stage"):
        resolve_target(AWS, endpoint_url=None, region="us-east-1", stage=stage, environ={})


def test_aws_with_a_stage_uses_no_endpoint_and_takes_none() -> None:
    target = resolve_target(AWS, endpoint_url=None, region="eu-west-1", stage="alice-dev", environ={})
    assert (target.kind, target.endpoint_url, target.region) == (AWS, None, "eu-west-1")
    with pytest.raises(TargetRefused, match="no --endpoint"):
        resolve_target(AWS, endpoint_url="http://127.0.0.1:4566", region="us-east-1", stage="alice", environ={})


def test_unknown_target_is_refused() -> None:
    with pytest.raises(TargetRefused, match="unknown target"):
        resolve_target("prod", endpoint_url=None, region="us-east-1", stage="x", environ={})


def test_local_sessions_use_dummy_credentials_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text("[profile real]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "real-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "real-token")
    monkeypatch.setenv("AWS_PROFILE", "does-not-exist")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    target = local_target("http://127.0.0.1:4566", "us-east-1", environ={})
    credentials = target.session().get_credentials().get_frozen_credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == ("test", "test", None)
    client = target.clients().sqs  # building a client reads config: must not trip on AWS_PROFILE
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"
    assert client.meta.region_name == "us-east-1"


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "--endpoint", "http://example.com:4566", "--stage", "x"],
        ["teardown", "--endpoint", "https://sqs.us-east-1.amazonaws.com"],
        ["apply", "--target", "aws"],
        ["teardown", "--target", "aws", "--stage", "local"],
        ["apply", "--endpoint", "http://127.0.0.1:4566", "--set", "shard_count=zero"],
        ["apply", "--endpoint", "http://127.0.0.1:4566", "--stage", "Bad Stage"],
    ],
)
def test_cli_refusals_exit_2_with_one_line_before_any_call(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_clients(*_: object) -> None:
        raise AssertionError("a refused run must not build clients")

    monkeypatch.setattr("esjoin.target.Target.clients", no_clients)
    assert bootstrap.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bootstrap: refused: ")


def test_cli_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exited:
        bootstrap.main(["deploy"])
    assert exited.value.code == 2


@pytest.mark.parametrize("endpoint", [None, "", "https://lambda.us-east-1.amazonaws.com"])
def test_a_local_target_cannot_be_built_without_a_local_endpoint(endpoint: str | None) -> None:
    with pytest.raises(TargetRefused, match="local endpoint"):
        Target(kind=LOCAL, region="us-east-1", endpoint_url=endpoint)


def test_the_aws_target_ignores_endpoint_urls_from_the_environment() -> None:
    target = resolve_target(AWS, endpoint_url=None, region="us-east-1", stage="alice", environ={})
    assert target.client_config().ignore_configured_endpoint_urls is True
