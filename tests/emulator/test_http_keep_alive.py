"""esjoin.emulator.http.endpoint_server keeps connections alive: driven over a raw socket (127.0.0.1, a port of the
system's choosing) with an echo application: requests in a row and pipelined, bodies the application
never reads, chunked bodies, Connection: close, HTTP/1.0 and an unreadable body."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from esjoin.emulator.http.endpoint_server import EndpointServer


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers what it received; on /ignore-body it never reads the body (the server must)."""
    body = b"" if environ["PATH_INFO"] == "/ignore-body" else environ["wsgi.input"].read()
    payload = json.dumps(
        {"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "body": body.decode("latin-1")}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[tuple[str, int]]:
    server = EndpointServer("127.0.0.1", 0, echo)
    thread = threading.Thread(target=server.serve_forever, name="echo-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[0], server.server_address[1]
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


@dataclass
class RawConnection:
    sock: socket.socket
    reader: io.BufferedReader

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, http.client.HTTPMessage, Any]:
        status_line = self.reader.readline()
        assert status_line, "the server closed the connection instead of answering"
        version, status, _ = status_line.decode("iso-8859-1").split(" ", 2)
        assert version == "HTTP/1.1"
        headers = http.client.parse_headers(self.reader)
        body = self.reader.read(int(headers["Content-Length"]))
        return int(status), headers, json.loads(body)

    def closed_by_server(self) -> bool:
        return self.reader.read(1) == b""  # blocks until data or EOF; the socket timeout is the deadline


@contextlib.contextmanager
def raw_connection(address: tuple[str, int]) -> Iterator[RawConnection]:
    sock = socket.create_connection(address, timeout=10)
    try:
        yield RawConnection(sock, sock.makefile("rb"))
    finally:
        sock.close()


def request(method: str, path: str, body: bytes = b"", version: str = "HTTP/1.1", **headers: str) -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    if body and "Transfer_Encoding" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_two_requests_on_one_connection_are_both_answered(echo_server: tuple[str, int]) -> None:
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/first", b"one"))
        status, headers, body = connection.response()
        assert (status, body["path"], body["body"]) == (200, "/first", "one")
        assert headers.get("Connection") is None  # kept open
        connection.send(request("POST", "/second", b"two"))
        assert connection.response()[2] == {"method": "POST", "path": "/second", "body": "two"}


def test_pipelined_requests_are_answered_in_order(echo_server: tuple[str, int]) -> None:
    """Bodies the application does not read are still read by the server: the next request starts
    right after each."""
    with raw_connection(echo_server) as connection:
        connection.send(
            request("POST", "/ignore-body", b"GET /smuggled HTTP/1.1\r\n\r\n")
            + request("POST", "/a", b"x" * 70_000)
            + request("GET", "/b")
        )
        assert [connection.response()[2]["path"] for _ in range(3)] == ["/ignore-body", "/a", "/b"]


def test_connection_close_is_honoured(echo_server: tuple[str, int]) -> None:
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/last", b"bye", Connection="close") + request("GET", "/never"))
        status, headers, body = connection.response()
        assert (status, headers["Connection"], body["path"]) == (200, "close", "/last")
        assert connection.closed_by_server()


def test_a_chunked_body_is_read_in_full_before_the_next_request(echo_server: tuple[str, int]) -> None:
    chunked = b"5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/chunked", chunked, Transfer_Encoding="chunked"))
        assert connection.response()[2]["body"] == "hello 0123456789"
        connection.send(
            request("POST", "/ignore-body", chunked, Transfer_Encoding="chunked") + request("POST", "/after", b"next")
        )
        assert connection.response()[2]["path"] == "/ignore-body"
        assert connection.response()[2] == {"method": "POST", "path": "/after", "body": "next"}


def test_http_1_0_closes_the_connection(echo_server: tuple[str, int]) -> None:
    with raw_connection(echo_server) as connection:
        connection.send(request("GET", "/old", version="HTTP/1.0") + request("GET", "/never"))
        status, headers, body = connection.response()
        assert (status, headers["Connection"], body["path"]) == (200, "close", "/old")
        assert connection.closed_by_server()


def test_an_unreadable_body_closes_the_connection(echo_server: tuple[str, int]) -> None:
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/bad", b"zz\r\n", Transfer_Encoding="chunked") + request("GET", "/never"))
        status_line = connection.reader.readline()
        assert status_line.startswith(b"HTTP/1.1 400")
        http.client.parse_headers(connection.reader)
        connection.reader.read(1024)
        assert connection.closed_by_server()
