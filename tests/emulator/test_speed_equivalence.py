"""The endpoint's speed patches change no answer, only its cost: each compared with what it replaced.

- esjoin.emulator.moto_layer.speed patches moto 5.2.5 (DynamoDB response conversion and serialization, AttributeValue
  request parsing, Query without deep copies, linear item construction, SQS receive and count
  shortcuts, cached method lists, request ids). It records every function it replaced
  (`moto_speed.REPLACED`); `moto_own_code()` below puts them back for a block, so one run of moto
  answers with its own code and another with the patches, in the same process.
- esjoin.emulator.moto_layer.dispatch calls the JSON handlers of DynamoDB, DynamoDB Streams, Kinesis and SQS
  without Flask; compared with moto's Flask app on the same requests.
- esjoin.emulator.http.server parses plain header blocks itself and keeps connections alive; compared with
  http.client.parse_headers, and driven over a raw socket.

Answers are compared byte for byte where nothing in them is volatile (DynamoDB data-plane answers);
answers that carry request ids, timestamps, random ids or global sequence numbers are compared as
JSON, in their own key order, with those values replaced by placeholders (`normalized`). The two
runs of a comparison use the same resource names in two regions (`ORIGINAL_REGION`,
`PATCHED_REGION`), so they never see each other's state; region names in ARNs are normalised.

Everything runs in this process on moto's backends, without sockets except for the HTTP server's
tests (127.0.0.1, a port of the system's choosing). moto's clock is replaced in the SQS tests only.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import inspect
import io
import itertools
import json
import os
import re
import socket
import string
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from esjoin.emulator.http.server import EndpointServer, KeepAliveRequestHandler
from esjoin.emulator.moto_layer import fixes as moto_fixes
from esjoin.emulator.moto_layer import speed as moto_speed
from esjoin.emulator.moto_layer.dispatch import MotoDispatch
from esjoin.emulator.moto_layer.notifier import ChangeNotifier

ACCOUNT = "123456789012"
ORIGINAL_REGION = "us-east-1"  # where moto's own code answers
PATCHED_REGION = "us-west-2"  # where the patched code answers (same length: ARNs compare as bytes)
HOST = "127.0.0.1:4566"
DYNAMODB = "DynamoDB_20120810"
STREAMS = "DynamoDBStreams_20120810"
KINESIS = "Kinesis_20131202"
SQS = "AmazonSQS"
# Values that differ between two runs of the same requests: random ids, clocks, moto's global
# Kinesis sequence counter, stream labels (a timestamp), shard iterators (which carry those).
VOLATILE_KEYS = frozenset({
    "CreationDateTime", "StreamCreationTimestamp", "ApproximateArrivalTimestamp", "ApproximateCreationDateTime",
    "SequenceNumber", "StartingSequenceNumber", "EndingSequenceNumber", "ShardIterator", "NextShardIterator",
    "MessageId", "ReceiptHandle", "eventID", "LatestStreamLabel", "StreamLabel", "LatestStreamArn", "StreamArn",
    "eventSourceARN", "CreatedTimestamp", "LastModifiedTimestamp", "SentTimestamp",
    "ApproximateFirstReceiveTimestamp", "CreationRequestDateTime",
    "SizeBytes",  # of a stream record: moto measures it with the record's creation time in it
})
DYNAMODB_STREAM_SHARD = re.compile(r"shardId-[0-9]{20}-[0-9a-f]{8}")  # a creation time and a random suffix

# Random examples, new ones on every run (a failure is a real difference, and Hypothesis prints it).
# ESJOIN_SPEED_EQUIVALENCE_SCALE=10 runs ten times as many, for a deeper check after changing a patch.
SCALE = int(os.environ.get("ESJOIN_SPEED_EQUIVALENCE_SCALE", "1"))
COMPARE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(count: int) -> settings:
    return settings(COMPARE, max_examples=count * SCALE)


# -- moto, patched once for this process; its own code put back on demand ---------------------------


@pytest.fixture(scope="module")
def speed_patches() -> Iterator[None]:
    """moto patched as the endpoint patches it (moto_fixes.apply applies moto_speed too), answering for
    ACCOUNT (an endpoint started in this process before sets MOTO_ACCOUNT_ID to its own)."""
    notifier = ChangeNotifier()
    moto_fixes.apply(notifier)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("MOTO_ACCOUNT_ID", ACCOUNT)
        try:
            yield
        finally:
            moto_fixes.release(notifier)


@pytest.fixture(scope="module")
def moto_app(speed_patches: None) -> Any:
    """moto's own WSGI app (DomainDispatcherApplication), as esjoin.emulator.moto_layer.backends builds it."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)


def _current(owner: Any, name: str) -> Any:
    if isinstance(owner, dict):
        return owner.get(name, moto_speed.MISSING)
    return inspect.getattr_static(owner, name)


def _install(owner: Any, name: str, value: Any) -> None:
    if not isinstance(owner, dict):
        setattr(owner, name, value)
    elif value is moto_speed.MISSING:
        owner.pop(name, None)
    else:
        owner[name] = value


@contextlib.contextmanager
def moto_own_code() -> Iterator[None]:
    """moto as it was before esjoin.emulator.moto_layer.speed, for the block: every replaced function put back.
    (Not thread-safe: nothing else in this module touches moto meanwhile.)"""
    patched = [(entry, _current(entry.owner, entry.name)) for entry in moto_speed.REPLACED]
    for entry, _ in patched:
        _install(entry.owner, entry.name, entry.original)
    try:
        yield
    finally:
        for entry, value in reversed(patched):
            _install(entry.owner, entry.name, value)


def original(owner: Any, name: str) -> Any:
    """What moto_speed replaced at `owner.name`."""
    return next(entry.original for entry in moto_speed.REPLACED if entry.owner is owner and entry.name == name)


def test_every_speed_patch_is_recorded_and_installed(speed_patches: None) -> None:
    """The comparisons below reach moto's own code through moto_speed.REPLACED: a patch applied
    without being recorded there would escape them (and should get a comparison of its own)."""
    from moto.core import parse, responses, serialize
    from moto.dynamodb import responses as dynamodb_responses
    from moto.dynamodb.models import table
    from moto.dynamodb.models.dynamo_type import Item
    from moto.sqs.models import Queue, SQSBackend

    recorded = {(id(entry.owner), entry.name) for entry in moto_speed.REPLACED}
    expected = {
        (id(responses), "method_names_from_class"), (id(responses), "gen_amzn_requestid_long"),
        (id(dynamodb_responses), "dynamo_to_dict"),
        (id(serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodb"]), "json"),
        (id(serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodbstreams"]), "json"),
        (id(parse.PROTOCOL_PARSERS), "json"),
        (id(table), "copy"), (id(dynamodb_responses.DynamoHandler), "query"), (id(Item), "__init__"),
        (id(SQSBackend), "is_message_valid_based_on_retention_period"), (id(Queue), "messages"),
        (id(Queue), "approximate_number_of_messages_delayed"),
        (id(Queue), "approximate_number_of_messages_not_visible"),
    }
    assert recorded == expected
    for entry in moto_speed.REPLACED:
        assert _current(entry.owner, entry.name) is not entry.original, f"{entry.name} is not patched"
    with moto_own_code():
        assert all(_current(entry.owner, entry.name) is entry.original for entry in moto_speed.REPLACED)
    assert all(_current(entry.owner, entry.name) is not entry.original for entry in moto_speed.REPLACED)


# -- requests through moto's WSGI app ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(wsgi: Callable[..., Any], region: str, target: str, body: Any) -> Answer:
    """One JSON-protocol request, as a SigV4-signed boto3 call arrives at moto (the signature itself is
    not checked by moto); an exception out of moto is returned as an Answer describing it."""
    from werkzeug.test import EnvironBuilder

    service = {DYNAMODB: "dynamodb", STREAMS: "dynamodb", KINESIS: "kinesis", SQS: "sqs"}[target.partition(".")[0]]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    content_type = "application/x-amz-json-1.1" if service == "kinesis" else "application/x-amz-json-1.0"
    environ = EnvironBuilder(method="POST", path="/", data=data, headers={
        "Host": HOST, "Content-Type": content_type, "X-Amz-Target": target,
        "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20250101/{region}/{service}/aws4_request, "
                         "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0"}).get_environ()
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started["status"], started["headers"] = status, tuple(headers)

    try:
        payload = b"".join(wsgi(environ, start_response))
    except Exception as error:  # moto's app runs in debug mode: its exceptions reach the caller
        return Answer("raised", (), f"{type(error).__name__}: {error}".encode())
    return Answer(started["status"], started["headers"], payload)


def normalized_headers(answer: Answer) -> list[tuple[str, str]]:
    """The headers, with the per-request values checked and replaced: the request id (moto's 52
    characters), the CRC32 and the Content-Length (of this answer's own body)."""
    result = []
    for name, value in answer.headers:
        lower = name.lower()
        if lower == "x-amzn-requestid":
            assert re.fullmatch(r"[A-Za-z0-9]{52}", value), value
            value = "<request id>"
        elif lower == "x-amz-crc32":
            assert value == str(zlib.crc32(answer.body)), "x-amz-crc32 is not the body's"
            value = "<crc32 of the body>"
        elif lower == "content-length":
            assert value == str(len(answer.body)), "Content-Length is not the body's"
            value = "<length of the body>"
        result.append((name, value))
    return result


def normalized(value: Any) -> Any:
    """A JSON answer with its volatile values (VOLATILE_KEYS) replaced by placeholders."""
    if isinstance(value, dict):
        return {key: f"<{key}>" if key in VOLATILE_KEYS else normalized(member) for key, member in value.items()}
    if isinstance(value, list):
        return [normalized(member) for member in value]
    if isinstance(value, str):
        return DYNAMODB_STREAM_SHARD.sub("<ShardId>", value.replace(PATCHED_REGION, ORIGINAL_REGION))
    return value


def comparable(answer: Answer, byte_for_byte: bool = False) -> tuple[Any, ...]:
    body: Any = answer.body.replace(PATCHED_REGION.encode(), ORIGINAL_REGION.encode())
    if not byte_for_byte and body[:1] == b"{":
        body = json.dumps(normalized(json.loads(body)))  # json.dumps keeps the answer's key order
    return answer.status, normalized_headers(answer), body


# -- DynamoDB AttributeValues, as a client sends them ------------------------------------------------

# Attribute names are never empty here: AWS refuses empty names (HowItWorks.NamingRulesDataTypes),
# moto accepts them and answers them differently once patched (test_empty_attribute_names_...).
NAMES = st.text(min_size=1, max_size=8)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**38), max_value=10**38).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),  # "1E+5", "-0.000", "1.2E-7"
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,37})(\.[0-9]{1,38})?([eE][+-]?[0-9]{1,3})?\Z"),
)
BINARIES = st.binary(max_size=24).map(lambda data: base64.b64encode(data).decode())
SCALARS = st.one_of(
    st.builds(lambda text: {"S": text}, st.text(max_size=12)),  # empty strings and any unicode
    st.builds(lambda number: {"N": number}, NUMBERS),
    st.builds(lambda data: {"B": data}, BINARIES),
    st.builds(lambda flag: {"BOOL": flag}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda texts: {"SS": texts}, st.lists(st.text(max_size=6), min_size=1, max_size=4, unique=True)),
    st.builds(lambda numbers: {"NS": numbers}, st.lists(NUMBERS, min_size=1, max_size=4, unique=True)),
    st.builds(lambda blobs: {"BS": blobs}, st.lists(BINARIES, min_size=1, max_size=3, unique=True)),
)
ATTRIBUTE_VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.builds(lambda members: {"L": members}, st.lists(children, max_size=4)),
    st.builds(lambda members: {"M": members}, st.dictionaries(NAMES, children, max_size=4)),
), max_leaves=12)
KEY_NAMES = ("pk", "sk", "g")  # the tables' hash, range and index keys
# Smaller items where a test makes many requests (the serialization tests take the large ones).
SMALL_ATTRIBUTE_VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.builds(lambda members: {"L": members}, st.lists(children, max_size=2)),
    st.builds(lambda members: {"M": members}, st.dictionaries(NAMES, children, max_size=2)),
), max_leaves=4)
FIELDS = st.sampled_from(["f", "h", "ü"])  # names requests refer to (filters, projections, updates)
ATTRIBUTES = st.dictionaries(FIELDS | NAMES.filter(lambda name: name not in KEY_NAMES), SMALL_ATTRIBUTE_VALUES,
                             max_size=3)


def as_parsed(value: dict[str, Any]) -> dict[str, Any]:
    """A wire AttributeValue as moto's request parser leaves it: binaries decoded to bytes."""
    ((kind, member),) = value.items()
    if kind == "B":
        return {kind: base64.b64decode(member)}
    if kind == "BS":
        return {kind: [base64.b64decode(blob) for blob in member]}
    if kind == "L":
        return {kind: [as_parsed(child) for child in member]}
    if kind == "M":
        return {kind: {name: as_parsed(child) for name, child in member.items()}}
    return value


@st.composite
def items(draw: st.DrawFn, attributes: st.SearchStrategy[dict[str, Any]] = ATTRIBUTES) -> dict[str, Any]:
    """An item of the test tables: keys from a small domain (so writes collide), any other attributes."""
    item = {"pk": {"S": draw(st.sampled_from(["a", "b"]))}, "sk": {"N": str(draw(st.integers(0, 2)))}}
    if draw(st.booleans()):
        item["g"] = {"S": draw(st.sampled_from(["x", "y"]))}
    item.update(draw(attributes))
    return item


LARGE_ITEMS = items(st.dictionaries(NAMES.filter(lambda name: name not in KEY_NAMES), ATTRIBUTE_VALUES, max_size=5))


KEYS = st.builds(lambda pk, sk: {"pk": {"S": pk}, "sk": {"N": str(sk)}}, st.sampled_from(["a", "b"]), st.integers(0, 2))


# -- DynamoDB responses: conversion and serialization -----------------------------------------------


def serialized(service: str, operation: str, result: Any) -> str:
    """The body moto writes for `result` of `operation`, with whatever conversion (dynamo_to_dict)
    and serializer are installed now: DynamoResult for DynamoDB's handler, ActionResult for Streams'."""
    from moto.core import serialize
    from moto.core.responses import ActionContext, ActionResult
    from moto.core.utils import get_service_model
    from moto.dynamodb.responses import DynamoResult

    model = get_service_model(service).operation_model(operation)
    serializer = serialize.get_serializer_class(model.service_model.service_name, "json")
    action_result = DynamoResult(result) if service == "dynamodb" else ActionResult(result)
    _, _, body = action_result.execute_result(ActionContext(model.service_model, model, serializer, SimpleNamespace()))
    return body


def moto_item(attributes: dict[str, Any], wire_binaries: bool) -> Any:
    """A stored item as moto holds it: binaries as the request parser decoded them (bytes), or as
    base64 text (what moto keeps when a value did not come through the parser)."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    stored = attributes if wire_binaries else {name: as_parsed(value) for name, value in attributes.items()}
    return Item(DynamoType(stored["pk"]), DynamoType(stored["sk"]), stored)


@examples(100)
@given(rows=st.lists(LARGE_ITEMS, min_size=1, max_size=3), wire_binaries=st.booleans(), old=LARGE_ITEMS)
def test_dynamodb_results_serialize_byte_for_byte_as_moto_does(speed_patches: None, rows: list[dict[str, Any]],
                                                                 wire_binaries: bool, old: dict[str, Any]) -> None:
    from moto.dynamodb.models.table import StreamRecord

    stored = [moto_item(row, wire_binaries) for row in rows]
    table = SimpleNamespace(hash_key_attr="pk", range_key_attr="sk", region_name=ORIGINAL_REGION)
    record = StreamRecord(table, "NEW_AND_OLD_IMAGES", "MODIFY", moto_item(old, wire_binaries), stored[0], 7)
    last_key = {"pk": stored[-1].attrs["pk"], "sk": stored[-1].attrs["sk"]}
    results = {
        ("dynamodb", "GetItem"): {"Item": stored[0].attrs},
        ("dynamodb", "Query"): {"Count": len(stored), "ScannedCount": len(stored),
                                "Items": [item.attrs for item in stored], "LastEvaluatedKey": last_key},
        ("dynamodb", "Scan"): {"Count": len(stored), "ScannedCount": 9, "Items": [item.attrs for item in stored]},
        ("dynamodb", "BatchGetItem"): {
            "ConsumedCapacity": [{"CapacityUnits": 2, "TableName": "t"}],
            "Responses": {"t": [item.attrs for item in stored]}, "UnprocessedKeys": {"t": {"Keys": [last_key]}}},
        ("dynamodb", "PutItem"): {"Attributes": stored[0].attrs},  # ReturnValues=ALL_OLD
        ("dynamodbstreams", "GetRecords"): {"Records": [record.to_json()], "NextShardIterator": "iterator"},
    }
    for (service, operation), result in results.items():
        with moto_own_code():
            expected = serialized(service, operation, result)
        assert serialized(service, operation, result) == expected, f"{service} {operation}"


def test_dynamo_to_dict_equals_moto_on_what_else_results_hold(speed_patches: None) -> None:
    """The conversion's fallback: datetimes, objects with to_json (a whole Item), None, floats."""
    from moto.dynamodb import responses
    from moto.dynamodb.models import utilities

    item = moto_item({"pk": {"S": "a"}, "sk": {"N": "1"}, "b": {"B": "AAE="}, "m": {"M": {"l": {"L": []}}}}, False)
    result = {"when": datetime.datetime(2025, 1, 2, 3, 4, 5), "item": item, "none": None, "ratio": 0.5,
              "nested": [{"x": item.attrs["m"]}], "flag": True}
    assert repr(responses.dynamo_to_dict(result)) == repr(utilities.dynamo_to_dict(result))
    assert responses.dynamo_to_dict is not utilities.dynamo_to_dict  # the comparison is not trivial


@pytest.mark.xfail(strict=True, reason=(
    "moto's own serializer writes an attribute with an empty name into its parent map (GetItem answers "
    '{"Item": {"pk": ..., "S": "v"}}); the patched one writes {"": {"S": "v"}}. AWS refuses empty attribute '
    "names with a ValidationException; moto stores them. Kept as moto's bug, not reproduced."))
def test_empty_attribute_names_are_answered_as_moto_does(moto_app: Any) -> None:
    answers = {}
    name = unique("empty-names")
    for region, own_code in ((ORIGINAL_REGION, True), (PATCHED_REGION, False)):
        with moto_own_code() if own_code else contextlib.nullcontext():
            table = create_table(moto_app, region, name)
            call(moto_app, region, f"{DYNAMODB}.PutItem",
                 {"TableName": table, "Item": {"pk": {"S": "a"}, "sk": {"N": "1"}, "": {"S": "v"}}})
            answers[region] = call(moto_app, region, f"{DYNAMODB}.GetItem",
                                   {"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"N": "1"}}})
            call(moto_app, region, f"{DYNAMODB}.DeleteTable", {"TableName": table})
    assert answers[PATCHED_REGION].body == answers[ORIGINAL_REGION].body


# -- DynamoDB requests: AttributeValue parsing ------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(
        ["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL", "X"]), children, max_size=3),
    max_leaves=6)
# What a client can put where an AttributeValue belongs: valid ones mostly, and anything JSON holds.
REQUEST_VALUES = st.one_of(ATTRIBUTE_VALUES, ATTRIBUTE_VALUES, JSON_VALUES)
REQUEST_ITEMS = st.dictionaries(NAMES, REQUEST_VALUES, max_size=4)


def parsed_request(operation: str, body: bytes) -> tuple[str, ...]:
    """What moto's JSON request parser (the one installed now) makes of a DynamoDB request body:
    repr shows the types (dict, bytes, list) and the key order."""
    from moto.core import parse
    from moto.core.utils import get_service_model

    model = get_service_model("dynamodb").operation_model(operation)
    parser = parse.PROTOCOL_PARSERS["json"](model, map_type=dict)
    request = {"method": "POST", "values": {}, "headers": {}, "body": body, "url_path": "/", "url_params": {}}
    try:
        return ("parsed", repr(parser.parse(request)))
    except Exception as error:
        return ("raised", type(error).__name__, str(error))


@st.composite
def write_requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    operation = draw(st.sampled_from(["PutItem", "BatchWriteItem", "UpdateItem"]))
    if operation == "PutItem":
        return operation, {"TableName": "t", "Item": draw(REQUEST_ITEMS), "ReturnValues": "ALL_OLD",
                           "ExpressionAttributeValues": {":v": draw(REQUEST_VALUES)}}
    if operation == "BatchWriteItem":
        writes = draw(st.lists(st.one_of(
            st.builds(lambda item: {"PutRequest": {"Item": item}}, REQUEST_ITEMS),
            st.builds(lambda key: {"DeleteRequest": {"Key": key}}, REQUEST_ITEMS)), max_size=4))
        return operation, {"RequestItems": {"t": writes, "u": writes[:1]}}
    return operation, {"TableName": "t", "Key": draw(REQUEST_ITEMS), "UpdateExpression": "SET #a = :v",
                       "ExpressionAttributeNames": {"#a": "a"},
                       "ExpressionAttributeValues": draw(st.dictionaries(st.sampled_from([":v", ":w"]),
                                                                         REQUEST_VALUES)),
                       "AttributeUpdates": {"b": {"Action": "PUT", "Value": draw(REQUEST_VALUES)}}}


@examples(200)
@given(request=write_requests())
def test_write_requests_parse_as_moto_parses_them(speed_patches: None, request: tuple[str, dict[str, Any]]) -> None:
    operation, body = request
    encoded = json.dumps(body).encode()
    with moto_own_code():
        expected = parsed_request(operation, encoded)
    assert parsed_request(operation, encoded) == expected


def test_request_parsing_of_binaries_and_other_services_is_moto_s(speed_patches: None) -> None:
    """Invalid base64 fails the same way; a Kinesis request (another JSON service, no AttributeValue)
    parses the same."""
    body = json.dumps({"TableName": "t", "Item": {"b": {"B": "!!notbase64"}}}).encode()
    with moto_own_code():
        expected = parsed_request("PutItem", body)
    assert expected[0] == "raised"
    assert parsed_request("PutItem", body) == expected

    from moto.core import parse
    from moto.core.utils import get_service_model

    model = get_service_model("kinesis").operation_model("PutRecords")
    request = {"method": "POST", "values": {}, "headers": {}, "url_path": "/", "url_params": {},
               "body": json.dumps({"StreamName": "s", "Records": [{"Data": "AAE=", "PartitionKey": "k"}]}).encode()}
    with moto_own_code():
        expected_kinesis = parse.PROTOCOL_PARSERS["json"](model).parse(dict(request))
    assert parse.PROTOCOL_PARSERS["json"](model).parse(dict(request)) == expected_kinesis


# -- DynamoDB items: construction and the size limit -------------------------------------------------


def built_item(init: Callable[..., None], attributes: dict[str, Any]) -> tuple[str, ...]:
    """An Item built with `init` (moto's Item.__init__ or the patched one): its attributes, or the error."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    item = Item.__new__(Item)
    hash_key, range_key = DynamoType({"S": "a"}), None
    try:
        init(item, hash_key, range_key, attributes)
    except Exception as error:
        return ("raised", type(error).__name__, str(error))
    assert type(item.attrs) is LimitedSizeDict and item.hash_key is hash_key and item.range_key is range_key
    return ("built", repr([(name, type(value).__name__, value.type, repr(value.to_json()))
                           for name, value in item.attrs.items()]))


@examples(150)
@given(attributes=st.lists(st.tuples(NAMES, ATTRIBUTE_VALUES), max_size=6))
def test_items_are_built_as_moto_builds_them(speed_patches: None, attributes: list[tuple[str, Any]]) -> None:
    from moto.dynamodb.models.dynamo_type import Item

    stored = {name: as_parsed(value) for name, value in dict(attributes).items()}
    assert built_item(Item.__init__, stored) == built_item(original(Item, "__init__"), stored)


@st.composite
def near_the_limit(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Attributes whose running size crosses moto's 405,000-byte item limit somewhere, or ends within a
    few bytes of it (either side)."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.utilities import bytesize

    names = NAMES.filter(lambda name: not name.startswith(("big", "filler")))
    attributes = draw(st.lists(st.tuples(names, ATTRIBUTE_VALUES), max_size=4, unique_by=lambda pair: pair[0]))
    for number in range(draw(st.integers(0, 3))):
        attributes.append((f"big{number}", {"S": "x" * draw(st.integers(0, 200_000))}))
    draw(st.randoms()).shuffle(attributes)
    size = sum(bytesize(name) + DynamoType(value).size() for name, value in attributes)
    filler = moto_speed.ITEM_SIZE_LIMIT - size - len("filler") + draw(st.integers(-3, 3))
    if filler >= 0:
        filler_value = {"S": "é" * (filler // 2) + "x" * (filler % 2)}
        attributes.insert(draw(st.integers(0, len(attributes))), ("filler", filler_value))
    return attributes


@examples(30)
@given(attributes=near_the_limit())
def test_an_item_over_the_size_limit_fails_at_the_same_attribute(speed_patches: None,
                                                                  attributes: list[tuple[str, Any]]) -> None:
    """Each prefix of the attributes builds, or fails with ItemSizeTooLarge, alike: the first failing
    prefix names the attribute at which both refuse the item."""
    from moto.dynamodb.models.dynamo_type import Item

    outcomes = []
    for end in range(len(attributes) + 1):
        prefix = dict(attributes[:end])
        patched, own = built_item(Item.__init__, prefix), built_item(original(Item, "__init__"), prefix)
        assert patched == own, f"after {end} attributes"
        outcomes.append(patched[0])
    assert outcomes == sorted(outcomes)  # "built" until the attribute that breaks the limit, "raised" after


def test_the_size_limit_is_moto_s_to_the_byte(speed_patches: None) -> None:
    from moto.dynamodb.models.dynamo_type import Item

    for extra in (-1, 0, 1):
        attributes = {"a": {"S": "x" * (moto_speed.ITEM_SIZE_LIMIT - 1 + extra)}}
        patched, own = built_item(Item.__init__, attributes), built_item(original(Item, "__init__"), attributes)
        assert patched == own
        assert patched[0] == ("raised" if extra > 0 else "built")


# -- DynamoDB through moto's app: moto's own code and the patched one on the same requests -----------

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def create_table(wsgi: Any, region: str, name: str, stream: bool = False) -> str:
    body: dict[str, Any] = {
        "TableName": name, "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "N"},
                                 {"AttributeName": "g", "AttributeType": "S"}],
        "GlobalSecondaryIndexes": [{"IndexName": "by-g", "Projection": {"ProjectionType": "ALL"},
                                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}]}]}
    if stream:
        body["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    answer = call(wsgi, region, f"{DYNAMODB}.CreateTable", body)
    assert answer.status.startswith("200"), answer
    return name


QUERIES = st.fixed_dictionaries({"KeyConditionExpression": st.sampled_from([
    "pk = :pk", "pk = :pk AND sk BETWEEN :lo AND :hi", "pk = :pk AND sk < :hi", "pk = :pk AND sk >= :lo"])}, optional={
    "ScanIndexForward": st.booleans(), "Limit": st.integers(1, 4), "ConsistentRead": st.booleans(),
    "ProjectionExpression": st.sampled_from(["pk, sk", "sk, #f", "#f"]),
    "FilterExpression": st.sampled_from(["attribute_exists(#f)", "attribute_not_exists(#f)", "size(#f) > :one"]),
    "Select": st.just("COUNT"), "ReturnConsumedCapacity": st.sampled_from(["TOTAL", "INDEXES"]),
})


def query_body(table: str, query: dict[str, Any], partition: str, field: str, on_index: bool) -> dict[str, Any]:
    """A Query of `partition` (of the table, or of its index) that names only the values and names it uses."""
    body = {"TableName": table, **query}
    if on_index:
        body["IndexName"], body["KeyConditionExpression"] = "by-g", "g = :pk"
        partition = {"a": "x", "b": "y"}[partition]
        body.pop("ConsistentRead", None)  # refused on a GSI, by AWS and moto alike
    if "Select" in body:
        body.pop("ProjectionExpression", None)  # refused with Select=COUNT, by AWS and moto alike
    text = " ".join(str(body.get(name, "")) for name in (
        "KeyConditionExpression", "FilterExpression", "ProjectionExpression"))
    values = {":pk": {"S": partition}, ":lo": {"N": "1"}, ":hi": {"N": "3"}, ":one": {"N": "1"}}
    body["ExpressionAttributeValues"] = {name: value for name, value in values.items() if name in text}
    if "#f" in text:
        body["ExpressionAttributeNames"] = {"#f": field}
    return body


@st.composite
def operations(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """One DynamoDB request on table "{table}" (filled in per world)."""
    kind = draw(st.sampled_from(["PutItem", "BatchWriteItem", "UpdateItem", "DeleteItem", "GetItem", "Query",
                                 "Scan", "BatchGetItem"]))
    field = draw(FIELDS)
    if kind == "PutItem":
        body = {"Item": draw(items()), "ReturnValues": draw(st.sampled_from(["NONE", "ALL_OLD"]))}
    elif kind == "BatchWriteItem":  # duplicate keys included: moto refuses those (alike, we check)
        writes = draw(st.lists(st.one_of(st.builds(lambda item: {"PutRequest": {"Item": item}}, items()),
                                         st.builds(lambda key: {"DeleteRequest": {"Key": key}}, KEYS)), max_size=4))
        return kind, {"RequestItems": {"{table}": writes}} if writes else {"RequestItems": {}}
    elif kind == "UpdateItem":
        body = {"Key": draw(KEYS), "UpdateExpression": "SET #f = :v", "ExpressionAttributeNames": {"#f": field},
                "ExpressionAttributeValues": {":v": draw(SMALL_ATTRIBUTE_VALUES)},
                "ReturnValues": draw(st.sampled_from(["NONE", "ALL_NEW", "ALL_OLD", "UPDATED_NEW", "UPDATED_OLD"]))}
        if draw(st.booleans()):  # fails on a missing item: ConditionalCheckFailedException
            body["ConditionExpression"] = "attribute_exists(pk)"
            body["ReturnValuesOnConditionCheckFailure"] = draw(st.sampled_from(["NONE", "ALL_OLD"]))
    elif kind == "DeleteItem":
        body = {"Key": draw(KEYS), "ReturnValues": draw(st.sampled_from(["NONE", "ALL_OLD"]))}
    elif kind == "GetItem":
        body = {"Key": draw(KEYS)}
        if draw(st.booleans()):
            body["ProjectionExpression"], body["ExpressionAttributeNames"] = "sk, #f", {"#f": field}
    elif kind == "Query":
        query = query_body("{table}", draw(QUERIES), draw(st.sampled_from(["a", "b"])), field, draw(st.booleans()))
        return kind, query
    elif kind == "Scan":
        body = draw(st.fixed_dictionaries({}, optional={"Limit": st.integers(1, 4),
                                                         "FilterExpression": st.just("attribute_exists(#f)")}))
        if "FilterExpression" in body:
            body["ExpressionAttributeNames"] = {"#f": field}
    else:
        keys = draw(st.lists(KEYS, min_size=1, max_size=4))  # duplicates refused alike
        return kind, {"RequestItems": {"{table}": {"Keys": keys}}}
    return kind, {"TableName": "{table}", **body}


def with_table(body: Any, table: str) -> Any:
    return json.loads(json.dumps(body).replace('"{table}"', json.dumps(table)))


def stream_records(wsgi: Any, region: str, table: str) -> list[Answer]:
    described = call(wsgi, region, f"{DYNAMODB}.DescribeTable", {"TableName": table}).json()
    stream_arn = described["Table"]["LatestStreamArn"]
    stream = call(wsgi, region, f"{STREAMS}.DescribeStream", {"StreamArn": stream_arn})
    shard = stream.json()["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = call(wsgi, region, f"{STREAMS}.GetShardIterator",
                    {"StreamArn": stream_arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"})
    records = call(wsgi, region, f"{STREAMS}.GetRecords", {"ShardIterator": iterator.json()["ShardIterator"]})
    return [stream, iterator, records]


@examples(40)
@given(rows=st.lists(items(), max_size=5), requests=st.lists(operations(), min_size=1, max_size=8))
def test_dynamodb_answers_are_moto_s_byte_for_byte(moto_app: Any, rows: list[dict[str, Any]],
                                                    requests: list[tuple[str, dict[str, Any]]]) -> None:
    """The same rows written, then the same requests, with moto's own code (in ORIGINAL_REGION) and
    with the patches (in PATCHED_REGION): every answer equal byte for byte, and the stream alike."""
    runs: dict[str, list[Any]] = {}
    table = unique("speed")
    for region, own_code in ((ORIGINAL_REGION, True), (PATCHED_REGION, False)):
        with moto_own_code() if own_code else contextlib.nullcontext():
            create_table(moto_app, region, table, stream=True)
            answers = [call(moto_app, region, f"{DYNAMODB}.PutItem", {"TableName": table, "Item": row}) for row in rows]
            answers += [call(moto_app, region, f"{DYNAMODB}.{kind}", with_table(body, table))
                        for kind, body in requests]
            runs[region] = [comparable(answer, byte_for_byte=True) for answer in answers]
            runs[region] += [comparable(answer) for answer in stream_records(moto_app, region, table)]
            call(moto_app, region, f"{DYNAMODB}.DeleteTable", {"TableName": table})
    for number, (patched, own) in enumerate(zip(runs[PATCHED_REGION], runs[ORIGINAL_REGION], strict=True)):
        assert patched == own, f"answer {number} of {[kind for kind, _ in requests]}"


# -- Query without deep copies: isolation ------------------------------------------------------------


def table_state(region: str, table: str) -> str:
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[ACCOUNT][region]
    stored = backend.get_table(table)
    return repr(sorted(repr(item.to_json()) for item in stored.all_items()))


def mutate(value: Any) -> None:
    """Change everything mutable a caller could reach in a converted result."""
    if isinstance(value, dict):
        for key in list(value):
            mutate(value[key])
            if isinstance(value[key], str | bytes):
                value[key] = "mutated"
        value["added"] = {"S": "mutated"}
    elif isinstance(value, list):
        for member in value:
            mutate(member)
        value.append("mutated")


def test_query_answers_share_nothing_mutable_with_the_table(moto_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The patched Query returns the table's own items to the handler (no deep copy): what the handler
    builds from them must share nothing a caller could change. A conversion that mutates everything
    it returned leaves the table as it was; outside a Query API call, Table.query still copies."""
    from moto.dynamodb import responses
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType

    table = create_table(moto_app, PATCHED_REGION, unique("isolation"))
    rows = [{"pk": {"S": "a"}, "sk": {"N": str(number)}, "g": {"S": "x"}, "s": {"S": "text"}, "ss": {"SS": ["p", "q"]},
             "b": {"B": "AAEC"}, "bs": {"BS": ["AA==", "AQ=="]}, "l": {"L": [{"S": "x"}, {"M": {"k": {"NS": ["1"]}}}]},
             "m": {"M": {"inner": {"L": [{"B": "AAE="}]}, "n": {"N": "1.5"}}}} for number in range(3)]
    for row in rows:
        call(moto_app, PATCHED_REGION, f"{DYNAMODB}.PutItem", {"TableName": table, "Item": row})
    before = table_state(PATCHED_REGION, table)
    converted: list[Any] = []
    convert = responses.dynamo_to_dict

    def keep_converted(value: Any) -> Any:
        result = convert(value)
        converted.append(result)
        return result

    monkeypatch.setattr(responses, "dynamo_to_dict", keep_converted)
    for query in ({"KeyConditionExpression": "pk = :pk"}, {"KeyConditionExpression": "pk = :pk", "Limit": 2},
                  {"KeyConditionExpression": "pk = :pk", "ProjectionExpression": "m, l"},
                  {"KeyConditionExpression": "g = :g", "IndexName": "by-g"},
                  {"KeyConditionExpression": "pk = :pk", "FilterExpression": "size(ss) > :one"}):
        values = {name: value for name, value in {":pk": {"S": "a"}, ":g": {"S": "x"}, ":one": {"N": "1"}}.items()
                  if name in json.dumps(query)}
        answer = call(moto_app, PATCHED_REGION, f"{DYNAMODB}.Query",
                      {"TableName": table, "ExpressionAttributeValues": values, **query})
        assert answer.status.startswith("200"), answer
        assert converted, "the Query answer was not converted by dynamo_to_dict"
        for result in converted:  # a caller changing what the handler built, once it answered
            mutate(result)
        assert "mutated" in json.dumps(converted, default=repr)
        converted.clear()
        assert table_state(PATCHED_REGION, table) == before, f"Query {query} let its result change the table"
    monkeypatch.undo()

    stored = dynamodb_backends[ACCOUNT][PATCHED_REGION].get_table(table)
    results, _, _ = stored.query(DynamoType({"S": "a"}), None, [], None, None, True, [])
    for item in results:
        item.attrs["s"].value = "mutated"
        item.attrs["ss"].value.append("mutated")
        item.attrs["m"].value["n"].value = "0"
    assert table_state(PATCHED_REGION, table) == before, "Table.query outside a Query call returned the table's items"
    assert call(moto_app, PATCHED_REGION, f"{DYNAMODB}.Query", {"TableName": "missing"}).status.startswith("400")
    results, _, _ = stored.query(DynamoType({"S": "a"}), None, [], None, None, True, [])
    results[0].attrs["s"].value = "mutated"
    assert table_state(PATCHED_REGION, table) == before, "a failed Query call left the deep copy off"
    call(moto_app, PATCHED_REGION, f"{DYNAMODB}.DeleteTable", {"TableName": table})


# -- every request: method lists and request ids ----------------------------------------------------


def test_method_lists_are_moto_s_and_stay_so(moto_app: Any) -> None:
    from moto.core import responses
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
    from moto.kinesis.responses import KinesisResponse
    from moto.sqs.responses import SQSResponse

    list_methods = original(responses, "method_names_from_class")
    handlers = (DynamoHandler, DynamoDBStreamsHandler, KinesisResponse, SQSResponse)
    for handler in handlers:
        assert responses.method_names_from_class(handler) == list_methods(handler)
    table = create_table(moto_app, PATCHED_REGION, unique("methods"))
    call(moto_app, PATCHED_REGION, f"{DYNAMODB}.Scan", {"TableName": table})
    call(moto_app, PATCHED_REGION, f"{SQS}.ListQueues", {})
    for handler in handlers:  # the cached list is shared: nothing may have changed it
        assert responses.method_names_from_class(handler) == list_methods(handler)
        assert responses.method_names_from_class(handler) is responses.method_names_from_class(handler)


def test_request_ids_look_like_moto_s_and_follow_its_seed(speed_patches: None) -> None:
    from moto.core import responses
    from moto.moto_api._internal import mock_random

    headers: dict[str, Any] = {"other": "kept"}
    value = responses.gen_amzn_requestid_long(headers)
    own = original(responses, "gen_amzn_requestid_long")({})
    for request_id in (value, own):
        assert len(request_id) == 52 and set(request_id) <= set(string.ascii_letters + string.digits)
    assert headers == {"other": "kept", "x-amzn-requestid": value}
    mock_random.seed(42)
    first = responses.gen_amzn_requestid_long()
    mock_random.seed(42)
    assert responses.gen_amzn_requestid_long() == first  # seeded moto is deterministic, as before
    assert len({responses.gen_amzn_requestid_long() for _ in range(50)}) == 50
    mock_random.seed()


# -- the direct dispatch path and moto's Flask app ---------------------------------------------------


def pipeline_requests(send: Callable[[str, Any], Answer], name: str) -> list[tuple[str, Answer]]:
    """The requests the pipeline makes, each service's errors included; later requests use what earlier
    answers returned (stream ARNs, shard iterators, receipt handles)."""
    answers: list[tuple[str, Answer]] = []

    def ask(target: str, body: Any) -> Answer:
        answer = send(target, body)
        answers.append((target, answer))
        return answer

    table = {"TableName": name}
    key = {"pk": {"S": "a"}, "sk": {"N": "1"}}
    ask(f"{DYNAMODB}.CreateTable", {
        **table, "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "N"}],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}})
    ask(f"{DYNAMODB}.PutItem", {**table, "Item": {**key, "v": {"M": {"b": {"B": "AAE="}, "n": {"NS": ["1", "2.5"]}}}}})
    ask(f"{DYNAMODB}.PutItem", {**table, "Item": key, "ConditionExpression": "attribute_not_exists(pk)"})
    ask(f"{DYNAMODB}.GetItem", {**table, "Key": key, "ReturnConsumedCapacity": "TOTAL"})
    ask(f"{DYNAMODB}.BatchWriteItem", {"RequestItems": {name: [
        {"PutRequest": {"Item": {"pk": {"S": "a"}, "sk": {"N": str(number)}, "s": {"S": "é"}}}} for number in (2, 3)]}})
    ask(f"{DYNAMODB}.Query", {**table, "KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {
        ":pk": {"S": "a"}}, "ScanIndexForward": False, "Limit": 2})
    ask(f"{DYNAMODB}.UpdateItem", {**table, "Key": {"pk": {"S": "z"}, "sk": {"N": "0"}},
                                   "UpdateExpression": "SET v = :v",
                                   "ConditionExpression": "attribute_exists(pk)",
                                   "ExpressionAttributeValues": {":v": {"N": "1"}}})
    ask(f"{DYNAMODB}.UpdateItem", {**table, "Key": key, "UpdateExpression": "ADD c :one", "ReturnValues": "ALL_NEW",
                                   "ExpressionAttributeValues": {":one": {"N": "1"}}})
    ask(f"{DYNAMODB}.BatchGetItem", {"RequestItems": {name: {"Keys": [key, {"pk": {"S": "a"}, "sk": {"N": "3"}}]}}})
    ask(f"{DYNAMODB}.GetItem", {"TableName": f"{name}-missing", "Key": key})
    ask(f"{DYNAMODB}.PutItem", {**table, "Item": {"pk": {"S": ""}, "sk": {"N": "1"}}})
    described = ask(f"{DYNAMODB}.DescribeTable", table).json()
    stream_arn = described["Table"]["LatestStreamArn"]
    stream = ask(f"{STREAMS}.DescribeStream", {"StreamArn": stream_arn}).json()
    shard = stream["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = ask(f"{STREAMS}.GetShardIterator", {"StreamArn": stream_arn, "ShardId": shard,
                                                   "ShardIteratorType": "TRIM_HORIZON"}).json()["ShardIterator"]
    ask(f"{STREAMS}.GetRecords", {"ShardIterator": iterator, "Limit": 10})
    ask(f"{STREAMS}.GetRecords", {"ShardIterator": "not-an-iterator"})

    stream_name = {"StreamName": name}
    ask(f"{KINESIS}.CreateStream", {**stream_name, "ShardCount": 2})
    ask(f"{KINESIS}.DescribeStreamSummary", stream_name)
    ask(f"{KINESIS}.PutRecord", {**stream_name, "Data": base64.b64encode(b"one").decode(), "PartitionKey": "a"})
    ask(f"{KINESIS}.PutRecords", {**stream_name, "Records": [
        {"Data": base64.b64encode(f"record {number}".encode()).decode(), "PartitionKey": f"key-{number}"}
        for number in range(4)]})
    shards = ask(f"{KINESIS}.ListShards", stream_name).json()["Shards"]
    for listed in shards:
        shard_iterator = ask(f"{KINESIS}.GetShardIterator", {
            **stream_name, "ShardId": listed["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}).json()["ShardIterator"]
        ask(f"{KINESIS}.GetRecords", {"ShardIterator": shard_iterator, "Limit": 10})
    ask(f"{KINESIS}.DescribeStream", {"StreamName": f"{name}-missing"})
    ask(f"{KINESIS}.PutRecord", {**stream_name, "Data": "AAE=", "PartitionKey": ""})

    created = ask(f"{SQS}.CreateQueue", {"QueueName": name, "Attributes": {"VisibilityTimeout": "30"}})
    queue_url = created.json()["QueueUrl"]
    ask(f"{SQS}.SendMessage", {"QueueUrl": queue_url, "MessageBody": "hello", "MessageAttributes": {
        "kind": {"DataType": "String", "StringValue": "greeting"}}})
    ask(f"{SQS}.SendMessageBatch", {"QueueUrl": queue_url, "Entries": [
        {"Id": str(number), "MessageBody": f"body {number}"} for number in range(3)]})
    received = ask(f"{SQS}.ReceiveMessage", {"QueueUrl": queue_url, "MaxNumberOfMessages": 10,
                                             "MessageAttributeNames": ["All"], "AttributeNames": ["All"]}).json()
    for message in received.get("Messages", []):
        ask(f"{SQS}.DeleteMessage", {"QueueUrl": queue_url, "ReceiptHandle": message["ReceiptHandle"]})
    ask(f"{SQS}.GetQueueAttributes", {"QueueUrl": queue_url, "AttributeNames": ["All"]})
    ask(f"{SQS}.SendMessage", {"QueueUrl": f"{queue_url}-missing", "MessageBody": "x"})
    ask(f"{SQS}.ChangeMessageVisibility", {"QueueUrl": queue_url, "ReceiptHandle": "nope", "VisibilityTimeout": 5})
    ask(f"{SQS}.DeleteQueue", {"QueueUrl": queue_url})

    ask(f"{DYNAMODB}.NoSuchOperation", {})  # moto raises: both paths let it through
    ask(f"{DYNAMODB}.GetItem", b"not json")
    return answers


def test_direct_dispatch_answers_as_moto_s_flask_app(moto_app: Any) -> None:
    name = unique("dispatch")
    direct = MotoDispatch(moto_app)
    through_flask = pipeline_requests(lambda target, body: call(moto_app, ORIGINAL_REGION, target, body), name)
    through_dispatch = pipeline_requests(lambda target, body: call(direct, PATCHED_REGION, target, body), name)
    assert [target for target, _ in through_dispatch] == [target for target, _ in through_flask]
    assert len(through_flask) >= 30
    statuses = {answer.status for _, answer in through_flask}
    assert {"200 OK", "400 BAD REQUEST", "raised"} <= statuses  # successes, moto's errors, moto's exceptions
    for (target, patched), (_, own) in zip(through_dispatch, through_flask, strict=True):
        assert comparable(patched) == comparable(own), target


def _client_error() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "ListQueues")


def _http_exception(status: int) -> Exception:
    from werkzeug.exceptions import default_exceptions

    return default_exceptions[status]("described by the handler")


@pytest.mark.parametrize("error", [_client_error, lambda: _http_exception(400), lambda: _http_exception(404),
                                   lambda: _http_exception(503), lambda: RuntimeError("moto broke")],
                         ids=["ClientError", "HTTP 400", "HTTP 404", "HTTP 503", "another exception"])
def test_direct_dispatch_answers_a_handler_s_exceptions_as_flask_does(
        moto_app: Any, monkeypatch: pytest.MonkeyPatch, error: Callable[[], Exception]) -> None:
    """What a handler raises past moto's own error handling: a ClientError (moto's Flask wrapper
    answers 400 with its message), an HTTPException (Flask answers it), anything else (propagates)."""
    from moto.sqs.responses import SQSResponse

    def call_action(self: Any) -> Any:
        raise error()

    monkeypatch.setattr(SQSResponse, "call_action", call_action)
    own = call(moto_app, ORIGINAL_REGION, f"{SQS}.ListQueues", {})
    patched = call(MotoDispatch(moto_app), PATCHED_REGION, f"{SQS}.ListQueues", {})
    assert comparable(patched) == comparable(own)
    assert own.status != "200 OK"


def test_requests_the_direct_path_does_not_take_reach_moto_s_app(moto_app: Any) -> None:
    """An Origin (CORS), a method other than POST, another path or another service: moto's app."""
    from esjoin.emulator.moto_layer.dispatch import direct_handler

    base = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "HTTP_X_AMZ_TARGET": f"{DYNAMODB}.GetItem"}
    assert direct_handler(base) is not None
    for change in ({"HTTP_ORIGIN": "http://example.com"}, {"REQUEST_METHOD": "GET"}, {"PATH_INFO": "/x"},
                   {"HTTP_X_AMZ_TARGET": "Logs_20140328.DescribeLogGroups"}, {"HTTP_X_AMZ_TARGET": ""}):
        assert direct_handler({**base, **change}) is None, change


# -- the HTTP server: header parsing ------------------------------------------------------------------

TOKEN_CHARACTERS = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != ":")
LATIN_1 = st.characters(min_codepoint=0, max_codepoint=0xFF, exclude_characters="\r\n")
HEADER_NAMES = st.one_of(st.sampled_from(["Host", "Content-Type", "X-Amz-Target", "Connection", "From"]),
                         st.text(TOKEN_CHARACTERS, min_size=1, max_size=12))
HEADER_VALUES = st.one_of(st.text(LATIN_1, max_size=20), st.just(""), st.sampled_from([" ", "\t", " a b ", "\tx\t"]))


@st.composite
def header_lines(draw: st.DrawFn, plain: bool) -> str:
    """A header line; plain ones (what the fast path takes) only, or any kind (what it must leave)."""
    kinds = ["plain"] * 5 + ["long", "repeat"] + ([] if plain else ["folded", "odd", "odd"])
    kind = draw(st.sampled_from(kinds))
    end = draw(st.sampled_from(["\r\n", "\n"] if plain else ["\r\n", "\n", "\r", "\r\r\n"]))
    if kind == "folded":  # a continuation of the previous header (or a stray one, first)
        return draw(st.sampled_from([" ", "\t"])) + draw(HEADER_VALUES) + end
    if kind == "odd":  # no colon, an empty name, a space in the name, a unix "From " line
        return draw(st.sampled_from(["no colon", ": empty name", "Bad Name: v", "From someone", "X :v"])) + end
    name = draw(HEADER_NAMES)
    space = draw(st.sampled_from(["", " ", "  ", "\t", " \t "]))
    value = "v" * draw(st.integers(60_000, 70_000)) if kind == "long" else draw(HEADER_VALUES)
    line = f"{name}:{space}{value}{end}"
    return line + line if kind == "repeat" else line


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(header_lines(plain=draw(st.booleans())), max_size=8))
    if draw(st.integers(0, 20)) == 0:
        lines *= 13  # past http.client's 100 headers
    ending = draw(st.sampled_from(["\r\n", "\r\n", "\n", ""]))  # "": the connection ends mid-headers
    return ("".join(lines) + ending).encode("iso-8859-1") + draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\n"]))


def read_headers(parse: Callable[[io.BufferedReader], Any], block: bytes) -> tuple[Any, ...]:
    stream = io.BufferedReader(io.BytesIO(block))  # type: ignore[arg-type]
    try:
        message = parse(stream)
    except Exception as error:
        return ("raised", type(error).__name__, str(error))
    return ("parsed", message._headers, message.items(), message.get_payload(), message.get_unixfrom(),
            [type(defect).__name__ for defect in message.defects], stream.read())


def endpoint_parse_headers(stream: io.BufferedReader) -> Any:
    """KeepAliveRequestHandler._parse_headers, on a stream instead of a connection."""
    handler = SimpleNamespace(rfile=stream, MessageClass=http.client.HTTPMessage)
    return KeepAliveRequestHandler._parse_headers(handler)  # type: ignore[arg-type]


@examples(400)
@given(block=header_blocks())
def test_header_blocks_parse_as_http_client_parses_them(block: bytes) -> None:
    assert read_headers(endpoint_parse_headers, block) == read_headers(http.client.parse_headers, block)


@pytest.mark.parametrize("block", [
    b"A: 1\r2\r\nContent-Length: 3\r\n\r\n",  # a bare CR ends the email parser's line: the rest is body
    b"A: 1\r\r\nContent-Length: 3\r\n\r\n",  # ... and a CR before CRLF makes an empty line: the block ends
    b"A: x\r",
    b"Content-Length:  \t 7 \r\nX-Empty:\r\nx-empty: again\r\n\r\n",
    b"X-Latin: caf\xe9 \x85 \xff\r\n\r\n",
    b"X-A: 1\r\n folded\r\n\tagain\r\n\r\n",
])
def test_header_blocks_the_fast_path_must_leave_to_the_email_parser(block: bytes) -> None:
    """Found by the property above: bare CRs inside a line (the plain-line pattern took them as part
    of the value; http.client ends the header block there). Kept as examples."""
    assert read_headers(endpoint_parse_headers, block) == read_headers(http.client.parse_headers, block)


# -- the HTTP server: keep-alive over a raw socket ---------------------------------------------------


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers what it received; on /ignore-body it never reads the body (the server must)."""
    body = b"" if environ["PATH_INFO"] == "/ignore-body" else environ["wsgi.input"].read()
    payload = json.dumps({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                          "body": body.decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[tuple[str, int]]:
    server = EndpointServer("127.0.0.1", 0, echo)
    thread = threading.Thread(target=server.serve_forever, name="echo-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[0], server.server_address[1]
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


@dataclass
class RawConnection:
    sock: socket.socket
    reader: io.BufferedReader

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, http.client.HTTPMessage, Any]:
        status_line = self.reader.readline()
        assert status_line, "the server closed the connection instead of answering"
        version, status, _ = status_line.decode("iso-8859-1").split(" ", 2)
        assert version == "HTTP/1.1"
        headers = http.client.parse_headers(self.reader)
        body = self.reader.read(int(headers["Content-Length"]))
        return int(status), headers, json.loads(body)

    def closed_by_server(self) -> bool:
        return self.reader.read(1) == b""  # blocks until data or EOF; the socket timeout is the deadline


@contextlib.contextmanager
def raw_connection(address: tuple[str, int]) -> Iterator[RawConnection]:
    sock = socket.create_connection(address, timeout=10)
    try:
        yield RawConnection(sock, sock.makefile("rb"))
    finally:
        sock.close()


def request(method: str, path: str, body: bytes = b"", version: str = "HTTP/1.1", **headers: str) -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    if body and "Transfer_Encoding" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_two_requests_on_one_connection_are_both_answered(echo_server: tuple[str, int]) -> None:
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/first", b"one"))
        status, headers, body = connection.response()
        assert (status, body["path"], body["body"]) == (200, "/first", "one")
        assert headers.get("Connection") is None  # kept open
        connection.send(request("POST", "/second", b"two"))
        assert connection.response()[2] == {"method": "POST", "path": "/second", "body": "two"}


def test_pipelined_requests_are_answered_in_order(echo_server: tuple[str, int]) -> None:
    """Bodies the application does not read are still read by the server: the next request starts
    right after each."""
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/ignore-body", b"GET /smuggled HTTP/1.1\r\n\r\n")
                        + request("POST", "/a", b"x" * 70_000) + request("GET", "/b"))
        assert [connection.response()[2]["path"] for _ in range(3)] == ["/ignore-body", "/a", "/b"]


def test_connection_close_is_honoured(echo_server: tuple[str, int]) -> None:
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/last", b"bye", Connection="close") + request("GET", "/never"))
        status, headers, body = connection.response()
        assert (status, headers["Connection"], body["path"]) == (200, "close", "/last")
        assert connection.closed_by_server()


def test_a_chunked_body_is_read_in_full_before_the_next_request(echo_server: tuple[str, int]) -> None:
    chunked = b"5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/chunked", chunked, Transfer_Encoding="chunked"))
        assert connection.response()[2]["body"] == "hello 0123456789"
        connection.send(request("POST", "/ignore-body", chunked, Transfer_Encoding="chunked")
                        + request("POST", "/after", b"next"))
        assert connection.response()[2]["path"] == "/ignore-body"
        assert connection.response()[2] == {"method": "POST", "path": "/after", "body": "next"}


def test_http_1_0_closes_the_connection(echo_server: tuple[str, int]) -> None:
    with raw_connection(echo_server) as connection:
        connection.send(request("GET", "/old", version="HTTP/1.0") + request("GET", "/never"))
        status, headers, body = connection.response()
        assert (status, headers["Connection"], body["path"]) == (200, "close", "/old")
        assert connection.closed_by_server()


def test_an_unreadable_body_closes_the_connection(echo_server: tuple[str, int]) -> None:
    with raw_connection(echo_server) as connection:
        connection.send(request("POST", "/bad", b"zz\r\n", Transfer_Encoding="chunked") + request("GET", "/never"))
        status_line = connection.reader.readline()
        assert status_line.startswith(b"HTTP/1.1 400")
        http.client.parse_headers(connection.reader)
        connection.reader.read(1024)
        assert connection.closed_by_server()


# -- SQS: counts, receives and retention, against moto's own code on the same operations -------------


class Clock:
    """moto's clock (moto.core.utils.utcnow, which every SQS time read goes through), moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.datetime(2025, 1, 1, 12, 0, 0)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, milliseconds: int) -> None:
        self.now += datetime.timedelta(milliseconds=milliseconds)


SEND = st.tuples(st.just("send"), st.sampled_from([0, 0, 1, 3]))  # delay seconds
RECEIVE = st.tuples(st.just("receive"), st.integers(1, 4), st.sampled_from([0, 1, 3]))  # count, visibility timeout
# Milliseconds; past the 60 s retention rarely (an expired message ends every later receive in moto).
ADVANCE = st.tuples(st.just("advance"), st.sampled_from([0, 1, 999, 1000, 1000, 1001, 1001, 3001, 3001, 60_000]))
SQS_OPERATIONS = st.lists(st.one_of(
    SEND, SEND, RECEIVE, RECEIVE, ADVANCE, ADVANCE,
    st.tuples(st.just("delete"), st.integers(0, 5)),  # the n-th receipt handle received (if any)
    st.tuples(st.just("change visibility"), st.integers(0, 5), st.sampled_from([0, 1, 3])),
), min_size=1, max_size=30)
# Each run covers these at least: redrive to the dead-letter queue after two receives, expiry by
# retention (60 s), a delayed message becoming visible, a visibility change ending a receive's timeout.
SQS_SCENARIOS = [
    ([("send", 0), ("receive", 1, 1), ("advance", 1001), ("receive", 1, 1), ("advance", 1001), ("receive", 1, 1)],
     True),
    ([("send", 0), ("advance", 60_000), ("receive", 4, 1), ("advance", 1), ("receive", 4, 1), ("send", 0),
      ("receive", 4, 0), ("advance", 61_000), ("receive", 4, 1)], False),  # at the retention limit, then past it
    ([("send", 1), ("receive", 1, 0), ("advance", 1000), ("receive", 1, 0), ("advance", 1), ("receive", 1, 3)], False),
    ([("send", 0), ("receive", 1, 3), ("change visibility", 0, 0), ("advance", 1), ("receive", 1, 3),
      ("delete", 1), ("delete", 0)], False),
]


@dataclass
class SqsWorld:
    backend: Any
    queue: Any
    handles: list[str]
    own_code: bool
    messages_sent: int = 0

    def run(self, operation: tuple[Any, ...], clock: Clock) -> Any:
        with moto_own_code() if self.own_code else contextlib.nullcontext():
            return self._run(operation, clock)

    def _run(self, operation: tuple[Any, ...], clock: Clock) -> Any:
        kind, *arguments = operation
        name = self.queue.name
        try:
            if kind == "send":
                self.messages_sent += 1
                self.backend.send_message(name, f"message {self.messages_sent}", delay_seconds=arguments[0])
                result: Any = None
            elif kind == "receive":
                received = self.backend.receive_message(name, arguments[0], 0, arguments[1])
                self.handles += [message.receipt_handle for message in received]
                result = [(message.body, message.approximate_receive_count) for message in received]
            elif kind == "advance":  # the test moves the clock, once for both
                result = None
            elif arguments[0] >= len(self.handles):
                result = "no such handle"
            elif kind == "delete":
                self.backend.delete_message(name, self.handles[arguments[0]])
                result = None
            else:
                self.backend.change_message_visibility(name, self.handles[arguments[0]], arguments[1])
                result = None
        except Exception as error:
            result = f"{type(error).__name__}: {error}"
        attributes = self.backend.get_queue_attributes(name, ["All"])
        return result, {key: value for key, value in attributes.items() if "Arn" not in key and "Redrive" not in key}


@examples(120)
@given(operations=SQS_OPERATIONS, redrive=st.booleans())
@example(*SQS_SCENARIOS[0])
@example(*SQS_SCENARIOS[1])
@example(*SQS_SCENARIOS[2])
@example(*SQS_SCENARIOS[3])
def test_sqs_receives_and_counts_are_moto_s(speed_patches: None, operations: list[tuple[Any, ...]],
                                            redrive: bool) -> None:
    """Sends (delayed), receives (with visibility timeouts), deletes and visibility changes, with moto's
    clock moved across visibility, delay and retention (60 s) boundaries: each step answers the same,
    and the queue's counts read the same, with moto's own code and with the patches."""
    from moto.sqs.models import Queue, sqs_backends

    clock = Clock()
    number = next(_names)
    worlds = []
    with pytest.MonkeyPatch.context() as patch:
        import moto.core.utils

        patch.setattr(moto.core.utils, "utcnow", clock)
        for region, own_code in ((ORIGINAL_REGION, True), (PATCHED_REGION, False)):
            backend = sqs_backends[ACCOUNT][region]
            attributes = {"MessageRetentionPeriod": "60", "VisibilityTimeout": "1"}
            if redrive:
                dead_letters = backend.create_queue(f"dead-letters-{number}")
                attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dead_letters.queue_arn,
                                                          "maxReceiveCount": 2})
            worlds.append(SqsWorld(backend, backend.create_queue(f"speed-{number}", **attributes), [], own_code))
        own, patched = worlds
        for step, operation in enumerate(operations):
            if operation[0] == "advance":
                clock.advance(operation[1])
            assert patched.run(operation, clock) == own.run(operation, clock), f"step {step}: {operation}"
            queue = patched.queue  # the patched properties and moto's own, on one queue, at one instant
            for name in ("messages", "approximate_number_of_messages_delayed",
                         "approximate_number_of_messages_not_visible"):
                assert getattr(queue, name) == original(Queue, name).fget(queue), f"step {step}: {name}"
            for message in queue._messages:
                assert patched.backend.is_message_valid_based_on_retention_period(queue.name, message) == original(
                    type(patched.backend), "is_message_valid_based_on_retention_period")(
                    patched.backend, queue.name, message)
        for world in worlds:
            world.backend.delete_queue(world.queue.name)
            if redrive:
                world.backend.delete_queue(f"dead-letters-{number}")
