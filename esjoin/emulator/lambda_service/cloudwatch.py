"""Function output to CloudWatch Logs (moto's, in this process), so `aws logs tail /aws/lambda/<fn>`
and FilterLogEvents work as on AWS: log group `/aws/lambda/<name>`, one stream per worker."""

from __future__ import annotations

import contextlib
import logging

from esjoin.emulator.invocation import FunctionSpec
from esjoin.emulator.moto_layer.moto_backends import MotoBackends

log = logging.getLogger("esjoin.lambda")


class CloudWatchLogSink:
    def __init__(self, moto: MotoBackends) -> None:
        self._moto = moto

    def put(self, spec: FunctionSpec, log_stream: str, events: list[tuple[int, str]]) -> None:
        if not events:
            return
        from moto.logs.exceptions import ResourceAlreadyExistsException

        ordered = sorted(events, key=lambda event: event[0])  # PutLogEvents wants chronological order
        try:
            with self._moto.log_delivery_lock():
                backend = self._moto.logs(spec.region)
                if spec.log_group not in backend.groups:
                    backend.create_log_group(spec.log_group, tags={})
                group = backend.groups[spec.log_group]
                if log_stream not in group.streams:
                    with contextlib.suppress(ResourceAlreadyExistsException):
                        backend.create_log_stream(spec.log_group, log_stream)
                backend.put_log_events(
                    spec.log_group, log_stream, [{"timestamp": ts, "message": message} for ts, message in ordered]
                )
        except Exception:  # logs are best effort: never fail an invocation over them
            log.warning(
                "could not deliver %d log event(s) of %s to CloudWatch Logs", len(events), spec.name, exc_info=True
            )
