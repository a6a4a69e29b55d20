"""Where the stack goes, and the guard that keeps local runs away from real AWS.

A local target is an endpoint on this machine (loopback address, ``localhost``, ``*.localhost``)
or a host named in ``ESJOIN_ALLOWED_HOSTS`` (containers on a compose network). It always gets the
dummy credentials test/test, set on the session itself, and a botocore session that reads no
profile: whatever is in the environment or ~/.aws never reaches a local run. Real AWS needs
``--target aws`` and an explicit non-default stage; it then uses the default credential chain.

The guard reads an endpoint URL as botocore will use it. botocore validates the URL with
urllib.parse (``botocore.utils.is_valid_endpoint_url``), keeps its netloc verbatim in each request's
URL (``botocore.awsrequest._urljoin``), and urllib3 then connects to the host *it* parses out of that
URL (``botocore.httpsession.URLLib3Session.send`` -> ``PoolManager.connection_from_url`` ->
``urllib3.util.parse_url``). The two parsers disagree on some URLs (``http://evil.example\\@127.0.0.1``
is 127.0.0.1 to urllib.parse, evil.example to urllib3), so a local endpoint must read the same with
both, and may carry nothing a parser could be confused by: no user information, backslash,
whitespace, control or non-ASCII character, percent-encoding, query or fragment, and no path.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import SplitResult, urlsplit

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.configprovider import ConstantProvider
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

LOCAL = "local"
DEFAULT_STAGE = "local"
"""The stage a run without --stage deploys (infra.settings names the same one): never real AWS by accident."""
AWS = "aws"
TARGETS = (LOCAL, AWS)
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
DUMMY_CREDENTIALS = ("test", "test")
ALLOWED_HOSTS_VARIABLE = "ESJOIN_ALLOWED_HOSTS"
_HOST_NAME = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.?")
"""Host names an endpoint may use: DNS labels, as botocore.utils.is_valid_endpoint_url has them."""
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
"""Whitespace, control and non-ASCII characters: urllib.parse strips some, urllib3 rejects or
IDNA-encodes others, so the host each parser sees would differ."""


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
            # AWS's own endpoints (with dummy credentials, but still real AWS). The URL checked here
            # is the very string botocore gets (Clients passes self.endpoint_url).
            extra = allowed_hosts() if self.extra_hosts is None else self.extra_hosts
            try:
                check_local_endpoint(self.endpoint_url or "", extra)
            except TargetRefused as exc:
                raise TargetRefused(
                    f"a local target needs a local endpoint, got {self.endpoint_url!r}: {exc}"
                ) from None

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
            # retrying a dead port for minutes. proxies={} makes botocore skip HTTP(S)_PROXY (it reads
            # them only when proxies is None): a proxy cannot reach this machine's loopback, and the
            # calls (dummy credentials, the stack's data) have no business leaving the machine. No host
            # prefixes either: Logs' StartLiveTail would connect to stream-127.0.0.1 through DNS.
            return Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"mode": "standard", "max_attempts": 3},
                proxies={},
                inject_host_prefix=False,
            )
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
    endpoint_url = endpoint_url.strip()
    hosts = allowed_hosts(environ)
    check_local_endpoint(endpoint_url, hosts)
    return Target(kind=LOCAL, region=region, endpoint_url=endpoint_url.rstrip("/"), extra_hosts=hosts)


def check_local_endpoint(endpoint_url: str, extra_hosts: frozenset[str] = frozenset()) -> str:
    """The host botocore will connect to for ``endpoint_url``, or TargetRefused if that host is not
    local, if the URL parsers botocore relies on could read it differently, or if it carries
    anything but ``scheme://host[:port][/]``."""
    parts = _split_unambiguously(endpoint_url)
    host = parts.hostname or ""
    if not is_local_host(host, extra_hosts):
        raise TargetRefused(
            f"refusing endpoint {endpoint_url!r}: host {host!r} is not local (loopback, localhost, "
            f"*.localhost) nor listed in {ALLOWED_HOSTS_VARIABLE}"
            f"{' (' + ','.join(sorted(extra_hosts)) + ')' if extra_hosts else ''}; "
            "to deploy to real AWS use --target aws with an explicit --stage"
        )
    # Local host, and still refused: each of these is how a URL reads as one host to a check and
    # as another to some client (a proxy, a shell, an older urllib3, the AWS CLI given the URL).
    if "@" in parts.netloc:
        _refuse(endpoint_url, "it has user information (user@); an endpoint takes no credentials in its URL")
    if "?" in endpoint_url or "#" in endpoint_url:
        _refuse(endpoint_url, "it has a query or a fragment ('?' or '#'); an endpoint is scheme://host[:port]")
    if parts.path not in ("", "/"):
        _refuse(endpoint_url, f"it has a path ({parts.path!r}); an endpoint is scheme://host[:port]")
    return host


def _split_unambiguously(endpoint_url: str) -> SplitResult:
    """``urlsplit(endpoint_url)`` once it is sure urllib3 (what botocore connects with) reads the
    same scheme, host and port; TargetRefused naming the ambiguity otherwise."""
    if "\\" in endpoint_url:
        _refuse(
            endpoint_url,
            "it contains a backslash, which urllib3 (botocore's HTTP client) reads as the end "
            "of the host and urllib.parse does not",
        )
    if _UNPRINTABLE.search(endpoint_url):
        _refuse(endpoint_url, "it contains whitespace, control or non-ASCII characters")
    try:
        parts = urlsplit(endpoint_url)
        port = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise TargetRefused(f"endpoint {endpoint_url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"endpoint {endpoint_url!r} is not a URL such as {DEFAULT_ENDPOINT}")
    if "%" in parts.netloc:
        _refuse(
            endpoint_url,
            "it has percent-encoding in the host or user information "
            "(urllib3 decodes it, urllib.parse does not); write the host plainly",
        )
    try:
        seen = parse_url(endpoint_url)
    except LocationParseError as exc:
        _refuse(endpoint_url, f"urllib3 (botocore's HTTP client) cannot parse it: {exc}")
    host = parts.hostname
    seen_host = (seen.host or "").lower().removeprefix("[").removesuffix("]")
    if (seen.scheme, seen_host, seen.port) != (parts.scheme, host, port):
        _refuse(
            endpoint_url,
            f"urllib.parse reads {parts.scheme}://{host}:{port} but urllib3, which botocore "
            f"connects with, reads {seen.scheme}://{seen_host}:{seen.port}",
        )
    if "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            _refuse(endpoint_url, f"[{host}] is not an IPv6 address")
    elif not _HOST_NAME.fullmatch(host):
        _refuse(endpoint_url, f"host {host!r} is not a host name or an IPv4 address")
    return parts


def _refuse(endpoint_url: str, why: str) -> NoReturn:
    raise TargetRefused(f"refusing endpoint {endpoint_url!r}: {why}")


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
