"""Linearizable writes: racing conditional puts over HTTP have exactly one winner per key.

moto is not safe under thread switching: two `attribute_not_exists` puts on one key can both win.
The endpoint serialises requests into moto (emulator/moto_backends.py, ESJOIN_SERIALIZE_WRITES). The
same race runs against an endpoint with serialisation off, where it must find a double winner (so
this test can fail), and against the shared endpoint (serialisation on), where it must not.

The race needs thread switches inside moto's request handling: the switch interval is made tiny for
the race, and each item carries enough attributes that moto's put_item spends a while between
reading the current item and storing the new one (as real items do), so the window is hit reliably.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.emulator.support.endpoint import Control, Endpoint, create_table, start_endpoint

RACERS = 4
KEYS = 25
ATTRIBUTES = {f"attribute{i:02d}": {"S": "x" * 20} for i in range(40)}


@pytest.fixture(scope="module")
def unserialized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """An endpoint of its own with ESJOIN_SERIALIZE_WRITES=0."""
    started = start_endpoint(tmp_path_factory.mktemp("unserialized"), serialize_writes=False)
    try:
        yield started
    finally:
        started.emulator.stop()


def race_conditional_puts(endpoint: Endpoint) -> Counter[str]:
    """RACERS threads put each of KEYS keys at the same moment with attribute_not_exists(pk); returns
    the number of winners per key."""
    table, _ = create_table(endpoint.client("dynamodb"))
    clients = [endpoint.client("dynamodb") for _ in range(RACERS)]
    start_line = threading.Barrier(RACERS, timeout=30)
    winners: Counter[str] = Counter()
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def racer(number: int) -> None:
        dynamodb = clients[number]
        try:
            for key in range(KEYS):
                start_line.wait()
                try:
                    dynamodb.put_item(
                        TableName=table,
                        ConditionExpression="attribute_not_exists(pk)",
                        Item={"pk": {"S": f"key-{key}"}, "winner": {"N": str(number)}, **ATTRIBUTES},
                    )
                except ClientError as error:
                    if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                        raise
                else:
                    with lock:
                        winners[f"key-{key}"] += 1
        except BaseException as error:
            unexpected.append(error)
            start_line.abort()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=racer, args=(number,)) for number in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(previous)
    assert not unexpected, unexpected
    assert set(winners) == {f"key-{key}" for key in range(KEYS)}, f"keys nobody won: {winners}"
    return winners


def test_without_serialisation_the_race_has_double_winners(unserialized: Endpoint) -> None:
    assert Control(unserialized.url).get("health").body["serializeWrites"] is False

    winners = race_conditional_puts(unserialized)

    doubles = {key: count for key, count in winners.items() if count > 1}
    assert doubles, "no key had two winners: this race cannot show a serialisation bug"


def test_with_serialisation_every_key_has_exactly_one_winner(endpoint: Endpoint, control: Control) -> None:
    assert control.get("health").body["serializeWrites"] is True

    winners = race_conditional_puts(endpoint)

    assert {key: count for key, count in winners.items() if count != 1} == {}
