"""The embedded endpoint, assembled: moto, our Lambda service, the control API, behind one port.

    emulator = Emulator(EmulatorConfig.from_env())
    emulator.start()        # binds 127.0.0.1:4566, serves in background threads, returns when ready
    ...
    emulator.stop()         # stops the pollers, the function workers and the server
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from emulator.config import EmulatorConfig
from emulator.control import ControlApi
from emulator.faults import FaultInjector
from emulator.gateway import Gateway
from emulator.history import InvocationHistory
from emulator.lambda_service.models import LambdaBackend
from emulator.lambda_service.responses import LambdaResponses
from emulator.moto_backends import MOTO_SERVICES, MotoBackends
from emulator.notifier import ChangeNotifier

log = logging.getLogger("esjoin.emulator")
VERSION = "0.1.0"


class QuietRequestHandler(WSGIRequestHandler):
    """HTTP/1.1 keep-alive (boto3 reuses connections) and request lines only at DEBUG."""

    protocol_version = "HTTP/1.1"

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s", self.command, self.path, code)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.ready = False
        self.started_at: float | None = None
        self.notifier = ChangeNotifier()
        self.moto = MotoBackends(config, self.notifier)
        self.history = InvocationHistory(config.history_size)
        self.faults = FaultInjector()
        self.lambda_backend = LambdaBackend(config, self.moto, self.history, self.faults)
        self.gateway = Gateway(self.moto, LambdaResponses(self.lambda_backend, config.region),
                               ControlApi(self), config.region, self.faults)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def endpoint_url(self) -> str:
        return self.config.endpoint_url

    def start(self) -> None:
        """Bind, serve in the background, warm moto up; returns once /_esjoin/health says ready."""
        t0 = time.monotonic()
        try:
            self._server = make_server(self.config.host, self.config.port, self.gateway, threaded=True,
                                       request_handler=QuietRequestHandler)
        except OSError as error:
            raise RuntimeError(f"cannot listen on {self.config.host}:{self.config.port}: {error}. Is another "
                               "endpoint (esjoin, LocalStack) already running? `make down` stops ours; "
                               "ESJOIN_PORT picks another port.") from error
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="esjoin-http", daemon=True)
        self._thread.start()
        self.moto.warm_up()
        self.started_at = time.time()
        self.ready = True
        log.info("esjoin endpoint ready on %s in %.2f s", self.endpoint_url, time.monotonic() - t0)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.ready = False
        self.lambda_backend.shutdown()
        self.moto.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait(self) -> None:
        """Block until stop() is called (from a signal handler, say)."""
        self._stopped.wait()

    def health(self) -> dict[str, Any]:
        services = dict.fromkeys(MOTO_SERVICES, "running" if self.ready else "starting")
        services["lambda"] = "running" if self.ready else "starting"
        return {
            "status": "ready" if self.ready else "starting",
            "version": VERSION,
            "endpoint": self.endpoint_url,
            "region": self.config.region,
            "accountId": self.config.account_id,
            "timing": self.config.timing,
            "serializeWrites": self.config.serialize_writes,
            "uptimeSeconds": round(time.time() - self.started_at, 3) if self.started_at else 0,
            "services": services,
        }

    def quiescence(self) -> dict[str, Any]:
        """Nothing left to do: every mapping idle, no invocation running, no async event queued.

        Activity is read before and after the mappings: an invocation that started in between (and
        may have written to a stream the mappings were already checked for) makes the answer "no".
        """
        engine = self.lambda_backend.engine
        before = self.lambda_backend.activity()
        mappings_idle = {uuid: engine.is_idle(uuid) for uuid in list(self.lambda_backend.mappings)}
        engine_idle = engine.is_idle()
        after = self.lambda_backend.activity()
        quiescent = (engine_idle and before == after and after["inFlight"] == 0 and after["asyncPending"] == 0)
        return {"quiescent": quiescent, "mappingsIdle": mappings_idle, **after}
