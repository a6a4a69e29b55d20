"""The Lambda API through boto3, as AWS documents it: functions, Invoke and its errors.

https://docs.aws.amazon.com/lambda/latest/api/API_Operations.html
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulator.support.endpoint import (
    ACCOUNT,
    REGION,
    ROLE,
    RUNTIME,
    Control,
    Endpoint,
    Functions,
    Probe,
    make_zip,
    sha256_b64,
    unique,
    wait_until,
)

ECHO = """
    def handler(event, context):
        return {"event": event}
"""

VERSIONED = """
    import os

    def handler(event, context):
        return {"version": "VERSION", "colour": os.environ.get("COLOUR")}
"""


def error_of(raised: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


# -- functions: create, get, list, update, delete --------------------------------------------------


def test_create_get_list_update_and_delete_a_function(lambda_client: Any, functions: Functions) -> None:
    package = make_zip({"app.py": VERSIONED.replace("VERSION", "v1")})
    name = unique("crud")
    created = lambda_client.create_function(
        FunctionName=name,
        Runtime=RUNTIME,
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": package},
        Description="first",
        Timeout=5,
        MemorySize=256,
        Environment={"Variables": {"COLOUR": "red"}},
    )
    functions.created.append(name)
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name)

    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["FunctionArn"] == arn
    assert (created["Runtime"], created["Handler"], created["Role"]) == (RUNTIME, "app.handler", ROLE)
    assert (created["Timeout"], created["MemorySize"], created["Description"]) == (5, 256, "first")
    assert created["CodeSha256"] == sha256_b64(package) and created["CodeSize"] == len(package)
    assert created["Environment"] == {"Variables": {"COLOUR": "red"}}
    assert created["Version"] == "$LATEST" and created["PackageType"] == "Zip"

    got = lambda_client.get_function(FunctionName=name)
    assert got["Configuration"]["FunctionArn"] == arn and got["Configuration"]["State"] == "Active"
    with urllib.request.urlopen(got["Code"]["Location"], timeout=10) as download:
        assert download.read() == package, "GetFunction's Code.Location serves the uploaded zip"
    assert lambda_client.get_function_configuration(FunctionName=arn)["FunctionName"] == name

    other = functions.create(ECHO)
    pages = lambda_client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1})
    listed = [function["FunctionName"] for page in pages for function in page["Functions"]]
    assert {name, other} <= set(listed) and len(listed) == len(set(listed))

    assert json.loads(lambda_client.invoke(FunctionName=name)["Payload"].read()) == {"version": "v1", "colour": "red"}

    new_package = make_zip({"app.py": VERSIONED.replace("VERSION", "v2")})
    updated = lambda_client.update_function_code(FunctionName=name, ZipFile=new_package)
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert updated["CodeSha256"] == sha256_b64(new_package) != created["CodeSha256"]
    assert updated["RevisionId"] != created["RevisionId"]

    configured = lambda_client.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"COLOUR": "blue"}}, Timeout=7, Description="second"
    )
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert (configured["Timeout"], configured["Description"]) == (7, "second")
    assert configured["CodeSha256"] == updated["CodeSha256"], "a configuration update keeps the code"
    assert lambda_client.get_function_configuration(FunctionName=name)["Environment"]["Variables"] == {"COLOUR": "blue"}
    # The warm worker of the old revision is not reused: new code and new environment apply at once.
    assert json.loads(lambda_client.invoke(FunctionName=name)["Payload"].read()) == {"version": "v2", "colour": "blue"}

    deleted = lambda_client.delete_function(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    for call in (
        lambda: lambda_client.get_function(FunctionName=name),
        lambda: lambda_client.invoke(FunctionName=name),
        lambda: lambda_client.delete_function(FunctionName=name),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert error_of(raised)[:2] == (404, "ResourceNotFoundException")
    assert name not in [f["FunctionName"] for f in lambda_client.list_functions(MaxItems=50)["Functions"]]


# -- Invoke -------------------------------------------------------------------------------------------


def test_invoke_request_response_returns_the_payload_and_executed_version(functions: Functions) -> None:
    name = functions.create(ECHO)

    response, payload = functions.invoke(name, {"greeting": "hello", "n": [1, 2]})

    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    assert payload == {"event": {"greeting": "hello", "n": [1, 2]}}


def test_invoke_event_is_accepted_with_202_and_the_function_runs(
    lambda_client: Any, probe: Any, control: Control
) -> None:
    recorder: Probe = probe()

    response = lambda_client.invoke(
        FunctionName=recorder.name, InvocationType="Event", Payload=json.dumps({"async": True}).encode()
    )

    assert response["StatusCode"] == 202
    assert response["Payload"].read() == b""
    events = wait_until(recorder.events, f"{recorder.name} ran the Event invocation", history=recorder.history)
    assert events == [{"async": True}]
    invocation = wait_until(lambda: recorder.history(), "the invocation in the history")[-1]
    assert (invocation["invocationType"], invocation["outcome"]) == ("Event", "success")


def test_invoke_dry_run_answers_204_and_does_not_run(
    lambda_client: Any, functions: Functions, control: Control
) -> None:
    name = functions.create(ECHO)

    response = lambda_client.invoke(FunctionName=name, InvocationType="DryRun", Payload=b"{}")

    assert response["StatusCode"] == 204
    assert control.history(name) == []


FAILING = """
    def handler(event, context):
        helper(event)

    def helper(event):
        raise ValueError(f"bad event: {event['n']}")
"""


def test_an_unhandled_exception_comes_back_as_function_error_unhandled(functions: Functions) -> None:
    name = functions.create(FAILING)

    response, error = functions.invoke(name, {"n": 7})

    assert response["StatusCode"] == 200, "a function error is still a successful Invoke call"
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad event: 7"
    assert error["requestId"] == response["ResponseMetadata"]["RequestId"]
    trace = error["stackTrace"]
    assert isinstance(trace, list) and all(isinstance(line, str) for line in trace)
    assert re.search(r'File "/.*app\.py", line 3, in handler', trace[0]), trace
    assert "in helper" in trace[-1] and "raise ValueError" in trace[-1], trace


LOGGING = """
    import logging

    logger = logging.getLogger()
    logger.setLevel(logging.INFO)

    def handler(event, context):
        print("printed line", event["n"])
        logger.info("logged line %s", event["n"])
        return "done"
"""


def test_log_type_tail_returns_the_invocation_log(functions: Functions) -> None:
    name = functions.create(LOGGING)

    response, payload = functions.invoke(name, {"n": 42}, LogType="Tail")

    assert payload == "done"
    log = base64.b64decode(response["LogResult"]).decode()
    request_id = response["ResponseMetadata"]["RequestId"]
    lines = log.splitlines()
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST", log
    assert "printed line 42" in lines
    assert any(
        re.fullmatch(rf"\[INFO\]\t\d{{4}}-\d\d-\d\dT[\d:.]+Z\t{request_id}\tlogged line 42", line) for line in lines
    ), log
    assert f"END RequestId: {request_id}" in lines
    assert re.match(
        rf"REPORT RequestId: {request_id}\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\t"
        r"Memory Size: 128 MB\tMax Memory Used: \d+ MB",
        lines[-1],
    ), log


CONTEXT = """
    import os

    def handler(event, context):
        custom = context.client_context.custom if context.client_context else None
        return {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "custom": custom,
            "env": {key: os.environ.get(key) for key in (
                "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_EXECUTION_ENV",
                "AWS_ENDPOINT_URL", "LAMBDA_TASK_ROOT", "_HANDLER", "GREETING")},
        }
"""


def test_the_handler_gets_aws_context_and_environment(endpoint: Endpoint, functions: Functions) -> None:
    name = functions.create(CONTEXT, Timeout=4, Environment={"Variables": {"GREETING": "hi"}})
    client_context = base64.b64encode(json.dumps({"custom": {"tenant": "t-1"}}).encode()).decode()

    response, seen = functions.invoke(name, ClientContext=client_context)

    assert seen["aws_request_id"] == response["ResponseMetadata"]["RequestId"]
    assert seen["function_name"] == name
    assert seen["function_version"] == "$LATEST"
    assert seen["invoked_function_arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    assert seen["memory_limit_in_mb"] == "128"
    assert seen["log_group_name"] == f"/aws/lambda/{name}"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", seen["log_stream_name"])
    assert 0 < seen["remaining_ms"] <= 4000
    assert seen["custom"] == {"tenant": "t-1"}
    assert seen["env"] == {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{RUNTIME}",
        "AWS_ENDPOINT_URL": endpoint.url,
        "LAMBDA_TASK_ROOT": seen["env"]["LAMBDA_TASK_ROOT"],
        "_HANDLER": "app.handler",
        "GREETING": "hi",
    }


WRITER = """
    import boto3

    def handler(event, context):
        # No endpoint_url, no credentials: AWS_ENDPOINT_URL and the runtime's variables decide.
        boto3.client("dynamodb").put_item(TableName=event["table"], Item={
            "pk": {"S": event["key"]}, "writer": {"S": context.function_name}})
        return "written"
"""


def test_the_functions_own_boto3_reaches_the_endpoint(dynamodb: Any, functions: Functions) -> None:
    table = unique("written")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    name = functions.create(WRITER, Timeout=10)

    _, payload = functions.invoke(name, {"table": table, "key": "k-1"})

    assert payload == "written", payload
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": "k-1"}})["Item"]
    assert item == {"pk": {"S": "k-1"}, "writer": {"S": name}}


SLEEPER = """
    import time

    def handler(event, context):
        time.sleep(event.get("sleep", 0))
        return {"slept": event.get("sleep", 0)}
"""


def test_the_timeout_is_enforced_and_the_function_works_again_after(functions: Functions) -> None:
    name = functions.create(SLEEPER, Timeout=1)

    response, error = functions.invoke(name, {"sleep": 30})

    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"] == (
        f"RequestId: {response['ResponseMetadata']['RequestId']} Error: Task timed out after 1.00 seconds"
    )
    response, payload = functions.invoke(name, {"sleep": 0})
    assert "FunctionError" not in response and payload == {"slept": 0}


def test_a_zip_without_the_handler_module_fails_at_invoke_with_import_module_error(functions: Functions) -> None:
    name = functions.create(files={"other.py": ECHO}, handler="app.handler")

    response, error = functions.invoke(name)

    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"] == "Unable to import module 'app': No module named 'app'"


EXITER = """
    import os

    def handler(event, context):
        if event.get("exit"):
            os._exit(3)
        return "alive"
"""


def test_os_exit_mid_invocation_is_runtime_exit_error_and_the_next_call_works(functions: Functions) -> None:
    name = functions.create(EXITER)
    assert functions.invoke(name)[1] == "alive"  # warm worker first: the exit happens mid-invocation

    response, error = functions.invoke(name, {"exit": True})

    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"] == (
        f"RequestId: {response['ResponseMetadata']['RequestId']} Error: Runtime exited with error: exit status 3"
    )
    response, payload = functions.invoke(name)
    assert "FunctionError" not in response and payload == "alive"


def test_concurrent_invocations_run_in_separate_workers(functions: Functions) -> None:
    name = functions.create("""
        import os, time

        def handler(event, context):
            time.sleep(0.3)
            return os.getpid()
    """)
    pids: list[int] = []
    callers = [threading.Thread(target=lambda: pids.append(functions.invoke(name)[1])) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)

    assert len(pids) == 3 and len(set(pids)) == 3, pids


# -- errors, in AWS's codes ---------------------------------------------------------------------------


def create_error(lambda_client: Any, **overrides: Any) -> tuple[int, str, str]:
    params: dict[str, Any] = {
        "FunctionName": unique("invalid"),
        "Runtime": RUNTIME,
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": make_zip({"app.py": ECHO})},
    }
    params.update(overrides)
    with pytest.raises(ClientError) as raised:
        lambda_client.create_function(**params)
    return error_of(raised)


def test_an_invalid_zip_is_refused(lambda_client: Any) -> None:
    status, code, message = create_error(lambda_client, Code={"ZipFile": b"this is not a zip file"})
    assert (status, code) == (400, "InvalidParameterValueException")
    assert "Could not unzip uploaded file" in message


def test_a_non_python_runtime_is_refused(lambda_client: Any) -> None:
    status, code, message = create_error(lambda_client, Runtime="nodejs20.x")
    assert (status, code) == (400, "InvalidParameterValueException")
    assert "nodejs20.x" in message


def test_a_reserved_environment_variable_is_refused(lambda_client: Any, functions: Functions) -> None:
    status, code, message = create_error(lambda_client, Environment={"Variables": {"AWS_REGION": "eu-west-1"}})
    assert (status, code) == (400, "InvalidParameterValueException")
    assert "reserved keys" in message and "AWS_REGION" in message

    name = functions.create(ECHO)
    with pytest.raises(ClientError) as raised:
        lambda_client.update_function_configuration(
            FunctionName=name, Environment={"Variables": {"AWS_ACCESS_KEY_ID": "x"}}
        )
    assert error_of(raised)[:2] == (400, "InvalidParameterValueException")


def test_a_role_that_is_not_a_role_arn_is_refused_as_aws_does(lambda_client: Any) -> None:
    status, code, message = create_error(lambda_client, Role="lambda-role")
    assert (status, code) == (400, "ValidationException")
    assert "role" in message


def test_a_duplicate_function_name_is_a_conflict(lambda_client: Any, functions: Functions) -> None:
    name = functions.create(ECHO)
    status, code, message = create_error(lambda_client, FunctionName=name)
    assert (status, code) == (409, "ResourceConflictException")
    assert name in message


def test_an_unknown_function_is_not_found(lambda_client: Any) -> None:
    missing = unique("missing")
    for call in (
        lambda: lambda_client.get_function(FunctionName=missing),
        lambda: lambda_client.get_function_configuration(FunctionName=missing),
        lambda: lambda_client.invoke(FunctionName=missing, Payload=b"{}"),
        lambda: lambda_client.update_function_code(FunctionName=missing, ZipFile=make_zip({"a.py": ""})),
        lambda: lambda_client.delete_function(FunctionName=missing),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        status, code, message = error_of(raised)
        assert (status, code) == (404, "ResourceNotFoundException")
        assert missing in message


def test_a_non_json_invoke_payload_is_invalid_request_content(
    lambda_client: Any, functions: Functions, control: Control
) -> None:
    name = functions.create(ECHO)
    with pytest.raises(ClientError) as raised:
        lambda_client.invoke(FunctionName=name, Payload=b"{not json")
    status, code, message = error_of(raised)
    assert (status, code) == (400, "InvalidRequestContentException")
    assert "Could not parse request body into json" in message
    assert control.history(name) == [], "the function did not run"


@pytest.mark.parametrize("operation", ["create_alias", "put_function_concurrency", "publish_version"])
def test_an_unsupported_lambda_operation_is_a_clear_error_not_motos_lambda(
    lambda_client: Any, functions: Functions, operation: str
) -> None:
    name = functions.create(ECHO)
    arguments: dict[str, Any] = {
        "create_alias": {"FunctionName": name, "Name": "live", "FunctionVersion": "$LATEST"},
        "put_function_concurrency": {"FunctionName": name, "ReservedConcurrentExecutions": 1},
        "publish_version": {"FunctionName": name},
    }[operation]

    with pytest.raises(ClientError) as raised:
        getattr(lambda_client, operation)(**arguments)

    status, code, message = error_of(raised)
    assert status >= 400 and code == "NotImplementedException"
    assert "esjoin" in message and "Supported:" in message, message
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    # Our Lambda, not moto's: the function is still there, still invocable, unchanged.
    assert functions.invoke(name, {"x": 1})[1] == {"event": {"x": 1}}
