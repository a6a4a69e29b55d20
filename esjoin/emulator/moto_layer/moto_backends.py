"""moto, in this process: its WSGI app for the wire protocol, its backends for the pollers, and the
lock that makes every request to it linearizable.

moto's models are not safe under thread switching: two `attribute_not_exists` conditional puts on
one key were both seen to win with a small `sys.setswitchinterval`. Every moto request and every
direct backend access therefore runs under `MotoBackends.lock()` (alone) or `request_lock()` (beside
requests for other tables and services only; see esjoin.emulator.moto_layer.lock). The lock is never
held while waiting (SQS long polls wait outside it, see `esjoin.emulator.moto_layer.sqs_long_poll`) nor across a call
to a function, so a function's own calls back into the endpoint cannot deadlock.
"""

from __future__ import annotations

import contextlib
import functools
import os
from contextlib import AbstractContextManager
from typing import Any

from esjoin.emulator.config import EmulatorConfig
from esjoin.emulator.moto_layer.dispatch import MotoDispatch
from esjoin.emulator.moto_layer.lock import MotoLock
from esjoin.emulator.moto_layer.notifier import ChangeNotifier

# The services moto serves behind the gateway; Lambda is ours (esjoin.emulator.lambda_service).
MOTO_SERVICES = ("kinesis", "dynamodb", "dynamodbstreams", "sqs", "logs", "iam", "sts", "cloudwatch")
# Services whose requests touch only their own backend in moto (Logs does not: a subscription filter
# writes to Kinesis), each serialised with itself alone.
SHARED_SERVICES = frozenset({"kinesis", "sqs"})
# DynamoDB operations that touch one table (its items, indexes and stream shard) and nothing else.
DYNAMODB_TABLE_OPERATIONS = frozenset(
    {"PutItem", "GetItem", "UpdateItem", "DeleteItem", "Query", "Scan", "DescribeTable"}
)


class MotoBackends:
    def __init__(self, config: EmulatorConfig, notifier: ChangeNotifier) -> None:
        # moto reads the account for every request from here (it would otherwise use 123456789012).
        os.environ["MOTO_ACCOUNT_ID"] = config.account_id
        os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        from esjoin.emulator.moto_layer import fixes as moto_fixes

        moto_fixes.apply(notifier)
        self.account_id = config.account_id
        self.notifier = notifier
        self.app = DomainDispatcherApplication(create_backend_app)
        # moto resolves the backend for every request by listing its own package directory (a
        # listdir and ~200 isdir calls) and matching URL patterns: about 0.5 ms a request, measured.
        # The answer depends only on the host it is given, so remember it.
        self.app.get_backend_for_host = functools.lru_cache(maxsize=1024)(self.app.get_backend_for_host)
        self.serve = MotoDispatch(self.app)
        """moto's WSGI app, as the gateway calls it (esjoin.emulator.moto_layer.dispatch). Call under `lock()`."""
        self._lock: MotoLock | None = MotoLock() if config.serialize_writes else None

    def close(self) -> None:
        """This endpoint stopped: no more write notifications for it."""
        from esjoin.emulator.moto_layer import fixes as moto_fixes

        moto_fixes.release(self.notifier)

    def lock(self) -> AbstractContextManager[Any]:
        """Hold while touching moto: nothing else runs in it meanwhile. A no-op when
        ESJOIN_SERIALIZE_WRITES=0 (to show the races).

        A context object, not a generator-based context manager: this is taken for every request and
        every poll (the generator was 2 % of the endpoint's time under the pipeline benchmark)."""
        return self._lock.exclusive() if self._lock is not None else contextlib.nullcontext()

    def request_lock(
        self, service: str, operation: str, region: str, document: Any, target_service: str | None = None
    ) -> AbstractContextManager[Any]:
        """The lock one AWS request needs (esjoin.emulator.moto_layer.lock): a DynamoDB item operation on one table,
        and any Kinesis or SQS request, share moto with other tables and services; the rest is exclusive."""
        if self._lock is None:
            return contextlib.nullcontext()
        if target_service is not None and target_service != service:
            return self._lock.exclusive()  # signed for one service, routed by moto to another: serialise it
        if service in SHARED_SERVICES:
            return self._lock.shared(service)
        if service == "dynamodb" and operation in DYNAMODB_TABLE_OPERATIONS and isinstance(document, dict):
            table = document.get("TableName")
            if isinstance(table, str) and table:
                return self._lock.shared(f"dynamodb:{region}:{table.rsplit('table/', 1)[-1]}")
        return self._lock.exclusive()

    def lock_for(self, arn: str) -> AbstractContextManager[Any]:
        """The lock a direct reader of one source needs (pollers, on-failure destinations): a Kinesis
        stream or SQS queue shares with its service, a DynamoDB stream with its table, as the requests
        for them do (`request_lock`). So a poller never takes the exclusive lock, and a long Scan of one
        table holds up neither the pollers of others nor, through them, other tables' requests."""
        if self._lock is None:
            return contextlib.nullcontext()
        parts = arn.split(":", 5)
        if len(parts) == 6 and parts[2] in SHARED_SERVICES:
            return self._lock.shared(parts[2])
        if len(parts) == 6 and parts[2] == "dynamodb" and parts[5].startswith("table/"):
            return self._lock.shared(f"dynamodb:{parts[3]}:{parts[5].split('/')[1]}")
        return self._lock.exclusive()

    def log_delivery_lock(self) -> AbstractContextManager[Any]:
        """A function's log lines going into CloudWatch Logs: the `logs` key, shared with other services'
        requests but never with a Logs API request (those take the exclusive lock: a subscription filter
        writes to Kinesis). Log groups of functions carry no subscription filter here."""
        return self._lock.shared("logs") if self._lock is not None else contextlib.nullcontext()

    def account_state(self) -> dict[str, dict[str, Any]]:
        """This account's backends of every service, per region (for a state save; call under `lock()`)."""
        return {
            service: dict(backends[self.account_id])
            for service, backends in _backend_dicts().items()
            if self.account_id in backends
        }

    def restore_account_state(self, state: dict[str, dict[str, Any]]) -> None:
        """Put saved backends in place of this account's (for a state load; call under `lock()`)."""
        from esjoin.emulator.moto_layer import fixes

        for service, backends in _backend_dicts().items():
            regions = backends[self.account_id]
            regions.clear()
            regions.update(state.get(service, {}))
        fixes.continue_kinesis_sequence(state.get("kinesis", {}))

    def warm_up(self) -> None:
        """Create moto's per-service apps now, so the first real request is not the slow one."""
        for service in MOTO_SERVICES:
            with self.app.lock:
                if service not in self.app.app_instances:
                    self.app.app_instances[service] = self.app.create_app(service)  # type: ignore[arg-type]

    # Backends, for in-process readers (pollers, log delivery). Call them under `lock()`.
    def kinesis(self, region: str) -> Any:
        from moto.kinesis.models import kinesis_backends

        return kinesis_backends[self.account_id][region]

    def dynamodb(self, region: str) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[self.account_id][region]

    def dynamodbstreams(self, region: str) -> Any:
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        return dynamodbstreams_backends[self.account_id][region]

    def sqs(self, region: str) -> Any:
        from moto.sqs.models import sqs_backends

        return sqs_backends[self.account_id][region]

    def logs(self, region: str) -> Any:
        from moto.logs.models import logs_backends

        return logs_backends[self.account_id][region]


def _backend_dicts() -> dict[str, Any]:
    """moto's BackendDict of each service the endpoint serves."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodbstreams.models import dynamodbstreams_backends
    from moto.iam.models import iam_backends
    from moto.kinesis.models import kinesis_backends
    from moto.logs.models import logs_backends
    from moto.sqs.models import sqs_backends
    from moto.sts.models import sts_backends

    return {
        "kinesis": kinesis_backends,
        "dynamodb": dynamodb_backends,
        "dynamodbstreams": dynamodbstreams_backends,
        "sqs": sqs_backends,
        "logs": logs_backends,
        "iam": iam_backends,
        "sts": sts_backends,
        "cloudwatch": cloudwatch_backends,
    }
