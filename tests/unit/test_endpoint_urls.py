"""The local-endpoint guard reads an endpoint URL as botocore will use it: the host it checks is the host
botocore connects to, and a URL two parsers could read differently is refused.

What botocore connects to is observed, not re-derived: urllib3's PoolManager.connection_from_host (where
botocore's URLLib3Session ends up, through connection_from_url and urllib3.util.parse_url) is replaced by
a recorder that refuses to connect, so these tests touch no network."""

from __future__ import annotations

import re
from typing import Any

import boto3
import pytest
import urllib3.poolmanager
from botocore.config import Config
from botocore.exceptions import HTTPClientError
from urllib3.util import Url

from esjoin import target as target_module
from esjoin.target import LOCAL, Target, TargetRefused, is_local_host, local_target

ONE_ATTEMPT = Config(retries={"mode": "standard", "max_attempts": 1})  # no backoff after a recorded connect


class NotConnecting(Exception):
    """Raised instead of opening a connection (botocore wraps it in HTTPClientError)."""


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None]]:
    """(host, port) of every connection urllib3 is asked to open, none of them opened."""
    seen: list[tuple[str, int | None]] = []

    def record(self: Any, host: str, port: int | None = None, scheme: str | None = "http", **_: Any) -> Any:
        seen.append((host, port))
        raise NotConnecting(host)

    monkeypatch.setattr(urllib3.poolmanager.PoolManager, "connection_from_host", record)
    return seen


def connected_host(client: Any, connections: list[tuple[str, int | None]]) -> str:
    """The host `client` connects to for one call (every attempt of it), brackets of an IPv6 literal removed."""
    with pytest.raises(HTTPClientError):
        client.get_caller_identity()
    hosts = {host for host, _ in connections}
    assert len(hosts) == 1, connections
    connections.clear()
    return hosts.pop().removeprefix("[").removesuffix("]")


def local_client(endpoint: str, environ: dict[str, str] | None = None) -> Any:
    target = local_target(endpoint, "us-east-1", environ={} if environ is None else environ)
    return target.session().client(
        "sts", endpoint_url=target.endpoint_url, config=target.client_config().merge(ONE_ATTEMPT)
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:4566",
        "http://127.0.0.1:4566/",
        "http://localhost:4566",
        "http://LocalHost:4566",
        "http://[::1]:4566",
        "http://localhost.:4566",  # the fully qualified name: still this machine
        "http://foo.localhost:4566",
        "http://foo.localhost.:4566",
        "http://[::ffff:127.0.0.1]:4566",  # IPv4-mapped loopback is loopback
        "https://127.8.9.10",
    ],
)
def test_a_local_endpoint_is_where_botocore_connects(endpoint: str, connections: list[tuple[str, int | None]]) -> None:
    target = local_target(endpoint, "us-east-1", environ={})
    assert target.kind == LOCAL and target.endpoint_url == endpoint.rstrip("/")
    host = connected_host(local_client(endpoint), connections)
    assert is_local_host(host)
    assert host == target_module.check_local_endpoint(target.endpoint_url)


def test_a_container_host_in_esjoin_allowed_hosts_is_where_botocore_connects(
    connections: list[tuple[str, int | None]],
) -> None:
    environ = {"ESJOIN_ALLOWED_HOSTS": "emulator,localstack-1"}
    for endpoint, host in (("http://emulator:4566", "emulator"), ("http://localstack-1:4566", "localstack-1")):
        assert connected_host(local_client(endpoint, environ), connections) == host


def test_the_backslash_trick_sends_plain_botocore_elsewhere_and_the_guard_refuses_it(
    connections: list[tuple[str, int | None]],
) -> None:
    # Given the URL urllib.parse reads as 127.0.0.1 ...
    endpoint = "http://evil.example\\@127.0.0.1:4581"
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    client = session.client("sts", endpoint_url=endpoint, config=ONE_ATTEMPT)
    # ... botocore itself would connect to evil.example with the dummy credentials,
    assert connected_host(client, connections) == "evil.example"
    # so neither way of building a local target accepts it.
    with pytest.raises(TargetRefused, match="backslash"):
        local_target(endpoint, "us-east-1", environ={})
    with pytest.raises(TargetRefused, match=r"local endpoint.*backslash"):
        Target(kind=LOCAL, region="us-east-1", endpoint_url=endpoint)


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("http://evil.example\\@127.0.0.1:4581", "backslash"),
        ("http://127.0.0.1\\.evil.example", "backslash"),
        ("http://evil.example%5C@127.0.0.1", "percent-encoding"),
        ("http://%31%32%37.0.0.1:4566", "percent-encoding"),
        ("http://[::1%25lo]:4566", "percent-encoding"),
        ("http://user:pw@127.0.0.1:4566", "user information"),
        ("http://evil.example@127.0.0.1:4566", "user information"),
        ("http://127.0.0.1:4566#@evil.example", "query or a fragment"),
        ("http://127.0.0.1:4566?@evil.example", "query or a fragment"),
        ("http://127.0.0.1:4566?", "query or a fragment"),
        ("http://127.0.0.1:4566/prefix", "path"),
        ("http://127.0.0.1 :4566", "whitespace, control or non-ASCII"),
        ("http://127.0.0.1\t:4566", "whitespace, control or non-ASCII"),
        ("http://127.0.0.1:4566\n.evil.example", "whitespace, control or non-ASCII"),
        ("http://loc\u0430lhost:4566", "whitespace, control or non-ASCII"),  # a Cyrillic a
        ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:4566", "whitespace, control or non-ASCII"),
        ("http://evil;.localhost:4566", "not a host name"),
        ("http://evil_host.localhost:4566", "not a host name"),  # botocore refuses '_' too
        ("http://[v1.fe]:4566", "urllib3"),
        # Not local at all, however a parser reads them:
        ("http://127.0.0.1.evil.example", "not local"),
        ("http://localhost.evil.example:4566", "not local"),
        ("http://127.0.0.1:4566@evil.example", "not local"),
        ("http://127.0.0.1;@evil.example", "not local"),
        ("http://evil.example/@127.0.0.1", "not local"),
        # glibc's inet_aton reads these as 127.0.0.1, other resolvers as names: refused, whatever they reach.
        ("http://0x7f000001", "not local"),
        ("http://2130706433:4566", "not local"),
        ("http://127.1:4566", "not local"),
        ("http://0177.0.0.1:4566", "not local"),
    ],
)
def test_an_endpoint_url_that_could_read_two_ways_is_refused_with_the_reason(endpoint: str, why: str) -> None:
    with pytest.raises(TargetRefused, match=why) as refused:
        local_target(endpoint, "us-east-1", environ={})
    assert repr(endpoint.strip()) in str(refused.value)
    with pytest.raises(TargetRefused, match="local endpoint"):
        Target(kind=LOCAL, region="us-east-1", endpoint_url=endpoint, extra_hosts=frozenset())


def test_the_guard_refuses_when_urllib3_reads_another_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every known disagreement is refused before the parsers are compared; this is the comparison
    # itself, for whatever a future urllib3 or Python reads differently.
    def another_host(url: str) -> Url:
        return Url(scheme="http", host="evil.example", port=4566)

    monkeypatch.setattr(target_module, "parse_url", another_host)
    with pytest.raises(
        TargetRefused, match=re.escape("urllib3, which botocore connects with, reads http://evil.example:4566")
    ):
        local_target("http://127.0.0.1:4566", "us-east-1", environ={})


def test_local_clients_connect_directly_whatever_the_proxy_variables_say(
    monkeypatch: pytest.MonkeyPatch, connections: list[tuple[str, int | None]]
) -> None:
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, "http://proxy.example:3128")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    # A proxied call would connect to proxy.example (urllib3's ProxyManager connects to the proxy).
    assert connected_host(local_client("http://127.0.0.1:4566"), connections) == "127.0.0.1"
    assert connected_host(local_client("http://localhost:4566"), connections) == "localhost"
    # The clients a run uses carry the same setting (botocore reads the variables only when it is None).
    clients = local_target("http://127.0.0.1:4566", "us-east-1", environ={}).clients()
    assert clients.sts.meta.config.proxies == {} and clients.kinesis.meta.config.proxies == {}
