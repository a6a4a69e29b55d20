#!/usr/bin/env python3
"""Container healthchecks for docker-compose.yml and the Dockerfile, standard library only, so one file
runs on LocalStack's own Python and on the emulator image's.

    healthcheck.py esjoin [--url URL]
        the embedded endpoint answers /_esjoin/health with {"status": "ready"}
    healthcheck.py localstack-init [--url URL] [--script NAME]
        LocalStack's READY init stage has run and every script in it, NAME (our bootstrap hook) among
        them, is SUCCESSFUL: healthy only once the stack is bootstrapped, never when the hook failed.
        https://docs.localstack.cloud/references/init-hooks/ (GET /_localstack/init/ready)

Exit status 0: healthy, 1: not (yet). The line printed ends up in `docker inspect`'s health log; a
line starting with FAILED means waiting longer will not help (`esjoin up` stops waiting on it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

DEFAULT_PORT = os.environ.get("ESJOIN_PORT") or "4566"
DEFAULT_HOOK = "esjoin-bootstrap.sh"
TIMEOUT_SECONDS = 3.0  # below the healthcheck's own timeout, so this script reports rather than gets killed
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""urllib's opener without the proxies: the URL checked is the container's own, which no proxy can
reach, and Docker sets HTTP_PROXY in containers when ~/.docker/config.json configures one
(https://docs.docker.com/engine/cli/proxy/)."""


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    message: str
    final: bool = False  # unhealthy for good: a failed hook does not run again

    def line(self) -> str:
        return ("healthy: " if self.healthy else "FAILED: " if self.final else "waiting: ") + self.message


def get_json(url: str) -> tuple[int, object]:
    """(status, document); HTTP errors with a JSON body are documents too (the emulator answers 503)."""
    try:
        with DIRECT.open(url, timeout=TIMEOUT_SECONDS) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"null")
        except ValueError:
            return error.code, None


def esjoin_health(url: str) -> Verdict:
    health_url = url.rstrip("/") + "/_esjoin/health"
    try:
        status, document = get_json(health_url)
    except (OSError, ValueError) as error:
        return Verdict(False, f"{health_url}: {error}")
    state = document.get("status") if isinstance(document, dict) else None
    if status == 200 and state == "ready":
        return Verdict(True, f"{health_url} says ready")
    return Verdict(False, f"{health_url}: HTTP {status}, status {state!r}")


def localstack_init(url: str, script: str) -> Verdict:
    ready_url = url.rstrip("/") + "/_localstack/init/ready"
    try:
        status, document = get_json(ready_url)
    except (OSError, ValueError) as error:
        return Verdict(False, f"{ready_url}: {error}")
    if status != 200 or not isinstance(document, dict):
        return Verdict(False, f"{ready_url}: HTTP {status}")
    scripts = {entry.get("name"): entry.get("state") for entry in document.get("scripts") or []}
    failed = sorted(name for name, state in scripts.items() if state == "ERROR")
    if failed:
        return Verdict(False, f"init script(s) {', '.join(failed)} failed; the container log says why", final=True)
    if not document.get("completed"):
        return Verdict(False, f"READY stage running: {scripts or 'no scripts yet'}")
    if script not in scripts:
        return Verdict(
            False,
            f"{script} is not in /etc/localstack/init/ready.d (scripts: {sorted(scripts)}); "
            "is the hook mounted and named *.sh?",
            final=True,
        )
    unfinished = sorted(name for name, state in scripts.items() if state != "SUCCESSFUL")
    if unfinished:
        return Verdict(False, f"READY stage completed but {', '.join(unfinished)} did not succeed", final=True)
    return Verdict(True, f"{script} bootstrapped the stack")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healthcheck.py", description=__doc__.splitlines()[0])
    checks = parser.add_subparsers(dest="check", required=True)
    esjoin = checks.add_parser("esjoin", help="the embedded endpoint is ready")
    esjoin.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}")
    init = checks.add_parser("localstack-init", help="LocalStack ran its ready.d hooks, all successfully")
    init.add_argument("--url", default="http://127.0.0.1:4566")
    init.add_argument("--script", default=DEFAULT_HOOK, help="the hook that must have succeeded")
    args = parser.parse_args(argv)
    verdict = esjoin_health(args.url) if args.check == "esjoin" else localstack_init(args.url, args.script)
    print(verdict.line(), flush=True)
    return 0 if verdict.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
