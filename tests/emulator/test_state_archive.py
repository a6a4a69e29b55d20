"""State save and load: a saved endpoint loaded into a new one goes on from where it was, and a bad state
file is refused whole, naming the file and the problem, without touching the endpoint.

Each test has its own endpoints, one at a time: moto's state is per process (a load replaces it).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from esjoin.testing.control_client import ControlApiError, ControlClient
from tests.emulator.support.endpoint import (
    Endpoint,
    Functions,
    create_stream,
    create_table,
    start_endpoint,
    wait_mapping_state,
    wait_until,
)

RECORDER = """
import base64
import os

import boto3

dynamodb = boto3.client("dynamodb")


def handler(event, context):
    for record in event["Records"]:
        number = base64.b64decode(record["kinesis"]["data"]).decode()
        dynamodb.put_item(TableName=os.environ["SEEN"], Item={"pk": {"S": number}})
    return {"recorded": len(event["Records"])}
"""


def seen(endpoint: Endpoint, table: str) -> set[str]:
    items = endpoint.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["pk"]["S"] for item in items}


def delivered_records(control: ControlClient, function: str) -> int:
    return sum(len(record["batchIds"]) for record in control.history(function=function)["invocations"])


def put(endpoint: Endpoint, stream: str, numbers: range) -> None:
    kinesis = endpoint.client("kinesis")
    for number in numbers:
        kinesis.put_record(StreamName=stream, Data=str(number).encode(), PartitionKey=f"p{number}")


def test_a_saved_pipeline_goes_on_in_a_new_endpoint(tmp_path: Path) -> None:
    first = start_endpoint(tmp_path / "first")
    try:
        stream, stream_arn = create_stream(first.client("kinesis"), shards=2)
        table, _ = create_table(first.client("dynamodb"))
        lambda_client = first.client("lambda")
        name = Functions(lambda_client).create(RECORDER, Environment={"Variables": {"SEEN": table}})
        mapping = lambda_client.create_event_source_mapping(
            FunctionName=name, EventSourceArn=stream_arn, StartingPosition="TRIM_HORIZON", BatchSize=10
        )["UUID"]
        wait_mapping_state(lambda_client, mapping, "Enabled")
        put(first, stream, range(1, 6))
        wait_until(lambda: seen(first, table) == {str(n) for n in range(1, 6)}, "records 1-5 recorded")
        wait_until(lambda: ControlClient(first.url).quiescence()["quiescent"], "the first endpoint to be quiet")

        archive = ControlClient(first.url).save_state()
    finally:
        first.emulator.stop()

    second = start_endpoint(tmp_path / "second")
    try:
        control = ControlClient(second.url)
        loaded = control.load_state(archive, "saved.zip")
        assert loaded["functions"] == 1 and loaded["eventSourceMappings"] == 1, loaded
        assert seen(second, table) == {str(n) for n in range(1, 6)}, "the table's items did not travel"
        restored = second.client("lambda").get_event_source_mapping(UUID=mapping)
        assert restored["EventSourceArn"] == stream_arn and restored["FunctionArn"].endswith(f":{name}")

        put(second, stream, range(6, 9))

        wait_until(lambda: seen(second, table) == {str(n) for n in range(1, 9)}, "records 6-8 recorded after the load")
        wait_until(lambda: control.quiescence()["quiescent"], "the second endpoint to be quiet")
        assert delivered_records(control, name) == 3, "records delivered before the save were delivered again"
    finally:
        second.emulator.stop()


@pytest.fixture
def busy_endpoint(tmp_path: Path) -> Any:
    started = start_endpoint(tmp_path / "state")
    started.client("sqs").create_queue(QueueName="still-here")
    try:
        yield started
    finally:
        started.emulator.stop()


def archive_with(manifest: dict[str, Any] | None, **members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if manifest is not None:
            archive.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name.replace("__", "."), data)
    return buffer.getvalue()


def good_manifest(**changes: Any) -> dict[str, Any]:
    import moto

    return {
        "format": "esjoin-state",
        "version": 1,
        "motoVersion": moto.__version__,
        "accountId": "000000000000",
        "savedAt": 0,
        **changes,
    }


@pytest.mark.parametrize(
    "data, problem",
    [
        pytest.param(b"this is not a zip file", "not a zip archive", id="not-a-zip"),
        pytest.param(archive_with(None, notes__txt=b"hello"), "no manifest.json", id="no-manifest"),
        pytest.param(archive_with(good_manifest(version=99)), "state format version 99", id="another-version"),
        pytest.param(archive_with(good_manifest(motoVersion="4.0.0")), "saved with moto 4.0.0", id="another-moto"),
        pytest.param(archive_with(good_manifest(format="something-else")), "not an esjoin state file", id="not-ours"),
        pytest.param(
            archive_with(good_manifest(), moto__pickle=b"\x80\x05garbage"), "corrupt or incomplete", id="corrupt-pickle"
        ),
        pytest.param(archive_with(good_manifest()), "corrupt or incomplete", id="missing-members"),
    ],
)
def test_a_bad_state_file_is_refused_and_changes_nothing(busy_endpoint: Endpoint, data: bytes, problem: str) -> None:
    control = ControlClient(busy_endpoint.url)

    with pytest.raises(ControlApiError) as refused:
        control.load_state(data, "broken.zip")

    assert "HTTP 400" in str(refused.value) and "broken.zip" in str(refused.value), refused.value
    assert problem in str(refused.value), refused.value
    queues = busy_endpoint.client("sqs").list_queues().get("QueueUrls", [])
    assert any(url.endswith("/still-here") for url in queues), "a refused load changed the endpoint"


def test_a_truncated_state_file_is_refused(tmp_path: Path) -> None:
    started = start_endpoint(tmp_path / "state")
    try:
        control = ControlClient(started.url)
        started.client("sqs").create_queue(QueueName="kept")
        archive = control.save_state()
        with pytest.raises(ControlApiError, match="not a zip archive, or truncated"):
            control.load_state(archive[: len(archive) // 2], "half.zip")
        assert control.load_state(archive, "whole.zip")["loaded"] is True
    finally:
        started.emulator.stop()
