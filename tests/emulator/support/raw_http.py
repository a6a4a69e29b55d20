"""Raw HTTP to the endpoint (http.client), for requests boto3 would never send: `send` returns the status,
headers and body whatever they are, `signed` makes the headers of a request signed for a service (a SigV4
Authorization header; the endpoint does not check signatures, as LocalStack does not).
"""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from tests.emulator.support.endpoint import Control, Endpoint

HANG_GUARD_SECONDS = 20  # a request that takes longer than this counts as a hang
JSON_10 = "application/x-amz-json-1.0"
JSON_11 = "application/x-amz-json-1.1"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_type(self) -> str | None:
        """The AWS error code, wherever the protocol puts it (header, JSON __type, XML <Code>)."""
        if self.headers.get("x-amzn-errortype"):
            return self.headers["x-amzn-errortype"]
        try:
            document = json.loads(self.body)
        except ValueError:
            match = re.search(rb"<Code>([^<]+)</Code>", self.body)
            return match.group(1).decode() if match else None
        if isinstance(document, dict):
            return document.get("__type") or document.get("code") or document.get("Code")
        return None

    def __repr__(self) -> str:
        return f"{self.status} {self.headers.get('content-type')} {self.body[:300]!r}"


def send(
    endpoint: Endpoint, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> RawResponse:
    address = urlparse(endpoint.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=HANG_GUARD_SECONDS)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def signed(service: str, target: str | None = None, content_type: str = JSON_10) -> dict[str, str]:
    headers = {
        "Content-Type": content_type,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/{service}/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0000"
        ),
        "X-Amz-Date": "20240101T000000Z",
    }
    if target:
        headers["X-Amz-Target"] = target
    return headers


def assert_aws_error(response: RawResponse) -> None:
    assert 400 <= response.status < 500, response
    assert response.error_type(), f"no AWS error type in {response}"
    assert b"Traceback" not in response.body, response


def assert_still_serving(endpoint: Endpoint, control: Control) -> None:
    assert control.get("health").status == 200
    endpoint.client("dynamodb").list_tables(Limit=1)
    endpoint.client("sqs").list_queues()
