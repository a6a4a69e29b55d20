"""`POST /_esjoin/state/reset` empties the endpoint without a restart: functions (and their workers),
mappings (and their checkpoints), streams, tables, queues, history and fault rules go; the port and the
settings stay, and the same names can be created again at once.

Its own endpoint: moto's reset is process-wide, so it must not run beside the module-scoped one others use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator.support.endpoint import (
    Control,
    Endpoint,
    Functions,
    create_queue,
    create_stream,
    create_table,
    start_endpoint,
    wait_mapping_state,
    wait_until,
)

ECHO = "def handler(event, context):\n    return {'records': len(event.get('Records', []))}\n"


@pytest.fixture
def own_endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    started = start_endpoint(tmp_path / "state")
    try:
        yield started
    finally:
        started.emulator.stop()


def test_reset_empties_every_service_and_the_names_can_be_reused(own_endpoint: Endpoint, tmp_path: Path) -> None:
    kinesis, dynamodb, sqs = (own_endpoint.client(s) for s in ("kinesis", "dynamodb", "sqs"))
    lambda_client, control = own_endpoint.client("lambda"), Control(own_endpoint.url)
    stream, stream_arn = create_stream(kinesis)
    table, _ = create_table(dynamodb)
    queue_url, _ = create_queue(sqs)
    functions = Functions(lambda_client)
    name = functions.create(ECHO)
    mapping = lambda_client.create_event_source_mapping(
        FunctionName=name, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON", BatchSize=10
    )["UUID"]
    wait_mapping_state(lambda_client, mapping, "Enabled")
    kinesis.put_record(StreamName=stream, Data=b"{}", PartitionKey="p")
    wait_until(lambda: control.get("history", function=name).body["invocations"], "the mapping to deliver")
    control.post("faults", {"function": name, "action": "error"})
    checkpoints = own_endpoint.emulator.config.state_dir / "checkpoints"

    reset = control.post("state/reset")

    assert reset.status == 200 and reset.body["removed"] == {"eventSourceMappings": 1, "functions": 1}, reset
    assert lambda_client.list_functions()["Functions"] == []
    assert lambda_client.list_event_source_mappings()["EventSourceMappings"] == []
    assert kinesis.list_streams()["StreamNames"] == []
    assert dynamodb.list_tables()["TableNames"] == []
    assert sqs.list_queues().get("QueueUrls", []) == []
    assert control.get("history").body["invocations"] == []
    assert control.get("faults").body["faults"] == []
    assert not checkpoints.exists() or not list(checkpoints.glob("*.json"))
    assert control.get("quiescence").body["quiescent"] is True
    # The same names again, on the same endpoint, at once.
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert sqs.create_queue(QueueName=queue_url.rsplit("/", 1)[1])["QueueUrl"] == queue_url


def test_reset_is_a_post(own_endpoint: Endpoint) -> None:
    assert Control(own_endpoint.url).get("state/reset").status == 405
