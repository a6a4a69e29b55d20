"""Where the stack goes, and the guard that keeps local runs away from real AWS.

A local target is an endpoint on this machine (loopback address, ``localhost``, ``*.localhost``)
or a host named in ``ESJOIN_ALLOWED_HOSTS`` (containers on a compose network). It always gets the
dummy credentials test/test, set on the session itself, and a botocore session that reads no
profile: whatever is in the environment or ~/.aws never reaches a local run. Real AWS needs
``--target aws`` and an explicit non-default stage; it then uses the default credential chain.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.configprovider import ConstantProvider

from infra.settings import DEFAULT_STAGE

LOCAL = "local"
AWS = "aws"
TARGETS = (LOCAL, AWS)
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
DUMMY_CREDENTIALS = ("test", "test")
ALLOWED_HOSTS_VARIABLE = "ESJOIN_ALLOWED_HOSTS"


class TargetRefused(ValueError):
    """The endpoint or target is not allowed (the CLI exits 2 with this message)."""


@dataclass(frozen=True)
class Target:
    kind: str
    region: str
    endpoint_url: str | None = None
    extra_hosts: frozenset[str] | None = field(default=None, compare=False, repr=False)
    """Container hosts a local endpoint may name (None: from ESJOIN_ALLOWED_HOSTS)."""

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise TargetRefused(f"unknown target {self.kind!r}; use one of {', '.join(TARGETS)}")
        if self.kind == LOCAL:
            # However a Target is built, a local one cannot reach AWS: no endpoint would mean
            # AWS's own endpoints (with dummy credentials, but still real AWS).
            host = urlsplit(self.endpoint_url or "").hostname
            extra = allowed_hosts() if self.extra_hosts is None else self.extra_hosts
            if not host or not is_local_host(host, extra):
                raise TargetRefused(f"a local target needs a local endpoint, got {self.endpoint_url!r}")

    @property
    def is_local(self) -> bool:
        return self.kind == LOCAL

    def session(self) -> boto3.Session:
        core = botocore.session.Session()
        core.register_component("data_loader", _shared_loader())
        if not self.is_local:
            return boto3.Session(region_name=self.region, botocore_session=core)
        # No profile, no config or credentials file: a local run must not depend on (or fail
        # because of) AWS_PROFILE or ~/.aws. Explicit credentials below outrank the chain anyway.
        core.get_component("config_store").set_config_provider("profile", ConstantProvider(None))
        core.set_config_variable("config_file", os.devnull)
        core.set_config_variable("credentials_file", os.devnull)
        key, secret = DUMMY_CREDENTIALS
        return boto3.Session(
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=self.region,
            botocore_session=core,
        )

    def client_config(self) -> Config:
        if self.is_local:
            # A local endpoint answers in milliseconds or not at all: fail fast instead of
            # retrying a dead port for minutes.
            return Config(connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3})
        # Exactly AWS's endpoints: an AWS_ENDPOINT_URL left in the environment does not apply.
        return Config(retries={"mode": "standard", "max_attempts": 8}, ignore_configured_endpoint_urls=True)

    def clients(self) -> Clients:
        return Clients(self)

    def describe(self) -> str:
        return f"{self.endpoint_url} ({self.region})" if self.is_local else f"real AWS ({self.region})"


class Clients:
    """boto3 clients for one target, each created on first use (a client costs tens of
    milliseconds to build; a run needs six of the eight)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._session = target.session()
        self._config = target.client_config()

    def _client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self.target.endpoint_url, config=self._config)

    @functools.cached_property
    def kinesis(self) -> Any:
        return self._client("kinesis")

    @functools.cached_property
    def dynamodb(self) -> Any:
        return self._client("dynamodb")

    @functools.cached_property
    def dynamodbstreams(self) -> Any:
        return self._client("dynamodbstreams")

    @functools.cached_property
    def sqs(self) -> Any:
        return self._client("sqs")

    @functools.cached_property
    def iam(self) -> Any:
        return self._client("iam")

    @functools.cached_property
    def lambda_(self) -> Any:
        return self._client("lambda")

    @functools.cached_property
    def logs(self) -> Any:
        return self._client("logs")

    @functools.cached_property
    def sts(self) -> Any:
        return self._client("sts")


@functools.cache
def _shared_loader() -> botocore.loaders.Loader:
    """One loader for every session of the process: it caches the parsed service models, which
    otherwise cost ~0.15 s of JSON parsing per client per session (the harness applies often)."""
    return botocore.loaders.create_loader()


def allowed_hosts(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    environ = os.environ if environ is None else environ
    raw = environ.get(ALLOWED_HOSTS_VARIABLE, "")
    return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())


def is_local_host(host: str, extra_hosts: frozenset[str] = frozenset()) -> bool:
    """Loopback addresses, ``localhost``, ``*.localhost`` (RFC 6761 keeps them on this machine),
    or a host listed in ``extra_hosts``."""
    host = host.strip().lower().rstrip(".")
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost") or host in extra_hosts:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def local_target(endpoint_url: str, region: str, environ: Mapping[str, str] | None = None) -> Target:
    """A local target, or TargetRefused if ``endpoint_url`` could reach anything but this machine
    (or an allowed container host)."""
    parts = urlsplit(endpoint_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"endpoint {endpoint_url!r} is not a URL such as {DEFAULT_ENDPOINT}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise TargetRefused(f"endpoint {endpoint_url!r}: {exc}") from exc
    hosts = allowed_hosts(environ)
    if not is_local_host(parts.hostname, hosts):
        raise TargetRefused(
            f"refusing endpoint {endpoint_url!r}: host {parts.hostname!r} is not local (loopback, localhost, "
            f"*.localhost) nor listed in {ALLOWED_HOSTS_VARIABLE}"
            f"{' (' + ','.join(sorted(hosts)) + ')' if hosts else ''}; "
            "to deploy to real AWS use --target aws with an explicit --stage"
        )
    return Target(
        kind=LOCAL, region=region, endpoint_url=endpoint_url.strip().rstrip("/"), extra_hosts=hosts
    )


def aws_target(region: str, stage: str | None) -> Target:
    """Real AWS: only with an explicit stage that is not the default one, so a forgotten flag
    never deploys (or tears down) the shared default stage in an account."""
    if not stage or stage == DEFAULT_STAGE:
        raise TargetRefused(
            f"--target aws needs an explicit --stage other than {DEFAULT_STAGE!r} (e.g. --stage alice-dev)"
        )
    return Target(kind=AWS, region=region, endpoint_url=None)


def resolve_target(
    kind: str,
    *,
    endpoint_url: str | None,
    region: str,
    stage: str | None,
    environ: Mapping[str, str] | None = None,
) -> Target:
    """The CLI's choice: ``--target local`` (default) with ``--endpoint`` (else AWS_ENDPOINT_URL,
    else the embedded endpoint's default), or ``--target aws`` with no endpoint and an explicit stage."""
    environ = os.environ if environ is None else environ
    if kind not in TARGETS:
        raise TargetRefused(f"unknown target {kind!r}; use one of {', '.join(TARGETS)}")
    if kind == AWS:
        if endpoint_url:
            raise TargetRefused("--target aws takes no --endpoint (it uses AWS's own endpoints)")
        return aws_target(region, stage)
    endpoint = endpoint_url or environ.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT
    return local_target(endpoint, region, environ)
