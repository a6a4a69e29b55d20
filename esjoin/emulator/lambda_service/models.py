"""The Lambda service's state and behaviour: functions, invocations and event source mappings.

Wire handling lives in responses.py; running code lives in runtime.py (and the modules it names);
delivering from streams and queues lives in esjoin.emulator.event_source_mapping. This module
validates what AWS validates, keeps the functions and mappings, and routes every invocation through
fault injection and the history.
Reference: https://docs.aws.amazon.com/lambda/latest/api/API_Operations.html
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import re
import shutil
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from esjoin.emulator.aids.faults import ERROR as FAULT_ERROR
from esjoin.emulator.aids.faults import FaultInjector, FaultRule
from esjoin.emulator.aids.history import InvocationHistory
from esjoin.emulator.aids.schedule import Actor, Scheduler
from esjoin.emulator.config import TIMING_AWS, TIMING_FAST, EmulatorConfig
from esjoin.emulator.event_source_mapping.engine import EventSourceMappingEngine
from esjoin.emulator.event_source_mapping.mapping import (
    CREATING,
    DELETING,
    DISABLED,
    DISABLING,
    ENABLED,
    ENABLING,
    SQS,
    UPDATING,
    EventSourceMapping,
    source_type,
)
from esjoin.emulator.invocation import (
    UNHANDLED,
    FunctionSpec,
    InvocationOrigin,
    InvocationRequest,
    InvocationResult,
    LambdaServiceError,
    default_role,
)
from esjoin.emulator.lambda_service.cloudwatch import CloudWatchLogSink
from esjoin.emulator.lambda_service.function_logs import end_line, report_line, start_line
from esjoin.emulator.lambda_service.runtime import LambdaRuntime
from esjoin.emulator.moto_layer.moto_backends import MotoBackends

log = logging.getLogger("esjoin.lambda")

FUNCTION_NAME = re.compile(
    r"^(arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z]{2}(-gov)?-[a-z]+-\d):(?P<account>\d{12}):function:)?"
    r"(?P<name>[a-zA-Z0-9_-]{1,64})(:(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?$"
)
PYTHON_RUNTIME = re.compile(r"^python3\.\d{1,2}$")
ROLE_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/\S+$")
# Keys AWS reserves: "Lambda was unable to configure your environment variables ... reserved keys".
RESERVED_ENV = {
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
}
MAX_ZIP_BYTES = 50 * 1024 * 1024  # direct upload limit
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
MAX_ENV_BYTES = 4096
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
MAX_ASYNC_PAYLOAD = 1024 * 1024
# Asynchronous invocation: two retries on error, AWS waits 1 and then 2 minutes between attempts.
# https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html
ASYNC_RETRY_DELAYS = {TIMING_FAST: (1.0, 2.0), TIMING_AWS: (60.0, 120.0)}


def invalid(message: str) -> LambdaServiceError:
    return LambdaServiceError(400, "InvalidParameterValueException", message)


def not_found(what: str) -> LambdaServiceError:
    return LambdaServiceError(404, "ResourceNotFoundException", what)


def check_role(role: str) -> None:
    """AWS validates the shape of Role before anything else (ValidationException); whether the role
    exists and can be assumed (InvalidParameterValueException on AWS) is not checked here."""
    if not ROLE_ARN.match(role):
        raise LambdaServiceError(
            400,
            "ValidationException",
            (
                f"1 validation error detected: Value '{role}' at 'role' failed to satisfy constraint: Member must "
                r"satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
            ),
        )


def iso_now() -> str:
    """AWS's LastModified format for functions: 2024-01-31T12:34:56.789+0000."""
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


@dataclass
class Function:
    name: str
    region: str
    account_id: str
    runtime: str
    handler: str
    role: str
    code_dir: Path
    code_sha256: str
    code_size: int
    description: str = ""
    timeout: int = 3
    memory_size: int = 128
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    architectures: list[str] = field(default_factory=lambda: ["x86_64"])
    revision_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    last_modified: str = field(default_factory=iso_now)
    dead_letter_target: str | None = None

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.name}"

    @property
    def zip_path(self) -> Path:
        return self.code_dir.parent / "code.zip"

    def spec(self) -> FunctionSpec:
        return FunctionSpec(
            name=self.name,
            arn=self.arn,
            runtime=self.runtime,
            handler=self.handler,
            code_dir=self.code_dir,
            code_sha256=self.code_sha256,
            revision_id=self.revision_id,
            timeout_seconds=self.timeout,
            memory_mb=self.memory_size,
            environment=dict(self.environment),
            region=self.region,
            account_id=self.account_id,
        )

    def configuration(self) -> dict[str, Any]:
        """GetFunctionConfiguration's shape."""
        document: dict[str, Any] = {
            "FunctionName": self.name,
            "FunctionArn": self.arn,
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": self.last_modified,
            "CodeSha256": self.code_sha256,
            "Version": "$LATEST",
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": self.revision_id,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": list(self.architectures),
            "EphemeralStorage": {"Size": 512},
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
            "RuntimeVersionConfig": {"RuntimeVersionArn": f"arn:aws:lambda:{self.region}::runtime:esjoin-local"},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{self.name}"},
        }
        if self.environment:
            document["Environment"] = {"Variables": dict(self.environment)}
        if self.dead_letter_target:
            document["DeadLetterConfig"] = {"TargetArn": self.dead_letter_target}
        return document


class LambdaBackend:
    def __init__(
        self,
        config: EmulatorConfig,
        moto: MotoBackends,
        history: InvocationHistory,
        faults: FaultInjector,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.config = config
        self.scheduler = scheduler  # deterministic mode (aids/schedule.py)
        self.moto = moto
        self.history = history
        self.faults = faults
        self.functions: dict[tuple[str, str], Function] = {}  # (region, name) -> function
        self.mappings: dict[str, EventSourceMapping] = {}
        self._lock = threading.RLock()
        self._code_root = config.state_dir / "functions"
        self._code_root.mkdir(parents=True, exist_ok=True)
        self.runtime = LambdaRuntime(config, config.endpoint_url, CloudWatchLogSink(moto), scheduler)
        self.engine = EventSourceMappingEngine(
            config,
            moto,
            self.invoke_for_mapping,
            self._mapping_changed,
            invoke_identity_arn=self._function_role,
            scheduler=scheduler,
        )
        self._async = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lambda-async")
        self._activity = threading.Condition()
        self._in_flight = 0  # invocations running now, direct and from mappings
        self._async_pending = 0  # Event invocations queued or between retries
        self._invocations_started = 0  # with the counts above, tells whether anything ran in between

    def activity(self) -> dict[str, int]:
        with self._activity:
            return {
                "inFlight": self._in_flight,
                "asyncPending": self._async_pending,
                "invocationsStarted": self._invocations_started,
            }

    def shutdown(self) -> None:
        self.engine.shutdown()
        self._async.shutdown(wait=False, cancel_futures=True)
        self.runtime.shutdown()

    # -- functions ----------------------------------------------------------------------------

    def resolve(self, name_or_arn: str, region: str) -> tuple[Function, str | None]:
        """The function a FunctionName parameter (name, partial or full ARN, qualified) refers to."""
        match = FUNCTION_NAME.match(name_or_arn or "")
        if not match:
            raise invalid(
                f"1 validation error detected: Value '{name_or_arn}' at 'functionName' failed "
                "to satisfy constraint: Member must satisfy regular expression pattern"
            )
        region = match.group("region") or region
        with self._lock:
            function = self.functions.get((region, match.group("name")))
        if function is None:
            raise not_found(
                f"Function not found: arn:aws:lambda:{region}:{self.config.account_id}:function:{match.group('name')}"
            )
        qualifier = match.group("qualifier")
        if qualifier not in (None, "$LATEST"):
            raise not_found(f"Function not found: {function.arn}:{qualifier} (this endpoint has $LATEST only)")
        return function, qualifier

    def create_function(self, params: dict[str, Any], region: str) -> Function:
        name = params.get("FunctionName") or ""
        match = FUNCTION_NAME.match(name)
        if not match or match.group("qualifier"):
            raise invalid(f"Invalid function name: {name!r} (letters, digits, - and _, up to 64)")
        name = match.group("name")
        if params.get("PackageType", "Zip") != "Zip" or "ImageUri" in (params.get("Code") or {}):
            raise invalid("Container image functions are not supported by this endpoint; upload a .zip")
        runtime = params.get("Runtime")
        if not runtime or not PYTHON_RUNTIME.match(runtime):
            raise invalid(
                f"Runtime {runtime!r} is not supported by this endpoint: it runs Python "
                "functions (python3.x) on its own Python interpreter"
            )
        if not params.get("Handler"):
            raise invalid("Handler is required for Zip functions")
        role = params.get("Role") or ""
        check_role(role)
        if params.get("Layers"):
            raise invalid("Layers are not supported by this endpoint; put dependencies in the zip")
        with self._lock:
            if (region, name) in self.functions:
                raise LambdaServiceError(409, "ResourceConflictException", f"Function already exist: {name}")
        # Unzip outside the lock: invocations resolve functions under it and must not wait on I/O.
        code_dir, sha, size = self._store_code(region, name, params.get("Code") or {})
        try:
            with self._lock:
                if (region, name) in self.functions:  # created meanwhile by a concurrent call
                    raise LambdaServiceError(409, "ResourceConflictException", f"Function already exist: {name}")
                function = Function(
                    name=name,
                    region=region,
                    account_id=self.config.account_id,
                    runtime=runtime,
                    handler=params["Handler"],
                    role=role,
                    code_dir=code_dir,
                    code_sha256=sha,
                    code_size=size,
                )
                self._apply_configuration(function, params)
                function.tags = dict(params.get("Tags") or {})
                self.functions[(region, name)] = function
        except BaseException:  # refused: the code just unzipped belongs to no function
            shutil.rmtree(code_dir.parent, ignore_errors=True)
            with contextlib.suppress(OSError):  # the function's directory, unless another version lives there
                code_dir.parent.parent.rmdir()
            raise
        log.info("created function %s (%s, %s)", function.arn, runtime, function.handler)
        return function

    def update_function_code(self, name_or_arn: str, params: dict[str, Any], region: str) -> Function:
        function, _ = self.resolve(name_or_arn, region)
        if params.get("DryRun"):
            return function
        code_dir, sha, size = self._store_code(function.region, function.name, params)  # outside the lock
        with self._lock:
            current, _ = self.resolve(function.arn, region)  # the latest copy: a concurrent update is kept
            updated = replace(
                current,
                code_dir=code_dir,
                code_sha256=sha,
                code_size=size,
                revision_id=str(uuid.uuid4()),
                last_modified=iso_now(),
            )
            self.functions[(function.region, function.name)] = updated
        self.runtime.retire(function.arn)
        return updated

    def update_function_configuration(self, name_or_arn: str, params: dict[str, Any], region: str) -> Function:
        function, _ = self.resolve(name_or_arn, region)
        if "Runtime" in params and not PYTHON_RUNTIME.match(params["Runtime"] or ""):
            raise invalid(f"Runtime {params['Runtime']!r} is not supported by this endpoint (python3.x only)")
        if "Role" in params:
            check_role(params["Role"] or "")
        if params.get("Layers"):
            raise invalid("Layers are not supported by this endpoint; put dependencies in the zip")
        with self._lock:
            current, _ = self.resolve(function.arn, region)  # the latest copy: a concurrent update is kept
            updated = replace(
                current, environment=dict(current.environment), revision_id=str(uuid.uuid4()), last_modified=iso_now()
            )
            self._apply_configuration(updated, params)
            for key, attribute in (("Runtime", "runtime"), ("Handler", "handler"), ("Role", "role")):
                if params.get(key):
                    setattr(updated, attribute, params[key])
            self.functions[(function.region, function.name)] = updated
        self.runtime.retire(function.arn)
        return updated

    def delete_function(self, name_or_arn: str, region: str) -> None:
        function, qualifier = self.resolve(name_or_arn, region)
        if qualifier:
            raise invalid("Deleting a version is not supported: this endpoint has $LATEST only")
        with self._lock:
            self.functions.pop((function.region, function.name), None)
        self.runtime.retire(function.arn)
        shutil.rmtree(self._code_root / function.region / function.name, ignore_errors=True)

    def list_functions(self, region: str) -> list[Function]:
        with self._lock:
            return sorted((f for (r, _), f in self.functions.items() if r == region), key=lambda f: f.name)

    def _apply_configuration(self, function: Function, params: dict[str, Any]) -> None:
        if params.get("Timeout") is not None:
            timeout = integer_parameter(params, "Timeout")
            if not 1 <= timeout <= 900:
                raise invalid(f"Timeout must be between 1 and 900 seconds, not {timeout}")
            function.timeout = timeout
        if params.get("MemorySize") is not None:
            memory = integer_parameter(params, "MemorySize")
            if not 128 <= memory <= 10240:
                raise invalid(f"MemorySize must be between 128 and 10240 MB, not {memory}")
            function.memory_size = memory
        if "Description" in params:
            function.description = params["Description"] or ""
        if "Environment" in params:
            variables = dict((params.get("Environment") or {}).get("Variables") or {})
            reserved = sorted(set(variables) & RESERVED_ENV)
            if reserved:
                raise invalid(
                    "Lambda was unable to configure your environment variables because the "
                    "environment variables you have provided contains reserved keys that are "
                    f"currently not supported for modification. Reserved keys used in this "
                    f"request: {', '.join(reserved)}"
                )
            if len(json.dumps(variables).encode()) > MAX_ENV_BYTES:
                raise invalid(
                    "Lambda was unable to configure your environment variables because the "
                    "environment variables you have provided exceeded the 4KB limit."
                )
            function.environment = {str(k): str(v) for k, v in variables.items()}
        if params.get("Architectures"):
            function.architectures = list(params["Architectures"])
        if "DeadLetterConfig" in params:
            function.dead_letter_target = (params.get("DeadLetterConfig") or {}).get("TargetArn") or None

    def _store_code(self, region: str, name: str, code: dict[str, Any]) -> tuple[Path, str, int]:
        if code.get("S3Bucket") or code.get("S3Key"):
            raise invalid("Code from S3 is not supported by this endpoint: upload the zip (Code.ZipFile)")
        encoded = code.get("ZipFile")
        if not encoded:
            raise invalid("Code.ZipFile is required (a base64-encoded .zip)")
        try:
            archive_bytes = base64.b64decode(encoded, validate=True)
        except (ValueError, TypeError):
            raise invalid("Code.ZipFile is not valid base64") from None
        if len(archive_bytes) > MAX_ZIP_BYTES:
            raise LambdaServiceError(
                413,
                "RequestEntityTooLargeException",
                f"Zipped size {len(archive_bytes)} exceeds the direct upload limit of {MAX_ZIP_BYTES} bytes",
            )
        try:
            archive = zipfile.ZipFile(io.BytesIO(archive_bytes))
            unzipped = sum(info.file_size for info in archive.infolist())
        except zipfile.BadZipFile:
            raise invalid("Could not unzip uploaded file. Please check your file, then try to upload again.") from None
        if unzipped > MAX_UNZIPPED_BYTES:
            raise invalid(f"Unzipped size must be smaller than {MAX_UNZIPPED_BYTES} bytes")
        sha = base64.b64encode(hashlib.sha256(archive_bytes).digest()).decode()
        version_dir = self._code_root / region / name / uuid.uuid4().hex
        code_dir = version_dir / "code"
        code_dir.mkdir(parents=True)
        archive.extractall(code_dir)  # ZipFile.extractall drops absolute paths and ".." components
        (version_dir / "code.zip").write_bytes(archive_bytes)
        return code_dir, sha, len(archive_bytes)

    # -- invocation ---------------------------------------------------------------------------

    def invoke(
        self,
        name_or_arn: str,
        payload: bytes,
        region: str,
        *,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
    ) -> InvocationResult | None:
        """Invoke as the Invoke API does; None for Event (queued) and DryRun (validated only)."""
        function, _ = self.resolve(name_or_arn, region)
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            raise invalid(f"Invalid invocation type: {invocation_type}")
        limit = MAX_SYNC_PAYLOAD if invocation_type != "Event" else MAX_ASYNC_PAYLOAD
        if len(payload) > limit:
            raise LambdaServiceError(
                413,
                "RequestTooLargeException",
                f"Request must be smaller than {limit} bytes for the {invocation_type} invocation type",
            )
        payload = payload or b"{}"
        try:
            json.loads(payload)
        except ValueError as error:
            raise LambdaServiceError(
                400, "InvalidRequestContentException", f"Could not parse request body into json: {error}"
            ) from None
        if invocation_type == "DryRun":
            return None
        origin = InvocationOrigin(invocation_type=invocation_type)
        if invocation_type == "Event":
            with self._activity:
                self._async_pending += 1
            if self.scheduler is None:
                self._async.submit(self._invoke_async, function.arn, payload, region, origin)
                return None
            # deterministic mode: a thread each, never queued behind the pool's 8 (an actor created and
            # never started would stop the schedule)
            actor = self.scheduler.spawn("async")
            threading.Thread(
                target=self._invoke_async,
                args=(function.arn, payload, region, origin, actor),
                name=f"lambda-{actor.name}",
                daemon=True,
            ).start()
            return None
        return self._invoke(function, payload, origin, client_context)

    def _function_role(self, function_arn: str) -> str:
        """The execution role Kinesis events name as invokeIdentityArn."""
        try:
            return self.resolve(function_arn, self.config.region)[0].role
        except LambdaServiceError:
            return default_role(function_arn)

    def invoke_for_mapping(self, function_arn: str, payload: bytes, origin: InvocationOrigin) -> InvocationResult:
        function, _ = self.resolve(function_arn, self.config.region)
        return self._invoke(function, payload, origin)

    def _invoke_async(
        self, function_arn: str, payload: bytes, region: str, origin: InvocationOrigin, actor: Actor | None = None
    ) -> None:
        if self.scheduler is not None and actor is not None:
            self.scheduler.park(actor, f"invoke {function_arn.split(':function:', 1)[-1]} (Event)")
        try:
            self._invoke_async_attempts(function_arn, payload, region, origin)
        finally:
            with self._activity:
                self._async_pending -= 1
            if self.scheduler is not None and actor is not None:
                self.scheduler.finish(actor)

    def _invoke_async_attempts(self, function_arn: str, payload: bytes, region: str, origin: InvocationOrigin) -> None:
        delays = ASYNC_RETRY_DELAYS.get(self.config.timing, ASYNC_RETRY_DELAYS[TIMING_FAST])
        for attempt in range(1, len(delays) + 2):
            try:
                function, _ = self.resolve(function_arn, region)
                result = self._invoke(function, payload, replace(origin, attempt=attempt))
            except LambdaServiceError as error:
                log.warning("async invocation of %s: %s", function_arn, error)
                result = None
            if result is not None and not result.failed:
                return
            if attempt <= len(delays) and self.scheduler is not None:
                self.scheduler.sleep(delays[attempt - 1], f"retry {function_arn.split(':function:', 1)[-1]}")
            elif attempt <= len(delays):
                time.sleep(delays[attempt - 1])  # AWS's retry delay for asynchronous invocation
        log.warning(
            "async invocation of %s failed %d times; the event is dropped (no on-failure "
            "destination is configured for asynchronous invocation here)",
            function_arn,
            len(delays) + 1,
        )

    def _invoke(
        self, function: Function, payload: bytes, origin: InvocationOrigin, client_context: str | None = None
    ) -> InvocationResult:
        with self._activity:
            self._in_flight += 1
            self._invocations_started += 1
        try:
            return self._run(function, payload, origin, client_context)
        finally:
            with self._activity:
                self._in_flight -= 1

    def _run(
        self, function: Function, payload: bytes, origin: InvocationOrigin, client_context: str | None
    ) -> InvocationResult:
        request_id = str(uuid.uuid4())
        fault = self.faults.take(function.name, payload)
        started = time.time()
        delay = fault.delay_seconds if fault is not None and fault.action != FAULT_ERROR else 0.0
        if fault is not None and self.scheduler is not None:
            self.scheduler.note({"fault": {"id": fault.id, "function": function.name, "action": fault.action}})
            if delay:  # the handler starts late: virtual time, and other actors run meanwhile
                self.scheduler.sleep(delay, f"fault {fault.id}: {function.name} starts late")
                delay = 0.0
        if fault is not None and fault.action == FAULT_ERROR:
            result = _injected_error(function, request_id, fault)
        else:
            request = InvocationRequest(
                payload=payload,
                request_id=request_id,
                client_context=client_context,
                delay_seconds=delay,
            )
            try:
                result = self.runtime.invoke(function.spec(), request)
            except LambdaServiceError as error:
                if error.status == 429:
                    self.history.record_throttle(function.name, origin, error.message, started)
                raise
            if fault is not None:
                result.injected_fault = fault.id
        self.history.record(function.name, origin, result, started, time.time(), payload)
        return result

    # -- event source mappings -----------------------------------------------------------------

    def create_event_source_mapping(self, params: dict[str, Any], region: str) -> EventSourceMapping:
        function, _ = self.resolve(params.get("FunctionName") or "", region)
        mapping = EventSourceMapping.create(params, function.arn, region, self.config.account_id)
        self._check_source_exists(mapping.event_source_arn)
        with self._lock:
            for other in self.mappings.values():
                if other.event_source_arn == mapping.event_source_arn and other.function_arn == function.arn:
                    raise LambdaServiceError(
                        409,
                        "ResourceConflictException",
                        f"The event source arn ({mapping.event_source_arn}) and function ({function.name}) "
                        f"provided mapping already exists. Please update or delete the existing mapping "
                        f"with UUID {other.uuid}",
                    )
            mapping.state = CREATING
            self.mappings[mapping.uuid] = mapping
            created = mapping.copy()
        self.engine.start(mapping.copy())
        return created

    def get_event_source_mapping(self, uuid_: str) -> EventSourceMapping:
        with self._lock:
            return self._mapping(uuid_).copy()

    def list_event_source_mappings(
        self, function_name: str | None, source_arn: str | None, region: str
    ) -> list[EventSourceMapping]:
        function_arn = self.resolve(function_name, region)[0].arn if function_name else None
        with self._lock:
            return [
                m.copy()
                for m in self.mappings.values()
                if (function_arn is None or m.function_arn == function_arn)
                and (source_arn is None or m.event_source_arn == source_arn)
            ]

    def update_event_source_mapping(self, uuid_: str, params: dict[str, Any], region: str) -> EventSourceMapping:
        function_arn = self.resolve(params["FunctionName"], region)[0].arn if params.get("FunctionName") else None
        with self._lock:
            mapping = self._mapping(uuid_)
            if mapping.state in (CREATING, DELETING):
                raise LambdaServiceError(
                    409,
                    "ResourceInUseException",
                    f"Cannot update the event source mapping {uuid_} while it is {mapping.state}",
                )
            candidate = mapping.copy()
            candidate.apply({k: v for k, v in params.items() if k != "FunctionName"})
            if function_arn:
                candidate.function_arn = function_arn
            was_enabled = mapping.enabled
            candidate.state = (
                ENABLING
                if candidate.enabled and not was_enabled
                else DISABLING
                if was_enabled and not candidate.enabled
                else UPDATING
            )
            self.mappings[uuid_] = candidate
            updated = candidate.copy()
        self.engine.update(candidate.copy())
        return updated

    def delete_event_source_mapping(self, uuid_: str) -> EventSourceMapping:
        with self._lock:
            mapping = self._mapping(uuid_)
            mapping.state = DELETING
            deleted = mapping.copy()
        self.engine.stop(uuid_)
        with self._lock:
            self.mappings.pop(uuid_, None)
        return deleted

    # -- state save and load (esjoin.emulator.state_archive) ------------------------------------

    def export_functions(self) -> list[tuple[Function, bytes]]:
        """Every function's configuration and its zip, for a state save."""
        with self._lock:
            functions = list(self.functions.values())
        return [
            (
                replace(function, environment=dict(function.environment), tags=dict(function.tags)),
                function.zip_path.read_bytes(),
            )
            for function in functions
        ]

    def import_function(self, function: Function, archive: bytes) -> None:
        """A saved function, as it was (name, configuration, code), in this endpoint's account."""
        code_dir, sha, size = self._store_code(
            function.region, function.name, {"ZipFile": base64.b64encode(archive).decode()}
        )
        restored = replace(
            function, code_dir=code_dir, code_sha256=sha, code_size=size, account_id=self.config.account_id
        )
        with self._lock:
            self.functions[(function.region, function.name)] = restored

    def export_event_source_mappings(self) -> list[EventSourceMapping]:
        with self._lock:
            return [mapping.copy() for mapping in self.mappings.values()]

    def import_event_source_mapping(self, mapping: EventSourceMapping) -> None:
        """A saved mapping under its own UUID, so its checkpoints (restored first) are the ones it reads."""
        with self._lock:
            mapping = mapping.copy()
            mapping.state = CREATING
            self.mappings[mapping.uuid] = mapping
        self.engine.start(mapping.copy())

    def reset(self) -> dict[str, int]:
        """Delete every mapping (its worker stopped, its checkpoints gone) and every function (its
        workers killed, its code removed), in every region: what `POST /_esjoin/state/reset` does to
        the Lambda service. Returns how many of each went."""
        with self._lock:
            mapping_ids = list(self.mappings)
            functions = list(self.functions.values())
        for uuid_ in mapping_ids:
            with contextlib.suppress(LambdaServiceError):  # deleted meanwhile
                self.delete_event_source_mapping(uuid_)
        for function in functions:
            with contextlib.suppress(LambdaServiceError):
                self.delete_function(function.arn, function.region)
        return {"eventSourceMappings": len(mapping_ids), "functions": len(functions)}

    def _mapping(self, uuid_: str) -> EventSourceMapping:
        """The stored mapping itself (hold self._lock), or AWS's 404."""
        mapping = self.mappings.get(uuid_)
        if mapping is None:
            raise not_found(f"The resource you requested does not exist. (Service: Lambda, mapping {uuid_})")
        return mapping

    def _mapping_changed(self, uuid_: str, changes: dict[str, Any]) -> None:
        with self._lock:
            mapping = self.mappings.get(uuid_)
            if mapping is None or mapping.state == DELETING:
                return
            if "state" in changes and changes["state"] in (ENABLED, DISABLED):
                mapping.state = changes["state"]
            if "last_processing_result" in changes:
                mapping.last_processing_result = changes["last_processing_result"]
            if "state_transition_reason" in changes:
                mapping.state_transition_reason = changes["state_transition_reason"]

    def _check_source_exists(self, arn: str) -> None:
        """AWS refuses a mapping to a source that does not exist; say which one is missing."""
        region = arn.split(":")[3]
        kind = source_type(arn)
        with self.moto.lock():
            try:
                if kind == SQS:
                    self.moto.sqs(region).get_queue(arn.split(":")[5])
                elif kind == "kinesis":
                    self.moto.kinesis(region).describe_stream(stream_arn=arn, stream_name=None)
                else:
                    table_name = arn.split(":", 5)[5].split("/")[1]
                    table = self.moto.dynamodb(region).get_table(table_name)
                    if not table.latest_stream_label or not arn.endswith(table.latest_stream_label):
                        raise LookupError
            except Exception:
                raise invalid(
                    f"Source not found: {arn} does not exist in account "
                    f"{self.config.account_id}, region {region} (create it first)"
                ) from None


def _injected_error(function: Function, request_id: str, fault: FaultRule) -> InvocationResult:
    payload = {
        "errorMessage": fault.error_message,
        "errorType": fault.error_type,
        "requestId": request_id,
        "stackTrace": [],
    }
    log_text = (
        start_line(request_id, "$LATEST")
        + f"[ERROR] {fault.error_type}: {fault.error_message} (injected by {fault.id})\n"
        + end_line(request_id)
        + report_line(
            request_id, duration_ms=0.0, billed_duration_ms=1, memory_mb=function.memory_size, max_memory_used_mb=0
        )
    )
    return InvocationResult(
        request_id=request_id,
        payload=json.dumps(payload).encode(),
        function_error=UNHANDLED,
        log=log_text,
        billed_duration_ms=1,
        injected_fault=fault.id,
    )


def integer_parameter(params: dict[str, Any], key: str) -> int:
    """An integer request parameter, or AWS's validation error naming it (never a Python exception)."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(
            f"1 validation error detected: Value at '{key[0].lower()}{key[1:]}' failed to satisfy "
            "constraint: Member must be an integer"
        )
    try:
        return int(value)
    except ValueError:
        raise invalid(
            f"1 validation error detected: Value {value!r} at '{key[0].lower()}{key[1:]}' failed to "
            "satisfy constraint: Member must be an integer"
        ) from None
