"""LocalStack started by the harness itself, with testcontainers (ESJOIN_LOCALSTACK_START=testcontainers).

The container docker-compose.yml's `localstack` profile describes: the pinned community image
(LOCALSTACK_IMAGE overrides it, e.g. with docker/localstack-offline/build.sh's image;
LOCALSTACK_AUTH_TOKEN is passed through for the newer images that need one), only the services the
stack uses, the Docker socket so that Lambda functions run in sibling containers, a network of its
own, named in LAMBDA_DOCKER_NETWORK, on which those containers reach LocalStack by its alias, and the
same ready.d hook (docker/esjoin-bootstrap.sh, with the checkout mounted read-only), which bootstraps
stage `local`. The start waits for that hook to succeed, not just for LocalStack's "Ready." line, so a
LocalStack whose services or Lambda containers do not work fails here, with the hook's log, instead
of in the first test. The port is published on 127.0.0.1 only when the Docker engine is this
machine's (no DOCKER_HOST, or a unix socket); with a remote engine it is published on that engine's
interfaces, and the URL names that host, which the local-endpoint guard accepts only when listed in
ESJOIN_ALLOWED_HOSTS (and the checkout must be a path that engine can mount).

testcontainers is an optional extra: ``pip install -c constraints.txt -e '.[containers]'``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esjoin.testing.backends import LOCALSTACK_TEST_POLLING, BackendError

DEFAULT_IMAGE = "localstack/localstack:4.14.0"
"""The last community image that starts without LOCALSTACK_AUTH_TOKEN (docker-compose.yml's default too)."""
SERVICES = ("kinesis", "dynamodb", "dynamodbstreams", "sqs", "lambda", "logs", "iam", "sts")
"""What the stack uses (esjoin.target.Clients); docker-compose.yml's SERVICES lists the same."""
REGION = "us-east-1"
NETWORK_ALIAS = "localstack"
EDGE_PORT = 4566
DOCKER_SOCKET = "/var/run/docker.sock"
READY_TIMEOUT = 180.0
"""Seconds from the container's start to LocalStack's "Ready." (the image pull comes before)."""
BOOTSTRAP_TIMEOUT = 180.0
"""Seconds from "Ready." to the ready.d hook's success (it creates the stack, functions included)."""
PROJECT_DIR = Path(__file__).resolve().parents[2]
HOOK = "esjoin-bootstrap.sh"
HOOK_ENVIRONMENT = {  # docker-compose.yml's, for the hook
    "ESJOIN_BOOTSTRAP_PYTHON": "/opt/code/localstack/.venv/bin/python",
    "ESJOIN_BOOTSTRAP_ENDPOINT": f"http://127.0.0.1:{EDGE_PORT}",
    "ESJOIN_PROJECT_DIR": "/opt/esjoin",
    "ESJOIN_OUTPUTS": "/var/lib/esjoin/outputs.json",
    "ESJOIN_STAGE": "local",
    "ESJOIN_REGION": "us-east-1",
}
INSTALL_HINT = "pip install -c constraints.txt -e '.[containers]'"


@dataclass(frozen=True)
class LocalStackSpec:
    """What the container is started with, from the environment; the network is added at start."""

    image: str
    environment: dict[str, str]
    publish_address: str  # host address the edge port is published on ("" = every interface)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalStackSpec:
        environ = os.environ if environ is None else environ
        environment = {"SERVICES": ",".join(SERVICES), "DEBUG": environ.get("LOCALSTACK_DEBUG") or "0"}
        for name, value in LOCALSTACK_TEST_POLLING.items():  # short poll backoffs (esjoin.testing.backends)
            environment[name] = environ.get(name) or value
        if environ.get("LOCALSTACK_AUTH_TOKEN"):
            environment["LOCALSTACK_AUTH_TOKEN"] = environ["LOCALSTACK_AUTH_TOKEN"]
        # A remote engine (DOCKER_HOST=tcp://...) publishes on its own interfaces: loopback there
        # would be unreachable from here. The harness's local-endpoint guard still applies to the URL.
        docker_host = environ.get("DOCKER_HOST", "")
        local_engine = not docker_host or docker_host.startswith(("unix://", "npipe://"))
        return cls(
            image=environ.get("LOCALSTACK_IMAGE") or DEFAULT_IMAGE,
            environment=environment,
            publish_address="127.0.0.1" if local_engine else "",
        )


class LocalStackHandle:
    """The started container behind the interface `Backend.stop` uses for a process: terminate()
    asks LocalStack to shut down (it removes its Lambda containers), wait(timeout) waits for that
    (subprocess.TimeoutExpired if it takes longer), kill() stops it at once. The container and its
    network are removed once it has stopped."""

    def __init__(self, container: Any, network: Any, outputs: str | None = None) -> None:
        self.container = container  # testcontainers' LocalStackContainer
        self.network = network  # testcontainers' Network
        self.outputs = outputs  # the hook's outputs directory, under .esjoin/
        self._removed = False

    def _docker(self) -> Any:
        return self.container.get_wrapped_container()

    def terminate(self) -> None:
        self._signal("SIGTERM")

    def kill(self) -> None:
        self._signal("SIGKILL")

    def _signal(self, signal: str) -> None:
        from docker.errors import APIError

        if self._removed:
            return
        try:
            self._docker().kill(signal=signal)
        except APIError as error:
            if error.status_code not in (404, 409):  # gone, or not running: nothing left to signal
                raise

    def wait(self, timeout: float | None = None) -> int | None:
        from requests.exceptions import ConnectionError, ReadTimeout

        if self._removed:
            return None
        try:
            result = self._docker().wait(timeout=timeout)
        except (ReadTimeout, ConnectionError) as error:  # how docker-py reports the timeout expiring
            raise subprocess.TimeoutExpired(f"LocalStack container {self.container_id}", timeout or 0) from error
        self.remove()
        return result.get("StatusCode") if isinstance(result, dict) else None

    def remove(self) -> None:
        """Remove the container and its network (also what a failed start calls)."""
        if self._removed:
            return
        self._removed = True
        try:
            self.container.stop()  # testcontainers: remove(force=True, v=True)
        finally:
            # It fails while a leftover Lambda container still uses it; testcontainers' Ryuk reaps it later.
            with contextlib.suppress(Exception):
                self.network.remove()
            if self.outputs:
                shutil.rmtree(self.outputs, ignore_errors=True)

    @property
    def container_id(self) -> str:
        try:
            return self.container.get_container_id()
        except Exception:
            return "(not started)"


def start_localstack(
    environ: Mapping[str, str] | None = None, wait: Callable[[str], None] | None = None
) -> tuple[LocalStackHandle, str]:
    """Start LocalStack in Docker; return its handle and endpoint URL once `wait` says it is usable
    (by default: once the bootstrap hook has succeeded)."""
    try:
        from testcontainers.core.network import Network

        try:
            from testcontainers.community.localstack import LocalStackContainer
        except ImportError:  # testcontainers before the community split
            from testcontainers.localstack import LocalStackContainer
    except ImportError as error:
        raise BackendError(
            f"ESJOIN_LOCALSTACK_START=testcontainers needs testcontainers, which is not "
            f"installed ({error}): {INSTALL_HINT}; or start LocalStack with "
            "`make up BACKEND=localstack`"
        ) from None
    spec = LocalStackSpec.from_env(environ)
    try:
        network = Network().create()
    except Exception as error:
        raise BackendError(
            f"cannot reach the Docker engine to start LocalStack ({type(error).__name__}: {error}); "
            "is Docker running and is DOCKER_HOST right?"
        ) from None
    container = LocalStackContainer(image=spec.image, edge_port=EDGE_PORT, region_name=REGION)
    for name, value in {**spec.environment, "LAMBDA_DOCKER_NETWORK": network.name}.items():
        container.with_env(name, value)
    for name, value in HOOK_ENVIRONMENT.items():
        container.with_env(name, value)
    outputs = tempfile.mkdtemp(prefix="localstack-outputs-", dir=_state_dir())
    container.with_volume_mapping(DOCKER_SOCKET, DOCKER_SOCKET, "rw")
    container.with_volume_mapping(str(PROJECT_DIR), HOOK_ENVIRONMENT["ESJOIN_PROJECT_DIR"], "ro")
    container.with_volume_mapping(str(PROJECT_DIR / "docker" / HOOK), f"/etc/localstack/init/ready.d/{HOOK}", "ro")
    container.with_volume_mapping(outputs, os.path.dirname(HOOK_ENVIRONMENT["ESJOIN_OUTPUTS"]), "rw")
    container.with_network(network).with_network_aliases(NETWORK_ALIAS)
    container.ports[str(EDGE_PORT)] = (spec.publish_address, None)  # docker-py: this address, any free port
    handle = LocalStackHandle(container, network, outputs)
    try:
        container.start(timeout=READY_TIMEOUT)
        host = container.get_container_host_ip()
        port = container.get_exposed_port(EDGE_PORT)
        # Published on loopback (a local engine): 127.0.0.1 is the address, whatever testcontainers
        # guesses (inside a container it guesses the bridge's gateway, which that port is not bound to).
        local = spec.publish_address == "127.0.0.1" or host in ("localhost", "127.0.0.1", "::1")
        host = "127.0.0.1" if local else host
        endpoint = f"http://{host}:{port}"
        (wait or wait_for_bootstrap)(endpoint)
    except Exception as error:
        logs = _tail_logs(container)
        handle.remove()
        raise BackendError(
            f"LocalStack ({spec.image}) did not start: {type(error).__name__}: {error}"
            f"{start_hint(spec, str(error), logs)}\n{logs}"
        ) from None
    return handle, endpoint


def start_hint(spec: LocalStackSpec, error: str, logs: str) -> str:
    """What to do about a failed start, where the error or the container log tells."""
    if "ryuk" in error.lower():
        return (
            " (testcontainers' Ryuk reaper image cannot be pulled here: set TESTCONTAINERS_RYUK_DISABLED=true;"
            " the harness removes its container and network itself)"
        )
    if "auth" in logs.lower() and "token" in logs.lower():
        return " (this image needs LOCALSTACK_AUTH_TOKEN; or use docker/localstack-offline/build.sh's image)"
    if spec.image != DEFAULT_IMAGE:
        return " (LOCALSTACK_IMAGE is set: is that image in the Docker engine, and does it start without a token?)"
    return ""


def _state_dir() -> str:
    from esjoin.testing.backends import STATE_DIR

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    return str(STATE_DIR.resolve())


def wait_for_bootstrap(endpoint: str, timeout: float = BOOTSTRAP_TIMEOUT) -> None:
    """Wait until LocalStack's READY stage has run the hook successfully (docker/healthcheck.py's
    verdict, the compose healthcheck's); raise at once when the hook failed, or at the deadline."""
    check = _healthcheck_module().localstack_init
    deadline = time.monotonic() + timeout
    while True:
        verdict = check(endpoint, HOOK)
        if verdict.healthy:
            return
        if verdict.final:
            raise RuntimeError(f"the bootstrap hook failed: {verdict.message}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bootstrap hook did not finish within {timeout:.0f} s: {verdict.message}")
        time.sleep(0.5)  # the container's own healthcheck polls every 5 s; this is only the harness waiting


def _healthcheck_module() -> Any:
    path = PROJECT_DIR / "docker" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("esjoin_docker_healthcheck", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _tail_logs(container: Any, lines: int = 30) -> str:
    try:
        stdout, stderr = container.get_logs()
    except Exception:
        return "(no container log)"
    text = (stdout + stderr).decode(errors="replace").splitlines()
    return "\n".join(text[-lines:])
