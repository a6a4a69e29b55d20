"""Waits end on a condition or a deadline, and a failed wait names the resource and its last state."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import WaiterError

from esjoin.target import LOCAL, Target
from infra.provision import Provisioner
from infra.settings import StackSettings
from infra.stack import build_stack
from infra.waits import ResourceFailed, WaitTimeout, wait_for


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("infra.waits.time.sleep", slept.append)
    return slept


def test_an_already_ready_resource_is_read_once_and_never_waited_for(no_sleeping: list[float]) -> None:
    calls: list[int] = []
    result = wait_for(lambda: calls.append(1) or "ACTIVE", ready=lambda s: s == "ACTIVE", what="x", state=str)
    assert (result, len(calls), no_sleeping) == ("ACTIVE", 1, [])


def test_polls_until_ready_with_growing_intervals(no_sleeping: list[float]) -> None:
    states = iter(["CREATING", "CREATING", "CREATING", "ACTIVE"])
    assert wait_for(lambda: next(states), ready=lambda s: s == "ACTIVE", what="x", state=str) == "ACTIVE"
    assert len(no_sleeping) == 3 and no_sleeping == sorted(no_sleeping) and no_sleeping[0] < no_sleeping[-1]


def test_the_deadline_error_names_the_resource_and_its_last_state() -> None:
    with pytest.raises(WaitTimeout, match=r"^stream s still CREATING after 0 s; last state 'CREATING'$"):
        wait_for(lambda: "CREATING", ready=lambda s: s == "ACTIVE", what="stream s", state=str, timeout=0)


def test_a_failed_state_ends_the_wait_at_once() -> None:
    with pytest.raises(ResourceFailed, match="function f failed: image missing"):
        wait_for(
            lambda: "Failed",
            ready=lambda s: s == "Active",
            what="function f",
            state=str,
            failed=lambda s: "image missing" if s == "Failed" else None,
        )


class _Lambda:
    """Just enough of a Lambda client for the waits: a mapping stuck in Creating, a waiter that gives up."""

    def __init__(self, waiter_response: dict[str, Any]) -> None:
        self.waiter_response = waiter_response

    def get_event_source_mapping(self, UUID: str) -> dict[str, Any]:
        return {"UUID": UUID, "State": "Creating", "StateTransitionReason": "USER_INITIATED"}

    def get_waiter(self, name: str) -> Any:
        response = self.waiter_response

        class _Waiter:
            def wait(self, **_: Any) -> None:
                raise WaiterError(name=name, reason="Max attempts exceeded", last_response=response)

        return _Waiter()


class _Clients:
    def __init__(self, lambda_: _Lambda) -> None:
        self.lambda_ = lambda_


def _provisioner(waiter_response: dict[str, Any] | None = None) -> Provisioner:
    target = Target(kind=LOCAL, region="us-east-1", endpoint_url="http://127.0.0.1:4566")
    clients = _Clients(_Lambda(waiter_response or {}))
    return Provisioner(build_stack(StackSettings(stage="w")), target, clients, timeout=0)


def test_a_mapping_that_stays_creating_fails_with_its_uuid_function_and_state() -> None:
    with pytest.raises(WaitTimeout) as raised:
        _provisioner()._wait_mapping("u-42", "esjoin-w-consumer", lambda m: m["State"] == "Enabled")
    assert str(raised.value).startswith(
        "mapping u-42 for esjoin-w-consumer still Creating after 0 s; last state Creating (USER_INITIATED;"
    )


def test_a_function_waiter_failure_becomes_a_clear_error() -> None:
    pending = {"Configuration": {"State": "Pending", "StateReason": "creating the sandbox"}}
    with pytest.raises(WaitTimeout, match=r"function esjoin-w-trim still Pending after 0 s .*creating the sandbox"):
        _provisioner(pending)._lambda_wait("function_active_v2", "esjoin-w-trim", "State")
    failed = {"Configuration": {"State": "Failed", "StateReason": "bad zip"}}
    with pytest.raises(ResourceFailed, match="function esjoin-w-trim is State Failed: bad zip"):
        _provisioner(failed)._lambda_wait("function_active_v2", "esjoin-w-trim", "State")
