"""FilterCriteria on event source mappings: only matching records reach the function; the others are
discarded as AWS discards them (a stream's checkpoint moves past them, SQS messages are deleted).

The pattern language itself is moto's EventBridge matcher; these tests pin what each source's pattern
is matched against (Kinesis: the decoded `data`; DynamoDB: the record; SQS: the parsed or plain
`body`), the API's validation, and the discarding, end to end over HTTP with a probe function.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from esjoin.emulator.event_source_mapping.filters import MAX_FILTERS, FilterCriteriaError, compile_criteria
from tests.emulator.support.endpoint import (
    Control,
    Probe,
    create_queue,
    create_stream,
    create_table,
    kinesis_data,
    wait_mapping_state,
    wait_until,
)


def criteria(*patterns: dict[str, Any]) -> dict[str, Any]:
    return {"Filters": [{"Pattern": json.dumps(pattern)} for pattern in patterns]}


def kinesis_record(data: bytes) -> dict[str, Any]:
    return {"kinesis": {"partitionKey": "p", "sequenceNumber": "1", "data": base64.b64encode(data).decode()}}


# -- what each source's patterns see ---------------------------------------------------------------


def test_kinesis_patterns_see_the_decoded_json_data_and_the_metadata() -> None:
    by_data = compile_criteria("kinesis", criteria({"data": {"order": {"type": ["buy"]}}}))
    assert by_data.accepts(kinesis_record(b'{"order": {"type": "buy", "n": 1}}'))
    assert not by_data.accepts(kinesis_record(b'{"order": {"type": "sell"}}'))
    assert not by_data.accepts(kinesis_record(b"buy"))  # not JSON: matches no rule on data
    by_key = compile_criteria("kinesis", criteria({"partitionKey": [{"prefix": "p"}]}))
    assert by_key.accepts(kinesis_record(b"not json either"))


def test_dynamodb_patterns_see_the_whole_record() -> None:
    inserts_of_a = compile_criteria(
        "dynamodb", criteria({"eventName": ["INSERT"], "dynamodb": {"NewImage": {"name": {"S": [{"prefix": "A"}]}}}})
    )
    record = {"eventName": "INSERT", "dynamodb": {"NewImage": {"name": {"S": "Ada"}}}}
    assert inserts_of_a.accepts(record)
    assert not inserts_of_a.accepts({**record, "eventName": "MODIFY"})
    assert not inserts_of_a.accepts({"eventName": "INSERT", "dynamodb": {"NewImage": {"name": {"S": "Bob"}}}})


def test_sqs_patterns_see_a_json_body_parsed_and_a_plain_body_as_text() -> None:
    either = compile_criteria("sqs", criteria({"body": {"n": [{"numeric": [">", 1]}]}}, {"body": ["ping"]}))
    assert either.accepts({"body": '{"n": 2}'})
    assert not either.accepts({"body": '{"n": 1}'})
    assert either.accepts({"body": "ping"})  # the second filter: filters are ORed
    assert not either.accepts({"body": "pong"})
    assert not either.accepts({"body": '"ping"'})  # a JSON string is not an object: matched as its text


def test_no_criteria_accept_everything() -> None:
    for empty in (None, {}, {"Filters": []}):
        record_filter = compile_criteria("sqs", empty)
        assert not record_filter.active and record_filter.accepts({"body": "anything"})


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"Filters": [{"Pattern": "{not json"}]}, "Invalid JSON"),
        ({"Filters": [{"Pattern": '{"body": "plain"}'}]}, "must be an object or an array"),
        ({"Filters": [{"Pattern": "{}"}]}, "non-empty JSON object"),
        ({"Filters": [{}]}, "no Pattern"),
        ({"Filters": [{"Pattern": '{"a": ["x"]}'}] * (MAX_FILTERS + 1)}, f"at most {MAX_FILTERS}"),
        ({"Other": []}, "one member, Filters"),
    ],
)
def test_malformed_criteria_are_refused_saying_why(bad: dict[str, Any], why: str) -> None:
    with pytest.raises(FilterCriteriaError, match=why):
        compile_criteria("sqs", bad)


# -- the API ---------------------------------------------------------------------------------------------


def test_the_api_refuses_a_bad_pattern_keeps_a_good_one_and_removes_it_with_empty_criteria(
    probe: Any, lambda_client: Any, sqs: Any
) -> None:
    recorder: Probe = probe()
    _, queue_arn = create_queue(sqs)
    with pytest.raises(ClientError) as raised:
        lambda_client.create_event_source_mapping(
            FunctionName=recorder.name, EventSourceArn=queue_arn, FilterCriteria={"Filters": [{"Pattern": "{nope"}]}
        )
    assert raised.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "Invalid filter pattern definition" in raised.value.response["Error"]["Message"]

    good = criteria({"body": {"kind": ["keep"]}})
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name, EventSourceArn=queue_arn, FilterCriteria=good
    )["UUID"]
    assert lambda_client.get_event_source_mapping(UUID=uuid_)["FilterCriteria"] == good
    wait_mapping_state(lambda_client, uuid_, "Enabled")
    lambda_client.update_event_source_mapping(UUID=uuid_, FilterCriteria={})
    assert "FilterCriteria" not in lambda_client.get_event_source_mapping(UUID=uuid_)


# -- end to end: only matching records reach the function ------------------------------------------------


def test_kinesis_records_that_match_no_filter_are_skipped_and_the_shard_moves_on(
    probe: Any, lambda_client: Any, kinesis: Any, control: Control
) -> None:
    recorder: Probe = probe()
    stream, stream_arn = create_stream(kinesis)
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name,
        EventSourceArn=stream_arn,
        StartingPosition="TRIM_HORIZON",
        FilterCriteria=criteria({"data": {"kind": ["keep"]}}),
    )["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Enabled")

    for n, data in enumerate(
        [b'{"kind": "keep", "n": 1}', b'{"kind": "drop", "n": 2}', b"not json", b'{"kind": "keep", "n": 4}']
    ):
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=f"p{n}")
    recorder.wait_records(2)
    wait_until(control.quiescent, "quiescence: every record delivered or discarded")

    assert [kinesis_data(r)["n"] for r in recorder.records()] == [1, 4]
    engine = control.ok("GET", f"mappings/{uuid_}")["engine"]
    assert (engine["filteredOut"], engine["lag"]) == (2, 0), engine


def test_dynamodb_stream_records_are_filtered_on_event_name_and_image(
    probe: Any, lambda_client: Any, dynamodb: Any, control: Control
) -> None:
    recorder: Probe = probe()
    table, stream_arn = create_table(dynamodb, stream_view="NEW_AND_OLD_IMAGES")
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name,
        EventSourceArn=stream_arn,
        StartingPosition="TRIM_HORIZON",
        FilterCriteria=criteria(
            {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"name": {"S": [{"prefix": "A"}]}}}}
        ),
    )["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Enabled")

    dynamodb.put_item(TableName=table, Item={"pk": {"S": "1"}, "name": {"S": "Ada"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "2"}, "name": {"S": "Bob"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "1"}, "name": {"S": "Alan"}})  # MODIFY
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "3"}, "name": {"S": "Amy"}})
    recorder.wait_records(2)
    wait_until(control.quiescent, "quiescence: every record delivered or discarded")

    assert [r["dynamodb"]["NewImage"]["name"]["S"] for r in recorder.records()] == ["Ada", "Amy"]
    assert control.ok("GET", f"mappings/{uuid_}")["engine"]["filteredOut"] == 2


def test_sqs_messages_that_match_no_filter_are_deleted_without_invoking(
    probe: Any, lambda_client: Any, sqs: Any, control: Control
) -> None:
    recorder: Probe = probe()
    url, queue_arn = create_queue(sqs)
    uuid_ = lambda_client.create_event_source_mapping(
        FunctionName=recorder.name,
        EventSourceArn=queue_arn,
        FilterCriteria=criteria({"body": {"n": [{"numeric": [">", 1]}]}}, {"body": ["ping"]}),
    )["UUID"]
    wait_mapping_state(lambda_client, uuid_, "Enabled")

    for body in ['{"n": 0}', '{"n": 1}', '{"n": 2}', '{"n": 3}', "ping", "pong"]:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    recorder.wait_records(3)
    wait_until(control.quiescent, "quiescence: every message delivered or discarded")

    assert sorted(r["body"] for r in recorder.records()) == sorted(['{"n": 2}', '{"n": 3}', "ping"])
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == (
        "0",
        "0",
    ), "the filtered-out messages are deleted, as AWS deletes them"
    assert control.ok("GET", f"mappings/{uuid_}")["engine"]["filteredOut"] == 3
