"""Is an esjoin endpoint answering at this URL? One GET of /_esjoin/health, straight to the endpoint,
whose outcome says what `esjoin up` may do next.

Straight to it: urllib's default opener sends every request through HTTP_PROXY / http_proxy unless
NO_PROXY names the host, and a proxy cannot reach this machine's loopback. With a proxy set and no
NO_PROXY every probe failed, `esjoin up` concluded that nothing was running and started a second
endpoint on a port already taken. The harness talks HTTP only to local endpoints (esjoin.target's
guard), so it never uses a proxy: `direct_opener()` ignores the proxy variables.

The outcomes tell "nothing listens" (connection refused: safe to start an endpoint there) apart from
"something accepted the connection but did not answer in time" (a busy endpoint, or a server that is
not one): starting another endpoint on that port would fail, or leave two endpoints and a stack
bootstrapped into the wrong one.
"""

from __future__ import annotations

import enum
import functools
import http.client
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

HEALTH_PATH = "/_esjoin/health"
PROBE_TIMEOUT_SECONDS = 2.0
"""An endpoint on this machine answers its health check in milliseconds, even under load."""


class ProbeKind(enum.Enum):
    NOT_LISTENING = "not listening"  # connection refused: no process has the port
    UNREACHABLE = "unreachable"  # the host does not resolve or its network is unreachable
    SLOW = "slow"  # no answer within the timeout: busy, or a server that never answers this request
    NOT_ESJOIN = "not esjoin"  # answers, but not with an esjoin health document (LocalStack, another server)
    STARTING = "starting"  # an esjoin endpoint, not serving yet (503 {"status": "starting"})
    READY = "ready"  # an esjoin endpoint, serving (200 {"status": "ready"})


@dataclass(frozen=True)
class Probe:
    kind: ProbeKind
    endpoint_url: str
    timeout: float
    detail: str = ""  # what was seen: the error, or the HTTP status
    health: dict[str, Any] | None = None  # the esjoin health document (STARTING, READY)

    def describe(self) -> str:
        """One line for a person: what answers at the endpoint, if anything."""
        where = self.endpoint_url
        if self.kind is ProbeKind.NOT_LISTENING:
            return f"nothing answers at {where} ({self.detail})"
        if self.kind is ProbeKind.UNREACHABLE:
            return f"cannot reach {where} ({self.detail})"
        if self.kind is ProbeKind.SLOW:
            return (
                f"something answers at {where} but not within {self.timeout:g}s: is it busy, or not an esjoin endpoint?"
            )
        if self.kind is ProbeKind.NOT_ESJOIN:
            return f"something answers at {where} but it is not an esjoin endpoint ({self.detail})"
        if self.kind is ProbeKind.STARTING:
            return f"the esjoin endpoint at {where} is starting"
        return f"the esjoin endpoint at {where} is ready"


@functools.cache
def direct_opener() -> urllib.request.OpenerDirector:
    """urllib's opener minus the proxies: ProxyHandler({}) replaces the default one, which reads
    HTTP_PROXY and friends from the environment."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe_health(endpoint_url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> Probe:
    """GET <endpoint>/_esjoin/health once, directly, and say what answered. Never raises for what
    the network does: every outcome is a ProbeKind."""
    endpoint_url = endpoint_url.rstrip("/")
    try:
        with direct_opener().open(endpoint_url + HEALTH_PATH, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:  # the emulator answers 503 while starting
        status, body = error.code, _read_quietly(error)
    except (OSError, http.client.HTTPException) as error:
        kind, detail = _connection_outcome(error)
        return Probe(kind, endpoint_url, timeout, detail)
    return _health_outcome(endpoint_url, timeout, status, body)


def _read_quietly(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read()
    except (OSError, http.client.HTTPException):
        return b""


def _connection_outcome(error: BaseException) -> tuple[ProbeKind, str]:
    """Connect errors come wrapped in URLError; errors while awaiting the reply come bare."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    detail = str(reason) or type(reason).__name__
    if isinstance(reason, ConnectionRefusedError):
        return ProbeKind.NOT_LISTENING, "connection refused"
    if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return ProbeKind.SLOW, detail
    if isinstance(reason, (http.client.HTTPException, ConnectionResetError, ConnectionAbortedError, ssl.SSLError)):
        # Accepted the connection, then closed it or answered something that is not HTTP(S).
        return ProbeKind.NOT_ESJOIN, f"no HTTP reply: {detail}"
    return ProbeKind.UNREACHABLE, detail


def _health_outcome(endpoint_url: str, timeout: float, status: int, body: bytes) -> Probe:
    try:
        document = json.loads(body or b"null")
    except ValueError:
        document = None
    state = document.get("status") if isinstance(document, dict) else None
    if status == 200 and state == "ready":
        return Probe(ProbeKind.READY, endpoint_url, timeout, f"HTTP {status}", document)
    if state == "starting":
        return Probe(ProbeKind.STARTING, endpoint_url, timeout, f"HTTP {status}", document)
    return Probe(
        ProbeKind.NOT_ESJOIN,
        endpoint_url,
        timeout,
        f"{HEALTH_PATH} said HTTP {status}" + (f", status {state!r}" if state is not None else ""),
    )
