"""The program inside one Lambda worker process: AWS's Python runtime loop, without the HTTP Runtime API.

`environment.py` copies this file to ``<state_dir>/runtime/worker.py`` and `channel.py` starts it with
the endpoint's interpreter, without site processing (``python -S -B worker.py <control fd> <runtime
site dir> <log marker> <drop LC_CTYPE>``), in the function's code directory. So the function sees its
zip and boto3 (the runtime site dir), never the endpoint's own code. Standard library only.

It behaves like AWS's runtime interface client (awslambdaric ``bootstrap.py``): import the handler at
start (the init phase), then serve one invocation at a time, forever, with a context object, AWS's
root-logger setup and AWS's error documents (``Runtime.ImportModuleError``, ``Runtime.MarshalError``,
...). https://docs.aws.amazon.com/lambda/latest/dg/python-handler.html

Wire protocol with the parent, on a socketpair: each message is ``>II`` (header length, body length),
a JSON header, then the body bytes untouched (so payloads round-trip exactly). The parent sends
``{"request_id", "deadline_ms", "function_arn", "client_context", "trace_id", "delay_seconds"}`` +
event bytes; the worker answers once after init (``{"type": "ready"}`` or ``{"type": "init_error"}`` +
error document) and once per invocation (``{"status": "ok" | "error", "max_memory_kb"}`` + payload).

Log output: fd 1 and fd 2 are one pipe the parent reads. Plain writes (print, os.write, subprocesses)
become one log event per line, as Lambda splits stdout. A message that must stay one event although it
spans lines (a logging record, the ``[ERROR]`` report with its traceback) is framed: marker (random per
worker), 8 hex digits of length, the UTF-8 text; the role AWS's telemetry log fd plays. Either is cut
into several events past CloudWatch Logs' event size, by the parent (logs.py).

Deterministic mode (the endpoint started with a seed; docs/reproduce.md): a sixth argument, JSON
``{"actor", "clockMs", "site"}``, and a ``det`` entry ``{"actor", "clockMs", "seed"}`` in each invocation's
header. The worker then follows the endpoint's virtual clock (time-machine, from ``site``; moved at each
invocation and by each answer's ``X-Esjoin-Clock`` header), names its actor on every HTTP request
(``X-Esjoin-Actor``: the scheduler grants the call), seeds ``random`` and ``uuid.uuid4`` per invocation,
and sleeps in virtual time (``time.sleep`` asks the endpoint to wake it).

Processes: the worker makes itself a child subreaper at start, so whatever the function starts stays
its descendant, whichever way it detaches; the parent kills that whole tree (channel.py).
"""

from __future__ import annotations

# Everything the runtime itself uses is imported here, before the function's directory goes on
# sys.path: a function with its own logging.py or traceback.py must not replace the runtime's.
import ctypes
import importlib
import io
import json
import logging
import os
import resource
import socket
import struct
import sys
import threading
import time
import traceback

FRAME = struct.Struct(">II")  # header length, body length
MAX_RESPONSE_BYTES = 6_291_556  # what AWS enforces (and quotes) for a synchronous response
SMALL_MESSAGE = 1 << 16

# AWS's error types (awslambdaric lambda_runtime_exception.py).
MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"
RESPONSE_SIZE_TOO_LARGE = "Function.ResponseSizeTooLarge"

# AWS logs this before the error of a failed init (awslambdaric lambda_literals.py).
UNHANDLED_EXCEPTION_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function change, or "
    "can be applied automatically. To determine if the runtime has been updated, check the runtime "
    "version in the INIT_START log entry. If this error correlates with a change in the runtime "
    "version, you may be able to mitigate this error by temporarily rolling back to the previous "
    "runtime version. For more information, see "
    "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html"
)
ERROR_LOG_INDENT = "\u00a0"  # AWS replaces a traceback line's leading spaces with NO-BREAK SPACEs
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>

_THIS_FILE = os.path.abspath(__file__)
_request_id = ""  # the invocation in progress, for the log formatter (as awslambdaric's global)


# --- wire protocol (also imported by channel.py) -------------------------------------------------


def encode_message(header: dict, body: bytes = b"") -> list[bytes]:
    encoded = json.dumps(header, separators=(",", ":")).encode()
    prefix = FRAME.pack(len(encoded), len(body)) + encoded
    if len(body) < SMALL_MESSAGE:
        return [prefix + body]  # one write for the common small message
    return [prefix, body]


def send_message(sock: socket.socket, header: dict, body: bytes = b"") -> None:
    for chunk in encode_message(header, body):
        sock.sendall(chunk)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise EOFError("the endpoint closed the control channel")
        received += count
    return bytes(buffer)


def recv_message(sock: socket.socket) -> tuple[dict, bytes]:
    header_length, body_length = FRAME.unpack(_recv_exact(sock, FRAME.size))
    header = json.loads(_recv_exact(sock, header_length))
    return header, _recv_exact(sock, body_length) if body_length else b""


# --- log output -----------------------------------------------------------------------------------


def log_marker(token: str) -> bytes:
    """What starts a framed log event; `token` is random per worker, so function output never forges it."""
    return b"\x00esjoin-log:" + token.encode() + b"\x00"


class LogOutput:
    """fd 1 / fd 2, shared by print(), the logging module and the runtime's own error reports.

    One lock orders Python-level writers, so a framed event is never split by a print from another
    thread (writes made below Python, by subprocesses, are best effort)."""

    def __init__(self, marker: bytes) -> None:
        self._marker = marker
        self._lock = threading.Lock()

    def write(self, fd: int, data: bytes) -> None:
        with self._lock:
            _write_all(fd, data)

    def event(self, text: str) -> None:
        """One CloudWatch Logs event, newlines included."""
        data = text.encode("utf-8", "backslashreplace")
        frame = self._marker + b"%08x" % len(data) + data
        with self._lock:
            _write_all(1, frame)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _StreamFd(io.RawIOBase):
    """sys.stdout / sys.stderr: unbuffered, as AWS's runtime makes them, and through LogOutput's lock."""

    def __init__(self, output: LogOutput, fd: int) -> None:
        super().__init__()
        self._output = output
        self._fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        data = bytes(data)
        self._output.write(self._fd, data)
        return len(data)

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False


def _install_std_streams(output: LogOutput) -> None:
    sys.stdout = io.TextIOWrapper(_StreamFd(output, 1), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(_StreamFd(output, 2), encoding="utf-8", errors="backslashreplace", write_through=True)


def _setup_logging(output: LogOutput) -> None:
    """AWS's text-format root logger: one handler, UTC times, the request id on every record.

    The root level stays Python's default (WARNING) unless AWS_LAMBDA_LOG_LEVEL says otherwise; a
    function that sets its own level gets what it asked for, as on AWS."""

    class RequestIdFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.aws_request_id = _request_id
            return True

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                output.event(self.format(record))
            except Exception:
                self.handleError(record)

    logging.Formatter.converter = time.gmtime
    handler = LambdaLoggerHandler()
    handler.setFormatter(
        logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    if level in logging.getLevelNamesMapping():
        root.setLevel(level)
    root.addHandler(handler)


# --- errors ---------------------------------------------------------------------------------------


class FaultException(Exception):
    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.trace = trace


def make_error(message: str, error_type: str, stack_trace: list[str] | None, request_id: str) -> dict:
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id,
        "stackTrace": stack_trace or [],
    }


def _error_from_exception(error: BaseException, request_id: str) -> dict:
    frames = list(traceback.extract_tb(error.__traceback__))
    # Drop the runtime's own frames, as AWS drops bootstrap.py's: the trace starts in the function.
    while frames and frames[0].filename == _THIS_FILE:
        del frames[0]
    return make_error(str(error), type(error).__name__, traceback.format_list(frames), request_id)


def log_error(output: LogOutput, error: dict) -> None:
    """``[ERROR] Type: message`` + the traceback, as one event (awslambdaric's log_error, text format)."""
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description]
    stack_trace = error.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack_trace:
            if element == "":
                lines.append("")
                continue
            for line in element.splitlines():
                stripped = line.lstrip(" ")
                lines.append(ERROR_LOG_INDENT * (len(line) - len(stripped)) + stripped)
    output.event("\n".join(lines) + "\n")


# --- init -----------------------------------------------------------------------------------------


def load_handler(handler: str):
    """Import the handler's module and find the function, with AWS's error types and messages."""
    try:
        module_name, function_name = handler.rsplit(".", 1)
    except ValueError as error:
        raise FaultException(MALFORMED_HANDLER_NAME, f"Bad handler '{handler}': {error}") from None
    try:
        if module_name.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                BUILT_IN_MODULE_CONFLICT, f"Cannot use built-in module {module_name} as a handler module"
            )
        # "dir/module.fn" imports dir.module, as on AWS.
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as error:
        raise FaultException(IMPORT_MODULE_ERROR, f"Unable to import module '{module_name}': {error}") from None
    except SyntaxError as error:
        trace = [f'  File "{error.filename}" Line {error.lineno}\n    {error.text}']
        raise FaultException(
            USER_CODE_SYNTAX_ERROR, f"Syntax error in module '{module_name}': {error}", trace
        ) from None
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise FaultException(
            HANDLER_NOT_FOUND, f"Handler '{function_name}' missing on module '{module_name}'"
        ) from None


# --- invocation -----------------------------------------------------------------------------------


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, document: dict | None = None) -> None:
        document = document or {}
        self.cognito_identity_id = document.get("cognitoIdentityId")
        self.cognito_identity_pool_id = document.get("cognitoIdentityPoolId")


class Client:
    __slots__ = ("app_package_name", "app_title", "app_version_code", "app_version_name", "installation_id")


class ClientContext:
    __slots__ = ("client", "custom", "env")


def _object_from_dict(cls, document: dict | None):
    if document is None:
        return None
    instance = cls()
    for name in cls.__slots__:
        setattr(instance, name, document.get(name))
    return instance


class LambdaContext:
    """The handler's second argument, with awslambdaric's attributes."""

    def __init__(self, request_id: str, header: dict, output: LogOutput) -> None:
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = header.get("function_arn")
        self.tenant_id = None
        self.identity = CognitoIdentity()
        client_context = None
        if header.get("client_context"):
            try:
                client_context = json.loads(header["client_context"])
            except ValueError as error:
                raise FaultException(CONTEXT_UNMARSHAL_ERROR, f"Unable to parse Client Context JSON: {error}") from None
        self.client_context = _object_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _object_from_dict(Client, self.client_context.client)
        self._deadline_ms = header["deadline_ms"]
        self._output = output

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def log(self, message) -> None:
        self._output.event(str(message))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},log_group_name={self.log_group_name},"
            f"log_stream_name={self.log_stream_name},function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},client_context={self.client_context},"
            f"identity={self.identity},tenant_id={self.tenant_id}])"
        )


class _Encoder(json.JSONEncoder):
    """AWS's response encoder (simplejson, Decimal as a number; non-ASCII escaped except on python3.12).

    simplejson's encoder has ``encoding="utf-8"``: bytes inside the result are written as the text they
    decode to (strictly: invalid UTF-8 fails the invocation with Runtime.MarshalError and the codec's
    message). The standard library refuses bytes, so they are decoded here. A result that *is* bytes
    never gets here: awslambdaric returns it as it is (``marshal_response``, ``application/unknown``).
    https://github.com/aws/aws-lambda-python-runtime-interface-client/blob/main/awslambdaric/lambda_runtime_marshaller.py"""

    def default(self, value):
        if isinstance(value, bytes):
            return value.decode("utf-8")  # UnicodeDecodeError: _marshal reports it as AWS does
        decimal = sys.modules.get("decimal")  # a Decimal exists only if the function imported decimal
        if decimal is not None and isinstance(value, decimal.Decimal):
            if value.is_nan():
                return float("nan")
            # simplejson writes the exact digits; the standard library can only pick int or float.
            return int(value) if value == value.to_integral_value() else float(value)
        return super().default(value)


_ENCODER = _Encoder(ensure_ascii=os.environ.get("AWS_EXECUTION_ENV") != "AWS_Lambda_python3.12")


def to_json(document) -> bytes:
    return _ENCODER.encode(document).encode()


def _unmarshal(body: bytes):
    try:
        return json.loads(body)
    except ValueError as error:
        raise FaultException(UNMARSHAL_ERROR, f"Unable to unmarshal input: {error}") from None


def _marshal(response) -> bytes:
    """awslambdaric's LambdaMarshaller.marshal_response: a bytes result is the payload as it is; anything
    else is JSON, or ``Runtime.MarshalError`` "Unable to marshal response: <the encoder's message>" (e.g.
    "Object of type set is not JSON serializable")."""
    if isinstance(response, bytes):
        return response  # AWS returns bytes as they are (application/unknown)
    try:
        return to_json(response)
    except Exception as error:
        raise FaultException(MARSHAL_ERROR, f"Unable to marshal response: {error}") from None


def _max_memory_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux


def invoke(handler, header: dict, body: bytes, output: LogOutput) -> tuple[str, bytes]:
    request_id = header["request_id"]
    try:
        context = LambdaContext(request_id, header, output)
        event = _unmarshal(body)
        result = _marshal(handler(event, context))
    except FaultException as fault:
        error = make_error(fault.message, fault.error_type, fault.trace, request_id)
    except Exception as exception:
        error = _error_from_exception(exception, request_id)
    else:
        if len(result) > MAX_RESPONSE_BYTES:
            return "error", to_json(
                {
                    "errorMessage": "Response payload size exceeded maximum allowed payload size "
                    f"({MAX_RESPONSE_BYTES} bytes).",
                    "errorType": RESPONSE_SIZE_TOO_LARGE,
                }
            )
        return "ok", result
    log_error(output, error)
    return "error", to_json(error)


# --- deterministic mode ---------------------------------------------------------------------------

_det_actor: str | None = None  # the scheduler's actor this worker's calls belong to
_det_clock = None  # time-machine's coordinates, once travelling
_det_uuids = None  # random.Random for uuid.uuid4, seeded per invocation
_real_sleep = time.sleep


def _det_start(det: dict) -> None:
    """Install the hooks (before the handler is imported, so what it binds at import is hooked too)."""
    global _det_actor, _det_clock, _det_uuids
    import http.client
    import random
    import uuid

    sys.path.append(det["site"])
    try:
        import time_machine
    finally:
        sys.path.remove(det["site"])
    _det_actor = det["actor"]
    _det_clock = time_machine.travel(det["clockMs"] / 1000, tick=False).start()
    _det_uuids = random.Random(0)
    uuid.uuid4 = lambda: uuid.UUID(int=_det_uuids.getrandbits(128), version=4)
    putrequest, getresponse = http.client.HTTPConnection.putrequest, http.client.HTTPConnection.getresponse

    def putrequest_with_actor(self, method, url, *args, **kwargs):
        putrequest(self, method, url, *args, **kwargs)
        if _det_actor:
            self.putheader("X-Esjoin-Actor", _det_actor)

    def getresponse_with_clock(self, *args, **kwargs):
        response = getresponse(self, *args, **kwargs)
        clock = response.getheader("X-Esjoin-Clock")
        if clock and clock.isdigit():
            _det_clock.move_to(int(clock) / 1000)
        return response

    http.client.HTTPConnection.putrequest = putrequest_with_actor
    http.client.HTTPConnection.getresponse = getresponse_with_clock
    time.sleep = _virtual_sleep


def _det_invocation(det: dict) -> None:
    global _det_actor
    import random

    _det_actor = det["actor"]
    _det_clock.move_to(det["clockMs"] / 1000)
    random.seed(det["seed"])
    _det_uuids.seed(det["seed"] + 1)


def _virtual_sleep(seconds: float) -> None:
    """time.sleep in deterministic mode: the endpoint wakes this actor `seconds` later in virtual time,
    and other actors run meanwhile."""
    import http.client
    import urllib.parse

    if seconds <= 0 or not _det_actor:
        _real_sleep(seconds)
        return
    url = urllib.parse.urlsplit(os.environ.get("AWS_ENDPOINT_URL", ""))
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=3600)
    try:
        connection.request("POST", "/_esjoin/sleep", body=json.dumps({"seconds": seconds}).encode())
        connection.getresponse().read()
    finally:
        connection.close()


def serve(control: socket.socket, handler, output: LogOutput) -> int:
    global _request_id
    while True:
        try:
            header, body = recv_message(control)
        except EOFError:
            return 0
        _request_id = header["request_id"]
        if header.get("trace_id"):
            os.environ["_X_AMZN_TRACE_ID"] = header["trace_id"]
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        if header.get("det"):
            _det_invocation(header["det"])
        if header.get("delay_seconds"):
            time.sleep(header["delay_seconds"])  # an injected fault: the handler starts late
        status, payload = invoke(handler, header, body, output)
        send_message(control, {"status": status, "max_memory_kb": _max_memory_kb()}, payload)


def _isolate_sys_path(runtime_site: str) -> None:
    """sys.path = [task root, PYTHONPATH..., runtime site, stdlib]: the function's code and boto3 only.

    `-S` already kept site-packages (and the endpoint's editable install) out; this drops the
    runtime's own directory, which Python put first because worker.py lives there."""
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(_THIS_FILE):
        del sys.path[0]
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    sys.path.insert(0, task_root)
    if runtime_site not in sys.path:  # the function set its own PYTHONPATH: the runtime's comes after it
        stdlib = os.path.dirname(os.__file__)
        major, minor = sys.version_info[:2]
        stdlib_entries = {stdlib, os.path.join(os.path.dirname(stdlib), f"python{major}{minor}.zip")}
        first_stdlib = next((i for i, entry in enumerate(sys.path) if entry in stdlib_entries), len(sys.path))
        sys.path.insert(first_stdlib, runtime_site)


def _become_subreaper() -> None:
    """Adopt the function's orphans: a double-forked daemon or a child whose ``setsid`` parent exited
    re-parents to this worker instead of init. Every process the function started then stays a
    descendant of the worker, and the endpoint, which kills the worker's whole process tree (channel.py),
    finds it even when it left the process group. Linux only; elsewhere the group kill is all there is."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    _become_subreaper()  # before any function code runs, so nothing it starts can slip away
    control = socket.socket(fileno=int(argv[1]))
    control.set_inheritable(False)  # the function's subprocesses must not hold the channel open
    _isolate_sys_path(argv[2])
    if argv[4] == "1":
        # Python's locale coercion (PEP 538) added LC_CTYPE because LANG names a locale this machine
        # lacks; AWS's environment has no LC_CTYPE.
        os.environ.pop("LC_CTYPE", None)
    if len(argv) > 5 and argv[5]:
        _det_start(json.loads(argv[5]))
    output = LogOutput(log_marker(argv[3]))
    _install_std_streams(output)
    _setup_logging(output)
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except Exception as exception:
        if isinstance(exception, FaultException):
            error = make_error(exception.message, exception.error_type, exception.trace, "")
        else:  # the module raised while being imported
            error = _error_from_exception(exception, "")
        logging.warning(UNHANDLED_EXCEPTION_WARNING)
        log_error(output, error)
        send_message(control, {"type": "init_error", "max_memory_kb": _max_memory_kb()}, to_json(error))
        return 1
    send_message(control, {"type": "ready", "max_memory_kb": _max_memory_kb()})
    return serve(control, handler, output)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
