"""The decisions of apply: what counts as unchanged, what is an update, and how it is reported.

Inputs are shaped like the endpoint's responses (GetFunction, ListEventSourceMappings,
GetQueueAttributes, GetRolePolicy, DescribeTable, DescribeTimeToLive)."""

from __future__ import annotations

import json

import pytest

from infra import changes as c
from infra.settings import StackSettings
from infra.stack import Stack, build_stack, function_environment, role_policy

ROLE = "arn:aws:iam::000000000000:role/esjoin-t-lambda"


def _stack(**settings: object) -> Stack:
    return build_stack(StackSettings(stage="t", **settings))


QUEUE_ARNS = {q.key: f"arn:aws:sqs:us-east-1:000000000000:{q.name}" for q in _stack().queues}
QUEUE_URLS = {q.key: f"http://127.0.0.1:4566/000000000000/{q.name}" for q in _stack().queues}


def _deployed_configuration(stack: Stack) -> dict:
    """GetFunction's Configuration for a function deployed from ``stack``, with the extra fields
    AWS adds."""
    spec = stack.function("consumer")
    return {
        "FunctionName": spec.name,
        "Handler": spec.handler,
        "Runtime": "python3.12",
        "Timeout": 30,
        "MemorySize": 256,
        "Role": ROLE,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "Environment": {"Variables": function_environment(stack, QUEUE_URLS)},
        "CodeSha256": "abc=",
        "Architectures": ["x86_64"],
        "PackageType": "Zip",
    }


class TestFunctions:
    def test_a_function_deployed_from_the_same_stack_is_unchanged(self) -> None:
        stack = _stack()
        desired = stack.function("consumer").configuration(ROLE, function_environment(stack, QUEUE_URLS))
        assert c.function_configuration_diff(desired, _deployed_configuration(stack)) == []

    def test_a_changed_setting_is_one_environment_line(self) -> None:
        deployed = _deployed_configuration(_stack())
        changed = _stack(snapshot_horizon_seconds=2)
        desired = changed.function("consumer").configuration(ROLE, function_environment(changed, QUEUE_URLS))
        assert c.function_configuration_diff(desired, deployed) == ["Environment.SNAPSHOT_HORIZON_SECONDS: '60' -> '2'"]

    def test_fields_and_extra_or_missing_variables_are_reported(self) -> None:
        stack = _stack()
        desired = stack.function("consumer").configuration(ROLE, function_environment(stack, QUEUE_URLS))
        deployed = _deployed_configuration(stack)
        deployed["Timeout"] = 3
        deployed["Handler"] = "lambdas.old.handler"
        deployed["Environment"]["Variables"]["STALE"] = "1"
        del deployed["Environment"]["Variables"]["LOG_LEVEL"]
        assert c.function_configuration_diff(desired, deployed) == [
            "Handler: 'lambdas.old.handler' -> 'lambdas.consumer.handler'",
            "Timeout: 3 -> 30",
            "Environment.LOG_LEVEL: None -> 'WARNING'",
            "Environment.STALE: '1' -> None",
        ]

    def test_a_function_without_environment_differs_in_every_variable(self) -> None:
        stack = _stack()
        desired = stack.function("trim").configuration(ROLE, {"A": "1"})
        deployed = {**desired}
        del deployed["Environment"]
        assert c.function_configuration_diff(desired, deployed) == ["Environment.A: None -> '1'"]

    def test_code_is_compared_by_sha(self) -> None:
        assert c.function_code_diff("abc=", "abc=") == []
        assert c.function_code_diff("new=", "old=") == ["CodeSha256: old= -> new="]


class TestMappings:
    def test_kinesis_mapping_as_aws_lists_it_is_unchanged(self) -> None:
        spec = _stack(parallelization_factor=3).mappings[0]
        listed = {
            "UUID": "u-1",
            "BatchSize": 100,
            "MaximumBatchingWindowInSeconds": 0,
            "ParallelizationFactor": 3,
            "EventSourceArn": "arn:aws:kinesis:us-east-1:000000000000:stream/esjoin-t-events-in",
            "FunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:esjoin-t-consumer",
            "State": "Enabled",
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": 10,
            "BisectBatchOnFunctionError": True,
            "MaximumRecordAgeInSeconds": -1,
            "DestinationConfig": {"OnSuccess": {}, "OnFailure": {"Destination": QUEUE_ARNS["failures"]}},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        }
        assert spec.function == "consumer"
        assert c.mapping_diff(spec.parameters(QUEUE_ARNS), listed) == []

    def test_changed_stream_settings_are_reported(self) -> None:
        spec = _stack(parallelization_factor=2).mappings[0]
        listed = {
            "BatchSize": 10,
            "ParallelizationFactor": 1,
            "MaximumRetryAttempts": -1,
            "BisectBatchOnFunctionError": False,
            "DestinationConfig": {"OnSuccess": {}, "OnFailure": {}},
        }
        lines = c.mapping_diff(spec.parameters(QUEUE_ARNS), listed)
        assert [line.split(":")[0] for line in lines] == [
            "BatchSize",
            "FunctionResponseTypes",
            "MaximumRetryAttempts",
            "BisectBatchOnFunctionError",
            "DestinationConfig",
            "ParallelizationFactor",
        ]

    def test_sqs_mapping_ignores_stream_only_fields(self) -> None:
        spec = next(m for m in _stack().mappings if m.function == "snapshot")
        parameters = spec.parameters(QUEUE_ARNS)
        assert set(parameters) == {"BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes"}
        listed = {"BatchSize": 10, "FunctionResponseTypes": ["ReportBatchItemFailures"], "State": "Enabled"}
        assert c.mapping_diff(parameters, listed) == []  # an absent batching window is 0
        assert c.mapping_diff(parameters, {**listed, "FunctionResponseTypes": []}) == [
            'FunctionResponseTypes: [] -> ["ReportBatchItemFailures"]'
        ]

    def test_the_stack_wires_each_mapping_as_specified(self) -> None:
        by_function = {m.function: m for m in _stack().mappings}
        assert set(by_function) == {"consumer", "trigger", "snapshot", "trim"}
        trigger = by_function["trigger"].parameters(QUEUE_ARNS)
        assert trigger["BatchSize"] == 1000 and trigger["MaximumRetryAttempts"] == 10
        assert trigger["DestinationConfig"] == {"OnFailure": {"Destination": QUEUE_ARNS["failures"]}}
        assert by_function["trigger"].starting_position == "TRIM_HORIZON"
        assert by_function["trim"].source == "trimRequests" and by_function["trim"].batch_size == 10


class TestQueues:
    def test_redrive_policy_matches_whatever_the_number_spelling(self) -> None:
        spec = _stack().queue("snapshotRequests")
        desired = spec.attributes(QUEUE_ARNS)
        returned = {
            "VisibilityTimeout": "180",
            "MessageRetentionPeriod": "345600",
            "QueueArn": "x",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": QUEUE_ARNS["snapshotRequestsDlq"], "maxReceiveCount": "5"}
            ),
        }
        assert c.queue_attributes_diff(desired, returned) == []

    def test_missing_redrive_and_short_visibility_are_updates(self) -> None:
        desired = _stack().queue("trimRequests").attributes(QUEUE_ARNS)
        lines = c.queue_attributes_diff(desired, {"VisibilityTimeout": "30"})
        assert lines[0] == "VisibilityTimeout: 30 -> 180"
        assert lines[1].startswith("RedrivePolicy: None -> ")

    def test_failures_queue_keeps_messages_14_days(self) -> None:
        attributes = _stack().queue("failures").attributes(QUEUE_ARNS)
        assert attributes == {"MessageRetentionPeriod": "1209600"}
        assert c.queue_attributes_diff(attributes, {"MessageRetentionPeriod": "345600"}) == [
            "MessageRetentionPeriod: 345600 -> 1209600"
        ]


class TestPolicies:
    def _policy(self) -> dict:
        stack = _stack()
        return role_policy(
            stack,
            stream_arn="arn:aws:kinesis:us-east-1:000000000000:stream/esjoin-t-events-in",
            table_arns={t.key: f"arn:aws:dynamodb:us-east-1:000000000000:table/{t.name}" for t in stack.tables},
            queue_arns=QUEUE_ARNS,
            region="us-east-1",
            account_id="000000000000",
        )

    def test_same_document_in_another_spelling_is_unchanged(self) -> None:
        policy = self._policy()
        respelled = json.loads(json.dumps(policy))
        for statement in respelled["Statement"]:
            statement["Action"] = list(reversed(statement["Action"]))
        respelled["Statement"].reverse()
        assert c.policy_diff(policy, respelled) == []
        assert c.policy_diff(policy, json.dumps(respelled)) == []

    def test_single_strings_equal_one_element_lists(self) -> None:
        single = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:Get", "Resource": "*"}],
        }
        listed = {
            "Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "Action": ["s3:Get"], "Resource": ["*"]},
        }
        assert c.policy_diff(single, listed) == []

    def test_a_missing_or_different_policy_is_reported(self) -> None:
        policy = self._policy()
        assert c.policy_diff(policy, None) == ["policy missing"]
        narrower = json.loads(json.dumps(policy))
        narrower["Statement"][0]["Action"].remove("kinesis:PutRecords")
        assert c.policy_diff(policy, narrower) == ["policy document differs"]

    def test_the_policy_names_only_the_stages_resources(self) -> None:
        resources = [r for s in self._policy()["Statement"] for r in s["Resource"]]
        assert all("esjoin-t-" in r or "/aws/lambda/esjoin-t-" in r or r.endswith("/stream/*") for r in resources)
        assert "*" not in resources


class TestTables:
    def test_keys_and_stream(self) -> None:
        events = _stack().table("events")
        described = {
            "KeySchema": [
                {"AttributeName": "seq", "KeyType": "RANGE"},
                {"AttributeName": "userId", "KeyType": "HASH"},
            ],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }
        assert c.table_key_diff(events.key_schema(), described) == []
        assert c.table_stream_diff(events.stream_view_type, described) == []
        assert c.table_stream_diff(events.stream_view_type, {}) == ["StreamViewType: None -> NEW_AND_OLD_IMAGES"]
        assert c.table_key_diff(events.key_schema(), {"KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}]})

    @pytest.mark.parametrize(
        ("description", "unchanged"),
        [
            ({"TimeToLiveStatus": "ENABLED", "AttributeName": "expiresAt"}, True),
            ({"TimeToLiveStatus": "ENABLING", "AttributeName": "expiresAt"}, True),
            ({"TimeToLiveStatus": "DISABLED"}, False),
            ({"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}, False),
        ],
    )
    def test_time_to_live(self, description: dict, unchanged: bool) -> None:
        assert (c.time_to_live_diff("expiresAt", description) == []) is unchanged


class TestReport:
    def test_only_unchanged_resources_say_no_changes(self) -> None:
        report = c.ChangeReport()
        report.record("table", "a", c.UNCHANGED)
        report.record("time-to-live", "a", c.SKIPPED, ["endpoint does not support it"])
        assert not report.changed
        assert report.summary() == "no changes (1 skipped, 1 unchanged)"

    def test_mutations_are_counted(self) -> None:
        report = c.ChangeReport()
        for action in (c.CREATED, c.CREATED, c.UPDATED, c.UNCHANGED):
            report.record("queue", "q", action)
        assert report.changed
        assert report.summary() == "2 created, 1 updated, 1 unchanged"
        assert report.to_list()[2] == {"kind": "queue", "name": "q", "action": "updated", "details": []}

    def test_drift_is_not_no_changes(self) -> None:
        report = c.ChangeReport()
        report.record("function", "f", c.DRIFTED, ["Timeout: 3 -> 30"])
        assert report.summary() == "1 drifted"
