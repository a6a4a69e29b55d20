"""The one HTTP entry point: send each request to the part of the endpoint that serves it.

    /_esjoin/...                      -> the control API (health, faults, history, mappings)
    Lambda's REST paths, or signed
    for the `lambda` service          -> our Lambda API (never moto's: it would run Docker)
    SQS ReceiveMessage                -> moto, long-polled outside the lock (emulator.sqs_long_poll)
    everything else                   -> moto, one request at a time under MotoBackends.lock()
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from typing import Any

from emulator.lambda_service.responses import is_lambda_request
from emulator.moto_backends import MotoBackends
from emulator.sqs_long_poll import long_poll, parse_receive

WsgiApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]
CONTROL_PREFIX = "/_esjoin/"
CREDENTIAL_REGION = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/")


class Gateway:
    def __init__(self, moto: MotoBackends, lambda_api: WsgiApp, control_api: WsgiApp, default_region: str) -> None:
        self.moto = moto
        self.lambda_api = lambda_api
        self.control_api = control_api
        self.default_region = default_region

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
            return self.control_api(environ, start_response)
        if is_lambda_request(environ):
            return self.lambda_api(environ, start_response)
        body = read_body(environ)
        receive = parse_receive(environ, body) if _maybe_sqs(environ) else None
        if receive is not None:
            status, headers, payload = long_poll(self.moto, self.call_moto, environ, receive, self.region(environ))
        else:
            status, headers, payload = self.call_moto(environ)
        start_response(status, headers)
        return [payload]

    def call_moto(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """One request through moto's WSGI app under the lock, its response fully read inside it."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        with self.moto.lock():
            chunks = self.moto.app(environ, capture)
            try:
                payload = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close:
                    close()
        return captured["status"], captured["headers"], payload

    def region(self, environ: dict[str, Any]) -> str:
        match = CREDENTIAL_REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        return match.group(1) if match else self.default_region


def read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body once and put it back, so moto (or a retry) can read it again."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    body = stream.read(length) if stream is not None and length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def _maybe_sqs(environ: dict[str, Any]) -> bool:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.startswith("AmazonSQS.")
    return "/sqs/aws4_request" in environ.get("HTTP_AUTHORIZATION", "") or "Action=ReceiveMessage" in (
        environ.get("QUERY_STRING", ""))
