"""Part `smoke`: the LocalStack peer's smoke test (shared/peers/localstack/smoke.py, read-only) against
our endpoint and against the LocalStack 4.13 running on this machine, one after the other.

Our endpoint is started for it on a free port with a fresh state directory; smoke.py runs with the
project's Python from its own directory (`--endpoint`), and its printed figures are parsed: the
Kinesis -> function -> DynamoDB hop, the two hops through the table's stream, SQS -> function ->
DynamoDB (p50/p90/p99/max over its records), one record per path after an idle spell, the cold and
warm direct invocations, the warm-up and the time to create its resources. It must pass against ours.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.endpoints import EmbeddedEndpoint
from bench.report import Measurement, PartReport, load_average, markdown_table

SMOKE = Path(os.environ.get("ESJOIN_SMOKE_SCRIPT", "/work/shared/peers/localstack/smoke.py"))
LOCALSTACK = os.environ.get("ESJOIN_BENCH_LOCALSTACK", "http://127.0.0.1:4599")
TIMEOUT_SECONDS = 900

PATHS = {
    "Kinesis -> ingest -> DynamoDB": "kinesisOneHop",
    "Kinesis -> ingest -> DynamoDB stream -> project -> DynamoDB": "kinesisTwoHops",
    "SQS -> enqueue -> DynamoDB": "sqs",
}
LATENCY = re.compile(r"^\s+(?P<path>.+?): n=(?P<n>\d+) p50=(?P<p50>\d+) ms p90=(?P<p90>\d+) ms "
                     r"p99=(?P<p99>\d+) ms max=(?P<max>\d+) ms$")
IDLE = re.compile(r"after (?P<idle>[\d.]+)s idle: (?P<path>.+?): (?P<ms>\d+) ms")
COLD = re.compile(r"probe invoke succeeds \(cold start (?P<s>[\d.]+)s\)")
WARM = re.compile(r"\(warm (?P<s>[\d.]+)s\)")
WARM_UP = re.compile(r"warm-up: first records through both paths after (?P<s>[\d.]+)s")
RESOURCES = re.compile(r"resources ready in (?P<s>[\d.]+)s")
RESULT = re.compile(r"^smoke (?P<result>PASSED|FAILED) in (?P<s>[\d.]+)s(?P<rest>.*)$")


def run(quick: bool = False) -> PartReport:
    report = PartReport("smoke", "smoke.py (LocalStack peer) against our endpoint and LocalStack 4.13", quick)
    args = ["--records", "20", "--idle-seconds", "5"] if quick else []
    results: dict[str, dict[str, Any]] = {}
    with EmbeddedEndpoint() as endpoint:
        results["esjoin"] = run_smoke(endpoint.url, args)
    if reachable(LOCALSTACK):
        results["localstack"] = run_smoke(LOCALSTACK, args)
    else:
        results["localstack"] = {"endpoint": LOCALSTACK, "error": "not reachable (start it: shared/peers/localstack)"}
    report.data["runs"] = results
    ours = results["esjoin"]
    passed = ours.get("passed", False)
    if not passed:
        report.data["failed"] = True
        report.notes.append("smoke.py FAILED against our endpoint: " + ours.get("failures", "")[:2000])
    report.add(Measurement("smoke.py passes against our endpoint", None, "", "pass", passed,
                           f"{ours.get('seconds', '?')} s in all", ours.get("load")))
    report.extra_tables.append(side_by_side(results))
    for name, result in results.items():
        report.notes.append(f"{name}: `{result.get('command', '')}`" + (f" ({result['error']})" if "error" in result
                                                                         else ""))
    return report


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/_localstack/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def run_smoke(endpoint: str, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, SMOKE.name, "--endpoint", endpoint, *extra]
    load_before = load_average()
    began = time.monotonic()
    try:
        completed = subprocess.run(command, cwd=SMOKE.parent, capture_output=True, text=True,
                                   timeout=TIMEOUT_SECONDS)
        output, code = completed.stdout + completed.stderr, completed.returncode
    except subprocess.TimeoutExpired as error:
        output, code = (error.stdout or b"").decode(errors="replace") if isinstance(error.stdout, bytes) else (
            error.stdout or ""), -1
    result = parse(output)
    result.update({"endpoint": endpoint, "exitCode": code, "command": f"cd {SMOKE.parent} && "
                   + " ".join(command), "wallSeconds": round(time.monotonic() - began, 1),
                   "load": (load_before, load_average()), "output": output[-20000:]})
    return result


def parse(output: str) -> dict[str, Any]:
    result: dict[str, Any] = {"paths": {}, "afterIdle": {}, "failures": ""}
    for line in output.splitlines():
        if match := LATENCY.match(line):
            key = PATHS.get(match["path"], match["path"])
            result["paths"][key] = {k: int(match[k]) for k in ("n", "p50", "p90", "p99", "max")}
        elif match := IDLE.search(line):
            key = "kinesisTwoHops" if match["path"].startswith("Kinesis") else "sqs"
            result["afterIdle"][key] = int(match["ms"])
            result["idleSeconds"] = float(match["idle"])
        elif match := COLD.search(line):
            result["coldStartSeconds"] = float(match["s"])
        elif (match := WARM.search(line)) and "FunctionError" in line:
            result["warmInvokeSeconds"] = float(match["s"])
        elif match := WARM_UP.search(line):
            result["warmUpSeconds"] = float(match["s"])
        elif match := RESOURCES.search(line):
            result["resourcesSeconds"] = float(match["s"])
        elif match := RESULT.match(line.strip()):
            result["passed"] = match["result"] == "PASSED"
            result["seconds"] = float(match["s"])
            result["failures"] = match["rest"].strip(": ")
    return result


def side_by_side(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)

    def cell(result: dict[str, Any], path: str) -> str:
        figures = result.get("paths", {}).get(path)
        return f"{figures['p50']} / {figures['p99']} ms (n={figures['n']})" if figures else "-"

    def value(result: dict[str, Any], key: str, unit: str = "s") -> str:
        figure = result.get(key)  # as smoke.py prints it (seconds, two decimals)
        return f"{figure:.2f} {unit}" if isinstance(figure, (int, float)) else "-"

    rows = [[f"{label}, p50 / p99", *(cell(results[n], key) for n in names)]
            for label, key in (("Kinesis -> fn -> DynamoDB", "kinesisOneHop"),
                               ("Kinesis -> fn -> DynamoDB -> stream -> fn -> DynamoDB (two hops)", "kinesisTwoHops"),
                               ("SQS -> fn -> DynamoDB", "sqs"))]
    idle = next((r.get("idleSeconds") for r in results.values() if r.get("idleSeconds")), None)
    rows.append([f"after {idle or '?'} s idle: Kinesis two hops", *(
        f"{results[n]['afterIdle']['kinesisTwoHops']} ms" if "kinesisTwoHops" in results[n].get("afterIdle", {})
        else "-" for n in names)])
    rows.append([f"after {idle or '?'} s idle: SQS", *(
        f"{results[n]['afterIdle']['sqs']} ms" if "sqs" in results[n].get("afterIdle", {}) else "-" for n in names)])
    rows.append(["cold start (first direct invoke)", *(value(results[n], "coldStartSeconds")
                                                       for n in names)])
    rows.append(["warm invoke (function error)", *(value(results[n], "warmInvokeSeconds") for n in names)])
    rows.append(["warm-up: first records through both paths", *(value(results[n], "warmUpSeconds")
                                                                for n in names)])
    rows.append(["create resources", *(value(results[n], "resourcesSeconds") for n in names)])
    rows.append(["smoke.py result", *(
        ("PASSED" if results[n].get("passed") else f"FAILED {results[n].get('failures', '')[:80]}")
        if "error" not in results[n] else results[n]["error"] for n in names)])
    rows.append(["smoke.py run time", *(value(results[n], "seconds") for n in names)])
    rows.append(["load average (before-after)", *(
        "{:.2f}-{:.2f}".format(*results[n]["load"]) if results[n].get("load") else "-" for n in names)])
    return "smoke.py figures, side by side (one run each, this machine):\n\n" + markdown_table(
        ["", *(f"{n} ({results[n].get('endpoint', '')})" for n in names)], rows)
