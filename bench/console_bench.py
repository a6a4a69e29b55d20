"""Part `console` (issue 13): what the live console costs the pipeline while it is open.

On one endpoint and stage, the pipeline benchmark's throughput phase (bench/pipeline_bench.py:
events for 50 users pushed as fast as PutRecords takes them, until every view row counts them all)
runs alternately with no page open and with the console open in headless chromium on its Timeline
view, the busiest one: it polls /_esjoin/ui/api/changes twice a second and, at every change, reads
the new history records and redraws. Pairs alternate their order (without-with, with-without, ...),
so a slow warm-up or a drift of the machine falls on both. Reported: each condition's median
events/s, and the cost, (without - with) / without. Target: under 5 %.

Needs Playwright and chromium (the same as the browser tests); says so and skips otherwise.
"""

from __future__ import annotations

import statistics
import uuid

from bench import pipeline_bench
from bench.endpoints import EmbeddedEndpoint
from bench.report import Measurement, PartReport
from esjoin.testing import browser

COST_TARGET_PERCENT = 5.0


def run(quick: bool = False) -> PartReport:
    report = PartReport("console", "The pipeline's throughput with the console open (issue 13)", quick)
    pairs = 1 if quick else 3
    settings = pipeline_bench.Settings(users=50, throughput_events=2000 if quick else 6000)
    report.data["settings"] = {"pairs": pairs, "eventsPerPhase": settings.throughput_events, "users": settings.users}
    why = browser.missing()
    if why:
        report.notes.append(f"skipped: {why}")
        return report
    from playwright.sync_api import sync_playwright

    rates: dict[str, list[float]] = {"without the page": [], "with the page open": []}
    run_id = uuid.uuid4().hex[:6]
    with EmbeddedEndpoint() as endpoint, sync_playwright() as playwright:
        pipeline, _ = pipeline_bench.deploy(endpoint, f"console-{run_id}", settings)
        pid = endpoint.process.pid if endpoint.process else 0
        chromium = browser.launch(playwright)
        phase = 0

        def measure(with_page: bool) -> None:
            nonlocal phase
            phase += 1
            page = None
            if with_page:
                page = chromium.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{endpoint.url}/_esjoin/ui")
                page.click("#tab-timeline")
                page.wait_for_selector("rect.bar")  # loaded: what is measured is the page open, not its start
            users = [f"c{phase}-{run_id}-{i:03d}" for i in range(settings.users)]
            one = PartReport("console", "phase", quick)
            pipeline_bench.measure_throughput(one, settings, pipeline, users, pid)
            rates["with the page open" if with_page else "without the page"].append(
                one.data["throughput"]["eventsPerSecond"]
            )
            if page is not None:
                page.close()

        measure(False)  # warm-up: workers started, JIT-free Python warmed; not counted
        rates["without the page"].clear()
        for pair in range(pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for with_page in order:
                measure(with_page)
        chromium.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    without, with_page = medians["without the page"], medians["with the page open"]
    cost = (without - with_page) / without * 100
    report.data["throughput"] = rates
    report.data["throughputByCondition"] = {name: round(value, 1) for name, value in medians.items()}
    report.data["costPercent"] = round(cost, 2)
    for name, values in rates.items():
        detail = "runs: " + ", ".join(f"{v:.0f}" for v in values)
        report.add(Measurement(f"events/s {name} (median)", medians[name], "ev/s", detail=detail))
    report.add(
        Measurement(
            "throughput lost with the console open",
            cost,
            "%",
            f"< {COST_TARGET_PERCENT:g} %",
            cost < COST_TARGET_PERCENT,
            f"{pairs} pairs of {settings.throughput_events:,} events; negative: within the noise",
        )
    )
    report.notes.append(
        "One endpoint and stage for every phase; a warm-up phase first (not counted); pairs alternate "
        "their order. The page is the console's Timeline view in headless chromium (Debian's), polling "
        "twice a second and redrawing at every change."
    )
    return report
