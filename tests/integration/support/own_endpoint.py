"""A demo stack on an embedded endpoint of a test's own, for scenarios that stop, move or compare whole
endpoints (state save and load, capture and replay) and so must not touch the session's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esjoin.testing.backends import Backend, own_embedded

REGION = "us-east-1"
# The stage every scenario shares: a 2-second snapshot horizon (the default is 60 s) so snapshots
# and trims happen within a test; a low snapshot threshold so the trigger asks for them; a short
# function timeout so a failed SQS message is retried within seconds (visibility = 6 x timeout).
TEST_SETTINGS: dict[str, Any] = {
    "shard_count": 2,
    "snapshot_horizon_seconds": 2,
    "snapshot_threshold": 5,
    "function_timeout_seconds": 5,
    "function_log_level": "INFO",
}


def own_backend(directory: Path, port: int | None = None) -> Backend:
    """`python -m esjoin.emulator` on `port` (default: a free one), its state and log under `directory`."""
    return own_embedded(directory, port=port, region=REGION)


def deploy_demo(backend: Backend, stage: str, directory: Path) -> Any:
    """The demo stack with the scenarios' settings, bootstrapped on `backend`; its outputs."""
    from infra.bootstrap import apply
    from infra.settings import StackSettings
    from infra.stack import build_stack

    settings = StackSettings.from_env(environ={}, overrides={**TEST_SETTINGS, "stage": stage, "region": REGION})
    return apply(build_stack(settings), backend.target, outputs_path=directory / "outputs.json")
