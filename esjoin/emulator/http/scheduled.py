"""Deterministic mode's front door: every request is a step the scheduler grants (aids/schedule.py).

- A request carrying ``X-Esjoin-Actor`` comes from a function the scheduler is running (the worker
  names its actor, lambda_service/worker_program.py): the call is parked until granted, then served.
  ``POST /_esjoin/sleep`` from such a worker is its ``time.sleep``: the actor waits in virtual time.
- Any other request is an outside one (a test, the CLI, a script): it is recorded, parked, and served
  when the scheduler admits it. Its answer's digest is recorded too.
- Reading the control API (GET: health, quiescence, history, mappings, the trace) changes nothing and
  is served at once, outside the schedule.

Every answer carries ``X-Esjoin-Clock``, the virtual time in epoch ms: workers move their clock to it,
and a client can read it.

Replay: `inject()` runs a recorded outside request, rebuilt as a WSGI environ, on a thread of its own
that parks as the recorded actor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.test import EnvironBuilder

from esjoin.emulator.aids.schedule import Actor, Scheduler
from esjoin.emulator.aids.trace import BLOB_MIN_BYTES
from esjoin.emulator.http.gateway import CONTROL_PREFIX, CREDENTIAL_SCOPE, collect, operation_of, read_body

log = logging.getLogger("esjoin.schedule")
WsgiApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]
SLEEP_PATH = "/_esjoin/sleep"
INPUTS_PATH = "/_esjoin/schedule/inputs"
MAX_SLEEP_SECONDS = 900.0  # a worker's virtual sleep (Lambda's longest timeout)
CLOCK_HEADER = "X-Esjoin-Clock"
LOOPBACK_ADDRESS = re.compile(rb"(?:127\.0\.0\.1|localhost|\[::1\]):\d{1,5}")
# Headers a replay does not need (signatures, dates, SDK bookkeeping, connection handling).
DROPPED_HEADERS = {
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "user-agent",
    "content-length",
    "connection",
    "accept-encoding",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "x-esjoin-actor",
    "expect",
}
ZIP_FIELDS = (("Code", "ZipFile"), ("ZipFile",))  # CreateFunction, UpdateFunctionCode


class ScheduledGateway:
    def __init__(self, gateway: WsgiApp, scheduler: Scheduler, endpoint_url: str) -> None:
        self.gateway = gateway
        self.scheduler = scheduler
        self.own_host = endpoint_url.split("://", 1)[-1]  # the Host a request to this endpoint names
        scheduler.injector = self.inject

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        actor_name = environ.get("HTTP_X_ESJOIN_ACTOR", "")
        if actor_name and path == SLEEP_PATH and method == "POST":
            return self._sleep(actor_name, environ, start_response)
        if (path.startswith(CONTROL_PREFIX) and method in ("GET", "HEAD", "OPTIONS")) or path == INPUTS_PATH:
            # reads change nothing; scripted inputs are recorded when each is admitted, not when submitted
            return self._clocked(self.gateway, environ, start_response)
        if self.scheduler.stopped:
            return self._clocked(self.gateway, environ, start_response)
        body = read_body(environ)
        label = label_of(environ, body)
        if actor_name and self.scheduler.call(actor_name, label) is not None:
            return self._clocked(self.gateway, environ, start_response)
        blobs: dict[str, bytes] = {}
        actor = self.scheduler.arrive(label, record_request(environ, body, blobs, self.own_host), blobs)
        return self._serve_outside(actor, environ, start_response)

    def inject(self, request: dict[str, Any], actor: Actor) -> None:
        """Run a recorded (replay) or scripted request as `actor`, on a thread of its own that parks it:
        the scheduler grants it when its turn comes. A request that cannot be rebuilt is answered 400."""
        if not actor.blobs:
            actor.blobs = {
                d: self.scheduler.replay_blobs[d] for d in blob_references(request) if d in self.scheduler.replay_blobs
            }
        try:
            environ = environ_of(request, actor.blobs, self.own_host)
            label = label_of(environ, read_body(environ))
        except Exception as error:  # a hand-written script, or a damaged trace
            log.warning("%s: cannot rebuild the request %s: %s", actor.name, _summary(request), error)
            environ, label = None, f"unreadable request {_summary(request)}"

        def run() -> None:
            self.scheduler.park(actor, label)
            if environ is None:
                self.scheduler.note({"response": {"actor": actor.name, "status": 400, "digest": "unreadable"}})
                self.scheduler.finish(actor)
                return
            self._serve_outside(actor, environ, lambda status, headers, exc_info=None: None)

        threading.Thread(target=run, name=f"scheduled-{actor.name}", daemon=True).start()

    def _serve_outside(self, actor: Actor, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        status, headers, payload = "500 Internal Server Error", [], b""
        try:
            status, headers, payload = collect(self.gateway, environ)
        finally:
            digest = self._digest(payload, environ.get("HTTP_HOST", ""))
            self.scheduler.note({"response": {"actor": actor.name, "status": int(status[:3]), "digest": digest}})
            self.scheduler.finish(actor)
        start_response(status, [*headers, (CLOCK_HEADER, str(self.scheduler.now_ms))])
        return [payload]

    def _clocked(self, app: WsgiApp, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        def with_clock(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            return start_response(status, [*headers, (CLOCK_HEADER, str(self.scheduler.now_ms))], exc_info)

        return app(environ, with_clock)

    def _sleep(self, actor_name: str, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        try:
            seconds = float(json.loads(read_body(environ) or b"{}").get("seconds", 0))
        except (ValueError, AttributeError, TypeError):
            seconds = 0.0
        seconds = min(max(seconds, 0.0), MAX_SLEEP_SECONDS) if math.isfinite(seconds) else 0.0
        actor = self.scheduler.call(actor_name, f"sleep {seconds:g} s")
        if actor is not None and seconds > 0:
            self.scheduler.wait(actor, f"sleep {seconds:g} s", due_ms=self.scheduler.now_ms + round(seconds * 1000))
        start_response("200 OK", [("Content-Type", "application/json"), (CLOCK_HEADER, str(self.scheduler.now_ms))])
        return [b"{}"]

    def _digest(self, payload: bytes, host: str) -> str:
        """The answer's digest, with the host the request named and every loopback address with a port
        taken out: a replay runs on another port, and answers carry URLs with the recording's port in
        them (queue URLs a function's environment names, GetFunction's code location)."""
        for address in (host, self.own_host):
            if address:
                payload = payload.replace(address.encode(), b"{endpoint}")
        return hashlib.sha256(LOOPBACK_ADDRESS.sub(b"{endpoint}", payload)).hexdigest()[:16]


def label_of(environ: dict[str, Any], body: bytes) -> str:
    """What a request does, as the trace names the step: `service.Operation`, or method and path."""
    path = environ.get("PATH_INFO", "")
    service, operation = operation_of(environ, body)
    if operation and not path.startswith(CONTROL_PREFIX):
        return f"{service}.{operation}"
    return f"{environ.get('REQUEST_METHOD', 'GET')} {path}"


def record_request(environ: dict[str, Any], body: bytes, blobs: dict[str, bytes], own_host: str) -> dict[str, Any]:
    """What replay needs of an outside request: no signature, no credentials; code and big bodies go
    to `blobs` (by SHA-256), which the trace stores once; the Host only if it is not the endpoint's own
    address (so a run traces the same on any port)."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
            if name not in DROPPED_HEADERS and name != "host":
                headers[name] = value
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    scope = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    request: dict[str, Any] = {
        "method": environ.get("REQUEST_METHOD", "GET"),
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "host": "" if environ.get("HTTP_HOST", "") == own_host else environ.get("HTTP_HOST", ""),
        "headers": dict(sorted(headers.items())),
        "signed": scope is not None,
    }
    if scope:
        request["region"], request["service"] = scope.group(1), scope.group(2)
    request["body"] = recorded_body(body, blobs)
    return request


def _blob(data: bytes, blobs: dict[str, bytes]) -> dict[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"$blob": digest}


def blob_references(value: Any) -> list[str]:
    """The blobs a recorded request names."""
    if isinstance(value, dict) and isinstance(value.get("text"), str) and len(value) == 1:
        return BLOB_TOKEN.findall(value["text"])
    if isinstance(value, dict):
        if set(value) == {"$blob"}:
            return [value["$blob"]]
        return [digest for item in value.values() for digest in blob_references(item)]
    return []


def recorded_body(body: bytes, blobs: dict[str, bytes]) -> Any:
    """A body as the trace keeps it: text; a JSON body's function code (ZipFile) as a `$blob:<sha256>`
    string in place of its base64, stored once; anything else big as a blob; binary as base64."""
    if not body:
        return ""
    document = _json_object(body) if len(body) >= BLOB_MIN_BYTES else None
    if document is not None:
        text = body.decode()
        for path in ZIP_FIELDS:
            parent = document
            for key in path[:-1]:
                parent = parent.get(key) if isinstance(parent, dict) else None
            encoded = parent.get(path[-1]) if isinstance(parent, dict) else None
            if isinstance(encoded, str) and f'"{encoded}"' in text:
                try:
                    reference = _blob(base64.b64decode(encoded, validate=True), blobs)["$blob"]
                except (binascii.Error, ValueError):
                    continue
                return {"text": text.replace(f'"{encoded}"', f'"$blob:{reference}"', 1)}
    if len(body) >= BLOB_MIN_BYTES:
        return _blob(body, blobs)
    try:
        return body.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode()}


BLOB_TOKEN = re.compile(r'"\$blob:([0-9a-f]{64})"')


def body_of(recorded: Any, blobs: dict[str, bytes]) -> bytes:
    """The request body a recorded one stands for (the inverse of recorded_body)."""
    if isinstance(recorded, str):
        return recorded.encode()
    if "$blob" in recorded:
        return blobs[recorded["$blob"]]
    if "base64" in recorded:
        return base64.b64decode(recorded["base64"])
    text = BLOB_TOKEN.sub(lambda m: '"' + base64.b64encode(blobs[m.group(1)]).decode() + '"', recorded["text"])
    return text.encode()


def environ_of(request: dict[str, Any], blobs: dict[str, bytes], own_host: str) -> dict[str, Any]:
    """A WSGI environ for a recorded request, signed with a placeholder as the gateway needs."""
    headers = dict(request.get("headers", {}))
    content_type = headers.pop("content-type", None)
    if request.get("signed"):
        scope = f"test/20260101/{request.get('region', 'us-east-1')}/{request.get('service', '')}/aws4_request"
        headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=replay"
    headers["Host"] = request.get("host") or own_host  # "": the endpoint's own address, whatever its port
    builder = EnvironBuilder(
        path=request.get("path", "/"),
        method=request.get("method", "GET"),
        query_string=request.get("query", ""),
        headers=headers,
        data=body_of(request.get("body", ""), blobs),
        content_type=content_type,
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not re.match(rb"\s*\{", body):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _summary(request: dict[str, Any]) -> str:
    return f"{request.get('method', '?')} {request.get('path', '?')}"
