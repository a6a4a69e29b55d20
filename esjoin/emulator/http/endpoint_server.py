"""The endpoint's HTTP server: werkzeug's threaded WSGI server, with keep-alive connections.

werkzeug's development server answers every request with ``Connection: close`` (its run_wsgi cannot
tell where an unread request body ends, so it never reuses a connection). Every boto3 call then
opens a TCP connection and the server starts a thread for it: measured here, that was a third of
the endpoint's time under the two-hop probe (bench/, "emulator"), and the reason a function's
calls back into the endpoint were slower than they need be.

This handler keeps HTTP/1.1 connections open, which is safe because it reads each request's body in
full (Content-Length, or chunked) before the application runs: the next request on the connection
starts right after it, whatever the application read. Each response is buffered and sent in one
write with a Content-Length (AWS's responses are small, and the SQS long poll returns whole), with
Nagle's algorithm off, so a response never waits for the client's delayed ACK. A request that says
``Connection: close`` (urllib does) or speaks HTTP/1.0 still gets its connection closed.

The request line and headers are parsed as http.server parses them, except that a header block of
plain `Name: value` lines is split directly instead of through the email package's parser (what
http.client.parse_headers uses; 5 % of the endpoint's time, measured): anything else (folded lines,
odd names) still goes through that parser. The Date header is formatted once a second.

`EndpointServer.close_connections()` ends the idle keep-alive connections when the endpoint stops,
so no handler thread outlives it.

Bounds, so no client can hold the endpoint's memory or threads: a `RequestGuard`
(esjoin.emulator.http.guard) checks every request's Host, Origin and Content-Length before its body is
read; a connection silent for `idle_timeout` seconds (idle keep-alive, half-open, a slow sender) is
closed; at most `max_connections` are open at once (one thread each), further ones are answered 503
and closed. Every answer the server makes itself (a malformed request line, an exception in the
application) is AWS-shaped JSON, never an HTML page.
"""

from __future__ import annotations

import contextlib
import email.parser
import http.client
import io
import json
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, select_address_family

from esjoin.emulator.aws_errors import AwsError
from esjoin.emulator.http.guard import RequestGuard, body_limit

log = logging.getLogger("esjoin.emulator")

DISCARD_LIMIT = 128 * 1024 * 1024
"""The largest refused body read (and dropped, 64 KiB at a time) so that its sender sees the answer."""
# Statuses that carry no body and no Content-Length (RFC 9110 sections 8.6, 15.3.5 and 15.4.5).
_NO_BODY = {204, 304}
# A header line the email parser reads as `name: value` (its headerRE, without the folding and
# "From " cases, which take the parser's own path). A CR anywhere but at the end also takes that
# path: the email parser ends a line at a bare CR, and a line that is then neither a header nor a
# continuation ends the header block there.
_PLAIN_HEADER = re.compile(r"^([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*)\r?\n?$")


class KeepAliveRequestHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s", self.command, self.path, code)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # socket timeout: a silent connection ends (handle_one_request)
        super().setup()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's error page, as AWS-shaped JSON (a malformed request line or header block)."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in HTTP/1.0 anyway
            self.request_version = "HTTP/1.0"
        status = HTTPStatus(code)
        text = message or status.phrase
        if explain:
            text = f"{text}: {explain}"
        self._send(
            f"{code} {status.phrase}",
            [("Content-Type", "application/x-amz-json-1.0")],
            json.dumps({"__type": "BadRequest" if code < 500 else "InternalFailure", "message": text}).encode(),
        )

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        cached = _date_cache
        if cached[0] != now:
            cached[:] = [now, super().date_time_string(now)]
        return cached[1]

    def parse_request(self) -> bool:
        """http.server's parse_request (Python 3.11), with the headers read by `_parse_headers`."""
        self.command = None
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) == 0:
            return False
        if len(words) >= 3:
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                version_number = base_version_number.split(".")
                if len(version_number) != 2 or any(not c.isdigit() or len(c) > 10 for c in version_number):
                    raise ValueError
                major, minor = int(version_number[0]), int(version_number[1])
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if (major, minor) >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if (major, minor) >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({base_version_number})")
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")  # gh-87389, as http.server does
        try:
            self.headers = self._parse_headers()
        except http.client.LineTooLong as error:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(error))
            return False
        except http.client.HTTPException as error:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(error))
            return False
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "")
        if (
            expect.lower() == "100-continue"
            and self.protocol_version >= "HTTP/1.1"
            and self.request_version >= "HTTP/1.1"
        ):
            return self.handle_expect_100()
        return True

    def _parse_headers(self) -> http.client.HTTPMessage:
        """http.client.parse_headers, without the email parser for a block of plain header lines."""
        lines = http.client._read_headers(self.rfile)  # the same line and count limits
        message = self.MessageClass()
        for raw in lines:
            if raw in (b"\r\n", b"\n", b""):
                break
            match = _PLAIN_HEADER.match(raw.decode("iso-8859-1"))
            if match is None:  # folded or unusual: the email parser decides what it means
                text = b"".join(lines).decode("iso-8859-1")
                return email.parser.Parser(_class=self.MessageClass).parsestr(text)
            message.set_raw(match.group(1), match.group(2))
        message.set_payload("")  # as the parser leaves it: the header block has no body
        return message

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        try:
            self.server.guard.check(environ)
            body = _read_request_body(environ)
        except AwsError as error:
            self.close_connection = True  # the body was not read: nothing after it can be parsed
            if error.status == 413:
                self._discard_body(environ)
            self._send(*_rendered(error, environ))
            return
        except (OSError, ValueError) as error:
            self.close_connection = True  # the body's end is unknown: nothing after it can be parsed
            self._send(*_rendered(AwsError(400, "ValidationException", f"unreadable body: {error}"), environ))
            return
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        status, headers, payload = self._call_application(environ)
        self._send(status, headers, payload, head=environ["REQUEST_METHOD"] == "HEAD")

    def _discard_body(self, environ: dict[str, Any]) -> None:
        """Read and drop a refused body of moderate size, so a client that sends it whole before reading
        (most do) sees the 413 rather than a broken pipe. Past DISCARD_LIMIT (a Content-Length of 10^11, say)
        the connection is just closed after the answer."""
        try:
            remaining = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return
        if environ.get("wsgi.input_terminated") or remaining > DISCARD_LIMIT:
            return
        with contextlib.suppress(OSError):
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    return
                remaining -= len(chunk)

    def _call_application(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        response: dict[str, Any] = {}
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response["status"], response["headers"] = status, headers
            return chunks.append  # WSGI's legacy write()

        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            return response["status"], response["headers"], b"".join(chunks)
        except Exception:
            log.exception("error on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            self.close_connection = True
            return _rendered(
                AwsError(500, "InternalFailure", "the endpoint failed on this request; its log has the details"),
                environ,
            )

    def _send(self, status: str, headers: list[tuple[str, str]], payload: bytes, head: bool = False) -> None:
        """Status line, headers and body in one write."""
        code_text, _, message = status.partition(" ")
        code = int(code_text)
        self.send_response(code, message)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        if code not in _NO_BODY and code >= 200:
            self.send_header("Content-Length", str(len(payload)))
        else:
            payload = b""
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if payload and not head:
            self._headers_buffer.append(payload)  # type: ignore[attr-defined]
        self.flush_headers()


def _rendered(error: AwsError, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    response: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        response["status"], response["headers"] = status, headers

    payload = b"".join(error.respond(environ, start_response))
    return response["status"], response["headers"], payload


def _read_request_body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):  # chunked: werkzeug's DechunkedInput ends at the last chunk
        limit = body_limit(environ)
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise AwsError(413, "RequestEntityTooLarge", f"the chunked request body is over {limit} bytes")
        return body
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length < 0:
        raise ValueError(f"Content-Length {length}")
    body = stream.read(length) if length else b""
    if len(body) != length:
        raise OSError(f"the client sent {len(body)} of {length} bytes")
    return body


_date_cache: list[Any] = [None, ""]  # (second, Date header value)
_TOO_MANY_CONNECTIONS_BODY = b'{"__type": "ServiceUnavailable", "message": "too many open connections; retry"}'
_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/x-amz-json-1.0\r\n"
    b"Connection: close\r\nContent-Length: "
    + str(len(_TOO_MANY_CONNECTIONS_BODY)).encode()
    + b"\r\n\r\n"
    + _TOO_MANY_CONNECTIONS_BODY
)


class EndpointServer(ThreadedWSGIServer):
    """One thread per connection (werkzeug's threaded server), keep-alive, and a way to end them all."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        app: Any,
        guard: RequestGuard | None = None,
        idle_timeout: float = 60.0,
        max_connections: int = 512,
    ) -> None:
        # Bind here, not in werkzeug: on a busy port werkzeug prints a message and calls sys.exit(1),
        # where the endpoint wants an OSError to explain (Emulator.start says what to do).
        listener = socket.create_server(
            (host, port), family=select_address_family(host, port), backlog=128, reuse_port=False
        )
        try:
            super().__init__(host, port, app, handler=KeepAliveRequestHandler, fd=listener.fileno())
        finally:
            listener.close()  # werkzeug serves a duplicate of it (socket.fromfd)
        self.guard = guard or RequestGuard(port=self.server_address[1])
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(request)
        if full:  # answered here, on the accepting thread: no thread for it
            log.warning(
                "%d connections open: refusing one from %s (ESJOIN_MAX_CONNECTIONS)",
                self.max_connections,
                client_address,
            )
            with contextlib.suppress(OSError):
                request.settimeout(1)
                request.sendall(_TOO_MANY_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open connection down: their handler threads see the end of input and return."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
