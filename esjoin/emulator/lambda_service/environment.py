"""What a worker process runs in: its environment variables and its runtime site, as AWS's Python
runtime provides them.

Isolation: a worker is the endpoint's interpreter run without site processing (``python -S -B``), its
``sys.path`` the function's code directory plus a directory holding only boto3 and its dependencies
(symlinks into the endpoint's site-packages, ``<state_dir>/runtime-site``). So the function imports
what its zip holds and what AWS's runtime provides, never the endpoint's own code or test tools: a
packaging mistake fails here as it would on AWS. The environment is built from scratch (AWS's reserved
variables, dummy credentials, ``AWS_ENDPOINT_URL`` pointing at this endpoint, then the function's own
variables); nothing of the endpoint's environment leaks in (no AWS_PROFILE, no proxy settings).

RuntimeSite installs the worker program (worker_program.py, as ``<state_dir>/runtime/worker.py``) and
builds the runtime site directory once, under its one lock, which is taken under no other lock.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import secrets
import shutil
import sys
import threading
import urllib.parse
from pathlib import Path

from esjoin.emulator.invocation import FunctionSpec
from esjoin.emulator.lambda_service import worker_program

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
RUNTIME_PACKAGES = ("boto3",)  # what AWS's Python runtime provides, with their dependencies
DETERMINISTIC_PACKAGES = ("time-machine",)  # what a worker imports in deterministic mode, outside the function's path

_log = logging.getLogger(__name__)


class RuntimeSite:
    """What every worker of one runtime shares: the installed worker program, the runtime site directory
    (built by prepare() or by the first worker start) and the environment built for each worker."""

    def __init__(self, state_dir: Path, endpoint_url: str) -> None:
        self._endpoint_url = endpoint_url
        self.runtime_dir = state_dir / "runtime"
        self.worker_script = _install_worker(self.runtime_dir)
        self._runtime_site_dir = state_dir / "runtime-site"
        self._runtime_site: Path | None = None
        self._runtime_site_lock = threading.Lock()
        self._deterministic_site: Path | None = None

    def site(self) -> Path:
        with self._runtime_site_lock:
            if self._runtime_site is None:
                self._runtime_site = _install_runtime_site(self._runtime_site_dir)
            return self._runtime_site

    def deterministic_site(self) -> Path:
        """time-machine alone: the worker puts it on sys.path only to import it (deterministic mode)."""
        with self._runtime_site_lock:
            if self._deterministic_site is None:
                directory = self.runtime_dir.parent / "runtime-deterministic"
                self._deterministic_site = _install_runtime_site(directory, DETERMINISTIC_PACKAGES)
            return self._deterministic_site

    def environment(self, spec: FunctionSpec, log_stream: str) -> dict[str, str]:
        return function_environment(
            spec,
            log_stream=log_stream,
            endpoint_url=self._endpoint_url,
            runtime_dir=self.runtime_dir,
            runtime_site=self.site(),
        )


def function_environment(
    spec: FunctionSpec, *, log_stream: str, endpoint_url: str, runtime_dir: Path, runtime_site: Path
) -> dict[str, str]:
    """A worker's whole environment: AWS's runtime variables, then the function's own.

    https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
    Built from nothing, never from os.environ: the endpoint may run with AWS_PROFILE, AWS_CONFIG_FILE,
    AWS_ROLE_ARN, AWS_CA_BUNDLE or proxy settings of its user's, and a function's boto3 calls back to
    the endpoint must not see them (on AWS they could not). A proxy the function's own configuration
    names would carry those calls to a proxy that cannot reach this machine's loopback endpoint, so the
    loopback hosts and the endpoint's host are added to NO_PROXY (and no_proxy) whenever a proxy is set."""
    environment = {
        "_HANDLER": spec.handler,
        "AWS_REGION": spec.region,
        "AWS_DEFAULT_REGION": spec.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        "AWS_ENDPOINT_URL": endpoint_url,
        # A sandbox on AWS has no ~/.aws; keep the host's config and credentials files out too.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "LAMBDA_TASK_ROOT": str(Path(spec.code_dir).resolve()),
        "LAMBDA_RUNTIME_DIR": str(runtime_dir),
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        # The base interpreter's bin, not the venv's: a `python` subprocess must not see the endpoint.
        "PATH": f"{sys.base_prefix}/bin:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(runtime_site),
    }
    environment.update(spec.environment)
    if any(environment.get(name) for name in PROXY_VARIABLES):
        bypass = _no_proxy(environment, endpoint_url)
        environment["NO_PROXY"] = environment["no_proxy"] = bypass
    return environment


def _no_proxy(environment: dict[str, str], endpoint_url: str) -> str:
    """The function's NO_PROXY / no_proxy entries, then the loopback hosts and the endpoint's host."""
    entries: list[str] = []
    endpoint_host = urllib.parse.urlsplit(endpoint_url).hostname
    given = [environment.get("NO_PROXY", ""), environment.get("no_proxy", "")]
    for entry in [*",".join(given).split(","), *LOOPBACK_HOSTS, endpoint_host or ""]:
        entry = entry.strip()
        if entry and entry not in entries:
            entries.append(entry)
    return ",".join(entries)


def _install_worker(runtime_dir: Path) -> Path:
    """Copy worker.py alone into its directory: the worker's own sys.path entry then holds nothing else."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    target = runtime_dir / "worker.py"
    source = Path(worker_program.__file__).read_bytes()
    if not target.is_file() or target.read_bytes() != source:
        temporary = runtime_dir / f".worker.py.{os.getpid()}.{secrets.token_hex(4)}"
        temporary.write_bytes(source)
        os.replace(temporary, target)
    return target


def _install_runtime_site(site_dir: Path, packages: tuple[str, ...] = RUNTIME_PACKAGES) -> Path:
    """A directory with boto3 and its dependencies only (symlinks into the endpoint's site-packages).

    AWS's Python runtime provides boto3 and nothing else; anything more a function needs must be in
    its zip. Falls back to the whole site-packages directory if package metadata is unavailable."""
    try:
        entries = _runtime_package_entries(packages)
    except importlib.metadata.PackageNotFoundError as error:
        import boto3

        fallback = Path(boto3.__file__).resolve().parent.parent
        _log.warning("no package metadata for %s; workers see all of %s", error, fallback)
        return fallback
    if site_dir.is_dir() and {p.name: p.resolve() for p in site_dir.iterdir()} == {
        name: path.resolve() for name, path in entries.items()
    }:
        return site_dir
    staging = site_dir.with_name(f".{site_dir.name}.{os.getpid()}.{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    for name, path in entries.items():
        (staging / name).symlink_to(path)
    shutil.rmtree(site_dir, ignore_errors=True)
    try:
        staging.rename(site_dir)
    except OSError:  # another runtime sharing this state directory built it at the same moment
        shutil.rmtree(staging, ignore_errors=True)
    return site_dir


def _runtime_package_entries(packages: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, Path]:
    """Top-level names (packages, modules, .dist-info) of `packages` and what they require."""
    entries: dict[str, Path] = {}
    seen: set[str] = set()
    pending = list(packages)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        distribution = importlib.metadata.distribution(name)
        for requirement in distribution.requires or []:
            if "extra ==" not in requirement:
                pending.append(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
        for file in distribution.files or []:
            top = file.parts[0]
            if top != ".." and top != "__pycache__":
                entries[top] = Path(distribution.locate_file(top))
    return entries
