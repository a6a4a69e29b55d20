"""esjoin.emulator.moto_layer.speed's parsing of DynamoDB AttributeValues in JSON requests, compared with
moto's own request parser on the same bodies (support/moto_speed.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.emulator.support.attribute_values import ATTRIBUTE_VALUES, NAMES
from tests.emulator.support.equivalence import examples
from tests.emulator.support.moto_speed import moto_own_code

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL", "X"]), children, max_size=3
        )
    ),
    max_leaves=6,
)
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
        return operation, {
            "TableName": "t",
            "Item": draw(REQUEST_ITEMS),
            "ReturnValues": "ALL_OLD",
            "ExpressionAttributeValues": {":v": draw(REQUEST_VALUES)},
        }
    if operation == "BatchWriteItem":
        writes = draw(
            st.lists(
                st.one_of(
                    st.builds(lambda item: {"PutRequest": {"Item": item}}, REQUEST_ITEMS),
                    st.builds(lambda key: {"DeleteRequest": {"Key": key}}, REQUEST_ITEMS),
                ),
                max_size=4,
            )
        )
        return operation, {"RequestItems": {"t": writes, "u": writes[:1]}}
    return operation, {
        "TableName": "t",
        "Key": draw(REQUEST_ITEMS),
        "UpdateExpression": "SET #a = :v",
        "ExpressionAttributeNames": {"#a": "a"},
        "ExpressionAttributeValues": draw(st.dictionaries(st.sampled_from([":v", ":w"]), REQUEST_VALUES)),
        "AttributeUpdates": {"b": {"Action": "PUT", "Value": draw(REQUEST_VALUES)}},
    }


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
    request = {
        "method": "POST",
        "values": {},
        "headers": {},
        "url_path": "/",
        "url_params": {},
        "body": json.dumps({"StreamName": "s", "Records": [{"Data": "AAE=", "PartitionKey": "k"}]}).encode(),
    }
    with moto_own_code():
        expected_kinesis = parse.PROTOCOL_PARSERS["json"](model).parse(dict(request))
    assert parse.PROTOCOL_PARSERS["json"](model).parse(dict(request)) == expected_kinesis
