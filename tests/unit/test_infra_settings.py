"""Stack settings: documented defaults, ESJOIN_* overrides, --set overrides, and where they land."""

from __future__ import annotations

import pytest

from infra.settings import SettingsError, StackSettings, parse_assignments, setting_name
from infra.stack import build_stack, function_environment, visibility_timeout_for

QUEUE_URLS = {
    "snapshotRequests": "http://q/snap",
    "trimRequests": "http://q/trim",
    "failures": "http://q/fail",
}


def test_defaults_are_the_documented_ones() -> None:
    s = StackSettings.from_env({})
    assert (s.stage, s.region, s.shard_count, s.parallelization_factor) == ("local", "us-east-1", 2, 1)
    assert (s.snapshot_horizon_seconds, s.snapshot_threshold, s.snapshot_max_events) == (60, 20, 1000)
    assert (s.dedupe_ttl_seconds, s.snapshot_mode, s.function_log_level) == (604800, "safe", "WARNING")
    assert (s.function_timeout_seconds, s.function_memory_mb) == (30, 256)


def test_environment_overrides_defaults() -> None:
    environ = {
        "ESJOIN_STAGE": "it-1",
        "ESJOIN_REGION": "eu-west-1",
        "ESJOIN_SHARD_COUNT": "4",
        "ESJOIN_SNAPSHOT_HORIZON_SECONDS": "2",
        "ESJOIN_SNAPSHOT_THRESHOLD": "3",
        "ESJOIN_SNAPSHOT_MAX_EVENTS": "50",
        "ESJOIN_DEDUPE_TTL_SECONDS": "60",
        "ESJOIN_SNAPSHOT_MODE": "original",
        "ESJOIN_PARALLELIZATION_FACTOR": "5",
        "ESJOIN_FUNCTION_LOG_LEVEL": "info",
        "ESJOIN_LOG_LEVEL": "DEBUG",  # the emulator's own level: not the functions'
    }
    s = StackSettings.from_env(environ)
    assert (s.stage, s.region, s.shard_count, s.parallelization_factor) == ("it-1", "eu-west-1", 4, 5)
    assert (s.snapshot_horizon_seconds, s.snapshot_threshold, s.snapshot_max_events) == (2.0, 3, 50)
    assert (s.dedupe_ttl_seconds, s.snapshot_mode, s.function_log_level) == (60, "original", "INFO")


def test_explicit_overrides_win_over_the_environment() -> None:
    s = StackSettings.from_env(
        {"ESJOIN_SNAPSHOT_HORIZON_SECONDS": "30", "ESJOIN_STAGE": "env-stage"},
        overrides={"snapshot_horizon_seconds": "0.5", "stage": "cli-stage", "shard_count": 1},
    )
    assert (s.snapshot_horizon_seconds, s.stage, s.shard_count) == (0.5, "cli-stage", 1)


def test_blank_environment_values_mean_default() -> None:
    assert StackSettings.from_env({"ESJOIN_SHARD_COUNT": "  "}).shard_count == 2


@pytest.mark.parametrize(
    "key",
    [
        "snapshot_horizon_seconds",
        "snapshot-horizon-seconds",
        "SNAPSHOT_HORIZON_SECONDS",
        "ESJOIN_SNAPSHOT_HORIZON_SECONDS",
    ],
)
def test_set_keys_accept_field_and_variable_spellings(key: str) -> None:
    assert setting_name(key) == "snapshot_horizon_seconds"


def test_log_level_names_the_functions_level() -> None:
    assert parse_assignments(["LOG_LEVEL=debug", "shard_count = 3"]) == {
        "function_log_level": "debug",
        "shard_count": "3",
    }
    assert StackSettings.from_env({}, overrides={"function_log_level": "debug"}).function_log_level == "DEBUG"


@pytest.mark.parametrize("item", ["novalue", "=3", "unknown_setting=1"])
def test_bad_assignments_are_refused(item: str) -> None:
    with pytest.raises(SettingsError):
        parse_assignments([item])


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ESJOIN_SHARD_COUNT", "two", "expected int"),
        ("ESJOIN_SHARD_COUNT", "0", "shard_count"),
        ("ESJOIN_PARALLELIZATION_FACTOR", "11", "parallelization_factor"),
        ("ESJOIN_SNAPSHOT_HORIZON_SECONDS", "-1", "snapshot_horizon_seconds"),
        ("ESJOIN_SNAPSHOT_MODE", "fast", "snapshot_mode"),
        ("ESJOIN_FUNCTION_LOG_LEVEL", "LOUD", "function_log_level"),
        ("ESJOIN_STAGE", "Has Spaces", "stage"),
        ("ESJOIN_STAGE", "x" * 33, "stage"),
        ("ESJOIN_REGION", "moon", "region"),
    ],
)
def test_invalid_values_are_refused_with_the_setting_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        StackSettings.from_env({variable: value})


def test_settings_flow_into_every_functions_environment() -> None:
    stack = build_stack(
        StackSettings(
            stage="t1",
            snapshot_horizon_seconds=2,
            snapshot_threshold=3,
            snapshot_max_events=7,
            dedupe_ttl_seconds=90,
            function_log_level="INFO",
        )
    )
    environment = function_environment(stack, QUEUE_URLS)
    assert environment == {
        "EVENTS_TABLE": "esjoin-t1-events",
        "VIEWS_TABLE": "esjoin-t1-views",
        "SNAPSHOTS_TABLE": "esjoin-t1-snapshots",
        "EVENT_IDS_TABLE": "esjoin-t1-event-ids",
        "STREAM_NAME": "esjoin-t1-events-in",
        "SNAPSHOT_QUEUE_URL": "http://q/snap",
        "TRIM_QUEUE_URL": "http://q/trim",
        "FAILURE_QUEUE_URL": "http://q/fail",
        "SNAPSHOT_HORIZON_SECONDS": "2",
        "SNAPSHOT_THRESHOLD": "3",
        "SNAPSHOT_MAX_EVENTS": "7",
        "DEDUPE_TTL_SECONDS": "90",
        "SNAPSHOT_MODE": "safe",
        "LOG_LEVEL": "INFO",
    }
    fractional = build_stack(StackSettings(snapshot_horizon_seconds=0.25))
    assert function_environment(fractional, QUEUE_URLS)["SNAPSHOT_HORIZON_SECONDS"] == "0.25"


def test_a_setting_change_changes_only_what_it_should() -> None:
    base = build_stack(StackSettings(stage="t1"))
    changed = build_stack(StackSettings(stage="t1", snapshot_horizon_seconds=2))
    assert function_environment(base, QUEUE_URLS) != function_environment(changed, QUEUE_URLS)
    assert (base.tables, base.queues, base.stream, base.mappings, base.role) == (
        changed.tables,
        changed.queues,
        changed.stream,
        changed.mappings,
        changed.role,
    )


def test_every_name_carries_the_stage_prefix() -> None:
    stack = build_stack(StackSettings(stage="abc"))
    names = [stack.stream.name, stack.role.name, stack.role.policy_name]
    names += [t.name for t in stack.tables] + [q.name for q in stack.queues] + [f.name for f in stack.functions]
    assert all(n.startswith("esjoin-abc-") for n in names)
    assert len(set(names)) == len(names)


def test_the_longest_stage_keeps_names_within_aws_limits() -> None:
    stack = build_stack(StackSettings(stage="s" * 32))
    assert max(len(f.name) for f in stack.functions) <= 64
    assert len(stack.role.name) <= 64 and len(stack.role.policy_name) <= 128
    assert max(len(q.name) for q in stack.queues) <= 80


@pytest.mark.parametrize("timeout", [1, 30, 900])
def test_queue_visibility_covers_the_function_timeout(timeout: int) -> None:
    visibility = visibility_timeout_for(timeout)
    assert timeout <= visibility <= 12 * 3600
    assert visibility == min(6 * timeout, 12 * 3600)


def test_queues_feeding_functions_get_six_times_the_timeout() -> None:
    stack = build_stack(StackSettings(function_timeout_seconds=20))
    assert stack.queue("snapshotRequests").visibility_timeout == 120
    assert stack.queue("trimRequests").visibility_timeout == 120
    assert all(f.timeout == 20 for f in stack.functions)
