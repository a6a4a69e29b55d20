"""The console's routes, under /_esjoin/ui (behind the endpoint's request guard, like the control API):

GET  /_esjoin/ui                          the page (static/index.html)
GET  /_esjoin/ui/static/<file>            its script and style, from the package (no CDN, no build step)
GET  /_esjoin/ui/api/graph                resources, mappings, functions and their live figures
GET  /_esjoin/ui/api/invocations?since=&limit=   the timeline, from a history cursor
GET  /_esjoin/ui/api/invocations/<id>     one invocation: decoded records, response, failures, log
GET  /_esjoin/ui/api/failures             failure and dead-letter queues' messages, decoded
POST /_esjoin/ui/api/failures/replay      {"queue": arn, "messageId": id}: back to its source
GET  /_esjoin/ui/api/tables[/<name>?limit=&start=&key=]     tables, and a table's items by page
GET  /_esjoin/ui/api/streams[/<name>?shard=&after=&limit=&key=]   streams, and a shard's records
GET  /_esjoin/ui/api/users/<id>           the demo: a user's rows next to the oracle's fold of their events
GET  /_esjoin/ui/api/changes              {"lastId", "quiescent"}: the page polls it twice a second and
                                          refreshes its view when either moves (the endpoint's server
                                          answers whole responses, so polling rather than server-sent events)

Controls (faults, pause and resume) are the control API's own routes, called by the page.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from esjoin.emulator.console.api import MAX_PAGE, ConsoleData, ConsoleError, page_size

if TYPE_CHECKING:
    from esjoin.emulator.server import Emulator

PREFIX = "/_esjoin/ui"
STATIC = {"index.html": "text/html", "console.js": "text/javascript", "console.css": "text/css"}
SECURITY_HEADERS = {
    # Scripts and styles from the endpoint only (no inline code), no framing: the page has buttons.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
INVOCATION = re.compile(rf"^{PREFIX}/api/invocations/(?P<id>\d+)$")
TABLE = re.compile(rf"^{PREFIX}/api/tables/(?P<name>[^/]+)$")
STREAM = re.compile(rf"^{PREFIX}/api/streams/(?P<name>[^/]+)$")
USER = re.compile(rf"^{PREFIX}/api/users/(?P<id>[^/]+)$")
DEMO_TABLES = ("views", "events", "snapshots")


class Console:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.data = ConsoleData(emulator)

    def dispatch(self, request: Request) -> Response:
        try:
            response = self._dispatch(request)
        except ConsoleError as error:
            response = reply(
                {"error": "BadRequest" if error.status == 400 else "Console", "message": str(error)}, error.status
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    def _dispatch(self, request: Request) -> Response:
        path, method, args = request.path.rstrip("/"), request.method, request.args
        data = self.data
        if path == PREFIX:
            return static("index.html")
        if path.startswith(f"{PREFIX}/static/"):
            return static(path.rsplit("/", 1)[-1])
        if method not in ("GET", "HEAD") and path != f"{PREFIX}/api/failures/replay":
            raise ConsoleError(f"{method} is not served at {path}", 405)
        if path == f"{PREFIX}/api/graph":
            return reply(data.graph())
        if path == f"{PREFIX}/api/invocations":
            return reply(
                data.invocations(number(args.get("since"), "since"), page_size(args.get("limit") or str(MAX_PAGE)))
            )
        if match := INVOCATION.match(path):
            return reply(data.invocation(int(match["id"])))
        if path == f"{PREFIX}/api/failures":
            return reply(data.failures())
        if path == f"{PREFIX}/api/failures/replay":
            if method != "POST":
                raise ConsoleError("POST {queue, messageId} to replay a failure", 405)
            document = json_body(request)
            return reply(data.replay(str(document.get("queue") or ""), str(document.get("messageId") or "")))
        if path == f"{PREFIX}/api/tables":
            return reply({"tables": data.tables()})
        if match := TABLE.match(path):
            return reply(
                data.table_items(match["name"], page_size(args.get("limit")), args.get("start"), args.get("key"))
            )
        if path == f"{PREFIX}/api/streams":
            return reply({"streams": data.streams()})
        if match := STREAM.match(path):
            after = args.get("after")
            if after is not None and not after.isdigit():
                raise ConsoleError("after must be a sequence number")
            return reply(
                data.stream_records(
                    match["name"], args.get("shard"), after, page_size(args.get("limit")), args.get("key")
                )
            )
        if match := USER.match(path):
            return reply(data.user(match["id"], self.demo_tables()))
        if path == f"{PREFIX}/api/changes":
            history = self.emulator.history
            return reply({"lastId": history.last_id(), "quiescent": self.emulator.quiescence().get("quiescent")})
        raise ConsoleError(f"nothing at {path}", 404)

    def demo_tables(self) -> dict[str, str]:
        """The demo stack's tables, by the role their name ends with (esjoin-<stage>-views, ...)."""
        names = [table["name"] for table in self.data.tables()]
        return {role: name for role in DEMO_TABLES for name in names if name.endswith(f"-{role}")}


def static(name: str) -> Response:
    if name not in STATIC:
        raise ConsoleError(f"no console file {name!r}", 404)
    content = resources.files("esjoin.emulator.console").joinpath("static", name).read_bytes()
    return Response(content, content_type=f"{STATIC[name]}; charset=utf-8")


def reply(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document, default=str), status=status, content_type="application/json")


def number(value: str | None, name: str) -> int:
    if not value:
        return 0
    if not value.isdigit():
        raise ConsoleError(f"{name} must be a non-negative number, not {value!r}")
    return int(value)


def json_body(request: Request) -> dict[str, Any]:
    try:
        document = json.loads(request.get_data() or b"{}")
    except ValueError:
        raise ConsoleError("the body must be JSON") from None
    if not isinstance(document, dict):
        raise ConsoleError("the body must be a JSON object")
    return document
