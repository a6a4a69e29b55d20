"""The stack's settings: one dataclass with documented defaults.

Precedence, lowest first: the defaults below, ``ESJOIN_*`` environment variables, then explicit
overrides (the CLI's ``--stage``, ``--region`` and ``--set KEY=VALUE``). The application settings
(horizon, threshold, ...) end up in every function's environment, so changing one and applying again
updates the functions' configuration (see `infra.stack.function_environment`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_STAGE = "local"
SNAPSHOT_MODES = ("safe", "original")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Every name is "esjoin-<stage>-<suffix>"; the longest suffix a 64-character name carries
# (IAM role and Lambda function names) leaves room for a 32-character stage.
STAGE_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


class SettingsError(ValueError):
    """A setting has a value the stack cannot use (the CLI exits 2 with this message)."""


def _setting(default: Any, env: str, parse: Callable[[str], Any]) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse})


@dataclass(frozen=True)
class StackSettings:
    stage: str = _setting(DEFAULT_STAGE, "ESJOIN_STAGE", str)
    """ESJOIN_STAGE: the isolated copy; every resource is named ``esjoin-<stage>-...``."""
    region: str = _setting("us-east-1", "ESJOIN_REGION", str)
    """ESJOIN_REGION: the region the stack is created in."""
    shard_count: int = _setting(2, "ESJOIN_SHARD_COUNT", int)
    """ESJOIN_SHARD_COUNT: shards of the ``events-in`` Kinesis stream."""
    parallelization_factor: int = _setting(1, "ESJOIN_PARALLELIZATION_FACTOR", int)
    """ESJOIN_PARALLELIZATION_FACTOR: concurrent batches per shard for the consumer (1 to 10;
    order is kept per partition key)."""
    snapshot_horizon_seconds: float = _setting(60.0, "ESJOIN_SNAPSHOT_HORIZON_SECONDS", float)
    """ESJOIN_SNAPSHOT_HORIZON_SECONDS -> SNAPSHOT_HORIZON_SECONDS: an event is folded into a snapshot
    only once it is this old (tests use a short horizon, e.g. 2)."""
    snapshot_threshold: int = _setting(20, "ESJOIN_SNAPSHOT_THRESHOLD", int)
    """ESJOIN_SNAPSHOT_THRESHOLD -> SNAPSHOT_THRESHOLD: live events that make the trigger ask for a
    snapshot."""
    snapshot_max_events: int = _setting(1000, "ESJOIN_SNAPSHOT_MAX_EVENTS", int)
    """ESJOIN_SNAPSHOT_MAX_EVENTS -> SNAPSHOT_MAX_EVENTS: events one snapshot run reads."""
    dedupe_ttl_seconds: int = _setting(604800, "ESJOIN_DEDUPE_TTL_SECONDS", int)
    """ESJOIN_DEDUPE_TTL_SECONDS -> DEDUPE_TTL_SECONDS: how long an event id is remembered (7 days)."""
    snapshot_mode: str = _setting("safe", "ESJOIN_SNAPSHOT_MODE", str)
    """ESJOIN_SNAPSHOT_MODE -> SNAPSHOT_MODE: ``safe``, or ``original`` (only to demonstrate the original
    example's data loss)."""
    function_log_level: str = _setting("WARNING", "ESJOIN_FUNCTION_LOG_LEVEL", str)
    """ESJOIN_FUNCTION_LOG_LEVEL -> LOG_LEVEL: the functions' log level."""
    function_timeout_seconds: int = _setting(30, "ESJOIN_FUNCTION_TIMEOUT_SECONDS", int)
    """ESJOIN_FUNCTION_TIMEOUT_SECONDS: every function's Timeout; the queues' VisibilityTimeout
    follows it (see `infra.stack.visibility_timeout_for`)."""
    function_memory_mb: int = _setting(256, "ESJOIN_FUNCTION_MEMORY_MB", int)
    """ESJOIN_FUNCTION_MEMORY_MB: every function's MemorySize."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise SettingsError("; ".join(problems))

    def _problems(self) -> Iterable[str]:
        if not STAGE_PATTERN.match(self.stage):
            yield (
                f"stage {self.stage!r}: use 1 to 32 lowercase letters, digits and inner hyphens "
                "(it prefixes every resource name)"
            )
        if not re.match(r"^[a-z]{2}(-[a-z]+)+-\d+$", self.region):
            yield f"region {self.region!r} is not a region name such as us-east-1"
        if not 1 <= self.shard_count <= 500:
            yield f"shard_count must be 1 to 500, got {self.shard_count}"
        if not 1 <= self.parallelization_factor <= 10:
            # https://docs.aws.amazon.com/lambda/latest/api/API_CreateEventSourceMapping.html
            yield f"parallelization_factor must be 1 to 10, got {self.parallelization_factor}"
        if self.snapshot_horizon_seconds < 0:
            yield f"snapshot_horizon_seconds must be >= 0, got {self.snapshot_horizon_seconds}"
        if self.snapshot_threshold < 1:
            yield f"snapshot_threshold must be >= 1, got {self.snapshot_threshold}"
        if self.snapshot_max_events < 1:
            yield f"snapshot_max_events must be >= 1, got {self.snapshot_max_events}"
        if self.dedupe_ttl_seconds < 1:
            yield f"dedupe_ttl_seconds must be >= 1, got {self.dedupe_ttl_seconds}"
        if self.snapshot_mode not in SNAPSHOT_MODES:
            yield f"snapshot_mode must be one of {', '.join(SNAPSHOT_MODES)}, got {self.snapshot_mode!r}"
        if self.function_log_level not in LOG_LEVELS:
            levels = ", ".join(LOG_LEVELS)
            yield f"function_log_level must be one of {levels}, got {self.function_log_level!r}"
        if not 1 <= self.function_timeout_seconds <= 900:
            yield f"function_timeout_seconds must be 1 to 900, got {self.function_timeout_seconds}"
        if not 128 <= self.function_memory_mb <= 10240:
            yield f"function_memory_mb must be 128 to 10240, got {self.function_memory_mb}"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> StackSettings:
        """Defaults, then ``ESJOIN_*`` variables from ``environ`` (os.environ), then ``overrides``
        (field names or aliases, see `setting_name`; values as strings or already typed)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f, raw, source=f.metadata["env"])
        for key, value in (overrides or {}).items():
            f = _field(setting_name(key))
            values[f.name] = _parse(f, str(value), source=key)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def setting_name(key: str) -> str:
    """The field a ``--set`` key names: ``snapshot_horizon_seconds``, ``snapshot-horizon-seconds``,
    ``SNAPSHOT_HORIZON_SECONDS`` and ``ESJOIN_SNAPSHOT_HORIZON_SECONDS`` are the same setting;
    ``LOG_LEVEL`` (the functions' variable) names ``function_log_level``."""
    name = key.strip().lower().replace("-", "_")
    name = name.removeprefix("esjoin_")
    aliases = {"log_level": "function_log_level"}
    name = aliases.get(name, name)
    _field(name)  # raises for an unknown key
    return name


def parse_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (the CLI's repeated ``--set``) as ``{field name: raw value}``."""
    parsed: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"--set {item!r}: expected KEY=VALUE, e.g. --set snapshot_horizon_seconds=2")
        parsed[setting_name(key)] = value.strip()
    return parsed


def _field(name: str) -> dataclasses.Field[Any]:
    for f in dataclasses.fields(StackSettings):
        if f.name == name:
            return f
    known = ", ".join(f.name for f in dataclasses.fields(StackSettings))
    raise SettingsError(f"unknown setting {name!r}; known settings: {known}")


def _parse(f: dataclasses.Field[Any], raw: str, *, source: str) -> Any:
    text = raw.strip()
    if f.name in ("function_log_level",):
        text = text.upper()
    try:
        return f.metadata["parse"](text)
    except ValueError as exc:
        kind = f.metadata["parse"].__name__
        raise SettingsError(f"{source}={raw!r}: expected {kind} for {f.name} ({exc})") from exc
