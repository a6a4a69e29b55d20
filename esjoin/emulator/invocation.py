"""What crosses between the Lambda API, the runtime and the event source mapping engine.

`FunctionSpec` is one function as the runtime runs it, `InvocationRequest` one call, and
`InvocationResult` what came back, in AWS's terms (the payload is what `Invoke` returns; a failed
call carries `function_error` = "Unhandled" as the `X-Amz-Function-Error` header does).
`InvocationOrigin` says who asked, for the history and for fault matching. `default_role` is the
execution role assumed for a function whose own role is unknown (Kinesis events name it).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

UNHANDLED = "Unhandled"


def default_role(function_arn: str) -> str:
    """The role a Kinesis record's invokeIdentityArn names when the Lambda API gives none, or when the
    function's own role cannot be found (it was deleted): lambda-role in the function's account."""
    return f"arn:aws:iam::{function_arn.split(':')[4]}:role/lambda-role"


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    arn: str  # unqualified: arn:aws:lambda:<region>:<account>:function:<name>
    runtime: str  # python3.x; the code runs on the endpoint's own Python whatever this says
    handler: str  # "module.function"; the module may be a dotted path inside the zip
    code_dir: Path  # the zip, extracted, read-only by convention
    code_sha256: str  # base64 SHA-256 of the zip, as CodeSha256
    revision_id: str  # changes with every code or configuration update; a worker serves one revision
    timeout_seconds: int
    memory_mb: int
    environment: dict[str, str]
    region: str
    account_id: str
    version: str = "$LATEST"

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"


@dataclass(frozen=True)
class InvocationOrigin:
    """Who invoked: a direct Invoke call, or an event source mapping delivering a batch."""

    invocation_type: str = "RequestResponse"  # RequestResponse | Event | EventSourceMapping
    mapping_uuid: str | None = None
    source: str | None = None  # kinesis | dynamodb | sqs
    batch_ids: tuple[str, ...] = ()  # eventID / messageId of each record in the batch
    attempt: int = 1  # 1 for the first delivery of a batch, 2 for its first retry, ...
    duplicate: bool = False  # a deliberate second delivery (control API: at-least-once)


@dataclass(frozen=True)
class InvocationRequest:
    payload: bytes
    request_id: str
    client_context: str | None = None  # base64 JSON, as the X-Amz-Client-Context header
    delay_seconds: float = 0.0  # injected fault: the handler starts this much later (counts to Timeout)


@dataclass
class InvocationResult:
    request_id: str
    payload: bytes
    function_error: str | None = None  # "Unhandled" when the function failed, else None
    log: str = ""  # this invocation's log, START to REPORT, as CloudWatch Logs gets it
    duration_ms: float = 0.0
    billed_duration_ms: int = 0
    init_duration_ms: float | None = None  # set when this invocation started a new worker
    timed_out: bool = False
    worker_died: bool = False  # the worker process exited or was killed mid-invocation
    injected_fault: str | None = None  # the control API's fault id, when one decided this outcome
    executed_version: str = "$LATEST"

    @property
    def failed(self) -> bool:
        return self.function_error is not None

    def error_document(self) -> dict:
        """The error payload ({errorType, errorMessage, ...}) of a failed call, else {}."""
        if not self.failed:
            return {}
        try:
            document = json.loads(self.payload or b"{}")
        except ValueError:
            return {"errorMessage": self.payload.decode(errors="replace")}
        return document if isinstance(document, dict) else {"errorMessage": str(document)}

    def log_tail(self) -> str:
        """X-Amz-Log-Result: the last 4 KB of the log, base64 (LogType=Tail)."""
        return base64.b64encode(self.log.encode()[-4096:]).decode()


@dataclass
class LambdaServiceError(Exception):
    """A Lambda API error with AWS's wire shape: HTTP status, error code (`x-amzn-ErrorType`), message.

    e.g. LambdaServiceError(404, "ResourceNotFoundException", "Function not found: arn:...")."""

    status: int
    code: str
    message: str
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
