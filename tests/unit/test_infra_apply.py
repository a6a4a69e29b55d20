"""apply / outputs / teardown as scenarios, on moto's in-process mock (no network, no endpoint).

moto stands in for the endpoint's control plane; what is asserted is the bootstrap's behaviour:
what it creates, that a second run changes nothing, that a setting change touches only what it
should, that drift is repaired, and that teardown removes the stage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

moto = pytest.importorskip("moto")

from esjoin.target import LOCAL, Clients, Target  # noqa: E402
from infra import bootstrap  # noqa: E402
from infra import changes as c  # noqa: E402
from infra.provision import NotDeployed  # noqa: E402
from infra.settings import StackSettings  # noqa: E402
from infra.stack import Stack, build_stack  # noqa: E402


class _EnabledStreams:
    """moto's in-process mock answers DynamoDB Streams calls as DynamoDB ("Not yet implemented");
    its server mode, which the embedded endpoint uses, does not. Report the stream ENABLED."""

    def describe_stream(self, StreamArn: str) -> dict:
        return {"StreamDescription": {"StreamArn": StreamArn, "StreamStatus": "ENABLED"}}


class _MockClients(Clients):
    dynamodbstreams = _EnabledStreams()


class _MockTarget(Target):
    """A local target without an endpoint URL, so moto's mock intercepts the calls (only under
    mock_aws: a real Target refuses to be local without a local endpoint)."""

    def __post_init__(self) -> None:
        pass

    def clients(self) -> Clients:
        return _MockClients(self)


@pytest.fixture
def target() -> Iterator[Target]:
    with moto.mock_aws():
        yield _MockTarget(kind=LOCAL, region="us-east-1", endpoint_url=None)


def _stack(**settings: object) -> Stack:
    return build_stack(StackSettings(stage="ut", **settings))


def _actions(outputs_or_report: object) -> dict[str, list[str]]:
    changes = getattr(outputs_or_report, "changes", None)
    items = (
        changes
        if isinstance(changes, list) and changes and isinstance(changes[0], dict)
        else [ch.to_dict() for ch in getattr(outputs_or_report, "changes", [])]
    )
    grouped: dict[str, list[str]] = {}
    for change in items:
        grouped.setdefault(change["action"], []).append(f"{change['kind']} {change['name']}")
    return grouped


def test_first_apply_creates_the_stage_and_the_second_changes_nothing(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    first = bootstrap.apply(_stack(), target, outputs_path=path, timeout=5)
    created = _actions(first)[c.CREATED]
    assert len(created) == 22 and set(_actions(first)) == {c.CREATED}
    assert {
        "stream esjoin-ut-events-in",
        "table esjoin-ut-events",
        "queue esjoin-ut-failures",
        "function esjoin-ut-trim",
        "role esjoin-ut-lambda",
    } <= set(created)

    second = bootstrap.apply(_stack(), target, outputs_path=path, timeout=5)
    assert set(_actions(second)) == {c.UNCHANGED}
    assert second.summary.startswith("no changes")

    written = json.loads(path.read_text())
    assert written["stage"] == "ut" and written["accountId"] == first.account_id
    assert written["tables"]["events"]["streamArn"].startswith(written["tables"]["events"]["arn"] + "/stream/")
    assert set(written["functions"]) == {"command", "consumer", "trigger", "snapshot", "trim"}
    assert {m["function"] for m in written["mappings"].values()} == {
        "esjoin-ut-consumer",
        "esjoin-ut-trigger",
        "esjoin-ut-snapshot",
        "esjoin-ut-trim",
    }
    assert written["mappings"]["trim"]["source"] == written["queues"]["trimRequests"]["arn"]
    assert written["queues"]["failures"]["url"].endswith("esjoin-ut-failures")
    assert written["settings"]["snapshot_horizon_seconds"] == 60
    assert written["summary"] == second.summary


def test_a_setting_change_updates_only_what_carries_it(target: Target) -> None:
    bootstrap.apply(_stack(), target, outputs_path=None, timeout=5)
    functions = [f"function esjoin-ut-{f}" for f in ("command", "consumer", "trigger", "snapshot", "trim")]

    horizon = bootstrap.apply(_stack(snapshot_horizon_seconds=2), target, outputs_path=None, timeout=5)
    assert _actions(horizon)[c.UPDATED] == functions
    lambda_ = target.clients().lambda_
    variables = lambda_.get_function(FunctionName="esjoin-ut-snapshot")["Configuration"]["Environment"]["Variables"]
    assert variables["SNAPSHOT_HORIZON_SECONDS"] == "2"

    parallel = bootstrap.apply(
        _stack(snapshot_horizon_seconds=2, parallelization_factor=4), target, outputs_path=None, timeout=5
    )
    assert _actions(parallel)[c.UPDATED] == ["mapping esjoin-ut-consumer <- esjoin-ut-events-in"]
    mapping = lambda_.get_event_source_mapping(UUID=parallel.mappings["consumer"]["uuid"])
    assert mapping["ParallelizationFactor"] == 4


def test_drift_is_repaired(target: Target) -> None:
    first = bootstrap.apply(_stack(), target, outputs_path=None, timeout=5)
    clients = target.clients()
    clients.sqs.set_queue_attributes(
        QueueUrl=first.queues["snapshotRequests"]["url"], Attributes={"VisibilityTimeout": "5"}
    )
    clients.lambda_.delete_event_source_mapping(UUID=first.mappings["trim"]["uuid"])
    clients.iam.delete_role_policy(RoleName="esjoin-ut-lambda", PolicyName="esjoin-ut-lambda-resources")

    repaired = bootstrap.apply(_stack(), target, outputs_path=None, timeout=5)
    actions = _actions(repaired)
    assert actions[c.UPDATED] == ["queue esjoin-ut-snapshot-requests"]
    assert sorted(actions[c.CREATED]) == [
        "mapping esjoin-ut-trim <- esjoin-ut-trim-requests",
        "role-policy esjoin-ut-lambda/esjoin-ut-lambda-resources",
    ]
    assert repaired.mappings["trim"]["uuid"] != first.mappings["trim"]["uuid"]
    attributes = clients.sqs.get_queue_attributes(
        QueueUrl=first.queues["snapshotRequests"]["url"], AttributeNames=["VisibilityTimeout"]
    )["Attributes"]
    assert attributes["VisibilityTimeout"] == "180"


def test_outputs_reads_without_changing_and_reports_drift(target: Target) -> None:
    with pytest.raises(NotDeployed, match="not deployed"):
        bootstrap.read_outputs(_stack(), target, timeout=5)
    bootstrap.apply(_stack(), target, outputs_path=None, timeout=5)
    checked = bootstrap.read_outputs(_stack(snapshot_threshold=5), target, timeout=5)
    assert len(_actions(checked)[c.DRIFTED]) == 5  # the five functions' SNAPSHOT_THRESHOLD
    again = bootstrap.apply(_stack(), target, outputs_path=None, timeout=5)
    assert again.summary.startswith("no changes")  # checking changed nothing


def test_teardown_removes_the_stage_and_tolerates_what_is_gone(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    bootstrap.apply(_stack(), target, outputs_path=path, timeout=5)
    bootstrap.apply(build_stack(StackSettings(stage="other")), target, outputs_path=None, timeout=5)

    report = bootstrap.teardown(_stack(), target, outputs_path=path, timeout=5)
    assert len(_actions(report)[c.REMOVED]) == 21  # 4 mappings, 5 functions, 5 queues, 4 tables, stream, policy, role
    assert not path.exists()
    clients = target.clients()
    assert clients.lambda_.list_functions()["Functions"] != []  # the other stage is untouched
    assert all(not f["FunctionName"].startswith("esjoin-ut-") for f in clients.lambda_.list_functions()["Functions"])
    assert all("esjoin-ut-" not in t for t in clients.dynamodb.list_tables()["TableNames"])

    again = bootstrap.teardown(_stack(), target, outputs_path=path, timeout=5)
    assert not again.changed and set(_actions(again)) == {c.ABSENT}
