"""Part `smoke`: the smoke workload (`bench.smoke_workload`) on several endpoints, one after the other, side by side.

- esjoin: our endpoint, started for the part on a free port with a fresh state directory (`EmbeddedEndpoint`);
- localstack: a LocalStack at ESJOIN_LOCALSTACK_ENDPOINT (default http://127.0.0.1:4566), if it answers
  /_localstack/health; otherwise its column says so and the part goes on without it. Start LocalStack
  (make up BACKEND=localstack, or your own) and point ESJOIN_LOCALSTACK_ENDPOINT at it to include it;
- every `--endpoint URL` given (`python -m bench smoke --endpoint URL ...`): another LocalStack, an
  endpoint already up, anything local with these APIs; named after the health path it answers.

The workload measures the Kinesis -> function -> DynamoDB hop, the two hops through the table's stream,
SQS -> function -> DynamoDB (p50/p99 over its records), one record per path after an idle spell, the cold
and warm direct invocations, the warm-up, the time to create its resources and the whole run. It must
complete against our endpoint; the other columns are reported as they come.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bench.endpoints import REGION, EmbeddedEndpoint
from bench.report import Measurement, PartReport, markdown_table
from bench.smoke_workload import WorkloadSettings, run_workload
from esjoin.target import TargetRefused, local_target
from esjoin.testing.backends import DEFAULT_ENDPOINT, answers_health

LOCALSTACK_HEALTH = "/_localstack/health"
ESJOIN_HEALTH = "/_esjoin/health"


def localstack_endpoint() -> str:
    return os.environ.get("ESJOIN_LOCALSTACK_ENDPOINT", "").strip() or DEFAULT_ENDPOINT


def run(quick: bool = False, endpoints: Sequence[str] = ()) -> PartReport:
    settings = WorkloadSettings.quick() if quick else WorkloadSettings()
    report = PartReport("smoke", "The smoke workload on our endpoint and on LocalStack, side by side", quick)
    report.data["settings"] = settings.__dict__
    results: dict[str, dict[str, Any]] = {}

    with EmbeddedEndpoint() as endpoint:
        results["esjoin"] = measure("esjoin", endpoint.url, settings)

    localstack = localstack_endpoint()
    extra = [url.rstrip("/") for url in endpoints]
    if localstack.rstrip("/") not in extra:
        local = is_local(localstack)
        if local and answers_health(localstack, LOCALSTACK_HEALTH):
            results["localstack"] = measure("localstack", localstack, settings)
        else:
            why = "not reachable" if local else "not a local endpoint"
            results["localstack"] = {"endpoint": localstack, "skipped": True, "error": f"{why}: skipped"}
            report.notes.append(
                f"localstack: {localstack} is {why} ({LOCALSTACK_HEALTH}), so it was skipped. "
                "Start LocalStack (make up BACKEND=localstack, or your own) and point "
                "ESJOIN_LOCALSTACK_ENDPOINT at it, or pass --endpoint URL."
            )
    for url in dict.fromkeys(extra):
        name = column_name(url, results)
        results[name] = measure(name, url, settings)

    report.data["runs"] = results
    ours = results["esjoin"]
    passed = bool(ours.get("passed"))
    if not passed:
        report.data["failed"] = True
        failures = "; ".join(ours.get("failures", []))
        report.notes.append(f"the smoke workload FAILED against our endpoint: {failures[:2000]}")
    report.add(
        Measurement(
            "smoke workload completes against our endpoint",
            None,
            "",
            "pass",
            passed,
            f"{ours.get('seconds', '?')} s in all",
            ours.get("load"),
        )
    )
    report.extra_tables.append(side_by_side(results, settings))
    for name, result in results.items():
        if result.get("skipped"):
            continue
        trouble = result.get("failures", []) + [f"cleanup: {e}" for e in result.get("cleanupErrors", [])]
        report.notes.append(f"{name}: `{result['command']}`" + (f" ({'; '.join(trouble)[:500]})" if trouble else ""))
    return report


def measure(name: str, url: str, settings: WorkloadSettings) -> dict[str, Any]:
    print(f"-- smoke: {name} ({url})", flush=True)
    return run_workload(url, settings, log=lambda line: print(f"   {line}", flush=True))


def is_local(url: str) -> bool:
    """Whether `url` is an endpoint a local run may ask anything (infra's guard, before any request)."""
    try:
        local_target(url, REGION)
    except TargetRefused:
        return False
    return True


def column_name(url: str, taken: dict[str, Any]) -> str:
    """What answers at `url`, by its health path ("endpoint" if neither), unique among the columns. Only a
    local URL is asked (the workload refuses the others too)."""
    kind = "endpoint"
    if is_local(url):
        kind = (
            "localstack"
            if answers_health(url, LOCALSTACK_HEALTH)
            else "esjoin"
            if answers_health(url, ESJOIN_HEALTH)
            else kind
        )
    number = 2
    name = kind
    while name in taken:
        name, number = f"{kind} #{number}", number + 1
    return name


def side_by_side(results: dict[str, dict[str, Any]], settings: WorkloadSettings) -> str:
    names = list(results)

    def ms(figure: float) -> str:
        return f"{figure:.1f}" if figure < 10 else f"{figure:.0f}"

    def latency(result: dict[str, Any], path: str) -> str:
        figures = result.get("paths", {}).get(path)
        return f"{ms(figures['p50'])} / {ms(figures['p99'])} ms (n={figures['n']})" if figures else "-"

    def after_idle(result: dict[str, Any], path: str) -> str:
        figure = result.get("afterIdle", {}).get(path)
        return f"{ms(figure)} ms" if figure is not None else "-"

    def seconds(result: dict[str, Any], key: str) -> str:
        figure = result.get(key)
        if not isinstance(figure, (int, float)):
            return "-"
        return f"{ms(1000 * figure)} ms" if figure < 1 else f"{figure:.2f} s"

    def outcome(result: dict[str, Any]) -> str:
        if result.get("skipped"):
            return result["error"]
        return "completed" if result.get("passed") else f"FAILED: {'; '.join(result.get('failures', []))[:80]}"

    idle = f"{settings.idle_seconds:g}"
    rows = [
        ["Kinesis -> fn -> DynamoDB, p50 / p99", *(latency(results[n], "kinesisOneHop") for n in names)],
        [
            "Kinesis -> fn -> DynamoDB -> stream -> fn -> DynamoDB (two hops), p50 / p99",
            *(latency(results[n], "kinesisTwoHops") for n in names),
        ],
        ["SQS -> fn -> DynamoDB, p50 / p99", *(latency(results[n], "sqs") for n in names)],
        [f"after {idle} s idle: Kinesis two hops", *(after_idle(results[n], "kinesisTwoHops") for n in names)],
        [f"after {idle} s idle: SQS", *(after_idle(results[n], "sqs") for n in names)],
        ["cold start (first direct invoke)", *(seconds(results[n], "coldStartSeconds") for n in names)],
        ["warm invoke (second direct invoke)", *(seconds(results[n], "warmInvokeSeconds") for n in names)],
        ["warm-up: first records through both paths", *(seconds(results[n], "warmUpSeconds") for n in names)],
        ["create resources", *(seconds(results[n], "resourcesSeconds") for n in names)],
        ["result", *(outcome(results[n]) for n in names)],
        ["run time (all of the above, idle and cleanup included)", *(seconds(results[n], "seconds") for n in names)],
        [
            "load average (before-after)",
            *("{:.2f}-{:.2f}".format(*results[n]["load"]) if results[n].get("load") else "-" for n in names),
        ],
    ]
    return (
        f"Smoke workload figures, side by side ({settings.records} records per path at "
        f"{settings.per_second:g}/s, one run each, this machine):\n\n"
        + markdown_table(["", *(f"{n} ({results[n].get('endpoint', '')})" for n in names)], rows)
    )
