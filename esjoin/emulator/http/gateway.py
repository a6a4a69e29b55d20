"""The one HTTP entry point: send each request to the part of the endpoint that serves it.

    /_esjoin/...                      -> the control API (health, faults, history, mappings)
    Lambda's REST paths, or signed
    for the `lambda` service          -> our Lambda API (never moto's: it would run Docker)
    SQS ReceiveMessage                -> moto, long-polled outside the lock (esjoin.emulator.moto_layer.sqs_long_poll)
    everything else                   -> moto, under MotoBackends.request_lock (esjoin.emulator.moto_layer.lock):
                                         one table's items, Kinesis, SQS side by side; the rest alone

A request fault rule (esjoin.emulator.aids.faults) that matches an AWS request delays it, or answers an AWS error
instead of executing it, before it reaches moto. Requests AWS would refuse are refused here with
AWS's error shape rather than reaching moto: unsigned ones (moto would answer them as S3), ones for a
service this endpoint does not serve, and JSON-protocol bodies that are not JSON. An exception inside
moto becomes a 400 ValidationException (moto raises on input it does not validate), logged with its
traceback, never a bare 500.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import parse_qsl

from esjoin.emulator.aids.faults import DELAY, FaultInjector
from esjoin.emulator.aids.schedule import Scheduler
from esjoin.emulator.aws_errors import AwsError
from esjoin.emulator.http.guard import RequestGuard, target_service
from esjoin.emulator.json_limits import check_json
from esjoin.emulator.lambda_service.responses import is_lambda_request
from esjoin.emulator.moto_layer.moto_backends import MotoBackends
from esjoin.emulator.moto_layer.sqs_long_poll import long_poll, parse_receive

log = logging.getLogger("esjoin.emulator")
WsgiApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]
# The SigV4 signing names of what moto serves behind the gateway (CloudWatch signs as "monitoring").
SERVED_SERVICES = {"kinesis", "dynamodb", "sqs", "logs", "iam", "sts", "monitoring"}
CONTROL_PREFIX = "/_esjoin/"
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/")


class Gateway:
    def __init__(
        self,
        moto: MotoBackends,
        lambda_api: WsgiApp,
        control_api: WsgiApp,
        default_region: str,
        faults: FaultInjector,
        guard: RequestGuard,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.moto = moto
        self.scheduler = scheduler  # deterministic mode: delays and long polls wait in virtual time
        self.guard = guard
        self.lambda_api = lambda_api
        self.control_api = control_api
        self.default_region = default_region
        self.faults = faults

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        """Route one request (the HTTP server's RequestGuard has already admitted its Host, Origin and size).
        An allow-listed foreign origin (ESJOIN_ALLOWED_ORIGINS) gets CORS headers and its preflights answered."""
        cors = self.guard.cors_headers(environ)
        if cors:
            if environ.get("REQUEST_METHOD") == "OPTIONS":
                start_response("200 OK", [*cors, ("Content-Length", "0")])
                return [b""]
            respond = start_response

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
                # Ours only: moto's app answers a request with an Origin with its own CORS headers (flask_cors),
                # and a browser refuses a response with two Access-Control-Allow-Origin values.
                kept = [
                    (k, v) for k, v in headers if not k.lower().startswith("access-control-") and k.lower() != "vary"
                ]
                return respond(status, [*kept, *cors], exc_info)

        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
            return self.control_api(environ, start_response)
        if path.startswith("/moto-api"):
            return AwsError(
                404,
                "UnknownOperationException",
                "moto's own API is not served here; the endpoint's control API is under /_esjoin/",
            ).respond(environ, start_response)
        if is_lambda_request(environ):
            if not is_signed(environ):  # Lambda's API runs code: never for an unsigned (browser) request
                return MISSING_SIGNATURE.respond(environ, start_response)
            return self.lambda_api(environ, start_response)
        body = read_body(environ)
        try:
            service, operation = operation_of(environ, body)
            document = check_request(environ, service, body)
            lock = self.moto.request_lock(service, operation, self.region(environ), document, target_service(environ))
            fault = self.faults.take_request(service, operation, body)
            if fault is not None and self.scheduler is not None:
                self.scheduler.note(
                    {"fault": {"id": fault.id, "operation": f"{service}.{operation}", "action": fault.action}}
                )
            if fault is not None:
                if fault.action != DELAY:
                    raise AwsError(fault.status_code, fault.error_type, f"{fault.error_message} ({fault.id})")
                self.sleep(fault.delay_seconds, f"fault {fault.id}: {service}.{operation} held")
            receive = parse_receive(environ, body) if _maybe_sqs(environ) else None
            if receive is not None:
                status, headers, payload = long_poll(
                    self.moto,
                    functools.partial(self.call_moto, lock=lock),
                    environ,
                    receive,
                    self.region(environ),
                    self.scheduler,
                )
            else:
                status, headers, payload = self.call_moto(environ, lock)
        except AwsError as error:
            return error.respond(environ, start_response)
        start_response(status, headers)
        return [payload]

    def call_moto(
        self, environ: dict[str, Any], lock: AbstractContextManager[Any] | None = None
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """One request through moto's WSGI app under its lock (MotoBackends.request_lock; the exclusive
        one by default), its response fully read inside it."""
        try:
            with lock if lock is not None else self.moto.lock():
                return collect(self.moto.serve, environ)
        except NotImplementedError as error:
            raise AwsError(400, "UnknownOperationException", f"unknown or unsupported operation: {error}") from None
        except Exception:
            service, operation = operation_of(environ, b"")
            log.warning("moto raised on %s %s; answered 400 ValidationException", service, operation, exc_info=True)
            raise AwsError(
                400,
                "ValidationException",
                f"{service or 'the service'} could not process this {operation or 'request'}: a "
                "parameter is missing or malformed (the endpoint's log has moto's error)",
            ) from None

    def sleep(self, seconds: float, label: str) -> None:
        """The injected delay itself, outside the lock (virtual time in deterministic mode)."""
        if self.scheduler is not None:
            self.scheduler.sleep(seconds, label)
        else:
            time.sleep(seconds)

    def region(self, environ: dict[str, Any]) -> str:
        match = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        return match.group(1) if match else self.default_region


def collect(app: WsgiApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call a WSGI app and read its whole answer: (status, headers, body)."""
    captured: dict[str, Any] = {"status": "500 Internal Server Error", "headers": []}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        captured["status"], captured["headers"] = status, headers
        return lambda data: None

    chunks = app(environ, capture)
    try:
        payload = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()
    return captured["status"], captured["headers"], payload


MISSING_SIGNATURE = AwsError(
    403,
    "MissingAuthenticationTokenException",
    "Missing Authentication Token: sign requests with SigV4 (any key works here, e.g. test/test)",
)
# Services that speak only AWS's JSON protocol: a request without X-Amz-Target names no operation.
JSON_ONLY_SERVICES = {"kinesis", "dynamodb", "logs"}


def is_signed(environ: dict[str, Any]) -> bool:
    """An AWS signature: SigV4's Authorization header, or a presigned URL's X-Amz-Credential."""
    return environ.get("HTTP_AUTHORIZATION", "").startswith("AWS4-") or "X-Amz-Credential=" in environ.get(
        "QUERY_STRING", ""
    )


def check_request(environ: dict[str, Any], service: str, body: bytes) -> Any:
    """Refuse, as AWS would, what moto must not see: unsigned requests, unknown services, non-JSON,
    JSON nested deeper than any AWS request, and JSON-protocol requests that name no operation.
    Returns the parsed JSON body (None for another protocol or an empty body)."""
    if not is_signed(environ):
        raise MISSING_SIGNATURE
    if service and service not in SERVED_SERVICES:
        raise AwsError(
            400,
            "UnrecognizedServiceException",
            f"this endpoint serves {', '.join(sorted(SERVED_SERVICES | {'lambda'}))}, not {service!r}",
        )
    target = environ.get("HTTP_X_AMZ_TARGET")
    if not target and service in JSON_ONLY_SERVICES:
        raise AwsError(
            400,
            "UnknownOperationException",
            f"{service} speaks AWS's JSON protocol: the X-Amz-Target header must name the operation",
        )
    if target and body:
        return check_json(body)
    return None


def operation_of(environ: dict[str, Any], body: bytes) -> tuple[str, str]:
    """(service, operation) of an AWS request: the SigV4 scope's service and the X-Amz-Target's (JSON
    protocol) or Action's (query protocol) operation; empty strings when unknown."""
    match = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = match.group(2).lower() if match else ""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return service, target.rsplit(".", 1)[-1]
    if b"Action=" in body:
        return service, dict(parse_qsl(body.decode(errors="replace"))).get("Action", "")
    return service, ""


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
        environ.get("QUERY_STRING", "")
    )
