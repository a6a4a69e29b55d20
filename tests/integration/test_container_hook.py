"""Scenario: the containers' bootstrap hook (docker/esjoin-bootstrap.sh) on this session's endpoint.

On the localstack backend this is what LocalStack's ready.d runs; point ESJOIN_BOOTSTRAP_PYTHON at
LocalStack's own Python to run it as the image would, e.g. against the host-mode peer:

    ESJOIN_LOCALSTACK_ENDPOINT=http://127.0.0.1:4599 \\
    ESJOIN_BOOTSTRAP_PYTHON=/opt/esjoin-localstack/venv/bin/python \\
    .venv/bin/pytest tests/integration/test_container_hook.py --esjoin-backend localstack
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from esjoin.testing.backends import AWS, Backend
from infra.bootstrap import read_outputs, teardown
from infra.outputs import Outputs
from infra.settings import StackSettings
from infra.stack import build_stack

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "docker" / "esjoin-bootstrap.sh"


def test_the_hook_bootstraps_a_stage_whose_outputs_read_the_same_from_the_host(
    backend: Backend, tmp_path: Path
) -> None:
    if backend.name == AWS:
        pytest.skip("the hook bootstraps local endpoints only")
    # Given a stage of its own on this session's endpoint
    stage = f"hook-{uuid.uuid4().hex[:6]}"
    stack = build_stack(StackSettings.from_env(environ={}, overrides={"stage": stage, "region": backend.region}))
    outputs_path = tmp_path / "outputs.json"
    env = {
        **os.environ,
        "ESJOIN_BOOTSTRAP_PYTHON": os.environ.get("ESJOIN_BOOTSTRAP_PYTHON") or sys.executable,
        "ESJOIN_BOOTSTRAP_ENDPOINT": backend.endpoint_url,
        "ESJOIN_PROJECT_DIR": str(ROOT),
        "ESJOIN_OUTPUTS": str(outputs_path),
        "ESJOIN_STAGE": stage,
        "ESJOIN_REGION": backend.region,
    }
    try:
        # When the hook runs as the container runs it
        result = subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        # Then the stage is deployed, and the outputs it wrote are what the host reads back
        written = Outputs.load(outputs_path)
        assert (written.stage, written.endpoint) == (stage, backend.endpoint_url)
        read = read_outputs(stack, backend.target, outputs_path=None)
        assert read.summary.startswith("no changes"), read.summary
        for part in ("stream", "tables", "queues", "functions"):
            assert getattr(read, part) == getattr(written, part), part
        assert {k: v["uuid"] for k, v in read.mappings.items()} == {k: v["uuid"] for k, v in written.mappings.items()}
    finally:
        teardown(stack, backend.target, outputs_path=None)
