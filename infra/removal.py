"""Remove every resource of a stage, dependents first, tolerating what is already gone.

Order: mappings (they read the sources and invoke the functions), functions and their log groups,
queues, tables, stream, role. Deletions are started together and then waited for, so a teardown
followed at once by an apply finds the names free (AWS keeps a deleted queue's name for 60 s;
local endpoints do not).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from esjoin.target import Target
from infra import changes as c
from infra.changes import ChangeReport
from infra.provision import error_code, naming_errors
from infra.stack import Stack
from infra.waits import wait_for

GONE = (
    "ResourceNotFoundException",
    "NoSuchEntity",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
)


class TeardownError(RuntimeError):
    """A resource could not be removed; the message says which and why."""


@dataclass
class Remover:
    stack: Stack
    target: Target
    clients: Any
    report: ChangeReport = field(default_factory=ChangeReport)
    timeout: float = 60.0

    def run(self) -> ChangeReport:
        with self._context("endpoint", self.target.describe()):
            self.remove_mappings()
            self.remove_functions()
            self.remove_queues()
            self.remove_tables()
            self.remove_stream()
            self.remove_role()
        return self.report

    def _context(self, kind: str, name: str) -> contextlib.AbstractContextManager[None]:
        return naming_errors(self.target, kind, name, TeardownError)

    def _delete(self, kind: str, name: str, call: Callable[[], Any], details: list[str] | None = None) -> bool:
        """Run one delete; already gone counts as absent, not as a failure."""
        with self._context(kind, name):
            try:
                call()
            except ClientError as exc:
                if error_code(exc) not in GONE:
                    raise
                self.report.record(kind, name, c.ABSENT)
                return False
        self.report.record(kind, name, c.REMOVED, details or [])
        return True

    def _wait_gone(self, kind: str, name: str, describe: Callable[[], Any]) -> None:
        def probe() -> bool:
            try:
                describe()
            except ClientError as exc:
                if error_code(exc) in GONE:
                    return True
                raise
            return False

        with self._context(kind, name):
            wait_for(probe, ready=bool, what=f"{kind} {name}", state=lambda _: "deleting", timeout=self.timeout)

    def remove_mappings(self) -> None:
        lambda_ = self.clients.lambda_
        started: list[tuple[str, str]] = []
        for function in self.stack.functions:
            with self._context("function", function.name):
                try:
                    pages = lambda_.get_paginator("list_event_source_mappings").paginate(FunctionName=function.name)
                    mappings = [m for page in pages for m in page.get("EventSourceMappings", [])]
                except ClientError as exc:
                    if error_code(exc) not in GONE:
                        raise
                    mappings = []
            for mapping in mappings:
                uuid = mapping["UUID"]
                label = f"{function.name} <- {mapping.get('EventSourceArn', '?').split(':', 5)[-1]}"
                if mapping.get("State") == "Deleting" or self._delete(
                    "mapping",
                    label,
                    lambda u=uuid: lambda_.delete_event_source_mapping(UUID=u),
                    [f"UUID {uuid}"],
                ):
                    started.append((label, uuid))
        for label, uuid in started:
            self._wait_gone("mapping", label, lambda u=uuid: lambda_.get_event_source_mapping(UUID=u))

    def remove_functions(self) -> None:
        lambda_, logs = self.clients.lambda_, self.clients.logs
        for function in self.stack.functions:
            self._delete("function", function.name, lambda n=function.name: lambda_.delete_function(FunctionName=n))
            group = f"/aws/lambda/{function.name}"
            # Lambda creates the log group on first invocation; a fresh stage should not show
            # the old stage's logs. Not every endpoint serves CloudWatch Logs: skip quietly then.
            with contextlib.suppress(ClientError, BotoCoreError):
                logs.delete_log_group(logGroupName=group)
                self.report.record("log-group", group, c.REMOVED)

    def remove_queues(self) -> None:
        sqs = self.clients.sqs
        for queue in reversed(self.stack.queues):  # sources before their dead-letter queues
            with self._context("queue", queue.name):
                try:
                    url = sqs.get_queue_url(QueueName=queue.name)["QueueUrl"]
                except ClientError as exc:
                    if error_code(exc) not in GONE:
                        raise
                    self.report.record("queue", queue.name, c.ABSENT)
                    continue
            self._delete("queue", queue.name, lambda u=url: sqs.delete_queue(QueueUrl=u))

    def remove_tables(self) -> None:
        dynamodb = self.clients.dynamodb
        deleted = [
            table.name
            for table in self.stack.tables
            if self._delete("table", table.name, lambda n=table.name: dynamodb.delete_table(TableName=n))
        ]
        for name in deleted:
            self._wait_gone("table", name, lambda n=name: dynamodb.describe_table(TableName=n))

    def remove_stream(self) -> None:
        kinesis, name = self.clients.kinesis, self.stack.stream.name
        if self._delete("stream", name, lambda: kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)):
            self._wait_gone("stream", name, lambda: kinesis.describe_stream_summary(StreamName=name))

    def remove_role(self) -> None:
        iam, name = self.clients.iam, self.stack.role.name
        with self._context("role", name):
            try:
                inline = iam.list_role_policies(RoleName=name).get("PolicyNames", [])
                attached = iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies", [])
            except ClientError as exc:
                if error_code(exc) not in GONE:
                    raise
                self.report.record("role", name, c.ABSENT)
                return
            # IAM refuses to delete a role that still has policies (DeleteConflict).
            for policy in inline:
                iam.delete_role_policy(RoleName=name, PolicyName=policy)
                self.report.record("role-policy", f"{name}/{policy}", c.REMOVED)
            for policy in attached:
                iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        self._delete("role", name, lambda: iam.delete_role(RoleName=name))
