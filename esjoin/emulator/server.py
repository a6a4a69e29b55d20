"""The embedded endpoint, assembled: moto, our Lambda service, the control API, behind one port.

emulator = Emulator(EmulatorConfig.from_env())
emulator.start()        # binds 127.0.0.1:4566, serves in background threads, returns when ready
...
emulator.stop()         # stops the pollers, the function workers and the server
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
import threading
import time
from typing import Any

from esjoin.emulator.aids.faults import FaultInjector
from esjoin.emulator.aids.history import InvocationHistory
from esjoin.emulator.aids.schedule import Follow, Scheduler
from esjoin.emulator.aids.trace import Trace
from esjoin.emulator.config import EmulatorConfig
from esjoin.emulator.http.control import ControlApi
from esjoin.emulator.http.endpoint_server import EndpointServer
from esjoin.emulator.http.gateway import Gateway
from esjoin.emulator.http.guard import RequestGuard
from esjoin.emulator.http.scheduled import ScheduledGateway
from esjoin.emulator.lambda_service.models import LambdaBackend
from esjoin.emulator.lambda_service.responses import LambdaResponses
from esjoin.emulator.moto_layer.moto_backends import MOTO_SERVICES, MotoBackends
from esjoin.emulator.moto_layer.notifier import ChangeNotifier
from esjoin.emulator.state_lock import StateDirLock

log = logging.getLogger("esjoin.emulator")
VERSION = "0.1.0"


class Emulator:
    """The endpoint. Nothing on disk is touched before `start()` has bound the port and locked the state
    directory (esjoin.emulator.state_lock): a second start on a busy port or a used state directory fails and
    leaves the running endpoint's functions and checkpoints alone."""

    def __init__(self, config: EmulatorConfig | None = None, **settings: Any) -> None:
        """`config`, or EmulatorConfig.from_env(**settings): the ESJOIN_* variables, then these keywords
        (`Emulator(port=0)`: any free port; `endpoint_url` says which once started)."""
        config = config if config is not None else EmulatorConfig.from_env(**settings)
        self.config = config
        self.ready = False
        self.started_at: float | None = None
        self.notifier = ChangeNotifier()
        self.moto = MotoBackends(config, self.notifier)
        self.history = InvocationHistory(config.history_size)
        self.faults = FaultInjector()
        self.guard = RequestGuard(
            port=config.port, allowed_hosts=config.allowed_hosts, allowed_origins=config.allowed_origins
        )
        self.scheduler = (
            Scheduler(
                config.seed,
                clock_start_ms=config.clock_start_ms,
                pace=config.pace,
                header={"esjoin": VERSION, "moto": moto_version()},
            )
            if config.seed is not None
            else None
        )  # deterministic mode (aids/schedule.py); None: fast mode, which pays nothing for it
        self._replaying: tuple[Trace, int | None] | None = None
        self.lambda_backend: LambdaBackend | None = None  # built by start(), once the state dir is ours
        self.gateway: Gateway | None = None
        self._state_lock = StateDirLock(config.state_dir)
        self._server: EndpointServer | None = None
        self._thread: threading.Thread | None = None
        self._warm_up: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def endpoint_url(self) -> str:
        return self.config.endpoint_url

    def start(self, freeze_gc: bool = False) -> None:
        """Bind and serve in the background; returns once /_esjoin/health says ready.

        What only makes first requests faster (moto's per-service apps, which moto would otherwise
        create on a service's first request, and the Lambda runtime's site directory) is prepared in
        the background after that: about half a second less to ready, measured (bench/, "emulator").

        `freeze_gc` (`python -m esjoin.emulator` sets it): once warmed up, move every object alive to the
        garbage collector's permanent generation (gc.freeze), so a full collection no longer walks
        the ~110,000 objects of moto, boto3 and botocore's models (0.07 s a collection, measured);
        and again after every full collection, so the next one walks only what is newer. moto keeps
        every stream record and item in memory: at 50,000 items a full collection stopped the whole
        endpoint for 145-238 ms (bench/, "robustness"). The cost: a reference cycle among frozen
        objects is never collected (moto's models rarely form one; the endpoint's state is never
        freed before it stops anyway)."""
        t0 = time.monotonic()
        try:
            self._server = EndpointServer(
                self.config.host,
                self.config.port,
                self._serve,
                guard=self.guard,
                idle_timeout=self.config.idle_timeout_seconds,
                max_connections=self.config.max_connections,
            )
        except OSError as error:
            raise RuntimeError(
                f"cannot listen on {self.config.host}:{self.config.port}: {error}. Is another "
                "endpoint (esjoin, LocalStack) already running? `make down` stops ours; "
                "ESJOIN_PORT picks another port."
            ) from error
        if self.config.port == 0:  # the free port the system picked is the endpoint's from now on
            self.config = dataclasses.replace(self.config, port=self._server.server_address[1])
            self.guard = dataclasses.replace(self.guard, port=self.config.port)
            self._server.guard = self.guard
        try:
            self._state_lock.acquire()  # StateDirBusy (a RuntimeError) names the pid that holds it
        except BaseException:
            self._server.server_close()  # the port is free again at once, whoever forgets stop()
            self._server = None
            raise
        for stale in ("functions", "checkpoints"):  # state is in memory: what the last run left is unreadable
            shutil.rmtree(self.config.state_dir / stale, ignore_errors=True)
        if self.scheduler is not None:
            if self._replaying is not None:
                trace, until = self._replaying
                self.scheduler.follow(
                    Follow(trace.decisions(), until_step=until if until is not None else trace.last_step)
                )
                self.scheduler.replay_blobs = trace.blobs
            self.scheduler.start()
        self.lambda_backend = LambdaBackend(self.config, self.moto, self.history, self.faults, self.scheduler)
        self.gateway = Gateway(
            self.moto,
            LambdaResponses(self.lambda_backend, self.config.region),
            ControlApi(self),
            self.config.region,
            self.faults,
            self.guard,
            self.scheduler,
        )
        if self.scheduler is not None:
            self.gateway = ScheduledGateway(self.gateway, self.scheduler, self.endpoint_url)
            self.scheduler.run()
            self._prepare_first_requests(freeze_gc)  # nothing may run beside the schedule: warm up first
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="esjoin-http", daemon=True
        )
        self._thread.start()
        self.started_at = time.time()
        self.ready = True
        log.info("esjoin endpoint ready on %s in %.2f s", self.endpoint_url, time.monotonic() - t0)
        if self.scheduler is not None:
            return
        self._warm_up = threading.Thread(
            target=self._prepare_first_requests, args=(freeze_gc,), name="esjoin-warm-up", daemon=True
        )
        self._warm_up.start()

    def replay(self, trace: Trace, until: int | None = None) -> None:
        """Before start(): follow a recorded trace's decisions (the endpoint must have its seed), up to
        step `until` (default: the recording's last), then hold; aids/schedule.py."""
        if self.scheduler is None or self.scheduler.seed != trace.seed:
            raise ValueError(f"{trace.path}: replay needs an endpoint with the trace's seed ({trace.seed})")
        self._replaying = (trace, until)

    def _prepare_first_requests(self, freeze_gc: bool) -> None:
        try:
            self.moto.warm_up()
            self.lambda_backend.runtime.prepare()
        except Exception:  # only an optimisation: the first request does the same work itself
            log.warning("warming up failed; the first requests will do it", exc_info=True)
        if freeze_gc:
            gc.freeze()
            if _freeze_after_full_collection not in gc.callbacks:
                gc.callbacks.append(_freeze_after_full_collection)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.ready = False
        if self._warm_up is not None:
            self._warm_up.join(timeout=10)
        if self.scheduler is not None:
            self.scheduler.stop()  # from here on everything runs free, to wind up
        if self.lambda_backend is not None:
            self.lambda_backend.shutdown()
        self.moto.close()
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._state_lock.release()

    def _serve(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.gateway(environ, start_response)

    def __enter__(self) -> Emulator:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until stop() is called (from a signal handler, say)."""
        self._stopped.wait()

    def reset_state(self) -> dict[str, Any]:
        """Empty the endpoint without a restart (`POST /_esjoin/state/reset`): every mapping and function
        (workers killed, code and checkpoints removed), every stream, table, queue, log group and role
        (moto's own reset, as its `/moto-api/reset` does: for the whole process, so every endpoint in it),
        the invocation history and the fault rules. The port, the settings and the state directory stay."""
        assert self.lambda_backend is not None, "reset_state() before start()"
        removed = self.lambda_backend.reset()
        from moto.moto_api._internal.models import moto_api_backend

        with self.moto.lock():
            moto_api_backend.reset()
        self.history.clear()
        self.faults.remove()
        log.info("state reset: %s", removed)
        return {"reset": True, "removed": removed}

    def save_state(self) -> bytes:
        """The whole state as an archive (`POST /_esjoin/state/save`; esjoin.emulator.state_archive)."""
        from esjoin.emulator import state_archive

        return state_archive.save(self)

    def load_state(self, data: bytes, source: str = "the state file") -> dict[str, Any]:
        """Become what a saved archive describes, all or nothing (`POST /_esjoin/state/load`)."""
        from esjoin.emulator import state_archive

        return state_archive.load(self, data, source)

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
            "deterministic": None
            if self.scheduler is None
            else {"seed": self.scheduler.seed, "pace": self.scheduler.pace, "clockMs": self.scheduler.now_ms},
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
        quiescent = engine_idle and before == after and after["inFlight"] == 0 and after["asyncPending"] == 0
        document = {"quiescent": quiescent, "mappingsIdle": mappings_idle, **after}
        if self.scheduler is not None:  # and no actor can run, no timer is pending
            document["settled"] = self.scheduler.settled()
            document["quiescent"] = quiescent and document["settled"]
        return document


def _freeze_after_full_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def moto_version() -> str:
    from importlib.metadata import version

    return version("moto")
