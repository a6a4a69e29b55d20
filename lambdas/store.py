"""The only module that talks to DynamoDB: a thin repository over the four tables.

Tables (names from `config.Settings`):

- events:    PK userId (S), SK seq (S, `sequence.encode_seq`); eventId, type, timestamp, body, arrivedAt,
             shardId, storedAt. Its stream feeds the trigger.
- event-ids: PK eventId; userId, seq, expiresAt (TTL). The dedupe index across time.
- snapshots: PK userId; watermark, version, the folded state, updatedAt.
- views:     PK id; the view row (`fold.render_view`).

Items cross this boundary as plain Python (TypeSerializer/TypeDeserializer; numbers come back as
int, or float when fractional). Every Query paginates; batch calls respect DynamoDB's limits (100
keys per BatchGetItem, 25 requests per BatchWriteItem) and retry what comes back unprocessed with
backoff.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from lambdas.clients import aws_client
from lambdas.config import Settings
from lambdas.events import StoredEvent, parse_body
from lambdas.fold import Snapshot, ViewState
from lambdas.retry import Backoff
from lambdas.sequence import NO_WATERMARK

BATCH_GET_LIMIT = 100  # keys per BatchGetItem call
BATCH_WRITE_LIMIT = 25  # requests per BatchWriteItem call

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class IncompleteBatchError(RuntimeError):
    """A batch call still had unprocessed items after every retry (DynamoDB is throttling)."""


class SnapshotConflict(RuntimeError):
    """Another writer changed the snapshot since it was read (its version moved on)."""


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def is_conditional_check_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


# ---------------------------------------------------------------------------------------------
# Item shapes
# ---------------------------------------------------------------------------------------------


def event_item(event: StoredEvent) -> dict[str, Any]:
    return {
        "userId": event.event.user_id,
        "seq": event.seq,
        "eventId": event.event.event_id,
        "type": event.event.type,
        "timestamp": event.event.timestamp,
        "body": event.event.body,
        "arrivedAt": event.arrived_at,
        "shardId": event.shard_id,
        "storedAt": event.stored_at,
    }


def stored_event_from_item(item: dict[str, Any]) -> StoredEvent:
    # The body was validated before it was written; parsing it again keeps one source of truth.
    return StoredEvent(
        seq=item["seq"],
        event=parse_body(item["body"]),
        arrived_at=int(item.get("arrivedAt", 0)),
        stored_at=int(item.get("storedAt", 0)),
        shard_id=item.get("shardId", ""),
    )


def event_id_item(event: StoredEvent, expires_at: int) -> dict[str, Any]:
    return {"eventId": event.event.event_id, "userId": event.event.user_id, "seq": event.seq, "expiresAt": expires_at}


def snapshot_item(snapshot: Snapshot) -> dict[str, Any]:
    state = snapshot.state
    return {
        "userId": snapshot.user_id,
        "watermark": snapshot.watermark,
        "version": snapshot.version,
        "name": state.name,
        "nameTimestamp": state.name_timestamp,
        "nameEventId": state.name_event_id,
        "lastLogin": state.last_login,
        "orderCount": state.order_count,
        "eventCount": state.event_count,
        "updatedAt": snapshot.updated_at,
    }


def snapshot_from_item(user_id: str, item: dict[str, Any] | None) -> Snapshot:
    if not item:
        return Snapshot(user_id=user_id)
    state = ViewState(
        name=item.get("name"),
        name_timestamp=item.get("nameTimestamp"),
        name_event_id=item.get("nameEventId"),
        last_login=item.get("lastLogin"),
        order_count=int(item.get("orderCount", 0)),
        event_count=int(item.get("eventCount", 0)),
    )
    return Snapshot(
        user_id=user_id,
        state=state,
        watermark=item.get("watermark", NO_WATERMARK),
        version=int(item.get("version", 0)),
        updated_at=int(item.get("updatedAt", 0)),
    )


# ---------------------------------------------------------------------------------------------
# The repository
# ---------------------------------------------------------------------------------------------


class Store:
    def __init__(self, settings: Settings, client: Any = None, backoff: Backoff | None = None) -> None:
        self.settings = settings
        self._client = client
        self.backoff = backoff or Backoff()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("dynamodb")
        return self._client

    # -- generic batch helpers ------------------------------------------------------------------

    def batch_get(
        self,
        table: str,
        keys: Sequence[dict[str, Any]],
        *,
        consistent: bool = True,
        attributes: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Every item that exists among `keys` (plain Python), 100 keys per call."""
        wanted = [to_item(k) for k in _unique_keys(keys)]
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), BATCH_GET_LIMIT):
            request: dict[str, Any] = {"Keys": wanted[start : start + BATCH_GET_LIMIT], "ConsistentRead": consistent}
            if attributes:
                names = {f"#a{i}": a for i, a in enumerate(attributes)}
                request["ProjectionExpression"] = ", ".join(names)
                request["ExpressionAttributeNames"] = names
            pending: dict[str, Any] | None = {table: request}
            attempt = 0
            while pending:
                response = self.client.batch_get_item(RequestItems=pending)
                found.extend(from_item(i) for i in response.get("Responses", {}).get(table, []))
                unprocessed = response.get("UnprocessedKeys") or None
                if unprocessed:
                    left = len(unprocessed.get(table, {}).get("Keys", []))
                    sent = len(pending.get(table, {}).get("Keys", []))
                    attempt = attempt + 1 if left >= sent else 1  # no progress at all: count it
                    if attempt > self.backoff.attempts:
                        raise IncompleteBatchError(
                            f"BatchGetItem on {table}: no progress in {attempt} calls in a row;"
                            " the invocation fails so the event source retries it"
                        )
                    self.backoff.wait(attempt)
                pending = unprocessed
        return found

    def batch_write(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Run (table, WriteRequest) pairs, 25 per call, until all are processed or retries run out.

        Raises `IncompleteBatchError` if DynamoDB keeps returning UnprocessedItems; callers rely on all
        requests being durable when this returns.
        """
        pending = list(requests)
        attempt = 0
        while pending:
            chunk, pending = pending[:BATCH_WRITE_LIMIT], pending[BATCH_WRITE_LIMIT:]
            request_items: dict[str, list[dict[str, Any]]] = {}
            for table, write_request in chunk:
                request_items.setdefault(table, []).append(write_request)
            response = self.client.batch_write_item(RequestItems=request_items)
            unprocessed = [(table, r) for table, rs in (response.get("UnprocessedItems") or {}).items() for r in rs]
            if not unprocessed:
                attempt = 0
                continue
            # Give up only after `attempts` calls in a row made no progress at all.
            attempt = attempt + 1 if len(unprocessed) == len(chunk) else 1
            if attempt > self.backoff.attempts:
                raise IncompleteBatchError(
                    f"BatchWriteItem: {len(unprocessed)} requests unprocessed, no progress in {attempt}"
                    " calls in a row; the invocation fails so the event source retries it"
                )
            self.backoff.wait(attempt)
            pending = unprocessed + pending

    def query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """All items of a Query, following LastEvaluatedKey (plain Python)."""
        while True:
            response = self.client.query(**kwargs)
            for item in response.get("Items", []):
                yield from_item(item)
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            kwargs = {**kwargs, "ExclusiveStartKey": last}

    # -- events and their dedupe index ----------------------------------------------------------

    def seen_event_ids(self, event_ids: Iterable[str]) -> dict[str, str]:
        """event id -> the encoded seq it was first accepted with, for the ids already recorded."""
        keys = [{"eventId": i} for i in event_ids]
        items = self.batch_get(self.settings.event_ids_table, keys, consistent=True, attributes=("eventId", "seq"))
        return {item["eventId"]: item.get("seq", "") for item in items}

    def event_write_requests(self, event: StoredEvent, expires_at: int) -> list[tuple[str, dict[str, Any]]]:
        """The dedupe-index item and the events item of one accepted event."""
        dedupe_item = to_item(event_id_item(event, expires_at))
        return [
            (self.settings.event_ids_table, {"PutRequest": {"Item": dedupe_item}}),
            (self.settings.events_table, {"PutRequest": {"Item": to_item(event_item(event))}}),
        ]

    def marker_write_requests(self, marker_ids: Iterable[str], expires_at: int) -> list[tuple[str, dict[str, Any]]]:
        """Dedupe-index items that are not events (e.g. "this poison record was sent")."""
        return [
            (self.settings.event_ids_table, {"PutRequest": {"Item": to_item({"eventId": m, "expiresAt": expires_at})}})
            for m in marker_ids
        ]

    def query_events(self, user_id: str, after: str = NO_WATERMARK, limit: int | None = None) -> list[StoredEvent]:
        """The user's stored events with seq > `after`, in seq order (consistent read, paginated)."""
        kwargs: dict[str, Any] = {
            "TableName": self.settings.events_table,
            "ConsistentRead": True,
            "ExpressionAttributeNames": {"#u": "userId"},
            "ExpressionAttributeValues": {":u": {"S": user_id}},
            "KeyConditionExpression": "#u = :u",
        }
        if after:  # key condition values may not be empty strings
            kwargs["KeyConditionExpression"] = "#u = :u AND #s > :w"
            kwargs["ExpressionAttributeNames"]["#s"] = "seq"
            kwargs["ExpressionAttributeValues"][":w"] = {"S": after}
        events: list[StoredEvent] = []
        for item in self._query_limited(kwargs, limit):
            events.append(stored_event_from_item(item))
        return events

    def _query_limited(self, kwargs: dict[str, Any], limit: int | None) -> Iterator[dict[str, Any]]:
        if limit is None:
            yield from self.query(**kwargs)
            return
        remaining = limit
        while remaining > 0:
            response = self.client.query(**kwargs, Limit=remaining)
            items = response.get("Items", [])
            for item in items[:remaining]:
                yield from_item(item)
            remaining -= len(items)
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            kwargs = {**kwargs, "ExclusiveStartKey": last}

    def event_keys_up_to(self, user_id: str, bound: str) -> list[dict[str, str]]:
        """Keys of the user's events with seq <= `bound` (keys only, consistent, paginated)."""
        if not bound:
            return []
        items = self.query(
            TableName=self.settings.events_table,
            ConsistentRead=True,
            KeyConditionExpression="#u = :u AND #s <= :b",
            ProjectionExpression="#u, #s",
            ExpressionAttributeNames={"#u": "userId", "#s": "seq"},
            ExpressionAttributeValues={":u": {"S": user_id}, ":b": {"S": bound}},
        )
        return [{"userId": i["userId"], "seq": i["seq"]} for i in items]

    def delete_events(self, keys: Sequence[dict[str, str]]) -> None:
        table = self.settings.events_table
        self.batch_write([(table, {"DeleteRequest": {"Key": to_item(k)}}) for k in _unique_keys(keys)])

    # -- snapshots --------------------------------------------------------------------------------

    def get_snapshot(self, user_id: str) -> Snapshot:
        response = self.client.get_item(
            TableName=self.settings.snapshots_table, Key=to_item({"userId": user_id}), ConsistentRead=True
        )
        item = response.get("Item")
        return snapshot_from_item(user_id, from_item(item) if item else None)

    def get_snapshots(self, user_ids: Sequence[str]) -> dict[str, Snapshot]:
        keys = [{"userId": u} for u in user_ids]
        items = self.batch_get(self.settings.snapshots_table, keys, consistent=True)
        by_user = {i["userId"]: i for i in items}
        return {u: snapshot_from_item(u, by_user.get(u)) for u in user_ids}

    def put_snapshot(self, snapshot: Snapshot, expected_version: int | None) -> None:
        """Write a snapshot whose version is `expected_version + 1`, only if the stored one still has
        `expected_version` (optimistic concurrency, I4). `expected_version=None` writes unconditionally
        (SNAPSHOT_MODE=original only). Raises `SnapshotConflict` when another writer got there first."""
        kwargs: dict[str, Any] = {"TableName": self.settings.snapshots_table, "Item": to_item(snapshot_item(snapshot))}
        if expected_version is not None:
            kwargs["ConditionExpression"] = "attribute_not_exists(#u) OR #v = :v"
            kwargs["ExpressionAttributeNames"] = {"#u": "userId", "#v": "version"}
            kwargs["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}
        try:
            self.client.put_item(**kwargs)
        except ClientError as error:
            if is_conditional_check_failure(error):
                raise SnapshotConflict(
                    f"snapshot of user {snapshot.user_id} is no longer at version {expected_version}"
                ) from error
            raise

    # -- views ------------------------------------------------------------------------------------

    def get_views(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        items = self.batch_get(self.settings.views_table, [{"id": u} for u in user_ids], consistent=True)
        return {i["id"]: i for i in items}

    def put_view(self, row: dict[str, Any]) -> bool:
        """Write the row unless the stored one already reflects as much: it folds more events, or as
        many (then the same set, see views.py) with a snapshot at least as new. False if skipped."""
        try:
            self.client.put_item(
                TableName=self.settings.views_table,
                Item=to_item(row),
                ConditionExpression="attribute_not_exists(#id) OR #n < :n OR (#n = :n AND #v < :v)",
                ExpressionAttributeNames={"#id": "id", "#n": "eventCount", "#v": "snapshotVersion"},
                ExpressionAttributeValues={
                    ":n": {"N": str(row["eventCount"])},
                    ":v": {"N": str(row["snapshotVersion"])},
                },
            )
        except ClientError as error:
            if is_conditional_check_failure(error):
                return False
            raise
        return True


def _unique_keys(keys: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    # BatchGetItem and BatchWriteItem reject a request that names one key twice.
    seen: set[tuple[tuple[str, Any], ...]] = set()
    unique = []
    for key in keys:
        marker = tuple(sorted(key.items()))
        if marker not in seen:
            seen.add(marker)
            unique.append(key)
    return unique
