"""AWS's error responses, for requests the endpoint refuses before (or instead of) moto.

JSON-protocol services (X-Amz-Target: DynamoDB, Kinesis, SQS, Logs) answer
`{"__type": code, "message": ...}`; query-protocol ones (`Action=...`: SQS's older protocol, IAM, STS)
answer `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`.
https://smithy.io/2.0/aws/protocols/aws-json-1_0-protocol.html#operation-error-serialization
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape


@dataclass
class AwsError(Exception):
    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def respond(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request_id = str(uuid.uuid4())
        if environ.get("HTTP_X_AMZ_TARGET") or "json" in environ.get("CONTENT_TYPE", ""):
            body = json.dumps({"__type": self.code, "message": self.message}).encode()
            content_type = "application/x-amz-json-1.0"
        else:
            kind = "Sender" if self.status < 500 else "Receiver"
            body = (
                f"<ErrorResponse><Error><Type>{kind}</Type><Code>{escape(self.code)}</Code>"
                f"<Message>{escape(self.message)}</Message></Error><RequestId>{request_id}</RequestId>"
                "</ErrorResponse>"
            ).encode()
            content_type = "text/xml"
        start_response(
            f"{self.status} {self.code}",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("x-amzn-ErrorType", self.code),
                ("x-amzn-RequestId", request_id),
            ],
        )
        return [body]
