"""esjoin.emulator.moto_layer.speed's patches on every request: cached method lists and request ids,
compared with moto's own (support/moto_speed.py)."""

from __future__ import annotations

import string
from typing import Any

from tests.emulator.support.moto_speed import DYNAMODB, PATCHED_REGION, SQS, call, create_table, original, unique


def test_method_lists_are_moto_s_and_stay_so(moto_app: Any) -> None:
    from moto.core import responses
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
    from moto.kinesis.responses import KinesisResponse
    from moto.sqs.responses import SQSResponse

    list_methods = original(responses, "method_names_from_class")
    handlers = (DynamoHandler, DynamoDBStreamsHandler, KinesisResponse, SQSResponse)
    for handler in handlers:
        assert responses.method_names_from_class(handler) == list_methods(handler)
    table = create_table(moto_app, PATCHED_REGION, unique("methods"))
    call(moto_app, PATCHED_REGION, f"{DYNAMODB}.Scan", {"TableName": table})
    call(moto_app, PATCHED_REGION, f"{SQS}.ListQueues", {})
    for handler in handlers:  # the cached list is shared: nothing may have changed it
        assert responses.method_names_from_class(handler) == list_methods(handler)
        assert responses.method_names_from_class(handler) is responses.method_names_from_class(handler)


def test_request_ids_look_like_moto_s_and_follow_its_seed(speed_patches: None) -> None:
    from moto.core import responses
    from moto.moto_api._internal import mock_random

    headers: dict[str, Any] = {"other": "kept"}
    value = responses.gen_amzn_requestid_long(headers)
    own = original(responses, "gen_amzn_requestid_long")({})
    for request_id in (value, own):
        assert len(request_id) == 52 and set(request_id) <= set(string.ascii_letters + string.digits)
    assert headers == {"other": "kept", "x-amzn-requestid": value}
    mock_random.seed(42)
    first = responses.gen_amzn_requestid_long()
    mock_random.seed(42)
    assert responses.gen_amzn_requestid_long() == first  # seeded moto is deterministic, as before
    assert len({responses.gen_amzn_requestid_long() for _ in range(50)}) == 50
    mock_random.seed()
