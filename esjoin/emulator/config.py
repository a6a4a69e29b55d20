"""The embedded endpoint's settings: one dataclass, read from ``ESJOIN_*`` environment variables.

Every default is documented here and in the README ("Configuration"); the CLI (`esjoin emulator
start --port ...`) overrides the environment by passing keyword arguments to `EmulatorConfig.from_env`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TIMING_FAST = "fast"
TIMING_AWS = "aws"


def split_names(raw: str) -> frozenset[str]:
    return frozenset(name.strip().lower() for name in raw.split(",") if name.strip())


def split_origins(raw: str) -> frozenset[str]:
    return frozenset(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    """ESJOIN_HOST: address to bind. Loopback by default; the container image sets 0.0.0.0."""
    port: int = 4566
    """ESJOIN_PORT: the one HTTP port (LocalStack's, so AWS_ENDPOINT_URL and scripts carry over); 0: a free one."""
    region: str = "us-east-1"
    """ESJOIN_REGION: region for calls that do not carry one (unsigned requests)."""
    account_id: str = "000000000000"
    """ESJOIN_ACCOUNT_ID: account in every ARN (LocalStack's default, for access key `test`)."""
    timing: str = TIMING_FAST
    """ESJOIN_TIMING: `fast` (a write wakes its pollers at once) or `aws` (AWS's poll rates)."""
    state_dir: Path = field(default_factory=lambda: Path(".esjoin") / "emulator")
    """ESJOIN_STATE_DIR: function code, worker scratch space and mapping checkpoints."""
    lambda_max_concurrency: int = 10
    """ESJOIN_LAMBDA_MAX_CONCURRENCY: warm workers a function may run at once (AWS: account limit)."""
    lambda_idle_seconds: float = 600.0
    """ESJOIN_LAMBDA_IDLE_SECONDS: an idle worker is stopped after this long (AWS: minutes to hours)."""
    serialize_writes: bool = True
    """ESJOIN_SERIALIZE_WRITES: one request at a time inside moto (linearizable conditional writes)."""
    history_size: int = 20000
    """ESJOIN_HISTORY_SIZE: invocations kept by the control API's history."""
    console_oracle: str = "esjoin.testing.oracle:expected_view"
    """ESJOIN_CONSOLE_ORACLE: `module:function(user_id, events)` whose result the console's Data view puts
    next to a user's view row (default: the demo's oracle); empty: no comparison. Named, not imported:
    the endpoint knows nothing of the application."""
    log_level: str = "WARNING"
    """ESJOIN_LOG_LEVEL: the endpoint's own log level (`-v` on the CLI sets INFO)."""
    allowed_hosts: frozenset[str] = frozenset()
    """ESJOIN_ALLOWED_HOSTS: host names served besides loopback ones (compose service names), comma-separated."""
    allowed_origins: frozenset[str] = frozenset()
    """ESJOIN_ALLOWED_ORIGINS: browser origins allowed to call the endpoint (e.g. http://localhost:3000)."""
    idle_timeout_seconds: float = 60.0
    """ESJOIN_IDLE_TIMEOUT_SECONDS: a connection silent this long (idle keep-alive, half-open, slow) is closed."""
    max_connections: int = 512
    """ESJOIN_MAX_CONNECTIONS: open client connections at once (one thread each); more are closed at once."""
    seed: int | None = None
    """ESJOIN_SEED: deterministic mode with this seed (docs/reproduce.md); unset: fast mode."""
    pace: str = "wall"
    """ESJOIN_PACE (deterministic mode): `wall` (a live client drives it) or `virtual` (nothing waits)."""
    clock_start_ms: int | None = None
    """ESJOIN_CLOCK_START_MS (deterministic mode): the virtual clock's start, epoch ms (default: now)."""

    _ENV = {
        "host": ("ESJOIN_HOST", str),
        "port": ("ESJOIN_PORT", int),
        "region": ("ESJOIN_REGION", str),
        "account_id": ("ESJOIN_ACCOUNT_ID", str),
        "timing": ("ESJOIN_TIMING", str),
        "state_dir": ("ESJOIN_STATE_DIR", Path),
        "lambda_max_concurrency": ("ESJOIN_LAMBDA_MAX_CONCURRENCY", int),
        "lambda_idle_seconds": ("ESJOIN_LAMBDA_IDLE_SECONDS", float),
        "serialize_writes": ("ESJOIN_SERIALIZE_WRITES", _env_bool),
        "history_size": ("ESJOIN_HISTORY_SIZE", int),
        "console_oracle": ("ESJOIN_CONSOLE_ORACLE", str),
        "log_level": ("ESJOIN_LOG_LEVEL", str),
        "allowed_hosts": ("ESJOIN_ALLOWED_HOSTS", split_names),
        "allowed_origins": ("ESJOIN_ALLOWED_ORIGINS", split_origins),
        "idle_timeout_seconds": ("ESJOIN_IDLE_TIMEOUT_SECONDS", float),
        "max_connections": ("ESJOIN_MAX_CONNECTIONS", int),
        "seed": ("ESJOIN_SEED", int),
        "pace": ("ESJOIN_PACE", str),
        "clock_start_ms": ("ESJOIN_CLOCK_START_MS", int),
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> EmulatorConfig:
        """Defaults, then ``ESJOIN_*`` variables, then explicit overrides (None means "not given")."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, (variable, parse) in cls._ENV.items():
            if variable in environ and environ[variable] != "":
                try:
                    values[name] = parse(environ[variable])
                except ValueError as error:
                    raise ValueError(f"{variable}={environ[variable]!r} is not valid: {error}") from error
        values.update({name: value for name, value in overrides.items() if value is not None})
        config = cls(**values)  # type: ignore[arg-type]
        config.validate()
        return config

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        object.__setattr__(self, "allowed_hosts", frozenset(self.allowed_hosts))
        object.__setattr__(self, "allowed_origins", frozenset(self.allowed_origins))

    def validate(self) -> None:
        if self.timing not in (TIMING_FAST, TIMING_AWS):
            raise ValueError(f"ESJOIN_TIMING must be '{TIMING_FAST}' or '{TIMING_AWS}', not {self.timing!r}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"ESJOIN_PORT must be a TCP port (0: any free one), not {self.port}")
        if self.lambda_max_concurrency < 1:
            raise ValueError("ESJOIN_LAMBDA_MAX_CONCURRENCY must be at least 1")
        if self.idle_timeout_seconds <= 0 or self.max_connections < 1:
            raise ValueError("ESJOIN_IDLE_TIMEOUT_SECONDS and ESJOIN_MAX_CONNECTIONS must be positive")
        if self.pace not in ("wall", "virtual"):
            raise ValueError(f"ESJOIN_PACE must be 'wall' or 'virtual', not {self.pace!r}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"ESJOIN_SEED must be an integer from 0 to 2**63 - 1, not {self.seed}")

    @property
    def endpoint_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"
