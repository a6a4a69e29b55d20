"""Reproduce a run offline: replay a trace on a fresh endpoint, script inputs for a seed, report on the
demo stack. docs/reproduce.md tells the whole workflow.

- `replay_trace(FILE)`: a fresh deterministic endpoint of its own (`python -m esjoin.emulator --replay
  FILE`, on a free port), which follows the recorded decisions and feeds the recorded outside requests
  at their steps; then the first divergence (a decision that could not be followed) and the first line
  where the new trace differs from the recorded one.
- `Script`: boto3 calls captured, not sent, as recorded requests; `ControlClient.submit_inputs` hands
  them to a deterministic endpoint, whose seed decides when each one is admitted.
- `demo_report(target)`: for each demo stage on an endpoint, the view rows against the oracle's fold of
  the events in the stream, and the events the snapshots and the events table lost.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSResponse

from esjoin.emulator.aids.trace import Trace, first_difference, parse_trace, read_trace
from esjoin.emulator.http.scheduled import recorded_body
from esjoin.target import Target
from esjoin.testing.backends import Backend, own_embedded
from esjoin.testing.waits import eventually

REPLAY_DEADLINE_SECONDS = 600.0
DROPPED = {"authorization", "x-amz-date", "x-amz-security-token", "user-agent", "content-length", "host"}
DROPPED_PREFIXES = ("amz-sdk-", "x-amz-content-sha256")
# The Host a scripted request names: the same whatever port the endpoint runs on, so a seed's trace is
# the same byte for byte on any port (moto builds URLs in its answers from it).
SCRIPT_HOST = "localhost:4566"


@dataclass
class ReplayResult:
    recorded: Trace
    replayed: Trace
    schedule: dict[str, Any]
    difference: dict[str, Any] | None
    report: dict[str, list[str]] = field(default_factory=dict)

    @property
    def divergence(self) -> dict[str, Any] | None:
        return self.schedule.get("divergence")

    @property
    def exact(self) -> bool:
        return self.divergence is None and self.difference is None


@contextmanager
def replay_endpoint(
    path: Path, until: int | None = None, workdir: Path | None = None, recorded: Trace | None = None
) -> Iterator[Backend]:
    """A fresh endpoint replaying `path`; yields once the replay has done what it can (it holds at the
    recording's last step, or `until`, or it diverged and settled). Raises TraceError for a bad trace.
    `recorded`: the trace, already read (and so checked) by the caller."""
    if recorded is None:
        read_trace(path)  # a bad file is named here, before anything starts
    directory = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="esjoin-replay-"))
    args = ["--replay", str(Path(path).resolve())] + (["--until", str(until)] if until is not None else [])
    backend = own_embedded(directory, args=args, control_timeout=60)
    try:
        eventually(
            lambda: backend.control.schedule()["replayDone"],
            expected=f"the replay of {path} to reach its end",
            deadline=REPLAY_DEADLINE_SECONDS,
            interval=0.05,
            max_interval=0.5,
            observe=lambda: {k: v for k, v in backend.control.schedule().items() if k != "actors"},
        )
        yield backend
    finally:
        backend.stop()
        if workdir is None:
            shutil.rmtree(directory, ignore_errors=True)


def replay_trace(path: Path, until: int | None = None, report: bool = True) -> ReplayResult:
    recorded = read_trace(path)
    with replay_endpoint(path, until, recorded=recorded) as backend:
        return replay_result(backend, recorded, until, report)


def replay_result(backend: Backend, recorded: Trace, until: int | None, report: bool = True) -> ReplayResult:
    """What a replay endpoint that is done did, against the recording (and the demo stages' report)."""
    schedule = backend.control.schedule()
    replayed = parse_trace(backend.control.trace(), f"the replay of {recorded.path}")
    difference = first_difference(recorded, replayed, until)
    return ReplayResult(recorded, replayed, schedule, difference, demo_report(backend) if report else {})


# -- scripted inputs ---------------------------------------------------------------------------------


class Script:
    """boto3 calls captured as recorded requests (docs/formats.md) instead of being sent.

    script = Script(target)
    script.client("kinesis").put_records(...)       # returns {}: nothing was sent
    control.submit_inputs(script.requests, script.blobs)
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.requests: list[dict[str, Any]] = []
        self.blobs: dict[str, bytes] = {}
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            client = self.backend.client(service)
            client.meta.events.register("before-send", self._capture)
            self._clients[service] = client
        return self._clients[service]

    def settle(self) -> None:
        """What follows is admitted only once everything before has settled (nothing can run, no timer)."""
        self.requests.append({"settle": True})

    def add_state(self, archive: bytes) -> None:
        """Load a saved state (the archive travels as a blob), and let it settle before what follows."""
        digest = hashlib.sha256(archive).hexdigest()
        self.blobs[digest] = archive
        self.requests.append(control_request("POST", "/_esjoin/state/load", {"$blob": digest}, "application/zip"))
        self.settle()

    def control(self, method: str, path: str, document: dict[str, Any] | None = None) -> None:
        """A control API call (a fault rule, a pause) at its place in the script."""
        self.requests.append(control_request(method, path, json.dumps(document) if document is not None else ""))

    def _capture(self, request: Any, **_: Any) -> AWSResponse:
        url = urlsplit(request.url)
        headers = {}
        for name, value in request.headers.items():
            key = name.lower()
            if key in DROPPED or key.startswith(DROPPED_PREFIXES):
                continue
            headers[key] = value.decode() if isinstance(value, bytes) else value
        authorization = request.headers.get("Authorization", b"")
        authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
        scope = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else body.read()
        recorded: dict[str, Any] = {
            "method": request.method,
            "path": url.path or "/",
            "query": url.query,
            "host": SCRIPT_HOST,
            "headers": dict(sorted(headers.items())),
            "signed": len(scope) >= 5,
        }
        if len(scope) >= 5:
            recorded["region"], recorded["service"] = scope[2], scope[3]
        recorded["body"] = recorded_body(body, self.blobs)  # function code and big bodies as blobs, as a trace has them
        self.requests.append(recorded)
        return AWSResponse(request.url, 200, {}, _Raw(b"{}"))


def control_request(method: str, path: str, body: Any, content_type: str = "application/json") -> dict[str, Any]:
    """A recorded request for the control API (unsigned, as the control API takes them)."""
    return {
        "method": method,
        "path": path,
        "query": "",
        "host": SCRIPT_HOST,
        "headers": {"content-type": content_type},
        "signed": False,
        "body": body,
    }


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data

    def read(self, *_: Any) -> bytes:
        return self._data


# -- the demo stack's report ---------------------------------------------------------------------------


def demo_stages(backend: Backend) -> list[str]:
    """The demo stages on an endpoint: tables named esjoin-<stage>-views."""
    names: list[str] = []
    for page in backend.client("dynamodb").get_paginator("list_tables").paginate():
        names.extend(page["TableNames"])
    return sorted(n[len("esjoin-") : -len("-views")] for n in names if n.startswith("esjoin-") and n.endswith("-views"))


def demo_report(backend: Backend) -> dict[str, list[str]]:
    """Per demo stage: what `assert_converged` would say (views against the oracle, events lost)."""
    from esjoin.testing.capture import capture
    from esjoin.testing.checks import differences, snapshot_accounting_errors
    from esjoin.testing.pipeline import EventLog, Pipeline

    report: dict[str, list[str]] = {}
    target = backend.target
    for stage in demo_stages(backend):
        outputs = stage_outputs(target, stage)
        log = EventLog()
        bundle = capture(target, outputs.stream["name"])
        for records in bundle.document["shards"].values():
            for record in records:
                try:
                    log.record([json.loads(base64.b64decode(record["data"]))], "stream")
                except ValueError:
                    continue  # poison: the pipeline sends it to the failure queue
        pipeline = Pipeline(backend, outputs, log)
        users = log.users()
        problems = differences(pipeline, users) + snapshot_accounting_errors(pipeline, users)
        report[stage] = problems or [f"converged: {len(users)} users, {len(log.sent)} events, nothing lost"]
    return report


def stage_outputs(target: Target, stage: str) -> Any:
    """A deployed stage's outputs, read from the endpoint (nothing changes)."""
    from infra.bootstrap import read_outputs
    from infra.settings import StackSettings
    from infra.stack import build_stack

    settings = StackSettings.from_env(environ={}, overrides={"stage": stage, "region": target.region})
    infra_log = logging.getLogger("infra")
    level = infra_log.level
    infra_log.setLevel(logging.ERROR)  # a test stage's settings are not the defaults: no "drifted" lines
    try:
        return read_outputs(build_stack(settings), target)
    finally:
        infra_log.setLevel(level)


def trace_summary(trace: Trace) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for entry in trace.entries:
        kind = next((k for k in ("grant", "advance", "response", "delivery", "fault", "blob") if k in entry), "other")
        counts[kind] = counts.get(kind, 0) + 1
    return {"seed": trace.seed, "steps": trace.last_step, **counts}
