"""The functions' settings: one dataclass, read from the environment once per cold start.

The bootstrap (`infra/bootstrap.py`) sets these variables on every function; the defaults below
are what a function uses when a variable is missing. The endpoint is never configured here: boto3
reads the standard ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) variables itself
(https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

SNAPSHOT_MODE_SAFE = "safe"
SNAPSHOT_MODE_ORIGINAL = "original"
"""Only for demonstrating data loss: restores the original example's snapshot bugs (see snapshot.py)."""

SNAPSHOT_MODES = (SNAPSHOT_MODE_SAFE, SNAPSHOT_MODE_ORIGINAL)


class ConfigurationError(ValueError):
    """An environment variable has a value the functions cannot use."""


@dataclass(frozen=True)
class Settings:
    events_table: str = "esjoin-events"
    """EVENTS_TABLE: accepted events, PK userId, SK seq (encoded Kinesis sequence number); stream on."""
    views_table: str = "esjoin-views"
    """VIEWS_TABLE: one view row per user, PK id."""
    snapshots_table: str = "esjoin-snapshots"
    """SNAPSHOTS_TABLE: one snapshot per user, PK userId (watermark, version, folded state)."""
    event_ids_table: str = "esjoin-event-ids"
    """EVENT_IDS_TABLE: dedupe index, PK eventId, TTL attribute expiresAt."""
    stream_name: str = "esjoin-events"
    """STREAM_NAME: the Kinesis stream the command function writes to."""
    snapshot_queue_url: str = ""
    """SNAPSHOT_QUEUE_URL: snapshot requests (trigger -> snapshot function)."""
    trim_queue_url: str = ""
    """TRIM_QUEUE_URL: trim requests (snapshot -> trim function)."""
    failure_queue_url: str = ""
    """FAILURE_QUEUE_URL: poison input, with its content. Unset: poison is logged at ERROR instead."""
    snapshot_horizon_seconds: float = 60.0
    """SNAPSHOT_HORIZON_SECONDS: an event is folded into a snapshot only once it has been stored
    this long; also the delay of a snapshot request (capped at SQS's 900 s)."""
    snapshot_threshold: int = 20
    """SNAPSHOT_THRESHOLD: live events (above the watermark) that make the trigger ask for a snapshot."""
    snapshot_max_events: int = 1000
    """SNAPSHOT_MAX_EVENTS: events one snapshot run reads; more are left to a follow-up request."""
    dedupe_ttl_seconds: int = 604800
    """DEDUPE_TTL_SECONDS: how long an event id is remembered (a producer retry later than this
    counts twice)."""
    snapshot_mode: str = SNAPSHOT_MODE_SAFE
    """SNAPSHOT_MODE: `safe`, or `original` (ONLY to demonstrate the original example's data loss)."""
    log_level: str = "WARNING"
    """LOG_LEVEL: structured JSON log lines; INFO adds one summary line per batch."""

    def __post_init__(self) -> None:
        if self.snapshot_mode not in SNAPSHOT_MODES:
            raise ConfigurationError(f"SNAPSHOT_MODE must be one of {SNAPSHOT_MODES}, got {self.snapshot_mode!r}")
        if self.snapshot_horizon_seconds < 0:
            raise ConfigurationError("SNAPSHOT_HORIZON_SECONDS must be >= 0")
        if self.snapshot_threshold < 1:
            raise ConfigurationError("SNAPSHOT_THRESHOLD must be >= 1")
        if self.snapshot_max_events < 1:
            raise ConfigurationError("SNAPSHOT_MAX_EVENTS must be >= 1")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigurationError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.log_level!r}"
            )
        if self.dedupe_ttl_seconds < 1:
            raise ConfigurationError("DEDUPE_TTL_SECONDS must be >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Each field from the variable named like it in upper case, parsed as its default's type."""
        environ = os.environ if environ is None else environ
        values = {}
        for setting in fields(cls):
            variable = setting.name.upper()
            raw = environ.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[setting.name] = type(setting.default)(raw.strip())
            except ValueError as exc:
                raise ConfigurationError(f"{variable}={raw!r}: {exc}") from exc
        return cls(**values)

    @property
    def snapshot_horizon_ms(self) -> int:
        return int(self.snapshot_horizon_seconds * 1000)


@functools.cache
def settings() -> Settings:
    """The settings of this cold start (tests call ``settings.cache_clear()`` after changing env)."""
    return Settings.from_env()
