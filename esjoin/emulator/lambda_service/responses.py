"""The Lambda API's wire protocol (REST + JSON): parse a request, call `LambdaBackend`, render AWS's
reply or AWS's error shape. One function per operation, routed by method and path.
Reference: https://docs.aws.amazon.com/lambda/latest/api/API_Operations.html
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from esjoin.emulator.aws_errors import AwsError
from esjoin.emulator.invocation import LambdaServiceError
from esjoin.emulator.json_limits import check_json
from esjoin.emulator.lambda_service.models import LambdaBackend, invalid

log = logging.getLogger("esjoin.lambda")

FUNCTIONS = "/2015-03-31/functions"
MAPPINGS = "/2015-03-31/event-source-mappings"
LAMBDA_PATH = re.compile(r"^/20\d\d-\d\d-\d\d/(functions|event-source-mappings|tags|account-settings|layers)")
SUPPORTED = (
    "CreateFunction, GetFunction, GetFunctionConfiguration, ListFunctions, UpdateFunctionCode, "
    "UpdateFunctionConfiguration, DeleteFunction, Invoke, InvokeAsync, "
    "Create/Get/List/Update/DeleteEventSourceMapping, TagResource, UntagResource, ListTags, "
    "GetAccountSettings"
)


def credential_region(request: Request, default: str) -> str:
    """The region a SigV4 request was signed for (Credential=key/date/REGION/service/aws4_request)."""
    authorization = request.headers.get("Authorization", "")
    match = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", authorization)
    return match.group(1) if match else default


def is_lambda_request(environ: dict[str, Any]) -> bool:
    """Lambda's REST paths, or anything signed for the lambda service: ours, never moto's."""
    if LAMBDA_PATH.match(environ.get("PATH_INFO", "")):
        return True
    return "/lambda/aws4_request" in environ.get("HTTP_AUTHORIZATION", "")


Handler = Callable[["LambdaResponses", Request, str, dict[str, str]], Response]


class LambdaResponses:
    def __init__(self, backend: LambdaBackend, default_region: str) -> None:
        self.backend = backend
        self.default_region = default_region
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(rf"^{FUNCTIONS}/?$"), LambdaResponses.create_function),
            ("GET", re.compile(rf"^{FUNCTIONS}/?$"), LambdaResponses.list_functions),
            ("GET", re.compile(rf"^{FUNCTIONS}/(?P<name>[^/]+)/?$"), LambdaResponses.get_function),
            ("DELETE", re.compile(rf"^{FUNCTIONS}/(?P<name>[^/]+)/?$"), LambdaResponses.delete_function),
            (
                "GET",
                re.compile(rf"^{FUNCTIONS}/(?P<name>[^/]+)/configuration/?$"),
                LambdaResponses.get_function_configuration,
            ),
            (
                "PUT",
                re.compile(rf"^{FUNCTIONS}/(?P<name>[^/]+)/configuration/?$"),
                LambdaResponses.update_function_configuration,
            ),
            ("PUT", re.compile(rf"^{FUNCTIONS}/(?P<name>[^/]+)/code/?$"), LambdaResponses.update_function_code),
            ("POST", re.compile(rf"^{FUNCTIONS}/(?P<name>[^/]+)/invocations/?$"), LambdaResponses.invoke),
            (
                "POST",
                re.compile(r"^/2014-11-13/functions/(?P<name>[^/]+)/invoke-async/?$"),
                LambdaResponses.invoke_async,
            ),
            ("POST", re.compile(rf"^{MAPPINGS}/?$"), LambdaResponses.create_event_source_mapping),
            ("GET", re.compile(rf"^{MAPPINGS}/?$"), LambdaResponses.list_event_source_mappings),
            ("GET", re.compile(rf"^{MAPPINGS}/(?P<uuid>[^/]+)/?$"), LambdaResponses.get_event_source_mapping),
            ("PUT", re.compile(rf"^{MAPPINGS}/(?P<uuid>[^/]+)/?$"), LambdaResponses.update_event_source_mapping),
            ("DELETE", re.compile(rf"^{MAPPINGS}/(?P<uuid>[^/]+)/?$"), LambdaResponses.delete_event_source_mapping),
            ("GET", re.compile(r"^/2017-03-31/tags/(?P<arn>.+)$"), LambdaResponses.list_tags),
            ("POST", re.compile(r"^/2017-03-31/tags/(?P<arn>.+)$"), LambdaResponses.tag_resource),
            ("DELETE", re.compile(r"^/2017-03-31/tags/(?P<arn>.+)$"), LambdaResponses.untag_resource),
            ("GET", re.compile(r"^/2016-08-19/account-settings/?$"), LambdaResponses.get_account_settings),
        ]

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        request_id = str(uuid.uuid4())
        try:
            response = self.dispatch(request)
        except LambdaServiceError as error:
            response = error_response(error)
        except Exception:  # a bug here must still answer as AWS would, and say what broke
            log.exception("Lambda API %s %s failed", request.method, request.path)
            response = error_response(
                LambdaServiceError(
                    500,
                    "ServiceException",
                    "the Lambda service failed on this request; the endpoint's log has the details",
                )
            )
        response.headers.setdefault("x-amzn-RequestId", request_id)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        region = credential_region(request, self.default_region)
        for method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match and request.method == method:
                arguments = {key: unquote(value) for key, value in match.groupdict().items()}
                return handler(self, request, region, arguments)
        raise LambdaServiceError(
            501,
            "NotImplementedException",
            f"esjoin's Lambda API does not implement {request.method} {path}. Supported: {SUPPORTED}.",
        )

    # -- functions ----------------------------------------------------------------------------

    def create_function(self, request: Request, region: str, _: dict[str, str]) -> Response:
        function = self.backend.create_function(json_body(request), region)
        return json_response(function.configuration(), 201)

    def list_functions(self, request: Request, region: str, _: dict[str, str]) -> Response:
        functions = [f.configuration() for f in self.backend.list_functions(region)]
        page, marker = paginate(functions, request, default_size=50)
        return json_response({"Functions": page, **({"NextMarker": marker} if marker else {})})

    def get_function(self, request: Request, region: str, args: dict[str, str]) -> Response:
        function, _ = self.backend.resolve(qualified(args["name"], request), region)
        return json_response(
            {
                "Configuration": function.configuration(),
                "Code": {
                    "RepositoryType": "S3",
                    "Location": f"{request.host_url.rstrip('/')}/_esjoin/code/{region}/{function.name}.zip",
                },
                "Tags": dict(function.tags),
            }
        )

    def get_function_configuration(self, request: Request, region: str, args: dict[str, str]) -> Response:
        function, _ = self.backend.resolve(qualified(args["name"], request), region)
        return json_response(function.configuration())

    def update_function_code(self, request: Request, region: str, args: dict[str, str]) -> Response:
        function = self.backend.update_function_code(args["name"], json_body(request), region)
        return json_response(function.configuration())

    def update_function_configuration(self, request: Request, region: str, args: dict[str, str]) -> Response:
        function = self.backend.update_function_configuration(args["name"], json_body(request), region)
        return json_response(function.configuration())

    def delete_function(self, request: Request, region: str, args: dict[str, str]) -> Response:
        self.backend.delete_function(qualified(args["name"], request), region)
        return Response(status=204)

    def invoke(self, request: Request, region: str, args: dict[str, str]) -> Response:
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        result = self.backend.invoke(
            qualified(args["name"], request),
            request.get_data(),
            region,
            invocation_type=invocation_type,
            client_context=request.headers.get("X-Amz-Client-Context"),
        )
        if invocation_type == "DryRun":
            return Response(status=204)
        if result is None:  # Event: queued
            return Response(status=202)
        response = Response(result.payload, status=200, content_type="application/json")
        response.headers["X-Amz-Executed-Version"] = result.executed_version
        if result.function_error:
            response.headers["X-Amz-Function-Error"] = result.function_error
        if request.headers.get("X-Amz-Log-Type") == "Tail":
            response.headers["X-Amz-Log-Result"] = result.log_tail()
        response.headers["x-amzn-RequestId"] = result.request_id
        return response

    def invoke_async(self, request: Request, region: str, args: dict[str, str]) -> Response:
        self.backend.invoke(args["name"], request.get_data(), region, invocation_type="Event")
        return json_response({"Status": 202}, 202)

    # -- event source mappings -----------------------------------------------------------------

    def create_event_source_mapping(self, request: Request, region: str, _: dict[str, str]) -> Response:
        mapping = self.backend.create_event_source_mapping(json_body(request), region)
        return json_response(mapping.to_api(), 202)

    def list_event_source_mappings(self, request: Request, region: str, _: dict[str, str]) -> Response:
        mappings = self.backend.list_event_source_mappings(
            request.args.get("FunctionName"), request.args.get("EventSourceArn"), region
        )
        page, marker = paginate([m.to_api() for m in mappings], request, default_size=100)
        return json_response({"EventSourceMappings": page, **({"NextMarker": marker} if marker else {})})

    def get_event_source_mapping(self, request: Request, region: str, args: dict[str, str]) -> Response:
        return json_response(self.backend.get_event_source_mapping(args["uuid"]).to_api())

    def update_event_source_mapping(self, request: Request, region: str, args: dict[str, str]) -> Response:
        mapping = self.backend.update_event_source_mapping(args["uuid"], json_body(request), region)
        return json_response(mapping.to_api(), 202)

    def delete_event_source_mapping(self, request: Request, region: str, args: dict[str, str]) -> Response:
        return json_response(self.backend.delete_event_source_mapping(args["uuid"]).to_api(), 202)

    # -- tags and account ---------------------------------------------------------------------

    def list_tags(self, request: Request, region: str, args: dict[str, str]) -> Response:
        function, _ = self.backend.resolve(args["arn"], region)
        return json_response({"Tags": dict(function.tags)})

    def tag_resource(self, request: Request, region: str, args: dict[str, str]) -> Response:
        function, _ = self.backend.resolve(args["arn"], region)
        function.tags.update(json_body(request).get("Tags") or {})
        return Response(status=204)

    def untag_resource(self, request: Request, region: str, args: dict[str, str]) -> Response:
        function, _ = self.backend.resolve(args["arn"], region)
        for key in request.args.getlist("tagKeys"):
            function.tags.pop(key, None)
        return Response(status=204)

    def get_account_settings(self, request: Request, region: str, _: dict[str, str]) -> Response:
        count = len(self.backend.list_functions(region))
        limit = self.backend.config.lambda_max_concurrency
        return json_response(
            {
                "AccountLimit": {
                    "TotalCodeSize": 80530636800,
                    "CodeSizeUnzipped": 262144000,
                    "CodeSizeZipped": 52428800,
                    "ConcurrentExecutions": limit,
                    "UnreservedConcurrentExecutions": limit,
                },
                "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": count},
            }
        )


def qualified(name: str, request: Request) -> str:
    qualifier = request.args.get("Qualifier")
    return f"{name}:{qualifier}" if qualifier and ":" not in name.split("function:")[-1] else name


def json_body(request: Request) -> dict[str, Any]:
    data = request.get_data()
    if not data:
        return {}
    try:
        document = check_json(data)
    except AwsError as error:
        raise LambdaServiceError(
            400, "InvalidRequestContentException", f"Could not parse request body into json: {error}"
        ) from None
    if not isinstance(document, dict):
        raise invalid("The request body must be a JSON object")
    return document


def paginate(items: list[dict], request: Request, default_size: int) -> tuple[list[dict], str | None]:
    try:
        start = int(request.args.get("Marker") or 0)
        size = int(request.args.get("MaxItems") or default_size)
    except ValueError:
        raise invalid("Marker and MaxItems must be integers") from None
    end = start + max(1, size)
    return items[start:end], (str(end) if end < len(items) else None)


def json_response(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, content_type="application/json")


def error_response(error: LambdaServiceError) -> Response:
    body = {"Type": "User" if error.status < 500 else "Service", "Message": error.message, **error.extra}
    response = json_response(body, error.status)
    response.headers["x-amzn-ErrorType"] = error.code
    return response
