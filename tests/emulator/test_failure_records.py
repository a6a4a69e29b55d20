"""A test that fails on the embedded endpoint leaves what it saw: `.esjoin/failures/<test>/` with the
endpoint's whole state (loadable with `esjoin state load`), its history and fault rules, and the report
prints the command that runs it again. Run as another project's suite would run it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

FAILING = """
def test_a_queue_then_a_failure(esjoin_endpoint, esjoin_control):
    esjoin_endpoint.client("sqs").create_queue(QueueName="left-behind")
    esjoin_control.add_fault("error", function="nobody", count=1)
    assert False, "the bug"


def test_a_pass(esjoin_endpoint):
    assert esjoin_endpoint.url
"""


def run_their_suite(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """FAILING as another project's suite, in its own directory, with none of our environment."""
    (directory / "test_theirs.py").write_text(FAILING)
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "ESJOIN_"))}
    environment["ESJOIN_REUSE_ENDPOINT"] = "0"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_theirs.py", *options],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_failing_test_leaves_the_endpoints_state_and_the_command_to_rerun_it(tmp_path: Path) -> None:
    finished = run_their_suite(tmp_path)

    assert finished.returncode == 1, finished.stdout + finished.stderr
    (kept,) = (tmp_path / ".esjoin" / "failures").iterdir()
    assert "test_a_queue_then_a_failure" in kept.name
    assert {p.name for p in kept.iterdir()} == {"state.zip", "history.json", "faults.json", "test.json"}
    with zipfile.ZipFile(kept / "state.zip") as archive:
        assert "manifest.json" in archive.namelist() and "moto.pickle" in archive.namelist()
    assert b"left-behind" in zipfile.ZipFile(kept / "state.zip").read("moto.pickle")
    assert "run it again: pytest test_theirs.py::test_a_queue_then_a_failure --esjoin-backend embedded" in (
        finished.stdout
    ), finished.stdout
    assert f"esjoin state load .esjoin/failures/{kept.name}/state.zip" in finished.stdout


def test_with_a_seed_the_record_holds_the_trace_that_replays_the_failure_exactly(tmp_path: Path) -> None:
    from esjoin.testing.reproduce import replay_trace

    finished = run_their_suite(tmp_path, "--esjoin-seed", "4")

    assert finished.returncode == 1, finished.stdout + finished.stderr
    (kept,) = (tmp_path / ".esjoin" / "failures").iterdir()
    assert {"trace.jsonl.gz", "test.json", "state.zip"} <= {p.name for p in kept.iterdir()}
    assert '"seed": 4' in (kept / "test.json").read_text()
    assert f"reproduce it exactly: esjoin replay .esjoin/failures/{kept.name}/trace.jsonl.gz --check" in finished.stdout
    assert "--esjoin-seed 4" in finished.stdout
    assert (tmp_path / ".esjoin" / "session.trace.jsonl.gz").is_file(), finished.stdout
    replayed = replay_trace(kept / "trace.jsonl.gz", report=False)
    assert replayed.exact, (replayed.divergence, replayed.difference)
    labels = [e.get("label") for e in replayed.replayed.entries if "grant" in e]
    assert "sqs.CreateQueue" in labels and "POST /_esjoin/faults" in labels
