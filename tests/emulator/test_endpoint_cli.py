"""The AWS CLI (awscli v1, a dev dependency, run as a subprocess) works against the endpoint unchanged.

`aws logs tail` exists only in AWS CLI v2 (awscli v1 answers "Invalid choice"); with v1 the function's
output is read with `aws logs filter-log-events`, which v2 has too. `aws logs tail` itself is run with
an AWS CLI v2 when one is found (ESJOIN_AWS_CLI_V2, else `aws` on PATH or /usr/bin/aws reporting
aws-cli/2; `make test` installs Debian's awscli 2.9 when it can), and skipped otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.support.endpoint import (
    REGION,
    ROLE,
    RUNTIME,
    Control,
    Endpoint,
    make_zip,
    stream_arn,
    unique,
    wait_until,
)

AWS = Path(sys.executable).with_name("aws")
pytestmark = pytest.mark.skipif(not AWS.exists(), reason=f"the AWS CLI is not installed at {AWS} (pip install awscli)")


def cli_environment() -> dict[str, str]:
    """This process's environment without its AWS settings, with dummy credentials and no config files."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environment.update(
        {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_PAGER": "",
        }
    )
    return environment


def aws(endpoint: Endpoint, *arguments: str, cwd: Path | None = None) -> Any:
    """Run `aws <arguments> --endpoint-url ...` with dummy credentials; returns its JSON output."""
    finished = subprocess.run(
        [str(AWS), *arguments, "--endpoint-url", endpoint.url, "--output", "json"],
        env=cli_environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, f"aws {' '.join(arguments)}: {finished.stderr}"
    return json.loads(finished.stdout) if finished.stdout.strip() else None


def aws_cli_v2() -> str | None:
    """The path of an AWS CLI v2, or None: ESJOIN_AWS_CLI_V2, else `aws` on PATH, else /usr/bin/aws."""
    candidates = [os.environ.get("ESJOIN_AWS_CLI_V2"), shutil.which("aws"), "/usr/bin/aws"]
    for candidate in filter(None, candidates):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run(
                [candidate, "--version"], env=cli_environment(), capture_output=True, text=True, timeout=30
            ).stdout
            if version.startswith("aws-cli/2."):
                return candidate
    return None


def test_the_cli_creates_and_uses_a_kinesis_stream(endpoint: Endpoint) -> None:
    stream = unique("cli-stream")
    aws(endpoint, "kinesis", "create-stream", "--stream-name", stream, "--shard-count", "1")
    stream_arn(endpoint.client("kinesis"), stream)  # ACTIVE (boto3: one CLI process less)

    put = aws(
        endpoint,
        "kinesis",
        "put-record",
        "--stream-name",
        stream,
        "--partition-key",
        "user-1",
        "--data",
        "hello from the cli",
    )
    iterator = aws(
        endpoint,
        "kinesis",
        "get-shard-iterator",
        "--stream-name",
        stream,
        "--shard-id",
        put["ShardId"],
        "--shard-iterator-type",
        "TRIM_HORIZON",
    )["ShardIterator"]
    records = aws(endpoint, "kinesis", "get-records", "--shard-iterator", iterator)["Records"]

    assert [(r["SequenceNumber"], r["PartitionKey"]) for r in records] == [(put["SequenceNumber"], "user-1")]
    assert base64.b64decode(records[0]["Data"]) == b"hello from the cli"


def test_the_cli_creates_and_uses_an_sqs_queue(endpoint: Endpoint) -> None:
    url = aws(endpoint, "sqs", "create-queue", "--queue-name", unique("cli-queue"))["QueueUrl"]

    sent = aws(endpoint, "sqs", "send-message", "--queue-url", url, "--message-body", "hello queue")
    received = aws(endpoint, "sqs", "receive-message", "--queue-url", url, "--wait-time-seconds", "1")

    assert [(m["MessageId"], m["Body"]) for m in received["Messages"]] == [(sent["MessageId"], "hello queue")]


CLI_FUNCTION = """
    def handler(event, context):
        print("cli function got", sorted(event))
        return {"keys": sorted(event)}
"""


def test_the_cli_deploys_a_function_maps_a_table_stream_to_it_and_reads_its_logs(
    endpoint: Endpoint, control: Control, tmp_path: Path, lambda_client: Any, logs: Any
) -> None:
    table, function = unique("cli-table"), unique("cli-function")
    (tmp_path / "function.zip").write_bytes(make_zip({"app.py": CLI_FUNCTION}))
    created_table = aws(
        endpoint,
        "dynamodb",
        "create-table",
        "--table-name",
        table,
        "--attribute-definitions",
        "AttributeName=pk,AttributeType=S",
        "--key-schema",
        "AttributeName=pk,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
        "--stream-specification",
        "StreamEnabled=true,StreamViewType=NEW_IMAGE",
    )["TableDescription"]
    stream_arn = created_table["LatestStreamArn"]
    try:
        created = aws(
            endpoint,
            "lambda",
            "create-function",
            "--function-name",
            function,
            "--runtime",
            RUNTIME,
            "--role",
            ROLE,
            "--handler",
            "app.handler",
            "--zip-file",
            "fileb://function.zip",
            cwd=tmp_path,
        )
        assert created["State"] == "Active"

        invoked = aws(
            endpoint,
            "lambda",
            "invoke",
            "--function-name",
            function,
            "--payload",
            '{"hello": "cli"}',
            "out.json",
            cwd=tmp_path,
        )
        assert (invoked["StatusCode"], invoked["ExecutedVersion"]) == (200, "$LATEST")
        assert json.loads((tmp_path / "out.json").read_text()) == {"keys": ["hello"]}

        mapping = aws(
            endpoint,
            "lambda",
            "create-event-source-mapping",
            "--function-name",
            function,
            "--event-source-arn",
            stream_arn,
            "--starting-position",
            "TRIM_HORIZON",
        )
        assert mapping["State"] == "Creating" and mapping["BatchSize"] == 100
        aws(endpoint, "dynamodb", "put-item", "--table-name", table, "--item", '{"pk": {"S": "from-cli"}}')
        wait_until(
            lambda: [r for r in control.history(function) if r["mapping"] == mapping["UUID"]],
            "the stream record delivered to the function",
            history=lambda: control.history(function),
        )

        group = f"/aws/lambda/{function}"
        wait_until(
            lambda: (
                len(
                    [
                        e
                        for e in logs.filter_log_events(logGroupName=group)["events"]
                        if "cli function got" in e["message"]
                    ]
                )
                == 2
            ),
            "both invocations' output logged",
        )
        events = aws(endpoint, "logs", "filter-log-events", "--log-group-name", group)["events"]
        messages = [event["message"] for event in events]
        assert "cli function got ['hello']\n" in messages
        assert "cli function got ['Records']\n" in messages
        assert sum(message.startswith("START RequestId: ") for message in messages) == 2
        assert sum(message.startswith("REPORT RequestId: ") for message in messages) == 2
    finally:
        with contextlib.suppress(lambda_client.exceptions.ResourceNotFoundException):
            for existing in lambda_client.list_event_source_mappings(FunctionName=function)["EventSourceMappings"]:
                lambda_client.delete_event_source_mapping(UUID=existing["UUID"])
            lambda_client.delete_function(FunctionName=function)


TAILED_FUNCTION = """
    def handler(event, context):
        print("tail me", event["n"])
        return event["n"]
"""


def test_aws_logs_tail_shows_a_function_s_output_with_cli_v2(endpoint: Endpoint, functions: Any) -> None:
    """The issue's check as written: `aws logs tail /aws/lambda/<fn>` (CLI v2) prints the output."""
    cli = aws_cli_v2()
    if cli is None:
        pytest.skip("no AWS CLI v2 found (ESJOIN_AWS_CLI_V2, PATH, /usr/bin/aws); apt-get install awscli on Debian 12")
    function = functions.create(TAILED_FUNCTION)
    for number in (1, 2):
        assert functions.invoke(function, {"n": number})[1] == number

    def both_outputs_tailed() -> str:
        finished = subprocess.run(
            [
                cli,
                "logs",
                "tail",
                f"/aws/lambda/{function}",
                "--since",
                "1h",
                "--format",
                "short",
                "--endpoint-url",
                endpoint.url,
            ],
            env=cli_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert finished.returncode == 0, f"aws logs tail: {finished.stderr}"
        assert finished.stdout.count("tail me") == 2, finished.stdout
        return finished.stdout

    output = wait_until(both_outputs_tailed, "both invocations' output in `aws logs tail`")
    lines = output.splitlines()
    assert [line.split(" ", 1)[1] for line in lines if "tail me" in line] == ["tail me 1", "tail me 2"], output
    assert sum(" START RequestId: " in f" {line}" for line in lines) == 2, output
