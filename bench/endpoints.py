"""The endpoints a benchmark measures, each started for it on a free port and stopped after it.

- `EmbeddedEndpoint`: our endpoint as users start it (`python -m esjoin.emulator`, a fresh state directory),
  with the time from spawning the process to the first 200 from /_esjoin/health.
- `RawMotoServer`: moto's own `ThreadedMotoServer` in a process of its own, the baseline the
  gateway's per-call overhead is measured against (same machine, same client, same calls).
Both run in a child process, so the benchmark's client and the server do not share a GIL.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.config import Config

from esjoin.target import local_target
from esjoin.testing.backends import free_port

REGION = "us-east-1"
ACCOUNT_ID = "000000000000"
REPO_ROOT = Path(__file__).resolve().parent.parent
READY_POLL_SECONDS = 0.005  # the readiness figure is this precise
START_DEADLINE_SECONDS = 60.0
CLIENT_CONFIG = Config(
    retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=32, connect_timeout=5, read_timeout=120
)


class EndpointError(RuntimeError):
    pass


def client(endpoint_url: str, service: str, config: Config = CLIENT_CONFIG) -> Any:
    """A client through infra's local target, as the harness makes them: dummy credentials, no profile
    and no proxy, so an AWS_PROFILE, a broken ~/.aws/config or an HTTP_PROXY on the machine never
    fails (or skews) a benchmark. `config` overrides the target's timeouts and retries."""
    target = local_target(endpoint_url, REGION, environ={})
    return target.session().client(
        service, endpoint_url=target.endpoint_url, config=target.client_config().merge(config)
    )


def _health_status(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


@dataclass
class EmbeddedEndpoint:
    """`python -m esjoin.emulator` on a free port with a fresh state directory; `ready_seconds` is start to ready."""

    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    ready_seconds: float | None = None
    work_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "emulator.log"

    def start(self) -> EmbeddedEndpoint:
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"esjoin-bench-{self.port}-"))
        env = {key: value for key, value in os.environ.items() if not key.startswith("ESJOIN_")}
        env.update(self.extra_env)
        command = [
            sys.executable,
            "-m",
            "esjoin.emulator",
            "--port",
            str(self.port),
            "--state-dir",
            str(self.work_dir / "state"),
        ]
        with open(self.log_path, "wb") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = started + START_DEADLINE_SECONDS
        while time.perf_counter() < deadline:
            if _health_status(self.port, "/_esjoin/health") == 200:
                self.ready_seconds = time.perf_counter() - started
                return self
            if self.process.poll() is not None:
                raise EndpointError(
                    f"the endpoint exited with status {self.process.returncode} while starting; see {self.log_path}"
                )
            time.sleep(READY_POLL_SECONDS)
        self.stop()
        raise EndpointError(f"the endpoint was not ready after {START_DEADLINE_SECONDS:.0f} s; see {self.log_path}")

    def stop(self, keep_files: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if self.work_dir is not None and not keep_files:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def client(self, service: str) -> Any:
        return client(self.url, service)

    def __enter__(self) -> EmbeddedEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(keep_files=exc[0] is not None)


# moto's own server, as `moto_server` runs it, with moto's default account.
_MOTO_SERVER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop()
"""


@dataclass
class RawMotoServer:
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawMotoServer:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ESJOIN_")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _MOTO_SERVER, str(self.port)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            self.stop()
            raise EndpointError(f"moto's ThreadedMotoServer did not start (said {line!r})")
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while _health_status(self.port, "/moto-api/") is None:
            if time.monotonic() > deadline:
                self.stop()
                raise EndpointError("moto's ThreadedMotoServer does not answer")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self, service: str) -> Any:
        return client(self.url, service)

    def __enter__(self) -> RawMotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
