"""Parsing what arrives: Kinesis records, commands, SQS requests, settings (I5: each poison class is
recognised with a reason a person can act on)."""

from __future__ import annotations

import base64
import itertools
import json

import pytest

from lambdas.command import build_events, chunks, to_records
from lambdas.config import ConfigurationError, Settings
from lambdas.events import (
    MAX_BODY_BYTES,
    ORDER_SUBMITTED,
    USER_CREATED,
    USER_LOGGED_IN,
    InvalidEvent,
    decode_kinesis_data,
    decode_kinesis_record,
)
from lambdas.records import KinesisRecord, SqsMessage, StreamRecord
from lambdas.work_requests import MalformedRequest, parse_snapshot_request, parse_trim_request


def b64(value) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


GOOD = {
    USER_CREATED: {"id": "e1", "type": USER_CREATED, "timestamp": 1000, "user": {"id": "u1", "name": "Ann"}},
    USER_LOGGED_IN: {"id": "e2", "type": USER_LOGGED_IN, "timestamp": 2000, "user": {"id": "u1"}},
    ORDER_SUBMITTED: {
        "id": "e3",
        "type": ORDER_SUBMITTED,
        "timestamp": 3000,
        "order": {"userId": "u1", "orderId": "o1", "total": 12.5},
    },
}


@pytest.mark.parametrize("event_type", sorted(GOOD))
def test_good_events_of_each_type_parse(event_type):
    payload = GOOD[event_type]
    event = decode_kinesis_data(b64(payload))
    assert (event.event_id, event.type, event.timestamp, event.user_id) == (
        payload["id"],
        event_type,
        payload["timestamp"],
        "u1",
    )
    assert event.name == ("Ann" if event_type == USER_CREATED else None)
    assert json.loads(event.body) == payload  # kept verbatim


def test_user_created_without_name_parses_with_no_name():
    event = decode_kinesis_data(b64({"id": "e", "type": USER_CREATED, "timestamp": 1, "user": {"id": "u"}}))
    assert event.name is None


POISON = [
    ("not base64", "!!!not-base64!!!", "not valid base64"),
    ("not utf-8", base64.b64encode(b"\xff\xfe\x00").decode(), "not UTF-8"),
    ("bad json", base64.b64encode(b"{not json").decode(), "not valid JSON"),
    ("not an object", b64([1, 2]), "must be a JSON object"),
    ("unknown type", b64({**GOOD[USER_LOGGED_IN], "type": "user-deleted"}), "unknown event type 'user-deleted'"),
    ("missing type", b64({"id": "e", "timestamp": 1, "user": {"id": "u"}}), "unknown event type None"),
    ("missing user", b64({"id": "e", "type": USER_LOGGED_IN, "timestamp": 1}), "missing user id"),
    ("missing user id", b64({"id": "e", "type": USER_LOGGED_IN, "timestamp": 1, "user": {}}), "missing user id"),
    ("empty user id", b64({"id": "e", "type": USER_LOGGED_IN, "timestamp": 1, "user": {"id": " "}}), "empty user id"),
    (
        "order without userId",
        b64({"id": "e", "type": ORDER_SUBMITTED, "timestamp": 1, "order": {"x": 1}}),
        "missing user id (order.userId)",
    ),
    (
        "order without order",
        b64({"id": "e", "type": ORDER_SUBMITTED, "timestamp": 1, "user": {"id": "u"}}),
        "no order object",
    ),
    ("missing id", b64({"type": USER_LOGGED_IN, "timestamp": 1, "user": {"id": "u"}}), "missing event id"),
    ("missing timestamp", b64({"id": "e", "type": USER_LOGGED_IN, "user": {"id": "u"}}), "missing timestamp"),
    (
        "string timestamp",
        b64({"id": "e", "type": USER_LOGGED_IN, "timestamp": "yesterday", "user": {"id": "u"}}),
        "timestamp must be a number",
    ),
    (
        "boolean timestamp",
        b64({"id": "e", "type": USER_LOGGED_IN, "timestamp": True, "user": {"id": "u"}}),
        "timestamp must be a number",
    ),
    (
        "name not a string",
        b64({"id": "e", "type": USER_CREATED, "timestamp": 1, "user": {"id": "u", "name": 5}}),
        "user.name must be a string",
    ),
    (
        "too big for dynamodb",
        b64({**GOOD[ORDER_SUBMITTED], "order": {"userId": "u", "pad": "x" * MAX_BODY_BYTES}}),
        "exceeds",
    ),
]


@pytest.mark.parametrize(("case", "data", "reason"), POISON, ids=[p[0] for p in POISON])
def test_each_poison_class_is_rejected_with_a_clear_reason(case, data, reason):
    with pytest.raises(InvalidEvent) as caught:
        decode_kinesis_data(data)
    assert reason in caught.value.reason


def lambda_kinesis_record(data: str, seq: str = "49590338271490256608559692538361571095921575989136588898") -> dict:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "u1",
            "sequenceNumber": seq,
            "data": data,
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000006:{seq}",
        "eventName": "aws:kinesis:record",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
        "awsRegion": "us-east-1",
    }


def test_a_lambda_kinesis_record_becomes_a_stored_event_with_encoded_seq_and_arrival_ms():
    record = KinesisRecord.from_lambda(lambda_kinesis_record(b64(GOOD[USER_LOGGED_IN]), seq="12345"))
    event = decode_kinesis_record(record, stored_at=7)
    assert (event.seq, event.arrived_at, event.stored_at, event.shard_id) == (
        "00512345",
        1545084650987,
        7,
        "shardId-000000000006",
    )
    assert record.as_failure_content()["data"] == b64(GOOD[USER_LOGGED_IN])


def test_a_record_without_a_decimal_sequence_number_is_poison():
    record = KinesisRecord.from_lambda(lambda_kinesis_record(b64(GOOD[USER_LOGGED_IN]), seq="abc"))
    with pytest.raises(InvalidEvent, match="sequence number"):
        decode_kinesis_record(record, stored_at=0)


def test_stream_and_sqs_records_parse_from_aws_shapes():
    stream = StreamRecord.from_lambda(
        {
            "eventName": "INSERT",
            "dynamodb": {
                "Keys": {"userId": {"S": "u1"}, "seq": {"S": "0011"}},
                "SequenceNumber": "111",
                "SizeBytes": 26,
            },
        }
    )
    assert (stream.event_name, stream.user_id, stream.sequence_number) == ("INSERT", "u1", "111")
    message = SqsMessage.from_lambda(
        {"messageId": "m1", "receiptHandle": "r", "body": "{}", "attributes": {"ApproximateReceiveCount": "1"}}
    )
    assert message.as_failure_content() == {
        "messageId": "m1",
        "body": "{}",
        "attributes": {"ApproximateReceiveCount": "1"},
    }


# ---------------------------------------------------------------------------------------------
# Command input
# ---------------------------------------------------------------------------------------------


def ids():
    counter = itertools.count()
    return lambda: f"id-{next(counter)}"


def test_commands_become_events_with_new_id_and_now():
    assert build_events({"type": USER_CREATED, "userId": "u1", "name": "Ann"}, 55, ids()) == [
        {"id": "id-0", "type": USER_CREATED, "timestamp": 55, "user": {"id": "u1", "name": "Ann"}}
    ]
    assert build_events({"type": USER_LOGGED_IN, "userId": "u1"}, 55, ids()) == [
        {"id": "id-0", "type": USER_LOGGED_IN, "timestamp": 55, "user": {"id": "u1"}}
    ]
    [order] = build_events({"type": ORDER_SUBMITTED, "userId": "u1", "total": 3}, 55, ids())
    assert order["order"] == {"userId": "u1", "total": 3, "orderId": "id-1"}


def test_given_events_keep_id_and_timestamp_and_missing_ones_are_filled():
    given = [dict(GOOD[USER_LOGGED_IN]), {"type": ORDER_SUBMITTED, "order": {"userId": "u2"}}]
    built = build_events({"events": given}, 99, ids())
    assert built[0] == GOOD[USER_LOGGED_IN]
    assert (built[1]["id"], built[1]["timestamp"]) == ("id-0", 99)
    records = to_records(built)
    assert [r.partition_key for r in records] == ["u1", "u2"]  # partition key = user id
    assert json.loads(records[0].data) == GOOD[USER_LOGGED_IN]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"type": "user-deleted", "userId": "u1"}, "unknown command type"),
        ({"type": USER_LOGGED_IN, "userId": ""}, "needs userId"),
        ({"type": USER_CREATED, "userId": "u1", "name": 3}, "name must be a string"),
        ([{"type": USER_LOGGED_IN, "user": {}}], "event 0"),
        ([5], "must be a JSON object"),
        ("hello", "input must be"),
    ],
)
def test_bad_commands_raise_value_error_with_a_clear_message(payload, message):
    with pytest.raises(ValueError, match=message):
        build_events(payload, 1, ids())


def test_put_records_chunks_respect_500_records_and_5_mib():
    many = to_records(build_events([{"type": USER_LOGGED_IN, "user": {"id": "u"}}] * 1201, 1, ids()))
    assert [len(c) for c in chunks(many)] == [500, 500, 201]
    big = to_records(
        build_events([{"type": ORDER_SUBMITTED, "order": {"userId": "u", "pad": "x" * 300_000}}] * 40, 1, ids())
    )
    sizes = [sum(len(r.data) + 1 for r in c) for c in chunks(big)]
    assert all(s <= 5 * 1024 * 1024 for s in sizes) and sum(len(c) for c in chunks(big)) == 40


# ---------------------------------------------------------------------------------------------
# SQS requests and settings
# ---------------------------------------------------------------------------------------------


def test_snapshot_and_trim_requests_parse():
    request = parse_snapshot_request('{"type":"snapshot","userId":"u1","horizonSeconds":0,"requestedAt":5}')
    assert (request.user_id, request.horizon_seconds, request.requested_at) == ("u1", 0.0, 5)
    assert parse_snapshot_request('{"userId":"u1"}').horizon_seconds is None
    assert parse_trim_request('{"type":"trim","userId":"u1","watermark":"0011"}').watermark == "0011"
    assert parse_trim_request('{"type":"trim","userId":"u1"}').watermark is None


@pytest.mark.parametrize(
    ("parse", "body", "reason"),
    [
        (parse_snapshot_request, "nope", "not valid JSON"),
        (parse_snapshot_request, "[]", "JSON object"),
        (parse_snapshot_request, '{"type":"trim","userId":"u"}', "type must be 'snapshot'"),
        (parse_snapshot_request, '{"type":"snapshot"}', "missing userId"),
        (parse_snapshot_request, '{"userId":"u","horizonSeconds":-1}', "horizonSeconds"),
        (parse_snapshot_request, '{"userId":"u","horizonSeconds":"soon"}', "horizonSeconds"),
        (parse_trim_request, '{"type":"trim","userId":"u","watermark":"12"}', "encoded sequence number"),
        (parse_trim_request, '{"type":"snapshot","userId":"u"}', "type must be 'trim'"),
    ],
)
def test_malformed_requests_are_rejected_with_a_reason(parse, body, reason):
    with pytest.raises(MalformedRequest, match=reason):
        parse(body)


def test_settings_come_from_env_with_documented_defaults():
    defaults = Settings.from_env({})
    assert (
        defaults.snapshot_horizon_seconds,
        defaults.snapshot_threshold,
        defaults.snapshot_max_events,
        defaults.dedupe_ttl_seconds,
        defaults.snapshot_mode,
        defaults.log_level,
    ) == (60.0, 20, 1000, 604800, "safe", "WARNING")
    custom = Settings.from_env({"EVENTS_TABLE": "ev", "SNAPSHOT_HORIZON_SECONDS": "1.5", "SNAPSHOT_MODE": "original"})
    assert (custom.events_table, custom.snapshot_horizon_ms, custom.snapshot_mode) == ("ev", 1500, "original")
    with pytest.raises(ConfigurationError, match="SNAPSHOT_MODE"):
        Settings.from_env({"SNAPSHOT_MODE": "fast"})
    with pytest.raises(ConfigurationError, match="SNAPSHOT_THRESHOLD"):
        Settings.from_env({"SNAPSHOT_THRESHOLD": "many"})
