"""esjoin.emulator.moto_layer.speed records every moto function it replaces: the comparisons in
test_speed_*.py reach moto's own code through that record (support/moto_speed.py's `moto_own_code()`), so
a patch applied without being recorded there would escape them (and should get a comparison of its own).

The speed patches change no answer, only its cost; each is compared with what it replaced:
test_speed_dynamodb_serialization.py (response conversion and serialization), test_speed_dynamodb_requests.py
(AttributeValue request parsing), test_speed_dynamodb_items.py (item construction and the size limit),
test_speed_dynamodb_answers.py (whole DynamoDB answers, and Query without deep copies),
test_speed_every_request.py (method lists, request ids) and test_speed_sqs.py (receives and counts).
The direct dispatch path is in test_dispatch_equivalence.py, the HTTP server's header parser and
keep-alive in test_http_header_parser.py and test_http_keep_alive.py.
"""

from __future__ import annotations

from esjoin.emulator.moto_layer import speed as moto_speed
from tests.emulator.support.moto_speed import current, moto_own_code


def test_every_speed_patch_is_recorded_and_installed(speed_patches: None) -> None:
    """The comparisons (test_speed_*.py) reach moto's own code through moto_speed.REPLACED: a patch applied
    without being recorded there would escape them (and should get a comparison of its own)."""
    from moto.core import parse, responses, serialize
    from moto.dynamodb import responses as dynamodb_responses
    from moto.dynamodb.models import table
    from moto.dynamodb.models.dynamo_type import Item
    from moto.sqs.models import Queue, SQSBackend

    recorded = {(id(entry.owner), entry.name) for entry in moto_speed.REPLACED}
    expected = {
        (id(responses), "method_names_from_class"),
        (id(responses), "gen_amzn_requestid_long"),
        (id(dynamodb_responses), "dynamo_to_dict"),
        (id(serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodb"]), "json"),
        (id(serialize.SERVICE_SPECIFIC_SERIALIZERS["dynamodbstreams"]), "json"),
        (id(parse.PROTOCOL_PARSERS), "json"),
        (id(table), "copy"),
        (id(dynamodb_responses.DynamoHandler), "query"),
        (id(Item), "__init__"),
        (id(SQSBackend), "is_message_valid_based_on_retention_period"),
        (id(Queue), "messages"),
        (id(Queue), "approximate_number_of_messages_delayed"),
        (id(Queue), "approximate_number_of_messages_not_visible"),
    }
    assert recorded == expected
    for entry in moto_speed.REPLACED:
        assert current(entry.owner, entry.name) is not entry.original, f"{entry.name} is not patched"
    with moto_own_code():
        assert all(current(entry.owner, entry.name) is entry.original for entry in moto_speed.REPLACED)
    assert all(current(entry.owner, entry.name) is not entry.original for entry in moto_speed.REPLACED)
