"""LocalStack started by the harness itself, with testcontainers (ESJOIN_LOCALSTACK_START=testcontainers).

The container docker-compose.yml's `localstack` profile describes, minus the init hook (the harness
bootstraps its own test stages): the pinned community image (LOCALSTACK_IMAGE overrides it;
LOCALSTACK_AUTH_TOKEN is passed through for the newer images that need one), only the services the
stack uses, the Docker socket so that Lambda functions run in sibling containers, and a network of its
own, named in LAMBDA_DOCKER_NETWORK, on which those containers reach LocalStack by its alias. The port
is published on 127.0.0.1 only when the Docker engine is this machine's (no DOCKER_HOST, or a unix
socket); with a remote engine it is published on that engine's interfaces, and the URL names that
host, which the local-endpoint guard accepts only when listed in ESJOIN_ALLOWED_HOSTS.

testcontainers is an optional extra: ``pip install -c constraints.txt -e '.[containers]'``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
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

    def __init__(self, container: Any, network: Any) -> None:
        self.container = container  # testcontainers' LocalStackContainer
        self.network = network  # testcontainers' Network
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

    @property
    def container_id(self) -> str:
        try:
            return self.container.get_container_id()
        except Exception:
            return "(not started)"


def start_localstack(environ: Mapping[str, str] | None = None) -> tuple[LocalStackHandle, str]:
    """Start LocalStack in Docker; return its handle and endpoint URL once it says "Ready."."""
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
    container.with_volume_mapping(DOCKER_SOCKET, DOCKER_SOCKET, "rw")
    container.with_network(network).with_network_aliases(NETWORK_ALIAS)
    container.ports[str(EDGE_PORT)] = (spec.publish_address, None)  # docker-py: this address, any free port
    handle = LocalStackHandle(container, network)
    try:
        container.start(timeout=READY_TIMEOUT)
        host = container.get_container_host_ip()
        port = container.get_exposed_port(EDGE_PORT)
    except Exception as error:
        logs = _tail_logs(container)
        handle.remove()
        raise BackendError(
            f"LocalStack ({spec.image}) did not start: {type(error).__name__}: {error}"
            f"{' (newer images need LOCALSTACK_AUTH_TOKEN)' if spec.image != DEFAULT_IMAGE else ''}"
            f"\n{logs}"
        ) from None
    host = "127.0.0.1" if host in ("localhost", "127.0.0.1", "::1") else host
    return handle, f"http://{host}:{port}"


def _tail_logs(container: Any, lines: int = 30) -> str:
    try:
        stdout, stderr = container.get_logs()
    except Exception:
        return "(no container log)"
    text = (stdout + stderr).decode(errors="replace").splitlines()
    return "\n".join(text[-lines:])
