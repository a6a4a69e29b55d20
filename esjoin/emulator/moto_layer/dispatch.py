"""moto's WSGI app as the gateway calls it: the request handlers of the pipeline's hot services
called without Flask in between, everything else through moto's own app.

moto's server mode routes every request through its DomainDispatcherApplication, then a Flask app
per service: a request context, URL matching, flask_cors, a Flask Response. For the JSON-protocol
services the pipeline calls most (DynamoDB, DynamoDB Streams, Kinesis, SQS), the app has one route,
"/", to one handler (`<Service>Response.dispatch`), so the gateway can call that handler itself with
the same request object moto's Flask app would build (BackendRequest) and answer what Flask would
(the handler's status, headers and body in a Flask Response, plus the one header flask_cors adds to
a request without an Origin). Measured under the pipeline benchmark, Flask's part was 12 % of the
endpoint's time (bench/, "pipeline").

Anything else (another service or protocol, another path, a CORS request with an Origin, a method
other than POST) goes through moto's app unchanged. moto's answers to its own errors are the same
either way: the handler turns them into responses itself, HTTPExceptions become their own response
(as Flask answers them), and any other exception propagates to the gateway (as it does from moto's
app, which runs in debug mode).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from typing import Any

# X-Amz-Target prefix -> (module, response class) of the handler moto's app routes "/" to.
DIRECT_TARGETS = {
    "DynamoDB_20120810": ("moto.dynamodb.responses", "DynamoHandler"),
    "DynamoDBStreams_20120810": ("moto.dynamodbstreams.responses", "DynamoDBStreamsHandler"),
    "Kinesis_20131202": ("moto.kinesis.responses", "KinesisResponse"),
    "AmazonSQS": ("moto.sqs.responses", "SQSResponse"),
}
# What flask_cors (moto's default configuration: any origin) adds to a response to a request that
# names no Origin.
CORS_HEADERS = (("Access-Control-Allow-Origin", "*"),)


class MotoDispatch:
    def __init__(self, app: Callable[[dict[str, Any], Callable], Iterable[bytes]]) -> None:
        self.app = app  # moto's DomainDispatcherApplication

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        handler = direct_handler(environ)
        if handler is None:
            return self.app(environ, start_response)
        return call_handler(handler, environ, start_response)


def direct_handler(environ: dict[str, Any]) -> Callable[..., Any] | None:
    """The handler moto's app would route this request to, if it is one the gateway calls itself."""
    if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != "/" or "HTTP_ORIGIN" in environ:
        return None
    prefix = environ.get("HTTP_X_AMZ_TARGET", "").partition(".")[0]
    return _handler(prefix) if prefix in DIRECT_TARGETS else None


@functools.cache
def _handler(prefix: str) -> Callable[..., Any]:
    module, name = DIRECT_TARGETS[prefix]
    return getattr(importlib.import_module(module), name).dispatch


def call_handler(handler: Callable[..., Any], environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    """What moto's Flask app does around a handler (moto.core.utils.convert_to_flask_response, Flask's
    HTTPException handling, flask_cors), without the app."""
    from botocore.exceptions import ClientError
    from flask import Response
    from moto.moto_api import recorder
    from moto.moto_server.werkzeug_app import BackendRequest
    from werkzeug.exceptions import HTTPException

    request = BackendRequest(environ)
    recorder._record_request(request)
    try:
        try:
            result = handler(request, request.raw_url, dict(request.headers))
        except ClientError as error:
            result = 400, {}, error.response["Error"]["Message"]
        status, headers, content = result if len(result) == 3 else (200, {}, result)
        response = Response(response=content, status=status, headers=headers)
    except HTTPException as error:
        response = Response.force_type(error.get_response(environ), environ)
    for name, value in CORS_HEADERS:
        response.headers.add(name, value)
    return response(environ, start_response)
