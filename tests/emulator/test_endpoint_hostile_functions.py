"""Hostile functions through a whole endpoint: DeleteFunction kills what a function started even outside
its process group, and a function's boto3 calls reach the endpoint whatever AWS profile, config files
or proxy the endpoint's own process runs with. The runtime-level scenarios are in
test_runtime_hostile.py (fixtures in conftest.py; this module has its own endpoint).
"""

from __future__ import annotations

from tests.emulator import test_runtime_hostile
from tests.emulator.test_runtime_hostile import ESCAPING, PROXIES, alive, assert_all_gone

# test_runtime_hostile.py's fixtures, requested here by name.
escaped = test_runtime_hostile.escaped
hostile_host = test_runtime_hostile.hostile_host


def test_delete_function_kills_processes_that_left_the_process_group(functions, lambda_client, tmp_path, escaped):
    name = functions.create(ESCAPING)
    pids_file = tmp_path / "pids"
    response, _ = functions.invoke(name, {"pids": str(pids_file)})
    assert "FunctionError" not in response
    pids = escaped(pids_file)
    assert alive(pids) == pids
    lambda_client.delete_function(FunctionName=name)
    assert_all_gone(pids, "DeleteFunction")


CALLS_BACK = """
    import boto3
    from botocore.config import Config

    CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=3, read_timeout=10)

    def handler(event, context):
        identity = boto3.client("sts", config=CONFIG).get_caller_identity()
        queues = boto3.client("sqs", config=CONFIG).list_queues()
        return {"account": identity["Account"], "queues": queues.get("QueueUrls", [])}
"""


def test_a_function_calls_the_endpoint_whatever_aws_settings_the_endpoint_runs_with(functions, endpoint, hostile_host):
    name = functions.create(CALLS_BACK, Timeout=30)
    response, payload = functions.invoke(name)
    assert "FunctionError" not in response, payload
    assert payload["account"] == "000000000000"


def test_a_function_with_a_proxy_configured_still_reaches_the_local_endpoint(functions, endpoint):
    name = functions.create(CALLS_BACK, Timeout=30, Environment={"Variables": dict(PROXIES)})
    response, payload = functions.invoke(name)
    assert "FunctionError" not in response, payload
    assert payload["account"] == "000000000000"
