"""Who may talk to the endpoint, and how much: checked for every request before its body is read.

The endpoint runs the code it is given, by design, so binding to loopback is not enough: a browser
on the same machine is a client too. Two browser attacks reach a loopback port:

- **CSRF**: any web page may send a "simple" cross-origin request (a POST with `Content-Type:
  text/plain` needs no CORS preflight) to `http://127.0.0.1:4566`. The browser marks it with an
  `Origin` header and `Sec-Fetch-Site: cross-site` (or `same-site` from another localhost port).
  Such a request is refused unless its origin is the endpoint's own or is allow-listed
  (`ESJOIN_ALLOWED_ORIGINS`, as LocalStack's `EXTRA_CORS_ALLOWED_ORIGINS`:
  https://docs.localstack.cloud/references/configuration/#security).
- **DNS rebinding**: a page on `evil.example` re-resolves its own name to 127.0.0.1, and its
  requests are then same-origin for the browser, so they carry no telling `Origin`. Its `Host`
  header still says `evil.example`: only loopback names and addresses, `*.localhost` and the names
  configured for containers (`ESJOIN_ALLOWED_HOSTS`) are served.

Bodies are bounded by `Content-Length` before a byte of them is read, per service, above AWS's own
largest legitimate request (e.g. PutRecords 5 MiB, BatchWriteItem 16 MiB, a 50 MiB zip upload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from esjoin.emulator.aws_errors import AwsError
from esjoin.target import is_local_host

MIB = 1024 * 1024

BODY_LIMITS: dict[str, int] = {
    "kinesis": 10 * MIB,  # PutRecords: 5 MiB of data, base64 in JSON (x4/3) plus keys
    "dynamodb": 24 * MIB,  # BatchWriteItem: 16 MiB, plus JSON overhead
    "dynamodbstreams": 1 * MIB,
    "sqs": 4 * MIB,  # SendMessageBatch: 1 MiB of messages (query protocol encodes them longer)
    "logs": 4 * MIB,  # PutLogEvents: 1 MiB
    "lambda": 72 * MIB,  # CreateFunction / UpdateFunctionCode: a 50 MiB zip, base64 in JSON
    "control": 64 * MIB,  # /_esjoin/: state documents
}
"""Largest request body accepted per service (by SigV4 scope, X-Amz-Target, or path)."""
DEFAULT_BODY_LIMIT = 1 * MIB
"""Any other request (IAM, STS, CloudWatch, unsigned ones that are refused anyway)."""

TARGET_SERVICES = {
    "Kinesis_": "kinesis",
    "DynamoDB_": "dynamodb",
    "DynamoDBStreams_": "dynamodbstreams",
    "AmazonSQS.": "sqs",
    "Logs_": "logs",
}
_REFUSED_FETCH_SITES = {"cross-site", "same-site"}


@dataclass(frozen=True)
class RequestGuard:
    """Refuses browser-originated, rebinding and oversized requests (see the module docstring)."""

    port: int
    allowed_hosts: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()

    def check(self, environ: dict[str, Any]) -> None:
        """Raise AwsError (403 or 413) for a request that must not be served; return otherwise."""
        host = _host_name(environ.get("HTTP_HOST", ""))
        if host is not None and not self.is_local_host(host):
            raise AwsError(
                403,
                "AccessDeniedException",
                f"Host {environ.get('HTTP_HOST')!r} is not served: this endpoint answers loopback "
                "names and addresses (127.0.0.1, localhost, [::1], *.localhost) and the hosts in "
                "ESJOIN_ALLOWED_HOSTS only (DNS rebinding protection)",
            )
        origin = environ.get("HTTP_ORIGIN")
        site = environ.get("HTTP_SEC_FETCH_SITE", "").lower()
        if origin is not None and not self.is_allowed_origin(origin):
            raise AwsError(
                403,
                "AccessDeniedException",
                f"Origin {origin!r} is not allowed: browsers may only call this endpoint from its own "
                "origin or one listed in ESJOIN_ALLOWED_ORIGINS (cross-site request protection)",
            )
        if site in _REFUSED_FETCH_SITES and (origin is None or not self.is_listed(origin)):
            raise AwsError(
                403,
                "AccessDeniedException",
                f"Sec-Fetch-Site: {site} requests are refused: a web page of another site may not call "
                "this endpoint (set ESJOIN_ALLOWED_ORIGINS to allow a page's origin)",
            )
        limit = body_limit(environ)
        length = environ.get("CONTENT_LENGTH") or "0"
        try:
            size = int(length)
        except ValueError:
            raise AwsError(400, "ValidationException", f"Content-Length {length!r} is not a number") from None
        if size > limit:
            service = service_of(environ) or "this request"
            code = "RequestTooLargeException" if service == "lambda" else "RequestEntityTooLarge"
            raise AwsError(
                413,
                code,
                f"the request body is {size} bytes; {service} accepts at most {limit} "
                "bytes here (above AWS's own limit for it)",
            )

    def is_local_host(self, host: str) -> bool:
        """The clients' rule (esjoin.target.is_local_host), for a Host header's name ([::1] bracketed)."""
        return is_local_host(host.strip("[]"), self.allowed_hosts)

    def is_listed(self, origin: str) -> bool:
        """In ESJOIN_ALLOWED_ORIGINS (`*`: any origin)."""
        return origin in self.allowed_origins or "*" in self.allowed_origins

    def is_allowed_origin(self, origin: str) -> bool:
        """The endpoint's own origin (a page it serves, on a local host name, on its port), or listed."""
        if self.is_listed(origin):
            return True
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            return False
        return (
            parts.scheme == "http"
            and parts.hostname is not None
            and port == self.port
            and self.is_local_host(parts.hostname)
        )

    def cors_headers(self, environ: dict[str, Any]) -> list[tuple[str, str]]:
        """CORS response headers for an allow-listed foreign origin (none for same-origin requests)."""
        origin = environ.get("HTTP_ORIGIN")
        if origin is None or not self.is_listed(origin):
            return []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Vary", "Origin"),
            ("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS"),
            ("Access-Control-Allow-Headers", environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "*")),
            ("Access-Control-Expose-Headers", "x-amzn-RequestId, x-amzn-ErrorType, X-Amz-Function-Error"),
        ]


STATE_LOAD_LIMIT = 2048 * MIB
"""A state archive (POST /_esjoin/state/load) holds every record and item the endpoint had."""


def body_limit(environ: dict[str, Any]) -> int:
    if environ.get("PATH_INFO") == "/_esjoin/state/load":
        return STATE_LOAD_LIMIT
    return BODY_LIMITS.get(service_of(environ), DEFAULT_BODY_LIMIT)


def service_of(environ: dict[str, Any]) -> str:
    """The service a request is for, as far as its headers and path tell (before its body is read)."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/_esjoin"):
        return "control"
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    scope = (
        authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/") if "Credential=" in authorization else []
    )
    if len(scope) >= 4:
        return scope[3].lower()
    service = target_service(environ)
    if service is not None:
        return service
    if path[:3] == "/20" and ("/functions" in path or "/event-source-mappings" in path):
        return "lambda"
    return ""


def target_service(environ: dict[str, Any]) -> str | None:
    """The service a JSON-protocol request names in its X-Amz-Target, the one moto routes it to (None: none
    of these). DynamoDB Streams is `dynamodbstreams` here, though it signs as `dynamodb`."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    return next((service for prefix, service in TARGET_SERVICES.items() if target.startswith(prefix)), None)


def _host_name(header: str) -> str | None:
    """The name in a Host header, without its port; None when there is no Host header at all
    (HTTP/1.0 clients: never a browser, so no rebinding risk)."""
    if not header:
        return None
    header = header.strip()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header
