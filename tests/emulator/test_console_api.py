"""The JSON behind the console's views (/_esjoin/ui/api/*), black-box over HTTP: paging, decoding,
bad input, and who may reach it. The page itself is tested in a browser
(tests/integration/test_console_browser.py)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.emulator.support.endpoint import Endpoint, unique
from tests.emulator.support.raw_http import send

API = "/_esjoin/ui/api"


def get(endpoint: Endpoint, path: str, **headers: str) -> tuple[int, Any]:
    response = send(endpoint, "GET", path, headers=headers)
    try:
        return response.status, json.loads(response.body)
    except ValueError:
        return response.status, response.body


def table(endpoint: Endpoint, hash_key: str = "id", range_key: str | None = None) -> str:
    name = unique("console")
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    attributes = [{"AttributeName": hash_key, "AttributeType": "S"}]
    if range_key:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attributes.append({"AttributeName": range_key, "AttributeType": "N"})
    endpoint.client("dynamodb").create_table(
        TableName=name, KeySchema=schema, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST"
    )
    return name


def test_the_page_and_its_assets_are_served_with_a_strict_policy(endpoint: Endpoint) -> None:
    page = send(endpoint, "GET", "/_esjoin/ui")
    assert page.status == 200 and b'<script src="/_esjoin/ui/static/console.js"' in page.body
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self': no inline code
    assert "'self'" in page.headers["content-security-policy"] and page.headers["x-frame-options"] == "DENY"
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = send(endpoint, "GET", f"/_esjoin/ui/static/{name}")
        assert asset.status == 200 and asset.headers["content-type"].startswith(kind), (name, asset.status)
    for path in ("/_esjoin/ui/static/..%2fapi.py", "/_esjoin/ui/static/routes.py", "/_esjoin/ui/nothing"):
        assert send(endpoint, "GET", path).status == 404, path


def test_a_table_of_a_hundred_thousand_items_pages_without_loading_them_all(endpoint: Endpoint) -> None:
    name = table(endpoint)
    backend = endpoint.emulator.moto.dynamodb("us-east-1")
    with endpoint.emulator.moto.lock():  # 100,000 items straight into moto: over HTTP this alone takes minutes
        for n in range(100_000):
            backend.put_item(name, {"id": {"S": f"user-{n:06d}"}, "n": {"N": str(n)}})
    seen: list[str] = []
    start = ""
    started = time.monotonic()
    for _ in range(3):
        status, page = get(endpoint, f"{API}/tables/{name}?limit=200" + (f"&start={start}" if start else ""))
        assert status == 200, page
        assert len(page["items"]) == 200 and page["count"] == 100_000
        seen += [item["id"] for item in page["items"]]
        start = page["next"]
    assert seen == [f"user-{n:06d}" for n in range(600)], "pages in key order, none repeated or skipped"
    assert len(json.dumps(page)) < 100_000, "a page carries 200 items, not the table"
    status, one = get(endpoint, f"{API}/tables/{name}?key=user-099999")
    assert status == 200 and [item["n"] for item in one["items"]] == [99999]
    print(f"three pages of a 100,000-item table in {time.monotonic() - started:.2f} s")


def test_huge_and_binary_attributes_render_as_json(endpoint: Endpoint) -> None:
    name = table(endpoint, "pk", "sk")
    huge = "x" * 350_000
    endpoint.client("dynamodb").put_item(
        TableName=name,
        Item={
            "pk": {"S": "a"},
            "sk": {"N": "1"},
            "huge": {"S": huge},
            "blob": {"B": b"\x00\xffbinary"},
            "set": {"SS": ["b", "a"]},
            "nested": {"M": {"n": {"N": "1.5"}, "l": {"L": [{"BOOL": True}, {"NULL": True}]}}},
        },
    )
    status, page = get(endpoint, f"{API}/tables/{name}")
    assert status == 200, page
    item = page["items"][0]
    assert item["blob"] == {"$binary": base64.b64encode(b"\x00\xffbinary").decode()}
    assert item["set"] == ["a", "b"] and item["nested"] == {"n": 1.5, "l": [True, None]} and item["sk"] == 1
    assert item["huge"].startswith("x" * 4096) and item["huge"].endswith("(350000 characters)")


def test_kinesis_records_page_by_shard_decoded_and_filtered(endpoint: Endpoint) -> None:
    stream = unique("console-stream")
    kinesis = endpoint.client("kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    for n in range(5):
        event = {"type": "user-loggedIn", "user": {"id": f"u{n % 2}"}}
        kinesis.put_record(StreamName=stream, Data=json.dumps(event).encode(), PartitionKey=f"p{n}")
    kinesis.put_record(StreamName=stream, Data=b"\xff\xfe binary", PartitionKey="bin")
    status, first = get(endpoint, f"{API}/streams/{stream}?limit=2")
    assert status == 200, first
    assert [r["data"]["user"]["id"] for r in first["records"]] == ["u0", "u1"] and first["next"]
    _, rest = get(endpoint, f"{API}/streams/{stream}?limit=50&after={first['next']}")
    assert len(rest["records"]) == 4 and rest["records"][-1]["data"] == {
        "$binary": base64.b64encode(b"\xff\xfe binary").decode()
    }
    _, mine = get(endpoint, f"{API}/streams/{stream}?key=u1")
    assert [r["partitionKey"] for r in mine["records"]] == ["p1", "p3"]


@pytest.mark.parametrize(
    "path, status, words",
    [
        (f"{API}/tables/no-such-table", 404, "no table"),
        (f"{API}/streams/no-such-stream", 404, "no stream"),
        (f"{API}/invocations/999999999", 404, "no invocation"),
        (f"{API}/tables/x?limit=100000", 400, "limit"),
        (f"{API}/tables/x?limit=abc", 400, "limit"),
        (f"{API}/invocations?since=-1", 400, "since"),
        (f"{API}/streams/x?after=abc", 400, "sequence number"),
        (f"{API}/nothing-here", 404, "nothing at"),
    ],
)
def test_bad_requests_get_a_clear_error(endpoint: Endpoint, path: str, status: int, words: str) -> None:
    got, body = get(endpoint, path)
    assert got == status and words in body["message"], (got, body)


def test_replay_refuses_what_it_cannot_send_back(endpoint: Endpoint) -> None:
    response = send(endpoint, "POST", f"{API}/failures/replay", b"[1]", {"Content-Type": "application/json"})
    assert response.status == 400 and b"JSON object" in response.body
    body = json.dumps({"queue": "arn:aws:sqs:us-east-1:000000000000:nope", "messageId": "m"}).encode()
    response = send(endpoint, "POST", f"{API}/failures/replay", body, {"Content-Type": "application/json"})
    assert response.status == 404 and b"not a failure queue" in response.body


def test_a_dead_letter_message_replays_to_its_source_queue(endpoint: Endpoint) -> None:
    sqs = endpoint.client("sqs")
    dlq = sqs.create_queue(QueueName=unique("console-dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source = sqs.create_queue(
        QueueName=unique("console-src"),
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})},
    )["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"work": 42}))
    _, failures = get(endpoint, f"{API}/failures")
    queue = next(q for q in failures["queues"] if q["arn"] == dlq_arn)
    assert queue["why"].startswith("dead-letter queue of") and queue["messages"][0]["body"] == {"work": 42}
    body = json.dumps({"queue": dlq_arn, "messageId": queue["messages"][0]["messageId"]}).encode()
    response = send(endpoint, "POST", f"{API}/failures/replay", body, {"Content-Type": "application/json"})
    assert response.status == 200, response
    moved = sqs.receive_message(QueueUrl=source, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"]) for m in moved] == [{"work": 42}]
    _, after = get(endpoint, f"{API}/failures")
    assert next(q for q in after["queues"] if q["arn"] == dlq_arn)["messages"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "10.0.0.1"},  # not a loopback name: DNS rebinding
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},  # another site's page
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
@pytest.mark.parametrize(
    "method, path", [("GET", "/_esjoin/ui"), ("GET", f"{API}/graph"), ("POST", f"{API}/failures/replay")]
)
def test_a_client_other_than_loopback_or_the_page_itself_is_refused(
    endpoint: Endpoint, headers: dict[str, str], method: str, path: str
) -> None:
    response = send(endpoint, method, path, b"{}", {"Content-Type": "application/json", **headers})
    assert response.status == 403, (headers, response.status, response.body[:200])


def test_the_graph_and_changes_describe_the_endpoint(endpoint: Endpoint) -> None:
    status, graph = get(endpoint, f"{API}/graph")
    assert status == 200 and {"nodes", "edges", "quiescence"} <= set(graph)
    kinds = {node["kind"] for node in graph["nodes"]}
    assert kinds <= {"stream", "table", "queue", "function", "mapping"}
    ids = {node["id"] for node in graph["nodes"]}
    assert all(edge["from"] in ids and edge["to"] in ids for edge in graph["edges"])
    status, changes = get(endpoint, f"{API}/changes")
    assert status == 200 and set(changes) == {"lastId", "quiescent"}
