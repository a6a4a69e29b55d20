"""SQS sends: snapshot and trim requests, and poison input for the failure queue.

SendMessageBatch takes at most 10 entries and 256 KiB in all; it can succeed as a call while some
entries fail, so failed entries are retried (unless the sender is at fault) and what still fails is
returned to the caller, who decides (report a batch item failure, or try again later)
(https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.batching import bounded_batches
from lambdas.clients import aws_client
from lambdas.retry import Backoff

SEND_BATCH_LIMIT = 10
MAX_PAYLOAD_BYTES = 262_144
"""SQS's classic message size limit, per message and per batch; emulators enforce it too."""

MAX_DELAY_SECONDS = 900


@dataclass(frozen=True)
class OutgoingMessage:
    key: str  # the caller's identifier (a sequence number, a user id), echoed back on failure
    body: str
    delay_seconds: int = 0


@dataclass(frozen=True)
class SendFailure:
    key: str
    code: str
    message: str


def request_delay_seconds(horizon_seconds: float) -> int:
    """A snapshot request waits out the horizon (so its events are old enough), within SQS's 900 s."""
    return max(0, min(MAX_DELAY_SECONDS, math.ceil(horizon_seconds)))


def _size(message: OutgoingMessage) -> int:
    return len(message.body.encode("utf-8"))


def send_batches(messages: Sequence[OutgoingMessage]) -> list[list[OutgoingMessage]]:
    """SendMessageBatch calls: at most 10 entries and 256 KiB each, in the given order."""
    return bounded_batches(messages, SEND_BATCH_LIMIT, MAX_PAYLOAD_BYTES, _size)


class Queues:
    def __init__(self, client: Any = None, backoff: Backoff | None = None) -> None:
        self._client = client
        self.backoff = backoff or Backoff(attempts=3)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("sqs")
        return self._client

    def send(self, queue_url: str, messages: Sequence[OutgoingMessage]) -> list[SendFailure]:
        """Send all messages; return those that could not be sent (empty list = all sent)."""
        if not messages:
            return []
        if not queue_url:
            return [SendFailure(m.key, "NoQueueConfigured", "queue URL is not set") for m in messages]
        failures: list[SendFailure] = []
        for batch in send_batches(messages):
            failures.extend(self._send_batch(queue_url, batch))
        return failures

    def _send_batch(self, queue_url: str, batch: list[OutgoingMessage]) -> list[SendFailure]:
        pending = {str(i): m for i, m in enumerate(batch)}
        attempt = 0
        while True:
            entries = [
                {"Id": entry_id, "MessageBody": m.body, "DelaySeconds": m.delay_seconds}
                for entry_id, m in pending.items()
            ]
            try:
                response = self.client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                code = type(error).__name__
                if isinstance(error, ClientError):
                    code = error.response.get("Error", {}).get("Code", "") or code
                return [SendFailure(m.key, code, str(error)) for m in pending.values()]
            retry: dict[str, OutgoingMessage] = {}
            final: list[SendFailure] = []
            for failed in response.get("Failed", []):
                message = pending[failed["Id"]]
                failure = SendFailure(message.key, failed.get("Code", ""), failed.get("Message", ""))
                if failed.get("SenderFault"):
                    final.append(failure)
                else:
                    retry[failed["Id"]] = message
            attempt += 1
            if not retry:
                return final
            if attempt > self.backoff.attempts:
                return final + [
                    SendFailure(m.key, "RetriesExhausted", "SQS kept failing the entry") for m in retry.values()
                ]
            self.backoff.wait(attempt)
            pending = retry


# ---------------------------------------------------------------------------------------------
# Failure queue messages: what went wrong, where, and the input exactly as delivered
# ---------------------------------------------------------------------------------------------


def failure_message(
    source: str,
    reason: str,
    function_name: str,
    detected_at: int,
    content_key: str,
    content: dict[str, Any],
    bulky_field: str,
) -> str:
    """JSON body for the failure queue. If the content is too big for one SQS message, `bulky_field`
    of it is cut and marked (`<field>Truncated`, `<field>Length`); the handler logs the whole record."""
    payload = {
        "source": source,
        "reason": reason,
        "function": function_name,
        "detectedAt": detected_at,
        content_key: dict(content),
    }
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    excess = len(body.encode("utf-8")) - MAX_PAYLOAD_BYTES
    value = str(content.get(bulky_field, ""))
    keep = len(value)
    while excess > 0 and keep > 0:
        keep = max(0, keep - excess - 256)  # margin for the markers and multibyte characters
        payload[content_key] = {
            **content,
            bulky_field: value[:keep],
            f"{bulky_field}Truncated": True,
            f"{bulky_field}Length": len(value),
        }
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        excess = len(body.encode("utf-8")) - MAX_PAYLOAD_BYTES
    return body
