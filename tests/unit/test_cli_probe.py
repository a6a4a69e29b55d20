"""`esjoin up` / `esjoin status` ask the endpoint itself, never a proxy, and tell "nothing listens" (start
one) from "something listens and does not answer in time" (never start a second one there).

Every scenario runs against real sockets on 127.0.0.1: a closed port, a listening socket that never
answers, one that hangs up, small HTTP servers; and, for each, with HTTP_PROXY naming a dead port (and no
NO_PROXY), which must not change the outcome."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import socket
import subprocess
import sys
import threading
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from esjoin import cli
from esjoin.testing.backends import answers_health, free_port
from esjoin.testing.control_client import ControlClient
from esjoin.testing.health import Probe, ProbeKind, probe_health

ROOT = Path(__file__).resolve().parents[2]
QUICK = 0.3  # seconds: a socket that never answers is SLOW after this
READY_HEALTH = {"status": "ready", "version": "test", "endpoint": "-"}
STARTING_HEALTH = {"status": "starting", "version": "test", "endpoint": "-"}


@pytest.fixture(params=["no proxy", "HTTP_PROXY to a dead port"])
def proxy_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The variables as a fresh `esjoin` process sees them: urlopen()'s global opener reads them once, when
    it is first built, so it is dropped here (an opener built by an earlier test would hide the proxy)."""
    monkeypatch.setattr(urllib.request, "_opener", None)
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
        if request.param != "no proxy":
            monkeypatch.setenv(variable, f"http://127.0.0.1:{free_port()}")
    return request.param


@contextlib.contextmanager
def silent_port() -> Iterator[str]:
    """A socket that listens (the kernel completes connections into its backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def hang_up_port() -> Iterator[str]:
    """A socket that accepts each connection and closes it without a word: not an HTTP server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0.1)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    connection, _ = sock.accept()
                    connection.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            stop.set()
            thread.join(timeout=5)


@contextlib.contextmanager
def http_port(routes: dict[str, tuple[int, bytes]]) -> Iterator[str]:
    """An HTTP server answering GET path with routes[path] (status, body), 404 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (404, b"no such path"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def esjoin_routes(health: dict[str, Any], status: int = 200) -> dict[str, tuple[int, bytes]]:
    return {"/_esjoin/health": (status, json.dumps(health).encode()), "/_esjoin/quiescence": (200, b'{"quiet": true}')}


LOCALSTACK_ROUTES = {"/_localstack/health": (200, b'{"services": {}, "edition": "community"}')}


def said(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())  # rich wraps long lines


# -- probe_health: one outcome a situation ------------------------------------------------------


def test_a_closed_port_is_not_listening(proxy_environment: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    probe = probe_health(endpoint, timeout=QUICK)
    assert probe.kind is ProbeKind.NOT_LISTENING
    assert probe.describe() == f"nothing answers at {endpoint} (connection refused)"


def test_a_socket_that_never_answers_is_slow_not_absent(proxy_environment: str) -> None:
    with silent_port() as endpoint:
        probe = probe_health(endpoint, timeout=QUICK)
    assert probe.kind is ProbeKind.SLOW
    assert probe.describe() == (
        f"something answers at {endpoint} but not within 0.3s: is it busy, or not an esjoin endpoint?"
    )


def test_a_socket_that_hangs_up_is_not_an_esjoin_endpoint(proxy_environment: str) -> None:
    with hang_up_port() as endpoint:
        probe = probe_health(endpoint, timeout=QUICK)
    assert probe.kind is ProbeKind.NOT_ESJOIN and "no HTTP reply" in probe.detail


@pytest.mark.parametrize(
    ("routes", "kind"),
    [
        (esjoin_routes(READY_HEALTH), ProbeKind.READY),
        (esjoin_routes(STARTING_HEALTH, status=503), ProbeKind.STARTING),
        (LOCALSTACK_ROUTES, ProbeKind.NOT_ESJOIN),  # LocalStack: 404 on /_esjoin/health
        ({"/_esjoin/health": (200, b"<html>hello</html>")}, ProbeKind.NOT_ESJOIN),
        ({"/_esjoin/health": (200, b'{"status": "up"}')}, ProbeKind.NOT_ESJOIN),
        ({"/_esjoin/health": (500, b"")}, ProbeKind.NOT_ESJOIN),
    ],
    ids=["ready", "starting", "localstack", "html", "other-json", "500"],
)
def test_what_answers_http_is_told_apart(
    proxy_environment: str, routes: dict[str, tuple[int, bytes]], kind: ProbeKind
) -> None:
    with http_port(routes) as endpoint:
        probe = probe_health(endpoint + "/", timeout=QUICK)
    assert probe.kind is kind, probe
    assert probe.endpoint_url == endpoint
    if kind is ProbeKind.READY:
        assert probe.health == READY_HEALTH


def test_an_unresolvable_host_is_unreachable() -> None:
    probe = probe_health("http://does-not-exist.invalid:4566", timeout=QUICK)
    assert probe.kind is ProbeKind.UNREACHABLE


def test_the_control_client_and_localstack_check_ignore_the_proxy_too(proxy_environment: str) -> None:
    with http_port({**esjoin_routes(READY_HEALTH), **LOCALSTACK_ROUTES}) as endpoint:
        assert ControlClient(endpoint, timeout=QUICK).is_ready()
        assert ControlClient(endpoint, timeout=QUICK).quiescence() == {"quiet": True}
        assert answers_health(endpoint, "/_localstack/health")


def test_the_container_healthcheck_ignores_the_proxy(proxy_environment: str) -> None:
    # As the container runs it: a process of its own, the proxy variables in its environment.
    with http_port(esjoin_routes(READY_HEALTH)) as endpoint:
        result = subprocess.run(
            [sys.executable, str(ROOT / "docker" / "healthcheck.py"), "esjoin", "--url", endpoint],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("healthy: ")


# -- esjoin up: start an endpoint only where nothing listens -------------------------------------


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """The ports `esjoin up` starts an embedded endpoint on (recorded, nothing started)."""
    started: list[int] = []

    def start_embedded(port: int, *_: Any, **__: Any) -> tuple[Any, str]:
        started.append(port)
        return types.SimpleNamespace(pid=4242), f"http://127.0.0.1:{port}"

    monkeypatch.setattr(cli, "start_embedded", start_embedded)
    monkeypatch.setattr(cli, "PID_FILE", tmp_path / "emulator.pid")
    monkeypatch.setattr(cli, "probe_health", functools.partial(probe_health, timeout=QUICK))
    return started


def test_up_reuses_a_ready_endpoint_even_with_a_proxy_set(
    proxy_environment: str, starts: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    with http_port(esjoin_routes(READY_HEALTH)) as endpoint:
        assert cli.ensure_embedded(endpoint) == endpoint
    assert starts == []
    assert f"embedded endpoint already running at {endpoint}" in said(capsys)


def test_up_starts_an_endpoint_where_nothing_listens(proxy_environment: str, starts: list[int]) -> None:
    port = free_port()
    assert cli.ensure_embedded(f"http://127.0.0.1:{port}") == f"http://127.0.0.1:{port}"
    assert starts == [port]


def test_up_does_not_start_a_second_endpoint_beside_one_that_answers_slowly(
    proxy_environment: str, starts: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    with silent_port() as endpoint, pytest.raises(typer.Exit) as exited:
        cli.ensure_embedded(endpoint)
    assert exited.value.exit_code == 1
    assert starts == []
    message = said(capsys)
    assert f"something answers at {endpoint} but not within 0.3s" in message
    assert "not starting another endpoint there" in message


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ({**LOCALSTACK_ROUTES}, "is LocalStack, not the embedded endpoint"),
        ({"/_esjoin/health": (200, b"<html>hello</html>")}, "but it is not an esjoin endpoint"),
    ],
    ids=["localstack", "another-server"],
)
def test_up_does_not_start_an_endpoint_where_another_server_answers(
    proxy_environment: str,
    starts: list[int],
    capsys: pytest.CaptureFixture[str],
    routes: dict[str, tuple[int, bytes]],
    expected: str,
) -> None:
    with http_port(routes) as endpoint, pytest.raises(typer.Exit):
        cli.ensure_embedded(endpoint)
    assert starts == []
    assert expected in said(capsys)


def test_up_waits_for_an_endpoint_that_is_starting(
    monkeypatch: pytest.MonkeyPatch, starts: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter([ProbeKind.STARTING, ProbeKind.STARTING, ProbeKind.READY])
    monkeypatch.setattr(cli, "probe_health", lambda url, **_: Probe(next(answers), url, QUICK))
    assert cli.ensure_embedded("http://127.0.0.1:4566") == "http://127.0.0.1:4566"
    assert starts == []
    assert "is starting" in said(capsys)


def test_up_refuses_an_endpoint_that_is_not_local_before_sending_anything(
    starts: list[int], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "probe_health", lambda *_, **__: pytest.fail("probed a refused endpoint"))
    with pytest.raises(typer.Exit) as exited:
        cli.up(endpoint="http://evil.example\\@127.0.0.1:4581")
    assert exited.value.exit_code == 2
    assert "backslash" in said(capsys)


# -- esjoin status: say which of the situations it is ---------------------------------------------


@pytest.fixture
def quick_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli, "probe_health", functools.partial(probe_health, timeout=QUICK))
    monkeypatch.setattr(cli, "OUTPUTS", tmp_path / "outputs.json")
    monkeypatch.setattr(cli, "PID_FILE", tmp_path / "emulator.pid")


def test_status_tells_nothing_listening_from_slow(
    proxy_environment: str, quick_status: None, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(typer.Exit):
        cli.status(endpoint=closed)
    assert f"nothing answers at {closed} (connection refused); `make up` starts" in said(capsys)
    with silent_port() as endpoint, pytest.raises(typer.Exit):
        cli.status(endpoint=endpoint)
    assert f"something answers at {endpoint} but not within 0.3s" in said(capsys)


def test_status_shows_a_ready_endpoint_with_a_proxy_set(
    proxy_environment: str, quick_status: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with http_port(esjoin_routes(READY_HEALTH)) as endpoint:
        cli.status(endpoint=endpoint)
    out = said(capsys)
    assert '"status": "ready"' in out and '"quiet": true' in out
