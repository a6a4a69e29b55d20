"""DynamoDB through moto's app with every speed patch (esjoin.emulator.moto_layer.speed) and with moto's
own code on the same requests: every answer equal byte for byte, the stream alike; and Query without deep
copies shares nothing mutable with the table (support/moto_speed.py)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.emulator.support.attribute_values import FIELDS, KEYS, SMALL_ATTRIBUTE_VALUES, items
from tests.emulator.support.equivalence import examples
from tests.emulator.support.moto_speed import (
    ACCOUNT,
    DYNAMODB,
    ORIGINAL_REGION,
    PATCHED_REGION,
    STREAMS,
    Answer,
    call,
    comparable,
    create_table,
    moto_own_code,
    unique,
)

QUERIES = st.fixed_dictionaries(
    {
        "KeyConditionExpression": st.sampled_from(
            ["pk = :pk", "pk = :pk AND sk BETWEEN :lo AND :hi", "pk = :pk AND sk < :hi", "pk = :pk AND sk >= :lo"]
        )
    },
    optional={
        "ScanIndexForward": st.booleans(),
        "Limit": st.integers(1, 4),
        "ConsistentRead": st.booleans(),
        "ProjectionExpression": st.sampled_from(["pk, sk", "sk, #f", "#f"]),
        "FilterExpression": st.sampled_from(["attribute_exists(#f)", "attribute_not_exists(#f)", "size(#f) > :one"]),
        "Select": st.just("COUNT"),
        "ReturnConsumedCapacity": st.sampled_from(["TOTAL", "INDEXES"]),
    },
)


def query_body(table: str, query: dict[str, Any], partition: str, field: str, on_index: bool) -> dict[str, Any]:
    """A Query of `partition` (of the table, or of its index) that names only the values and names it uses."""
    body = {"TableName": table, **query}
    if on_index:
        body["IndexName"], body["KeyConditionExpression"] = "by-g", "g = :pk"
        partition = {"a": "x", "b": "y"}[partition]
        body.pop("ConsistentRead", None)  # refused on a GSI, by AWS and moto alike
    if "Select" in body:
        body.pop("ProjectionExpression", None)  # refused with Select=COUNT, by AWS and moto alike
    text = " ".join(
        str(body.get(name, "")) for name in ("KeyConditionExpression", "FilterExpression", "ProjectionExpression")
    )
    values = {":pk": {"S": partition}, ":lo": {"N": "1"}, ":hi": {"N": "3"}, ":one": {"N": "1"}}
    body["ExpressionAttributeValues"] = {name: value for name, value in values.items() if name in text}
    if "#f" in text:
        body["ExpressionAttributeNames"] = {"#f": field}
    return body


@st.composite
def operations(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """One DynamoDB request on table "{table}" (filled in per world)."""
    kind = draw(
        st.sampled_from(
            ["PutItem", "BatchWriteItem", "UpdateItem", "DeleteItem", "GetItem", "Query", "Scan", "BatchGetItem"]
        )
    )
    field = draw(FIELDS)
    if kind == "PutItem":
        body = {"Item": draw(items()), "ReturnValues": draw(st.sampled_from(["NONE", "ALL_OLD"]))}
    elif kind == "BatchWriteItem":  # duplicate keys included: moto refuses those (alike, we check)
        writes = draw(
            st.lists(
                st.one_of(
                    st.builds(lambda item: {"PutRequest": {"Item": item}}, items()),
                    st.builds(lambda key: {"DeleteRequest": {"Key": key}}, KEYS),
                ),
                max_size=4,
            )
        )
        return kind, {"RequestItems": {"{table}": writes}} if writes else {"RequestItems": {}}
    elif kind == "UpdateItem":
        body = {
            "Key": draw(KEYS),
            "UpdateExpression": "SET #f = :v",
            "ExpressionAttributeNames": {"#f": field},
            "ExpressionAttributeValues": {":v": draw(SMALL_ATTRIBUTE_VALUES)},
            "ReturnValues": draw(st.sampled_from(["NONE", "ALL_NEW", "ALL_OLD", "UPDATED_NEW", "UPDATED_OLD"])),
        }
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
        body = draw(
            st.fixed_dictionaries(
                {}, optional={"Limit": st.integers(1, 4), "FilterExpression": st.just("attribute_exists(#f)")}
            )
        )
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
    iterator = call(
        wsgi,
        region,
        f"{STREAMS}.GetShardIterator",
        {"StreamArn": stream_arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"},
    )
    records = call(wsgi, region, f"{STREAMS}.GetRecords", {"ShardIterator": iterator.json()["ShardIterator"]})
    return [stream, iterator, records]


@examples(40)
@given(rows=st.lists(items(), max_size=5), requests=st.lists(operations(), min_size=1, max_size=8))
def test_dynamodb_answers_are_moto_s_byte_for_byte(
    moto_app: Any, rows: list[dict[str, Any]], requests: list[tuple[str, dict[str, Any]]]
) -> None:
    """The same rows written, then the same requests, with moto's own code (in ORIGINAL_REGION) and
    with the patches (in PATCHED_REGION): every answer equal byte for byte, and the stream alike."""
    runs: dict[str, list[Any]] = {}
    table = unique("speed")
    for region, own_code in ((ORIGINAL_REGION, True), (PATCHED_REGION, False)):
        with moto_own_code() if own_code else contextlib.nullcontext():
            create_table(moto_app, region, table, stream=True)
            answers = [call(moto_app, region, f"{DYNAMODB}.PutItem", {"TableName": table, "Item": row}) for row in rows]
            answers += [
                call(moto_app, region, f"{DYNAMODB}.{kind}", with_table(body, table)) for kind, body in requests
            ]
            runs[region] = [comparable(answer, byte_for_byte=True) for answer in answers]
            runs[region] += [comparable(answer) for answer in stream_records(moto_app, region, table)]
            call(moto_app, region, f"{DYNAMODB}.DeleteTable", {"TableName": table})
    for number, (patched, own) in enumerate(zip(runs[PATCHED_REGION], runs[ORIGINAL_REGION], strict=True)):
        assert patched == own, f"answer {number} of {[kind for kind, _ in requests]}"


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
    rows = [
        {
            "pk": {"S": "a"},
            "sk": {"N": str(number)},
            "g": {"S": "x"},
            "s": {"S": "text"},
            "ss": {"SS": ["p", "q"]},
            "b": {"B": "AAEC"},
            "bs": {"BS": ["AA==", "AQ=="]},
            "l": {"L": [{"S": "x"}, {"M": {"k": {"NS": ["1"]}}}]},
            "m": {"M": {"inner": {"L": [{"B": "AAE="}]}, "n": {"N": "1.5"}}},
        }
        for number in range(3)
    ]
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
    for query in (
        {"KeyConditionExpression": "pk = :pk"},
        {"KeyConditionExpression": "pk = :pk", "Limit": 2},
        {"KeyConditionExpression": "pk = :pk", "ProjectionExpression": "m, l"},
        {"KeyConditionExpression": "g = :g", "IndexName": "by-g"},
        {"KeyConditionExpression": "pk = :pk", "FilterExpression": "size(ss) > :one"},
    ):
        values = {
            name: value
            for name, value in {":pk": {"S": "a"}, ":g": {"S": "x"}, ":one": {"N": "1"}}.items()
            if name in json.dumps(query)
        }
        answer = call(
            moto_app,
            PATCHED_REGION,
            f"{DYNAMODB}.Query",
            {"TableName": table, "ExpressionAttributeValues": values, **query},
        )
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
