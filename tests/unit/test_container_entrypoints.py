"""What runs inside the containers, run here without Docker: the image's entry command (read from the
Dockerfile) serves and stops cleanly, the bootstrap hook bootstraps an endpoint and fails loudly,
the healthchecks judge LocalStack's init state and the emulator's health right, `esjoin up` reads
container states right, and the harness starts LocalStack with testcontainers as compose does."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from esjoin import cli
from esjoin.cli import FAILED, READY, WAITING, service_status
from esjoin.testing import localstack_container
from esjoin.testing.backends import BackendError, free_port
from infra.bootstrap import read_outputs
from infra.outputs import Outputs
from infra.settings import StackSettings
from infra.stack import build_stack

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "docker" / "esjoin-bootstrap.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
IMAGE_PROJECT_DIR = "/opt/esjoin"  # the Dockerfile's WORKDIR; here, the checkout
VENV_BIN = Path(sys.executable).parent


def dockerfile() -> list[tuple[str, str]]:
    logical = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in logical.splitlines()
        if line.strip()
    ]


def image_command(instruction: str) -> list[str]:
    """The exec-form command of the Dockerfile's last CMD (or HEALTHCHECK ... CMD), as the image runs it."""
    args = [a for i, a in dockerfile() if i == instruction][-1]
    return json.loads(args.split("CMD", 1)[1] if instruction == "HEALTHCHECK" else args)


def image_env(**overrides: str) -> dict[str, str]:
    """This environment plus the Dockerfile's ENV, `python` resolving to this venv's, and overrides
    (the tests keep the endpoint on 127.0.0.1 and give it a free port and a state directory of its own)."""
    env = dict(os.environ)
    for args in (a for i, a in dockerfile() if i == "ENV"):
        env.update(item.split("=", 1) for item in shlex.split(args))
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **overrides}


def in_checkout(command: list[str]) -> list[str]:
    return [arg.replace(IMAGE_PROJECT_DIR, str(ROOT)) for arg in command]


def eventually(check: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    until = time.monotonic() + deadline
    while not check():
        if time.monotonic() > until:
            raise AssertionError(f"not within {deadline:.0f}s: {what}")
        time.sleep(0.05)  # polling another process: nothing to wait on but its answers


def healthcheck_passes(env: dict[str, str]) -> bool:
    command = in_checkout(image_command("HEALTHCHECK"))
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0


@contextlib.contextmanager
def entry_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, dict[str, str]]]:
    port = free_port()
    env = image_env(ESJOIN_HOST="127.0.0.1", ESJOIN_PORT=str(port), ESJOIN_STATE_DIR=str(tmp_path / "state"))
    log = open(tmp_path / "emulator.log", "wb")  # noqa: SIM115 - closed below, after the process
    process = subprocess.Popen(
        image_command("CMD"), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
    )
    try:
        eventually(
            lambda: process.poll() is not None or healthcheck_passes(env),
            "the image's HEALTHCHECK to pass",
            deadline=60,
        )
        assert process.poll() is None, f"exited {process.returncode}: {(tmp_path / 'emulator.log').read_text()}"
        yield process, f"http://127.0.0.1:{port}", env
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stdout.close()
        log.close()


@pytest.fixture(scope="module")
def image_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, str, dict[str, str]]]:
    """The image's entry command, serving for the module's tests (the hook bootstraps it too)."""
    with entry_process(tmp_path_factory.mktemp("image")) as started:
        yield started


@pytest.fixture(scope="module")
def image_endpoint(image_process: tuple[subprocess.Popen, str, dict[str, str]]) -> str:
    return image_process[1]


# -- the image's entry command -------------------------------------------------------------------


def test_the_entry_command_serves_and_the_image_healthcheck_passes(
    image_process: tuple[subprocess.Popen, str, dict[str, str]],
) -> None:
    process, endpoint, env = image_process
    ready = json.loads(process.stdout.readline())
    assert ready["status"] == "ready" and ready["endpoint"] == endpoint
    assert healthcheck_passes(env)


def test_the_entry_command_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with entry_process(tmp_path) as (process, endpoint, env):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, (tmp_path / "emulator.log").read_text()
        port = int(endpoint.rsplit(":", 1)[1])
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        assert not healthcheck_passes(env)


def test_the_healthcheck_fails_while_nothing_answers() -> None:
    result = run_healthcheck("esjoin", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and result.stdout.startswith("waiting:")


# -- the bootstrap hook --------------------------------------------------------------------------


def run_hook(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HOOK)], env={**os.environ, **env}, capture_output=True, text=True, timeout=180)


def test_the_hook_bootstraps_the_stack_on_an_endpoint_and_hands_the_outputs_to_the_checkouts_owner(
    image_endpoint: str, tmp_path: Path
) -> None:
    # A checkout of its own (the real packages linked in), owned by someone else when we are root:
    # LocalStack runs the hook as root and the host user must be able to replace the outputs.
    project = tmp_path / "checkout"
    project.mkdir()
    for package in ("infra", "lambdas"):
        (project / package).symlink_to(ROOT / package)
    owner = 4321 if os.getuid() == 0 else os.getuid()
    if os.getuid() == 0:
        os.chown(project, owner, owner)
    outputs_path = tmp_path / "state" / "outputs.json"
    env = {
        "ESJOIN_BOOTSTRAP_PYTHON": sys.executable,
        "ESJOIN_BOOTSTRAP_ENDPOINT": image_endpoint,
        "ESJOIN_PROJECT_DIR": str(project),
        "ESJOIN_OUTPUTS": str(outputs_path),
        "ESJOIN_STAGE": "hook",
    }

    first = run_hook(env)
    assert first.returncode == 0, first.stderr
    outputs = Outputs.load(outputs_path)
    assert (outputs.stage, outputs.endpoint, outputs.region) == ("hook", image_endpoint, "us-east-1")
    assert "no changes" not in first.stderr and "created" in first.stderr
    assert outputs_path.stat().st_uid == owner and outputs_path.parent.stat().st_uid == owner
    stack = build_stack(StackSettings.from_env(environ={}, overrides={"stage": "hook"}))
    deployed = read_outputs(stack, image_endpoint, outputs_path=None)  # raises if anything is missing
    assert deployed.functions == outputs.functions and deployed.queues == outputs.queues

    again = run_hook(env)
    assert again.returncode == 0 and "apply: no changes" in again.stderr, again.stderr


def test_the_hook_fails_loudly_so_localstack_marks_it_error(tmp_path: Path) -> None:
    base = {
        "ESJOIN_BOOTSTRAP_PYTHON": sys.executable,
        "ESJOIN_PROJECT_DIR": str(ROOT),
        "ESJOIN_OUTPUTS": str(tmp_path / "outputs.json"),
    }
    refused = run_hook({**base, "ESJOIN_BOOTSTRAP_ENDPOINT": "http://aws.example.com:4566"})
    assert refused.returncode == 2 and "refused" in refused.stderr
    unreachable = run_hook({**base, "ESJOIN_BOOTSTRAP_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert unreachable.returncode == 1 and "failed" in unreachable.stderr
    no_checkout = run_hook({**base, "ESJOIN_PROJECT_DIR": str(tmp_path / "nowhere")})
    assert no_checkout.returncode == 1 and "mount the checkout" in no_checkout.stderr
    assert not (tmp_path / "outputs.json").exists()


# -- LocalStack's healthcheck: healthy only once the hook succeeded ------------------------------


class InitStage(http.server.BaseHTTPRequestHandler):
    document: dict[str, Any] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.document).encode() if self.path == "/_localstack/init/ready" else b"{}"
        self.send_response(200 if self.path == "/_localstack/init/ready" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def localstack_init() -> Iterator[Callable[[dict[str, Any]], subprocess.CompletedProcess[str]]]:
    """Serve a /_localstack/init/ready document; run compose's LocalStack healthcheck against it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), InitStage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    compose_test = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["localstack"]["healthcheck"]
    args = compose_test["test"][3:]  # after CMD, LocalStack's python and the script

    def check(document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        InitStage.document = document
        return run_healthcheck(*args, "--url", f"http://127.0.0.1:{server.server_port}")

    yield check
    server.shutdown()
    server.server_close()


def run_healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, timeout=30)


def hook(state: str, name: str = "esjoin-bootstrap.sh") -> dict[str, str]:
    return {"stage": "READY", "name": name, "state": state}


@pytest.mark.parametrize(
    ("document", "code", "verdict"),
    [
        ({"completed": False, "scripts": [hook("UNKNOWN")]}, 1, "waiting:"),
        ({"completed": False, "scripts": [hook("RUNNING")]}, 1, "waiting:"),
        ({"completed": True, "scripts": [hook("SUCCESSFUL")]}, 0, "healthy:"),
        ({"completed": True, "scripts": [hook("ERROR")]}, 1, "FAILED:"),
        ({"completed": False, "scripts": [hook("ERROR", "other.sh"), hook("UNKNOWN")]}, 1, "FAILED:"),
        ({"completed": True, "scripts": []}, 1, "FAILED:"),  # hook not mounted: it never will be
    ],
    ids=["not-started", "running", "succeeded", "failed", "another-failed", "missing"],
)
def test_localstack_is_healthy_only_once_the_hook_succeeded(
    localstack_init: Callable[[dict[str, Any]], subprocess.CompletedProcess[str]],
    document: dict[str, Any],
    code: int,
    verdict: str,
) -> None:
    result = localstack_init(document)
    assert (result.returncode, result.stdout.split(" ", 1)[0]) == (code, verdict), result.stdout


# -- esjoin up reading the containers' states ----------------------------------------------------


def health(status: str, output: str = "") -> dict[str, Any]:
    return {"Status": status, "Log": [{"ExitCode": 1, "Output": output}] if output else []}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, WAITING),
        ({"Status": "running", "Health": health("starting", "waiting: READY stage running")}, WAITING),
        ({"Status": "running", "Health": health("healthy", "healthy: esjoin-bootstrap.sh bootstrapped")}, READY),
        ({"Status": "running", "Health": health("starting", "FAILED: init script(s) x failed")}, FAILED),
        ({"Status": "running", "Health": health("unhealthy")}, FAILED),
        ({"Status": "exited", "ExitCode": 137, "Health": health("starting")}, FAILED),  # a server that died
        ({"Status": "running"}, WAITING),  # the one-shot bootstrap, still applying
        ({"Status": "exited", "ExitCode": 0}, READY),
        ({"Status": "exited", "ExitCode": 1}, FAILED),
    ],
    ids=[
        "no-container",
        "starting",
        "healthy",
        "hook-failed",
        "unhealthy",
        "server-died",
        "one-shot-running",
        "one-shot-done",
        "one-shot-failed",
    ],
)
def test_esjoin_up_reads_a_services_state(state: dict[str, Any] | None, expected: str) -> None:
    assert service_status(state)[0] == expected


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """Compose and `docker inspect` stand-ins: each service's successive States, one per look."""
    states: dict[str, list[dict[str, Any]]] = {}

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        if command[:2] == ["docker", "inspect"]:
            service = command[-1].removeprefix("id-")
            state = states[service].pop(0) if len(states[service]) > 1 else states[service][0]
            return subprocess.CompletedProcess(command, 0, json.dumps(state), "")
        return subprocess.CompletedProcess(command, 0, f"id-{command[-1]}\n", "")  # compose ps -a -q SERVICE

    monkeypatch.setattr(cli, "compose", lambda *args: ["docker", "compose", *args])
    monkeypatch.setattr(cli.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cli.subprocess, "run", run)
    monkeypatch.setattr(cli.time, "sleep", lambda seconds: None)
    return states


def test_esjoin_up_waits_for_the_emulator_then_the_one_shot_bootstrap(containers: dict[str, Any]) -> None:
    containers["emulator"] = [
        {"Status": "running", "Health": health("starting")},
        {"Status": "running", "Health": health("healthy", "healthy: ready")},
    ]
    containers["bootstrap"] = [{"Status": "created"}, {"Status": "running"}, {"Status": "exited", "ExitCode": 0}]
    cli.wait_for_services(cli.EMULATOR_CONTAINER)
    assert containers["bootstrap"] == [{"Status": "exited", "ExitCode": 0}]  # it looked until the end


def test_esjoin_up_stops_waiting_when_the_bootstrap_failed(containers: dict[str, Any]) -> None:
    containers["emulator"] = [{"Status": "running", "Health": health("healthy", "healthy: ready")}]
    containers["bootstrap"] = [{"Status": "running"}, {"Status": "exited", "ExitCode": 1}]
    with pytest.raises(typer.Exit):
        cli.wait_for_services(cli.EMULATOR_CONTAINER)


def test_esjoin_up_gives_up_at_its_deadline(containers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESJOIN_COMPOSE_WAIT_SECONDS", "0")
    containers["localstack"] = [{"Status": "running", "Health": health("starting", "waiting: READY stage running")}]
    with pytest.raises(typer.Exit):
        cli.wait_for_services(cli.LOCALSTACK)


# -- LocalStack with testcontainers (a stand-in for the library: no Docker here) ----------------


class FakeWrapped:
    def __init__(self) -> None:
        self.signals: list[str] = []
        self.exit_code = 0

    def kill(self, signal: str) -> None:
        self.signals.append(signal)

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        return {"StatusCode": self.exit_code}


class FakeNetwork:
    created: list[FakeNetwork] = []

    def __init__(self) -> None:
        self.name, self.removed = "net-1234", False

    def create(self) -> FakeNetwork:
        FakeNetwork.created.append(self)
        return self

    def remove(self) -> None:
        self.removed = True


class FakeLocalStack:
    instances: list[FakeLocalStack] = []
    fail_start: Exception | None = None

    def __init__(self, image: str, edge_port: int, region_name: str) -> None:
        self.image, self.edge_port, self.region_name = image, edge_port, region_name
        self.env: dict[str, str] = {}
        self.volumes: list[tuple[str, str, str]] = []
        self.ports: dict[str, Any] = {str(edge_port): None}
        self.network: FakeNetwork | None = None
        self.aliases: tuple[str, ...] = ()
        self.wrapped, self.stopped = FakeWrapped(), False
        FakeLocalStack.instances.append(self)

    def with_env(self, key: str, value: str) -> FakeLocalStack:
        self.env[key] = value
        return self

    def with_volume_mapping(self, host: str, container: str, mode: str) -> FakeLocalStack:
        self.volumes.append((host, container, mode))
        return self

    def with_network(self, network: FakeNetwork) -> FakeLocalStack:
        self.network = network
        return self

    def with_network_aliases(self, *aliases: str) -> FakeLocalStack:
        self.aliases = aliases
        return self

    def start(self, timeout: float) -> FakeLocalStack:
        if FakeLocalStack.fail_start:
            raise FakeLocalStack.fail_start
        return self

    def get_container_host_ip(self) -> str:
        return "localhost"

    def get_exposed_port(self, port: int) -> int:
        return 49153

    def get_wrapped_container(self) -> FakeWrapped:
        return self.wrapped

    def get_container_id(self) -> str:
        return "abc123"

    def get_logs(self) -> tuple[bytes, bytes]:
        return b"pulling...\n", b"manifest unknown\n"

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def testcontainers(monkeypatch: pytest.MonkeyPatch) -> type[FakeLocalStack]:
    FakeLocalStack.instances, FakeLocalStack.fail_start, FakeNetwork.created = [], None, []
    modules = {
        "testcontainers": types.ModuleType("testcontainers"),
        "testcontainers.core": types.ModuleType("testcontainers.core"),
        "testcontainers.core.network": types.ModuleType("testcontainers.core.network"),
        "testcontainers.community": types.ModuleType("testcontainers.community"),
        "testcontainers.community.localstack": types.ModuleType("testcontainers.community.localstack"),
    }
    modules["testcontainers.core.network"].Network = FakeNetwork
    modules["testcontainers.community.localstack"].LocalStackContainer = FakeLocalStack
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return FakeLocalStack


def test_testcontainers_localstack_is_started_as_compose_starts_it(testcontainers: type[FakeLocalStack]) -> None:
    waited: list[str] = []
    handle, endpoint = localstack_container.start_localstack({"LOCALSTACK_AUTH_TOKEN": "ls-token"}, wait=waited.append)
    container = testcontainers.instances[0]
    assert endpoint == "http://127.0.0.1:49153" and waited == [endpoint]  # returned only once the wait said so
    assert container.image == "localstack/localstack:4.14.0" and container.region_name == "us-east-1"
    assert container.env["SERVICES"] == "kinesis,dynamodb,dynamodbstreams,sqs,lambda,logs,iam,sts"
    assert container.env["LOCALSTACK_AUTH_TOKEN"] == "ls-token"
    assert container.env["LAMBDA_DOCKER_NETWORK"] == container.network.name == "net-1234"
    assert container.aliases == ("localstack",)
    assert ("/var/run/docker.sock", "/var/run/docker.sock", "rw") in container.volumes
    assert container.ports == {"4566": ("127.0.0.1", None)}  # loopback, any free port
    # the compose profile's ready.d hook, with the checkout it runs from and a place for its outputs
    hook = ROOT / "docker" / "esjoin-bootstrap.sh"
    assert (str(hook), "/etc/localstack/init/ready.d/esjoin-bootstrap.sh", "ro") in container.volumes
    assert (str(ROOT), "/opt/esjoin", "ro") in container.volumes
    assert container.env["ESJOIN_PROJECT_DIR"] == "/opt/esjoin" and container.env["ESJOIN_STAGE"] == "local"

    handle.terminate()
    assert handle.wait(timeout=20) == 0
    assert container.wrapped.signals == ["SIGTERM"] and container.stopped and container.network.removed
    handle.terminate()  # Backend.stop may call it again: nothing left to do
    assert container.wrapped.signals == ["SIGTERM"]


def test_a_failed_testcontainers_start_cleans_up_and_says_why(testcontainers: type[FakeLocalStack]) -> None:
    testcontainers.fail_start = TimeoutError("no 'Ready.' within 180 s")
    with pytest.raises(BackendError, match=r"(?s)did not start.*Ready.*manifest unknown"):
        localstack_container.start_localstack({})
    container = testcontainers.instances[0]
    assert container.stopped and container.network.removed


def test_a_loopback_port_is_reached_on_loopback_whatever_testcontainers_guesses(
    testcontainers: type[FakeLocalStack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a container testcontainers guesses the bridge's gateway, where a port published on
    127.0.0.1 does not answer (seen: the start waited 180 s on 172.22.0.1 and failed)."""
    monkeypatch.setattr(FakeLocalStack, "get_container_host_ip", lambda self: "172.22.0.1")
    _, endpoint = localstack_container.start_localstack({}, wait=lambda endpoint: None)
    assert endpoint == "http://127.0.0.1:49153"


def test_a_failed_bootstrap_hook_fails_the_start_with_the_hook_s_verdict(testcontainers: type[FakeLocalStack]) -> None:
    def hook_failed(endpoint: str) -> None:
        raise RuntimeError("the bootstrap hook failed: init script(s) esjoin-bootstrap.sh failed")

    with pytest.raises(BackendError, match=r"(?s)did not start.*esjoin-bootstrap.sh failed.*manifest unknown"):
        localstack_container.start_localstack({}, wait=hook_failed)
    container = testcontainers.instances[0]
    assert container.stopped and container.network.removed


def test_without_testcontainers_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("testcontainers", "testcontainers.core", "testcontainers.core.network"):
        monkeypatch.setitem(sys.modules, name, None)  # what an absent package looks like to import
    with pytest.raises(BackendError, match=re.escape(".[containers]")):
        localstack_container.start_localstack({})
