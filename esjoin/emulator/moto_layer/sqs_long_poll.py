"""SQS ReceiveMessage long polling, done outside the moto lock.

moto implements WaitTimeSeconds by looping inside the request; under the endpoint's request lock that
would stall every other caller for up to 20 s. Instead each attempt asks moto with
WaitTimeSeconds=0 under the lock, and between attempts the request waits, without the lock, until a
message is sent to the queue (ChangeNotifier) or the next in-flight/delayed message is due.
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-short-and-long-polling.html
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

from esjoin.emulator.aids.schedule import Scheduler
from esjoin.emulator.moto_layer.moto_backends import MotoBackends

# Between attempts, wake at least this often to catch messages that become visible again (visibility
# timeout expired) or whose delay ended: those produce no notification.
RECHECK_SECONDS = 0.25

MotoCall = Callable[[dict[str, Any]], tuple[str, list[tuple[str, str]], bytes]]


@dataclass
class ReceiveRequest:
    protocol: str  # json | query
    params: dict[str, Any]
    queue_name: str | None
    wait_seconds: int | None  # None: the queue's ReceiveMessageWaitTimeSeconds applies

    def body_with_wait(self, wait: int) -> bytes:
        params = dict(self.params, WaitTimeSeconds=wait)
        if self.protocol == "json":
            return json.dumps(params).encode()
        return urlencode({k: str(v) for k, v in params.items()}).encode()


def parse_receive(environ: dict[str, Any], body: bytes) -> ReceiveRequest | None:
    """The ReceiveMessage request in `environ`, or None if this is not one."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        if target != "AmazonSQS.ReceiveMessage":
            return None
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            return None
        protocol = "json"
    else:
        params = dict(parse_qsl(body.decode(errors="replace"))) if body else {}
        params.update(parse_qsl(environ.get("QUERY_STRING", "")))
        if params.get("Action") != "ReceiveMessage":
            return None
        protocol = "query"
    url = params.get("QueueUrl") or environ.get("PATH_INFO", "")
    queue_name = urlparse(str(url)).path.rstrip("/").rsplit("/", 1)[-1] or None
    wait = params.get("WaitTimeSeconds")
    try:
        wait_seconds = None if wait is None else int(wait)
    except (TypeError, ValueError):
        return None  # let moto answer the validation error
    if wait_seconds is not None and not 0 <= wait_seconds <= 20:
        return None
    return ReceiveRequest(protocol, params, queue_name, wait_seconds)


def has_messages(protocol: str, body: bytes) -> bool:
    if protocol == "json":
        try:
            return bool(json.loads(body or b"{}").get("Messages"))
        except (ValueError, AttributeError):
            return False
    return b"<Message>" in body


def queue_wait_and_arn(moto: MotoBackends, region: str, queue_name: str | None) -> tuple[int, str | None]:
    """The queue's ReceiveMessageWaitTimeSeconds and ARN (0, None when it does not exist)."""
    if not queue_name:
        return 0, None
    with moto.lock_for(f"arn:aws:sqs:{region}:{moto.account_id}:{queue_name}"):  # SQS's own key
        try:
            queue = moto.sqs(region).get_queue(queue_name)
        except Exception:
            return 0, None
        return int(queue.receive_message_wait_time_seconds or 0), queue.queue_arn


def long_poll(
    moto: MotoBackends,
    call_moto: MotoCall,
    environ: dict[str, Any],
    request: ReceiveRequest,
    region: str,
    scheduler: Scheduler | None = None,
) -> tuple[str, list[tuple[str, str]], bytes]:
    """`scheduler` (deterministic mode): the wait is the running actor's, in virtual time, and a send
    to the queue makes it runnable again."""
    default_wait, queue_arn = queue_wait_and_arn(moto, region, request.queue_name)
    wait = request.wait_seconds if request.wait_seconds is not None else default_wait
    body = request.body_with_wait(0)
    if scheduler is not None and scheduler.current() is not None:
        return _scheduled_long_poll(moto, call_moto, environ, request, body, wait, queue_arn, scheduler)
    deadline = time.monotonic() + wait
    while True:
        generation = moto.notifier.generation(queue_arn) if queue_arn else 0
        status, headers, payload = call_moto(_attempt(environ, request, body))
        remaining = deadline - time.monotonic()
        if wait <= 0 or remaining <= 0 or not status.startswith("200") or has_messages(request.protocol, payload):
            return status, headers, payload
        if queue_arn:
            moto.notifier.wait(queue_arn, generation, min(remaining, RECHECK_SECONDS))
        else:
            time.sleep(min(remaining, RECHECK_SECONDS))


def _attempt(environ: dict[str, Any], request: ReceiveRequest, body: bytes) -> dict[str, Any]:
    attempt = dict(environ)
    attempt["wsgi.input"] = io.BytesIO(body)
    attempt["CONTENT_LENGTH"] = str(len(body))
    if request.protocol == "query":
        attempt["QUERY_STRING"] = ""
        attempt["REQUEST_METHOD"] = "POST"
        attempt["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    return attempt


def _scheduled_long_poll(
    moto: MotoBackends,
    call_moto: MotoCall,
    environ: dict[str, Any],
    request: ReceiveRequest,
    body: bytes,
    wait: int,
    queue_arn: str | None,
    scheduler: Scheduler,
) -> tuple[str, list[tuple[str, str]], bytes]:
    deadline_ms = scheduler.now_ms + wait * 1000
    while True:
        generation = moto.notifier.generation(queue_arn) if queue_arn else 0
        status, headers, payload = call_moto(_attempt(environ, request, body))
        if (
            wait <= 0
            or scheduler.now_ms >= deadline_ms
            or not status.startswith("200")
            or has_messages(request.protocol, payload)
        ):
            return status, headers, payload
        # runnable again on a send to the queue, or at the wait's end (a message that becomes visible
        # on its own, after a delay or a visibility timeout, is seen then)
        scheduler.wait_until(
            "ReceiveMessage long poll",
            lambda seen=generation: bool(queue_arn) and moto.notifier.generation(queue_arn) != seen,
            deadline_ms,
        )
