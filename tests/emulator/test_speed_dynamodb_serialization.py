"""esjoin.emulator.moto_layer.speed's DynamoDB response conversion (dynamo_to_dict) and serialization,
compared byte for byte with moto's own code on the same results (support/moto_speed.py)."""

from __future__ import annotations

import contextlib
import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.emulator.support.attribute_values import LARGE_ITEMS, as_parsed
from tests.emulator.support.equivalence import examples
from tests.emulator.support.moto_speed import (
    DYNAMODB,
    ORIGINAL_REGION,
    PATCHED_REGION,
    call,
    create_table,
    moto_own_code,
    unique,
)


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
def test_dynamodb_results_serialize_byte_for_byte_as_moto_does(
    speed_patches: None, rows: list[dict[str, Any]], wire_binaries: bool, old: dict[str, Any]
) -> None:
    from moto.dynamodb.models.table import StreamRecord

    stored = [moto_item(row, wire_binaries) for row in rows]
    table = SimpleNamespace(hash_key_attr="pk", range_key_attr="sk", region_name=ORIGINAL_REGION)
    record = StreamRecord(table, "NEW_AND_OLD_IMAGES", "MODIFY", moto_item(old, wire_binaries), stored[0], 7)
    last_key = {"pk": stored[-1].attrs["pk"], "sk": stored[-1].attrs["sk"]}
    results = {
        ("dynamodb", "GetItem"): {"Item": stored[0].attrs},
        ("dynamodb", "Query"): {
            "Count": len(stored),
            "ScannedCount": len(stored),
            "Items": [item.attrs for item in stored],
            "LastEvaluatedKey": last_key,
        },
        ("dynamodb", "Scan"): {"Count": len(stored), "ScannedCount": 9, "Items": [item.attrs for item in stored]},
        ("dynamodb", "BatchGetItem"): {
            "ConsumedCapacity": [{"CapacityUnits": 2, "TableName": "t"}],
            "Responses": {"t": [item.attrs for item in stored]},
            "UnprocessedKeys": {"t": {"Keys": [last_key]}},
        },
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
    result = {
        "when": datetime.datetime(2025, 1, 2, 3, 4, 5),
        "item": item,
        "none": None,
        "ratio": 0.5,
        "nested": [{"x": item.attrs["m"]}],
        "flag": True,
    }
    assert repr(responses.dynamo_to_dict(result)) == repr(utilities.dynamo_to_dict(result))
    assert responses.dynamo_to_dict is not utilities.dynamo_to_dict  # the comparison is not trivial


@pytest.mark.xfail(
    strict=True,
    reason=(
        "moto's own serializer writes an attribute with an empty name into its parent map (GetItem answers "
        '{"Item": {"pk": ..., "S": "v"}}); the patched one writes {"": {"S": "v"}}. AWS refuses empty attribute '
        "names with a ValidationException; moto stores them. Kept as moto's bug, not reproduced."
    ),
)
def test_empty_attribute_names_are_answered_as_moto_does(moto_app: Any) -> None:
    answers = {}
    name = unique("empty-names")
    for region, own_code in ((ORIGINAL_REGION, True), (PATCHED_REGION, False)):
        with moto_own_code() if own_code else contextlib.nullcontext():
            table = create_table(moto_app, region, name)
            call(
                moto_app,
                region,
                f"{DYNAMODB}.PutItem",
                {"TableName": table, "Item": {"pk": {"S": "a"}, "sk": {"N": "1"}, "": {"S": "v"}}},
            )
            answers[region] = call(
                moto_app,
                region,
                f"{DYNAMODB}.GetItem",
                {"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"N": "1"}}},
            )
            call(moto_app, region, f"{DYNAMODB}.DeleteTable", {"TableName": table})
    assert answers[PATCHED_REGION].body == answers[ORIGINAL_REGION].body
