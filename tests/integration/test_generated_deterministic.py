"""The generated suite in deterministic mode: Hypothesis draws a sequence of steps and a seed, and the
sequence runs as a script on a deterministic endpoint of its own (esjoin/testing/explore.py). The
seed decides when each step is admitted among the pipeline's own steps, so an example is one run,
the same every time: the example Hypothesis shrinks to replays identically (and its trace, kept when
it fails, replays with `esjoin replay TRACE --check`). Each example is checked at the end: every
view equals the oracle's fold, and snapshots plus stored events account for every event (I1, I2).

test_generated.py runs the same kinds of steps live, on the session's endpoint, with wall-clock
faults; this one trades that for exact reproduction.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from esjoin.testing.events import event_of_kind
from esjoin.testing.explore import Exploration, Inputs
from esjoin.testing.oracle import KNOWN_TYPES, USER_CREATED, USER_LOGGED_IN

pytestmark = pytest.mark.embedded_only("deterministic endpoints of its own, one per example")

USERS = 2
CI_SETTINGS = {"max_examples": 3, "stateful_step_count": 8, "derandomize": True}
SOAK_SETTINGS = {"max_examples": 25, "stateful_step_count": 25, "derandomize": False}


class ScriptMachine(RuleBasedStateMachine):
    """Collects steps; the teardown runs them as one scripted run under the drawn seed."""

    exploration: Exploration

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[str, Any]] = []
        self.seed = 1
        self.sent = 0

    users = st.integers(min_value=0, max_value=USERS - 1)

    @initialize(seed=st.integers(1, 10_000), user=users)
    def start(self, seed: int, user: int) -> None:
        self.seed = seed
        self.steps.append(("events", (user, [USER_CREATED, USER_LOGGED_IN], 1)))
        self.sent += 2

    @rule(user=users, kinds=st.lists(st.sampled_from(KNOWN_TYPES), min_size=1, max_size=3), age=st.integers(0, 5))
    def send_events(self, user: int, kinds: list[str], age: int) -> None:
        self.steps.append(("events", (user, kinds, age)))
        self.sent += len(kinds)

    @rule(user=users, kind=st.sampled_from(KNOWN_TYPES), minutes_late=st.integers(10, 600))
    def send_late_event(self, user: int, kind: str, minutes_late: int) -> None:
        self.steps.append(("events", (user, [kind], minutes_late * 60)))
        self.sent += 1

    @precondition(lambda self: self.sent > 0)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        self.steps.append(("resend", data.draw(st.integers(0, self.sent - 1), label="event")))

    @rule(user=users, horizon=st.sampled_from([0, None]))
    def request_snapshot(self, user: int, horizon: int | None) -> None:
        self.steps.append(("snapshot", (user, horizon)))

    @rule(user=users)
    def request_trim(self, user: int) -> None:
        self.steps.append(("trim", user))

    @rule(function=st.sampled_from(["consumer", "trigger", "snapshot"]), user=users)
    def fail_next_invocation(self, function: str, user: int) -> None:
        self.steps.append(("fault", (function, user)))

    @rule()
    def settle(self) -> None:
        self.steps.append(("settle", None))

    def scenario(self, inputs: Inputs) -> None:
        names = [f"gen-{i}" for i in range(USERS)]
        sent: list[dict[str, Any]] = []
        for kind, argument in self.steps:
            if kind == "events":
                user, kinds, age_seconds = argument
                at = inputs.clock_ms - age_seconds * 1000
                events = [event_of_kind(k, names[user], at + i) for i, k in enumerate(kinds)]
                sent.extend(events)
                inputs.put_events(events)
            elif kind == "resend":
                inputs.resend([sent[argument]])
            elif kind == "snapshot":
                inputs.request_snapshot(names[argument[0]], horizon_seconds=argument[1])
            elif kind == "trim":
                inputs.request_trim(names[argument])
            elif kind == "fault":
                function, user = argument
                inputs.add_fault(
                    {
                        "function": inputs.outputs.functions[function]["name"],
                        "action": "error",
                        "match": names[user],
                        "count": 1,
                        "errorType": "RuntimeError",
                        "errorMessage": "injected by the generated suite",
                    }
                )
            else:
                inputs.settle()

    def teardown(self) -> None:
        result = self.exploration.run_seed(self.scenario, self.seed)
        assert not result.problems, (
            f"seed {self.seed}, steps {self.steps}:\n  "
            + "\n  ".join(result.problems)
            + f"\nreplay it: esjoin replay {result.trace} --check"
        )


def test_generated_scripts_converge_under_their_seed(tmp_path_factory, long_run):
    ScriptMachine.exploration = Exploration(tmp_path_factory.mktemp("generated"), "gen")
    bounds = SOAK_SETTINGS if long_run else CI_SETTINGS
    run_state_machine_as_test(
        ScriptMachine,
        settings=settings(
            **bounds,
            deadline=None,
            database=None,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_an_example_is_one_run(tmp_path_factory):
    """The same steps and seed twice: the same trace, byte for byte (what makes a shrunk example replay)."""
    exploration = Exploration(tmp_path_factory.mktemp("generated-twice"), "gentwice")
    machine = ScriptMachine.__new__(ScriptMachine)
    machine.seed = 5
    machine.steps = [
        ("events", (0, [USER_CREATED, "order-submitted", "order-submitted"], 1)),
        ("snapshot", (0, 0)),
        ("events", (0, ["user-loggedIn"], 600)),
        ("resend", 1),
        ("fault", ("trigger", 0)),
        ("snapshot", (0, None)),
        ("events", (1, [USER_CREATED], 0)),
    ]
    first = exploration.run_seed(machine.scenario, machine.seed, keep_trace=True)
    assert first.trace is not None
    recorded = first.trace.read_bytes()
    second = exploration.run_seed(machine.scenario, machine.seed, keep_trace=True)
    assert second.trace is not None and second.trace.read_bytes() == recorded
    assert not first.problems, first.problems
