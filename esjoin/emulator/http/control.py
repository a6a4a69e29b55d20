"""The control API under /_esjoin/: what tests need beyond AWS. Documented in the README.

GET    /_esjoin/health                       200 {"status": "ready", ...} once serving (503 before)
GET    /_esjoin/ui[/...]                     the live console and its JSON (esjoin/emulator/console/routes.py)
GET    /_esjoin/quiescence                   {"quiescent": bool, ...}: no mapping has work pending,
                                             nothing in flight, no async invocation queued
GET    /_esjoin/history?function=&mapping=&since=&limit=   invocations, oldest first
DELETE /_esjoin/history
GET    /_esjoin/faults                       the active fault rules
POST   /_esjoin/faults                       add one: {"function" | "operation" (+ "service"?),
                                             "action": "error"|"delay", "count"?, "delaySeconds"?,
                                             "match"?, "errorType"?, "errorMessage"?, "statusCode"?}
                                             -> 201 the rule (with its id); see esjoin/emulator/aids/faults.py
DELETE /_esjoin/faults[/<id>]                remove one or all
GET    /_esjoin/mappings[/<uuid>]            mapping configuration + engine status (checkpoints, lag)
POST   /_esjoin/mappings/<uuid>/pause|resume stop/restart delivery without changing State
POST   /_esjoin/mappings/<uuid>/duplicate    {"count": n}: deliver the next n batches twice
GET    /_esjoin/code/<region>/<function>.zip  the function's code (GetFunction's Code.Location)
POST   /_esjoin/state/reset                  empty everything (functions, mappings, streams, tables,
                                             queues, history, faults) without a restart
POST   /_esjoin/state/save                   the whole state, as an archive (esjoin/emulator/state_archive.py)
POST   /_esjoin/state/load                   body: an archive; the endpoint becomes what it describes
GET    /_esjoin/trace                        deterministic mode: the trace so far (gzip JSON lines, docs/formats.md)
GET    /_esjoin/schedule                     deterministic mode: seed, step, virtual clock, actors, divergence
POST   /_esjoin/schedule/inputs              deterministic mode: {"requests": [recorded requests, or {"settle":
                                             true}: what follows waits until all before has settled], "blobs":
                                             {sha256: base64}}: outside requests the seed admits, in order
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from esjoin.emulator.aids.faults import FaultError
from esjoin.emulator.aids.schedule import SETTLE, Scheduler
from esjoin.emulator.console.routes import Console
from esjoin.emulator.http.scheduled import blob_references
from esjoin.emulator.invocation import LambdaServiceError

if TYPE_CHECKING:
    from esjoin.emulator.server import Emulator

MAPPING_ACTION = re.compile(r"^/_esjoin/mappings/(?P<uuid>[^/]+)/(?P<action>pause|resume|duplicate)$")
MAPPING = re.compile(r"^/_esjoin/mappings/(?P<uuid>[^/]+)$")
FAULT = re.compile(r"^/_esjoin/faults/(?P<id>[^/]+)$")
CODE = re.compile(r"^/_esjoin/code/(?P<region>[^/]+)/(?P<name>[^/]+)\.zip$")


class ControlApi:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.console = Console(emulator)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except LambdaServiceError as error:
            response = reply({"error": error.code, "message": error.message}, error.status)
        except (FaultError, ValueError) as error:  # StateError is a ValueError: a bad state file
            response = reply({"error": "BadRequest", "message": str(error)}, 400)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path, method = request.path.rstrip("/"), request.method
        emulator = self.emulator
        if path == "/_esjoin/health":
            return reply(emulator.health(), 200 if emulator.ready else 503)
        if path == "/_esjoin/ui" or path.startswith("/_esjoin/ui/"):
            return self.console.dispatch(request)
        if path == "/_esjoin/quiescence" and method == "GET":
            return reply(emulator.quiescence())
        if path == "/_esjoin/history":
            if method == "DELETE":
                emulator.history.clear()
                return reply({"cleared": True})
            records = emulator.history.query(
                function=request.args.get("function"),
                mapping=request.args.get("mapping"),
                since_id=int(request.args.get("since") or 0),
                limit=int(request.args["limit"]) if request.args.get("limit") else None,
            )
            return reply({"invocations": [r.to_api() for r in records], "lastId": emulator.history.last_id()})
        if path == "/_esjoin/faults":
            if method == "POST":
                return reply(emulator.faults.add(body(request)).to_api(), 201)
            if method == "DELETE":
                return reply({"removed": emulator.faults.remove()})
            return reply({"faults": [rule.to_api() for rule in emulator.faults.list()]})
        if match := FAULT.match(path):
            if method != "DELETE":
                return reply({"error": "MethodNotAllowed", "message": "DELETE a fault rule by id"}, 405)
            removed = emulator.faults.remove(match["id"])
            return reply({"removed": removed}, 200 if removed else 404)
        if path == "/_esjoin/mappings":
            statuses = []
            for uuid in list(emulator.lambda_backend.mappings):
                try:
                    statuses.append(self.mapping_status(uuid))
                except LambdaServiceError:  # deleted while we were listing
                    continue
            return reply({"mappings": statuses})
        if match := MAPPING_ACTION.match(path):
            if method != "POST":
                return reply({"error": "MethodNotAllowed", "message": f"POST to {path}"}, 405)
            uuid, action = match["uuid"], match["action"]
            emulator.lambda_backend.get_event_source_mapping(uuid)  # 404 if unknown
            engine = emulator.lambda_backend.engine
            if action == "pause":
                engine.pause(uuid)
            elif action == "resume":
                engine.resume(uuid)
            else:
                count = body(request).get("count", 1)
                if not isinstance(count, int) or count < 1:
                    raise ValueError("'count' must be a positive integer")
                engine.duplicate_next(uuid, count)
            return reply(self.mapping_status(uuid))
        if match := MAPPING.match(path):
            return reply(self.mapping_status(match["uuid"]))
        if path in ("/_esjoin/state/save", "/_esjoin/state/load") and method != "POST":
            return reply({"error": "MethodNotAllowed", "message": f"POST to {path}"}, 405)
        if path == "/_esjoin/state/save":
            return Response(emulator.save_state(), content_type="application/zip")
        if path == "/_esjoin/state/load":
            return reply(emulator.load_state(request.get_data(), request.args.get("source") or "the state file"))
        if path == "/_esjoin/state/reset":
            if method != "POST":
                return reply({"error": "MethodNotAllowed", "message": "POST to reset the endpoint's state"}, 405)
            return reply(emulator.reset_state())
        if path in ("/_esjoin/trace", "/_esjoin/schedule", "/_esjoin/schedule/inputs"):
            scheduler = emulator.scheduler
            if scheduler is None:
                return reply(
                    {"error": "NotDeterministic", "message": "start the endpoint with a seed (ESJOIN_SEED, --seed)"},
                    409,
                )
            if path == "/_esjoin/schedule/inputs":
                if method != "POST":
                    return reply({"error": "MethodNotAllowed", "message": f"POST to {path}"}, 405)
                return reply({"submitted": scheduler_inputs(scheduler, body(request))}, 202)
            if path == "/_esjoin/schedule":
                return reply(scheduler.status())
            return Response(scheduler.trace.compressed(), content_type="application/gzip")
        if match := CODE.match(path):
            function, _ = emulator.lambda_backend.resolve(match["name"], match["region"])
            return Response(function.zip_path.read_bytes(), content_type="application/zip")
        return reply(
            {"error": "NotFound", "message": f"no control API at {method} {path}; see emulator/control.py"}, 404
        )

    def mapping_status(self, uuid: str) -> dict[str, Any]:
        backend = self.emulator.lambda_backend
        mapping = backend.get_event_source_mapping(uuid)
        return {**mapping.to_api(), "engine": backend.engine.status(uuid)}


def body(request: Request) -> dict[str, Any]:
    data = request.get_data()
    if not data:
        return {}
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ValueError(f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("the body must be a JSON object")
    return document


def reply(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document, default=str), status=status, content_type="application/json")


def scheduler_inputs(scheduler: Scheduler, document: dict[str, Any]) -> int:
    """Check and submit scripted requests (recorded-request dicts, docs/formats.md) with their blobs."""
    requests, encoded = document.get("requests"), document.get("blobs") or {}
    if not isinstance(requests, list) or not all(
        (isinstance(r, dict) and "method" in r) or r == {"settle": True} for r in requests
    ):
        raise ValueError(
            "'requests' must be a list of recorded requests (objects with method, path, body, ...) "
            'and {"settle": true} markers'
        )
    if scheduler.divergence is not None or scheduler.status()["following"]:
        raise ValueError("this endpoint is replaying a trace: it takes no new inputs")
    try:
        blobs = {digest: base64.b64decode(data, validate=True) for digest, data in encoded.items()}
    except (TypeError, ValueError, AttributeError):
        raise ValueError("'blobs' must map SHA-256 digests to base64 data") from None
    for request in requests:
        missing = [d for d in blob_references(request) if d not in blobs]
        if missing:
            raise ValueError(f"a request names blob {missing[0][:12]}... that 'blobs' does not hold")
    scheduler.submit(
        [
            SETTLE if request == {"settle": True} else (request, {d: blobs[d] for d in blob_references(request)})
            for request in requests
        ]
    )
    return len(requests)
