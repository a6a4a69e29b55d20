"""The endpoint as a process-level thing: health, one port, a clean stop."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from tests.emulator.support.endpoint import (
    REGION,
    Control,
    Endpoint,
    Functions,
    client,
    create_queue,
    free_port,
    start_endpoint,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


def test_health_answers_ready_with_its_services(endpoint: Endpoint, control: Control) -> None:
    health = control.get("health")

    assert health.status == 200, health
    assert health.body["status"] == "ready"
    assert health.body["endpoint"] == endpoint.url
    assert health.body["region"] == REGION
    for service in ("kinesis", "dynamodb", "dynamodbstreams", "sqs", "logs", "lambda"):
        assert health.body["services"].get(service) == "running", health.body["services"]


def test_a_second_endpoint_on_the_same_port_fails_with_a_clear_error(endpoint: Endpoint, tmp_path: Path) -> None:
    from esjoin.emulator.config import EmulatorConfig
    from esjoin.emulator.server import Emulator

    port = endpoint.emulator.config.port
    second = Emulator(EmulatorConfig.from_env(port=port, state_dir=tmp_path))
    try:
        with pytest.raises(RuntimeError, match=rf"cannot listen on 127\.0\.0\.1:{port}.*ESJOIN_PORT"):
            second.start()
    finally:
        second.stop()
    assert Control(endpoint.url).get("health").status == 200, "the first endpoint must keep serving"


def test_python_m_emulator_on_a_busy_port_exits_with_the_reason(endpoint: Endpoint, tmp_path: Path) -> None:
    environment = {**os.environ, "ESJOIN_STATE_DIR": str(tmp_path), "ESJOIN_PORT": str(endpoint.emulator.config.port)}
    finished = subprocess.run(
        [sys.executable, "-m", "esjoin.emulator"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )

    assert finished.returncode == 1, finished
    assert "cannot listen on" in finished.stderr and "Traceback" not in finished.stderr, finished.stderr


def test_python_m_emulator_serves_then_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    environment = {**os.environ, "ESJOIN_STATE_DIR": str(tmp_path / "state"), "ESJOIN_PORT": str(port)}
    with (tmp_path / "stderr.log").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "esjoin.emulator"],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        readable, _, _ = select.select([process.stdout], [], [], 60)
        assert readable, f"no ready line within 60 s; stderr: {(tmp_path / 'stderr.log').read_text()}"
        ready = json.loads(process.stdout.readline())  # the first line says where it listens
        assert ready == {"status": "ready", "endpoint": f"http://127.0.0.1:{port}", "pid": process.pid}
        assert Control(ready["endpoint"]).get("health").body["status"] == "ready"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (tmp_path / "stderr.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _process_gone(pid: int) -> bool:
    """Gone, or a zombie nobody will reap (an orphaned grandchild)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


SPAWNER = """
    import os, subprocess, sys

    def handler(event, context):
        # A grandchild in the worker's process group: stop() must take it down too.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        return {"pid": os.getpid(), "child": child.pid}
"""


def test_stop_leaves_no_worker_processes_or_threads_behind(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    own = start_endpoint(tmp_path / "state")
    stopped = False
    try:
        lambda_client = own.client("lambda")
        functions = Functions(lambda_client)
        name = functions.create(SPAWNER)
        pids: list[int] = []
        for _ in range(2):  # two concurrent invocations: two warm workers
            results: list[Any] = []

            def call(into: list[Any] = results) -> None:
                into.append(functions.invoke(name)[1])

            callers = [threading.Thread(target=call) for _ in range(2)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(30)
            pids += [pid for result in results for pid in (result["pid"], result["child"])]
        sqs = own.client("sqs")
        _, queue_arn = create_queue(sqs)
        lambda_client.create_event_source_mapping(FunctionName=name, EventSourceArn=queue_arn)  # a poller thread
        assert all(not _process_gone(pid) for pid in pids)

        own.emulator.stop()
        stopped = True

        wait_until(lambda: all(_process_gone(pid) for pid in pids), f"worker processes {pids} gone")
        wait_until(
            lambda: not [t for t in threading.enumerate() if t not in threads_before and t.is_alive()],
            "the endpoint's threads gone",
            history=lambda: [t.name for t in threading.enumerate() if t not in threads_before],
        )
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            client(own.url, "sqs").list_queues()  # nobody listens any more
    finally:
        if not stopped:
            own.emulator.stop()


def test_every_endpoint_in_the_process_hears_of_writes(endpoint: Endpoint, tmp_path: Path) -> None:
    """moto's state is global to the process: a write through one endpoint must wake the pollers and
    long polls of another (each has its own ChangeNotifier), or they fall back to slow rechecks."""
    second = start_endpoint(tmp_path / "state")
    try:
        url, arn = create_queue(endpoint.client("sqs"))
        seen = (endpoint.emulator.notifier.generation(arn), second.emulator.notifier.generation(arn))

        second.client("sqs").send_message(QueueUrl=url, MessageBody="hello")

        after = (endpoint.emulator.notifier.generation(arn), second.emulator.notifier.generation(arn))
        assert after[0] > seen[0] and after[1] > seen[1], f"generations before {seen}, after {after}"
    finally:
        second.emulator.stop()
