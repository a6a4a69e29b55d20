"""The endpoint as an attacker and a tired developer would use it (issue: "close the hole through the browser").

Each case replays the attack over a raw socket and checks that nothing was created, run or lost:
- a web page's cross-origin "simple" POST that creates and invokes a function (CSRF);
- DNS rebinding: the same requests with a foreign Host, on every route, the control API included;
- a second endpoint started on a running one's state directory;
- bodies larger than any AWS request, and a Content-Length of 10^11;
- slow and half-open clients, and more connections than the endpoint serves;
- nesting, missing targets and malformed parameters that used to answer HTML or a Python exception name.
URL tricks and broken AWS profiles are in tests/unit/test_endpoint_urls.py; function processes that
escape with setsid, bytes results and giant log lines in tests/emulator/test_runtime_hostile.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.emulator.support.endpoint import (
    REGION,
    ROLE,
    RUNTIME,
    Control,
    Endpoint,
    Functions,
    create_stream,
    create_table,
    make_zip,
    start_endpoint,
    unique,
    wait_until,
)
from tests.emulator.support.raw_http import RawResponse, assert_aws_error, send, signed

EVIL = "https://evil.example"

# What the reproduced attack ran: a function that writes a file on the host and reads the endpoint's
# environment through its parent process.
ATTACK_SOURCE = """
import os

def handler(event, context):
    with open(event["path"], "w") as marker:
        marker.write(open(f"/proc/{os.getppid()}/environ", "rb").read().decode(errors="replace"))
    return "owned"
"""


def create_function_body(name: str) -> bytes:
    return json.dumps(
        {
            "FunctionName": name,
            "Runtime": RUNTIME,
            "Role": ROLE,
            "Handler": "app.handler",
            "Code": {"ZipFile": base64.b64encode(make_zip({"app.py": ATTACK_SOURCE})).decode()},
        }
    ).encode()


def browser_headers(
    origin: str | None = EVIL, site: str | None = "cross-site", host: str | None = None
) -> dict[str, str]:
    """What a browser sends for a page's `fetch(url, {method: "POST", mode: "no-cors", body})`: a simple
    request (text/plain, no preflight), unsigned, marked with the page's origin."""
    headers = {"Content-Type": "text/plain;charset=UTF-8", "Accept": "*/*"}
    if origin is not None:
        headers["Origin"] = origin
    if site is not None:
        headers["Sec-Fetch-Site"] = site
        headers["Sec-Fetch-Mode"] = "no-cors"
    if host is not None:
        headers["Host"] = host
    return headers


def function_names(endpoint: Endpoint) -> set[str]:
    return {f["FunctionName"] for f in endpoint.client("lambda").list_functions()["Functions"]}


# -- the browser ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(browser_headers(), id="cross-site-page"),
        pytest.param(browser_headers(origin="http://localhost:3000", site="same-site"), id="other-localhost-port"),
        pytest.param(browser_headers(origin="null", site="cross-site"), id="sandboxed-iframe"),
        pytest.param(browser_headers(origin=None, site=None), id="unsigned-no-browser-headers"),
    ],
)
def test_a_web_page_cannot_create_a_function(endpoint: Endpoint, tmp_path: Path, headers: dict[str, str]) -> None:
    name = unique("csrf")
    response = send(endpoint, "POST", "/2015-03-31/functions", create_function_body(name), headers)

    assert response.status == 403, response
    assert_aws_error(response)
    assert name not in function_names(endpoint), "the page's request created a function"


def test_a_web_page_cannot_invoke_an_existing_function(
    endpoint: Endpoint, functions: Functions, control: Control, tmp_path: Path
) -> None:
    name = functions.create(ATTACK_SOURCE)
    marker = tmp_path / "owned"
    before = control.get("history", function=name).body["invocations"]

    response = send(
        endpoint,
        "POST",
        f"/2015-03-31/functions/{name}/invocations",
        json.dumps({"path": str(marker)}).encode(),
        browser_headers(),
    )

    assert response.status == 403, response
    assert not marker.exists(), "the function ran for a cross-site page"
    assert control.get("history", function=name).body["invocations"] == before


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/_esjoin/faults", b'{"function": "x", "action": "error"}'),
        ("DELETE", "/_esjoin/history", b""),
        ("GET", "/_esjoin/history", b""),
        ("POST", "/", b'{"TableName": "t"}'),
    ],
)
def test_the_control_api_and_aws_apis_refuse_a_foreign_origin(
    endpoint: Endpoint, control: Control, method: str, path: str, body: bytes
) -> None:
    faults_before = control.get("faults").body
    headers = {**browser_headers(), **(signed("dynamodb", "DynamoDB_20120810.DescribeTable") if path == "/" else {})}
    headers["Origin"] = EVIL

    response = send(endpoint, method, path, body, headers)

    assert response.status == 403, response
    assert b"ESJOIN_ALLOWED_ORIGINS" in response.body, response
    assert control.get("faults").body == faults_before


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:4566",
        "127.0.0.1.nip.io",
        "localhost.evil.example",
        "[2001:db8::1]:4566",
        "10.0.0.1",
    ],
)
@pytest.mark.parametrize(
    "method, path",
    [("GET", "/_esjoin/health"), ("POST", "/_esjoin/faults"), ("POST", "/2015-03-31/functions"), ("POST", "/")],
)
def test_dns_rebinding_is_refused_on_every_route(
    endpoint: Endpoint, control: Control, host: str, method: str, path: str
) -> None:
    """The page's own name, resolved to 127.0.0.1: no Origin to tell, but its Host says who it is."""
    name = unique("rebind")
    body = create_function_body(name) if "functions" in path else b'{"function": "x", "action": "error"}'
    headers = {
        **signed(
            "lambda" if "functions" in path else "dynamodb",
            None if "functions" in path else "DynamoDB_20120810.ListTables",
        ),
        "Host": host,
    }

    response = send(endpoint, method, path, body, headers)

    assert response.status == 403, response
    assert b"DNS rebinding" in response.body, response
    assert name not in function_names(endpoint)
    assert control.get("faults").body["faults"] == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "localhost.", "api.localhost", "[::1]", "127.0.0.2"])
def test_loopback_host_names_are_served(endpoint: Endpoint, host: str) -> None:
    port = urlparse(endpoint.url).port
    response = send(endpoint, "GET", "/_esjoin/health", headers={"Host": f"{host}:{port}"})

    assert response.status == 200, response


def test_an_allow_listed_origin_and_container_host_are_served_with_cors(tmp_path: Path) -> None:
    console = "http://localhost:3000"
    started = start_endpoint(tmp_path, allowed_origins=frozenset({console}), allowed_hosts=frozenset({"emulator"}))
    try:
        preflight = send(
            started,
            "OPTIONS",
            "/_esjoin/faults",
            headers={
                "Origin": console,
                "Access-Control-Request-Method": "POST",
                "Sec-Fetch-Site": "same-site",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status == 200, preflight
        assert preflight.headers["access-control-allow-origin"] == console

        listed = send(started, "GET", "/_esjoin/faults", headers={"Origin": console, "Sec-Fetch-Site": "same-site"})
        assert listed.status == 200 and listed.headers["access-control-allow-origin"] == console, listed

        port = urlparse(started.url).port
        by_service_name = send(started, "GET", "/_esjoin/health", headers={"Host": f"emulator:{port}"})
        assert by_service_name.status == 200, by_service_name

        other = send(started, "GET", "/_esjoin/faults", headers={"Origin": "http://localhost:3001"})
        assert other.status == 403, other
    finally:
        started.emulator.stop()


def test_the_endpoints_own_origin_is_allowed(endpoint: Endpoint) -> None:
    """A page the endpoint serves itself (the console) calls it from its own origin."""
    response = send(
        endpoint, "GET", "/_esjoin/faults", headers={"Origin": endpoint.url, "Sec-Fetch-Site": "same-origin"}
    )

    assert response.status == 200, response


# -- a second start ---------------------------------------------------------------------------------


def test_a_second_endpoint_on_the_same_state_dir_leaves_the_first_one_alone(tmp_path: Path) -> None:
    first = start_endpoint(tmp_path / "state")
    try:
        lambda_client = first.client("lambda")
        functions = Functions(lambda_client)
        name = functions.create("def handler(event, context):\n    return {'alive': True}\n")
        code_files = sorted(p for p in (tmp_path / "state" / "functions").rglob("*") if p.is_file())
        assert code_files, "the function's code is not under the state dir"

        from esjoin.emulator.config import EmulatorConfig
        from esjoin.emulator.server import Emulator

        second = Emulator(EmulatorConfig.from_env(port=free_port_other_than(first), state_dir=tmp_path / "state"))
        try:
            with pytest.raises(RuntimeError, match=rf"in use by another endpoint \(pid {os.getpid()}"):
                second.start()
        finally:
            second.stop()

        assert sorted(p for p in (tmp_path / "state" / "functions").rglob("*") if p.is_file()) == code_files
        lambda_client.update_function_configuration(FunctionName=name, Timeout=5)  # a cold start: code read again
        _, payload = functions.invoke(name)
        assert payload == {"alive": True}
    finally:
        first.emulator.stop()


def free_port_other_than(endpoint: Endpoint) -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port != urlparse(endpoint.url).port
    return port


def test_a_restart_on_the_same_state_dir_removes_what_no_one_can_read(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "checkpoints").mkdir(parents=True)
    (state / "checkpoints" / "0000-old-mapping.json").write_text("{}")
    (state / "functions" / "us-east-1" / "old").mkdir(parents=True)

    started = start_endpoint(state)
    try:
        assert not (state / "checkpoints" / "0000-old-mapping.json").exists()
        assert not (state / "functions" / "us-east-1" / "old").exists()
    finally:
        started.emulator.stop()


# -- bounded bodies ---------------------------------------------------------------------------------


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_100_mb_put_record_is_refused_before_it_is_read(endpoint: Endpoint, control: Control) -> None:
    rss_before = rss_bytes()
    body = b'{"StreamName": "s", "PartitionKey": "p", "Data": "' + b"A" * (100 << 20) + b'"}'

    response = send(
        endpoint, "POST", "/", body, signed("kinesis", "Kinesis_20131202.PutRecord", "application/x-amz-json-1.1")
    )
    del body

    assert response.status == 413, response
    assert_aws_error(response)
    assert b"accepts at most" in response.body
    growth = rss_bytes() - rss_before
    assert growth < 64 << 20, f"RSS grew by {growth >> 20} MiB for a refused body"
    assert control.get("health").status == 200


def test_a_content_length_of_10_to_the_11_is_answered_not_dropped(endpoint: Endpoint, control: Control) -> None:
    address = urlparse(endpoint.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.0\r\n"
            b"X-Amz-Target: DynamoDB_20120810.PutItem\r\n"
            b"Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/dynamodb/aws4_request, "
            b"SignedHeaders=host, Signature=0\r\nContent-Length: 100000000000\r\n\r\n{"
        )
        answer = read_response(connection)

    assert answer.status == 413, answer
    assert_aws_error(answer)
    assert control.get("health").status == 200


def test_an_oversized_lambda_upload_is_request_too_large(endpoint: Endpoint) -> None:
    response = send(
        endpoint,
        "POST",
        "/2015-03-31/functions",
        b"{" + b" " * (73 << 20) + b"}",
        signed("lambda", content_type="application/json"),
    )

    assert response.status == 413, response
    assert response.error_type() == "RequestTooLargeException", response


def read_response(connection: socket.socket) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawResponse(int(lines[0].split()[1]), headers, body)


# -- slow and many clients --------------------------------------------------------------------------


def test_silent_and_half_open_connections_are_closed_and_bounded(tmp_path: Path) -> None:
    started = start_endpoint(tmp_path, idle_timeout_seconds=1.0, max_connections=8)
    address = urlparse(started.url)
    sockets: list[socket.socket] = []
    try:
        # Eight connections that never finish their request hold every slot...
        for _ in range(8):
            connection = socket.create_connection((address.hostname, address.port), timeout=10)
            connection.sendall(b"GET /_esjoin/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: half a request
            sockets.append(connection)
        wait_until(lambda: len(started.emulator._server._connections) == 8, "8 connections to be open")
        # ...so a ninth is answered 503 at once rather than queued forever,
        extra = socket.create_connection((address.hostname, address.port), timeout=10)
        assert read_response(extra).status == 503
        extra.close()
        # and after the idle timeout the silent ones are closed by the endpoint.
        for connection in sockets:
            connection.settimeout(10)
            began = time.monotonic()
            assert connection.recv(1) == b"", "the endpoint kept a silent connection open"
            assert time.monotonic() - began < 9
        wait_until(lambda: not started.emulator._server._connections, "every connection slot to be free")
        assert send(started, "GET", "/_esjoin/health").status == 200
    finally:
        for connection in sockets:
            connection.close()
        started.emulator.stop()


# -- answers that used to be HTML or a Python exception name ----------------------------------------


@pytest.mark.parametrize(
    "name, path, body, headers",
    [
        (
            "deeply-nested-dynamodb",
            "/",
            b"[" * 100_000 + b"]" * 100_000,
            signed("dynamodb", "DynamoDB_20120810.PutItem"),
        ),
        (
            "deep-item",
            "/",
            json.dumps(
                {
                    "TableName": "t",
                    "Item": {"pk": {"S": "a"}, "m": json.loads('{"M": {"x": ' * 300 + '{"S": "deep"}' + "}}" * 300)},
                }
            ).encode(),
            signed("dynamodb", "DynamoDB_20120810.PutItem"),
        ),
        (
            "deeply-nested-lambda",
            "/2015-03-31/functions",
            b"[" * 100_000 + b"]" * 100_000,
            signed("lambda", content_type="application/json"),
        ),
        ("missing-target", "/", b'{"TableName": "t"}', signed("dynamodb")),
        (
            "missing-target-kinesis",
            "/",
            b'{"StreamName": "s"}',
            signed("kinesis", content_type="application/x-amz-json-1.1"),
        ),
        ("bad-request-line", None, b"", {}),
    ],
)
def test_no_answer_is_html_or_a_python_exception(
    endpoint: Endpoint, name: str, path: str | None, body: bytes, headers: dict[str, str]
) -> None:
    if path is None:
        address = urlparse(endpoint.url)
        with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
            connection.sendall(b"GARBAGE\r\n\r\n")
            response = read_response(connection)
    else:
        response = send(endpoint, "POST", path, body, headers)

    assert 400 <= response.status < 500, response
    assert_aws_error(response)
    assert b"<html" not in response.body.lower() and b"<!doctype" not in response.body.lower(), response
    for exception in (b"RecursionError", b"KeyError", b"ValueError", b"TypeError", b"AttributeError"):
        assert exception not in response.body, response


def test_a_malformed_timeout_is_a_validation_error_and_leaves_no_code(endpoint: Endpoint, tmp_path: Path) -> None:
    name = unique("badtimeout")
    code_root = endpoint.emulator.config.state_dir / "functions"
    body = json.loads(create_function_body(name))
    body["Timeout"] = "abc"

    response = send(
        endpoint,
        "POST",
        "/2015-03-31/functions",
        json.dumps(body).encode(),
        signed("lambda", content_type="application/json"),
    )

    assert response.status == 400, response
    assert response.error_type() == "InvalidParameterValueException", response
    assert b"ValueError" not in response.body
    assert not list(code_root.glob(f"*/{name}*")), "the refused function's code was left on disk"


# -- one long request does not stop the others --------------------------------------------------------


def test_a_long_hold_on_one_table_does_not_stop_writes_to_another(
    endpoint: Endpoint, dynamodb: Any, kinesis: Any, sqs: Any
) -> None:
    """A Scan page of a big table runs under that table's lock (esjoin.emulator.moto_layer.lock): while it is held,
    PutItem on another table, Kinesis and SQS are served; PutItem on the same table waits for it."""
    busy, _ = create_table(dynamodb)
    other, _ = create_table(dynamodb)
    stream, _ = create_stream(kinesis)
    queue = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    holding, release = threading.Event(), threading.Event()

    def hold_the_busy_table() -> None:  # as a long Scan page of `busy` would
        with endpoint.emulator.moto.request_lock("dynamodb", "Scan", REGION, {"TableName": busy}):
            holding.set()
            release.wait(30)

    with ThreadPoolExecutor(max_workers=5) as pool:
        holder = pool.submit(hold_the_busy_table)
        try:
            assert holding.wait(10), "could not take the busy table's lock"
            others = [
                pool.submit(dynamodb.put_item, TableName=other, Item={"pk": {"S": "x"}}),
                pool.submit(kinesis.put_record, StreamName=stream, Data=b"x", PartitionKey="p"),
                pool.submit(sqs.send_message, QueueUrl=queue, MessageBody="x"),
            ]
            for future in others:
                future.result(timeout=10)  # a TimeoutError here: they waited for the hold, as before the change
            same_table = pool.submit(dynamodb.put_item, TableName=busy, Item={"pk": {"S": "waits"}})
            with pytest.raises(TimeoutError):
                same_table.result(timeout=0.5)  # the held table's own writes do wait (linearizable)
        finally:
            release.set()
        holder.result(timeout=10)
        same_table.result(timeout=10)


# -- found in review ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_an_unclosed_string_of_escaped_quotes_is_answered_at_once(endpoint: Endpoint, control: Control) -> None:
    """A body of `"\\"\\"...` never closing made the depth check's string pattern rescan from every quote:
    quadratic, about 40 minutes for 1 MiB, holding the interpreter. The send's own 20 s hang guard fails
    this on the old pattern."""
    body = b'"' + b'\\"' * (512 * 1024)

    response = send(endpoint, "POST", "/", body, signed("dynamodb", "DynamoDB_20120810.PutItem"))

    assert response.error_type() == "SerializationException", response
    assert control.get("health").status == 200


def test_an_allow_listed_origin_gets_one_set_of_cors_headers_from_aws_apis(tmp_path: Path) -> None:
    page = "http://localhost:3000"
    started = start_endpoint(tmp_path, allowed_origins=frozenset({page}))
    address = urlparse(started.url)
    try:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=20)
        headers = {**signed("dynamodb", "DynamoDB_20120810.ListTables"), "Origin": page, "Sec-Fetch-Site": "same-site"}
        connection.request("POST", "/", body=b"{}", headers=headers)
        response = connection.getresponse()
        response.read()
        allow = [value for name, value in response.getheaders() if name.lower() == "access-control-allow-origin"]
        connection.close()
        assert response.status == 200 and allow == [page], (response.status, response.getheaders())
    finally:
        started.emulator.stop()


def test_a_wildcard_allow_list_lets_any_page_call(tmp_path: Path) -> None:
    started = start_endpoint(tmp_path, allowed_origins=frozenset({"*"}))
    try:
        response = send(started, "GET", "/_esjoin/faults", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
        assert response.status == 200, response
    finally:
        started.emulator.stop()


@pytest.mark.parametrize("path", ["/moto-api/reset", "/moto-api/", "/moto-api/data.json"])
def test_motos_own_api_is_not_served(endpoint: Endpoint, control: Control, path: str) -> None:
    queues_before = endpoint.client("sqs").list_queues().get("QueueUrls", [])

    response = send(endpoint, "POST", path, b"", signed("sqs"))

    assert response.status == 404, response
    assert endpoint.client("sqs").list_queues().get("QueueUrls", []) == queues_before


def test_a_start_refused_for_a_busy_state_dir_frees_its_port(endpoint: Endpoint, tmp_path: Path) -> None:
    from esjoin.emulator.config import EmulatorConfig
    from esjoin.emulator.server import Emulator

    port = free_port_other_than(endpoint)
    state_dir = endpoint.emulator.config.state_dir
    second = Emulator(EmulatorConfig.from_env(port=port, state_dir=state_dir))
    with pytest.raises(RuntimeError, match="in use by another endpoint"):
        second.start()  # and no stop(): the caller forgot it

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # OSError if the refused start still held it
