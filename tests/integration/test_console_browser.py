"""The console (/_esjoin/ui) in a real browser: Debian's chromium driven by Playwright, against the demo
stack on an endpoint of this module's own (so the graph holds exactly one stack).

Skips, saying why, where Playwright or chromium is missing (`make test` installs chromium as root).
One screenshot per view goes to .esjoin/test-output/console/ for review.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from esjoin.testing import browser
from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from esjoin.testing.pipeline import EventLog, Pipeline
from tests.integration.support.own_endpoint import deploy_demo, own_backend
from tests.integration.support.scenario import wait_until

pytestmark = pytest.mark.embedded_only("drives the embedded endpoint's console")

SCREENSHOTS = Path(".esjoin/test-output/console")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    why = browser.missing()
    if why:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    directory = tmp_path_factory.mktemp("console")
    backend = own_backend(directory)
    log = EventLog()
    pipeline = Pipeline(backend, deploy_demo(backend, "ui", directory), log)
    alice, bob = "ui-alice", "ui-bob"
    now = now_ms()
    pipeline.put_events([user_created(alice, "Alice", now - 5000), user_created(bob, "Bob", now - 5000)])
    pipeline.put_events([logged_in(alice, now - 4000), order_submitted(bob, now - 3000)])
    assert_converged(pipeline)  # warm workers: later bars come within the second the page promises
    odd = odd_table(backend)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())  # the replay button asks before acting
        page.goto(f"{backend.endpoint_url}/_esjoin/ui")
        try:
            yield {
                "page": page,
                "pipeline": pipeline,
                "backend": backend,
                "errors": errors,
                "users": (alice, bob),
                "odd": odd,
            }
        finally:
            chromium.close()
            backend.stop()


def show(page: Any, view: str) -> None:
    page.click(f"#tab-{view}")
    page.wait_for_selector(f"#view-{view}:not([hidden])")


def screenshot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def no_console_errors(console: dict[str, Any]) -> None:
    assert console["errors"] == [], f"the page logged errors: {console['errors']}"


def test_the_page_shows_the_demo_stack_as_a_graph(console: dict[str, Any]) -> None:
    page = console["page"]
    page.wait_for_selector("g.node[data-kind=mapping]")
    functions = page.locator("g.node[data-kind=function]").count()
    mappings = page.locator("g.node[data-kind=mapping]").count()
    assert (functions, mappings) == (5, 4), (
        f"expected the demo's 5 functions and 4 mappings, saw {functions}, {mappings}"
    )
    names = page.locator("g.node[data-kind=function]").evaluate_all("nodes => nodes.map(n => n.dataset.name)")
    assert sorted(names) == sorted(f"esjoin-ui-{f}" for f in ("command", "consumer", "trigger", "snapshot", "trim"))
    screenshot(page, "pipeline")
    no_console_errors(console)


def test_sent_events_appear_on_the_timeline_within_a_second(console: dict[str, Any]) -> None:
    page, pipeline = console["page"], console["pipeline"]
    show(page, "timeline")
    page.wait_for_selector("rect.bar")
    consumer_bars = "rect.bar[aria-label^='esjoin-ui-consumer']"
    before = page.locator(consumer_bars).count()
    alice, _ = console["users"]
    pipeline.put_events([logged_in(alice, now_ms())])
    page.wait_for_function(
        "([selector, before]) => document.querySelectorAll(selector).length > before",
        arg=[consumer_bars, before],
        timeout=1000,
    )
    screenshot(page, "timeline")
    no_console_errors(console)


def test_clicking_a_bar_shows_the_decoded_batch(console: dict[str, Any]) -> None:
    page = console["page"]
    show(page, "timeline")
    page.locator("rect.bar[aria-label^='esjoin-ui-consumer']").last.click()
    detail = page.locator("#detail")
    detail.locator("h2").wait_for()
    text = detail.inner_text()
    assert "Records (" in text and '"source": "kinesis"' in text, text[:500]
    assert '"type": "user-loggedIn"' in text, "the Kinesis data should be shown decoded, not as base64"
    assert "START RequestId" in text and "REPORT RequestId" in text, "the invocation's log lines"
    assert "batchItemFailures" in text
    screenshot(page, "batch")
    no_console_errors(console)


def test_the_timeline_is_usable_from_the_keyboard(console: dict[str, Any]) -> None:
    page = console["page"]
    show(page, "timeline")
    page.focus("#timeline")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("rect.bar.selected")
    page.keyboard.press("Enter")
    page.locator("#detail h2").wait_for()
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('button, select, input')]
            .filter(e => !(e.getAttribute('aria-label') || (e.labels && e.labels.length) || e.textContent.trim()))
            .map(e => e.outerHTML)"""
    )
    assert unlabelled == [], f"controls without a label: {unlabelled}"


def test_an_injected_fault_is_a_red_bar_then_a_failure_that_replays(console: dict[str, Any]) -> None:
    """An error injected into the consumer for one user's events: red bars while the mapping retries, then
    (retries exhausted) the on-failure record in the Failures view; replayed once the fault is gone, the
    batch's records go back on the stream and reach the view."""
    page, pipeline, backend = console["page"], console["pipeline"], console["backend"]
    consumer, user = pipeline.function("consumer"), "ui-faulty"
    fault = backend.control.add_fault("error", function=consumer, match=user)
    try:
        pipeline.put_events([user_created(user, "Faulty", now_ms())])
        show(page, "timeline")
        page.locator(f"rect.bar[data-outcome=fault][aria-label^='{consumer}']").last.wait_for()
        assert (
            page.evaluate("() => getComputedStyle(document.querySelector('rect.bar.fault')).fill") == "rgb(213, 0, 0)"
        )
        failure = page.locator("section.failure:has-text('RetryAttemptsExhausted')")
        wait_until(
            pipeline,
            lambda: (show(page, "failures"), failure.count())[1] > 0,
            "the exhausted batch's on-failure record in the Failures view",
            observe=lambda: page.locator("#failures").inner_text()[:300],
        )
    finally:
        backend.control.remove_fault(fault["id"])
    screenshot(page, "failures-injected")
    failure.first.locator("button").click()  # asks first; the test accepts
    page.wait_for_selector("#status:has-text('replay')")
    assert "to stream" in page.locator("#status").inner_text(), page.locator("#status").inner_text()
    wait_until(pipeline, lambda: (pipeline.views([user]).get(user) or {}).get("name") == "Faulty", "the replayed view")
    no_console_errors(console)


def test_a_poison_record_shows_in_failures_and_replays_to_its_stream(console: dict[str, Any]) -> None:
    page, pipeline, backend = console["page"], console["pipeline"], console["backend"]
    kinesis = backend.client("kinesis")
    kinesis.put_record(StreamName=pipeline.outputs.stream["name"], Data=b"\x00not json", PartitionKey="ui-poison")
    show(page, "failures")
    failure = page.locator("article[data-queue$='-failures'] section.failure")
    wait_until(
        pipeline,
        lambda: (page.click("#tab-failures"), failure.count())[1] > 0,
        "the poison record in the failures view",
        observe=lambda: page.locator("#failures").inner_text()[:300],
    )
    text = failure.first.inner_text()
    assert "Reason:" in text and "ui-poison" in text, text[:500]
    screenshot(page, "failures")
    message_id = failure.first.get_attribute("data-message")
    before = invocations(backend, function=pipeline.function("consumer"))
    failure.first.locator("button").click()  # asks first; the test accepts
    page.wait_for_selector("#status:has-text('replay')")
    status = page.locator("#status").inner_text()
    assert status.startswith(f"replayed {message_id} to stream "), status
    wait_until(
        pipeline,
        lambda: invocations(backend, function=pipeline.function("consumer")) > before,
        "the replayed record delivered to the consumer again",
    )
    no_console_errors(console)


def test_pausing_a_mapping_from_the_page_stops_deliveries(console: dict[str, Any]) -> None:
    page, pipeline, backend = console["page"], console["pipeline"], console["backend"]
    uuid = pipeline.mapping_uuid("consumer")
    show(page, "controls")
    row = page.locator(f"tr[data-mapping='{uuid}']")
    row.locator("button", has_text="Pause").click()
    row.locator("button", has_text="Resume").wait_for()
    assert backend.control.mapping(uuid)["engine"]["paused"] is True
    screenshot(page, "controls")
    delivered = invocations(backend, mapping=uuid)
    alice, _ = console["users"]
    pipeline.put_events([logged_in(alice, now_ms())])
    wait_until(  # the paused mapping sees the record waiting...
        pipeline,
        lambda: any((shard.get("lag") or 0) > 0 for shard in shards(backend.control.mapping(uuid))),
        "the paused mapping to see the new record",
        observe=lambda: backend.control.mapping(uuid)["engine"],
    )
    assert invocations(backend, mapping=uuid) == delivered, "a paused mapping delivered a batch"
    row.locator("button", has_text="Resume").click()  # ...and delivers it once resumed
    wait_until(pipeline, lambda: invocations(backend, mapping=uuid) > delivered, "a delivery after resume")
    no_console_errors(console)


def test_the_data_view_pages_a_table_and_compares_a_user_with_the_oracle(console: dict[str, Any]) -> None:
    page, pipeline = console["page"], console["pipeline"]
    alice, _ = console["users"]
    assert_converged(pipeline)
    show(page, "data")
    page.select_option("#data-source", f"table:{pipeline.table('views')}")
    page.click("#data-form button[type=submit]")
    page.wait_for_selector("#data-rows table")
    assert alice in page.locator("#data-rows").inner_text()
    page.fill("#user-id", alice)
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#user .side")
    view = json.loads(page.locator("#user .side pre").nth(0).inner_text())
    oracle = json.loads(page.locator("#user .side pre").nth(1).inner_text())
    assert view["eventCount"] == oracle["event_count"] and view["name"] == oracle["name"] == "Alice"
    screenshot(page, "data")
    no_console_errors(console)


def shards(mapping: dict[str, Any]) -> list[dict[str, Any]]:
    engine = mapping["engine"]
    found = engine.get("shards") or {}
    return list(found.values()) if isinstance(found, dict) else list(found)


def invocations(backend: Any, **query: str) -> int:
    return len(backend.control.history(**query)["invocations"])


def odd_table(backend: Any) -> str:
    """A table whose items a page could choke on: a 350 KB string, binary and set attributes."""
    dynamodb = backend.client("dynamodb")
    name = "ui-odd-items"
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(
        TableName=name,
        Item={
            "id": {"S": "huge"},
            "text": {"S": "<b>" + "x" * 350_000},
            "blob": {"B": b"\x00\xff"},
            "ns": {"NS": ["1", "2"]},
        },
    )
    return name


def test_huge_binary_and_markup_values_render_without_breaking_the_page(console: dict[str, Any]) -> None:
    page = console["page"]
    show(page, "data")
    page.select_option("#data-source", f"table:{console['odd']}")
    page.click("#data-form button[type=submit]")
    page.wait_for_selector("#data-rows:has-text('350003 characters')")  # the huge value, cut for the list
    text = page.locator("#data-rows").inner_text()
    assert '"$binary": "AP8="' in text and "(350003 characters)" in text and "<b>" in text  # shown as text
    assert page.locator("#data-rows b").count() == 0, "a value was rendered as markup"
    no_console_errors(console)
