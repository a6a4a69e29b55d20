"""moto 5.2.5, doing the same for less work: patches that change no answer, only its cost.

The endpoint serves every request under one lock on one interpreter, so moto's CPU time per request
is the endpoint's capacity. Each patch below was found with py-spy under bench/ ("emulator",
"pipeline") and is measured there; each produces what moto produced (responses compared byte for
byte, or the same exception at the same point). Applied by `esjoin.emulator.moto_layer.fixes.apply()`, which
checks moto's version; each goes through `esjoin.emulator.moto_layer.patching.replace`, which checks the
signature it replaces and records it (`REPLACED`).

Every request
- moto lists the methods of the service's response class (inspect.getmembers) to check that the
  action exists; the list is fixed per class, so it is computed once (~0.3 ms a request). Its
  52-character request id takes one random.choices call instead of 52 random.choice calls.
DynamoDB
- Responses: moto converts results to plain dictionaries (dynamo_to_dict), then its generic
  serializer walks every AttributeValue through the botocore shape (an attribute picker, alias
  providers and a context object per member). For Query and BatchGetItem results that was half of
  the endpoint's time under the pipeline benchmark (a 25-item Query: 40 ms, now 0.6 ms). The
  conversion takes a short path for moto's own types, and AttributeValues, attribute maps and item
  lists are written directly.
- Requests: moto's JSON parser walks every AttributeValue of a request (PutItem's item, each of a
  BatchWriteItem's items) member by member through the shape; AttributeValues are parsed directly.
- Query deep-copies every item it returns, although the response is built from new dictionaries
  anyway (and, under the endpoint's lock, nothing writes meanwhile): skipped for the Query API call.
- An item's attributes go into a LimitedSizeDict that adds up the sizes of all attributes present
  at every insert (quadratic in the attributes); building an item adds each size once and checks
  the same 405,000-byte limit at the same attribute.
SQS
- ReceiveMessage reads the queue's retention period through get_queue_attributes, which computes
  every attribute (three passes over the queue's messages) once per message received: read directly.
- The message counts (ApproximateNumberOfMessages..., computed by every SendMessage and attribute
  read) read the clock once per pass instead of twice per message: SendMessage to a queue of 1,000
  messages went from ~15 ms to ~2 ms.
"""

from __future__ import annotations

import base64
import copy
import functools
import string
import threading
from collections.abc import Sequence
from typing import Any

from esjoin.emulator.moto_layer import patching
from esjoin.emulator.moto_layer.patching import PatchKind

SPEED = PatchKind.SPEED
REQUEST_ID_CHARACTERS = string.ascii_letters + string.digits  # moto's get_random_string pool
ITEM_SIZE_LIMIT = 405000  # moto's LimitedSizeDict limit, in bytes

_local = threading.local()


# What `apply()` replaced, in order: `owner.name` (`owner[name]` for a dict) and moto's own value there
# (`original`; MISSING: the dict had no such entry). A live view of the patch registry, so the tests can
# compare each patch's answers with moto's own code (tests/emulator/test_speed_*.py).
REPLACED: Sequence[patching.Patch] = patching.REGISTRY.view(SPEED)
MISSING = patching.MISSING


def apply() -> None:
    """Install the speed patches (again: each wraps moto's own code, never an earlier patch)."""
    _patch_every_request()
    _patch_dynamodb_responses()
    _patch_json_requests()
    _patch_dynamodb_query()
    _patch_dynamodb_items()
    _patch_sqs()


# -- every request ----------------------------------------------------------------------------------


def _patch_every_request() -> None:
    from moto.core import responses

    # Callers only test membership (`action in method_names`); the shared list is never changed.
    patching.replace(
        responses,
        "method_names_from_class",
        wrap=functools.lru_cache(maxsize=None),
        kind=SPEED,
        expect="(clazz)",
        reason="the response class's method list, fixed per class, computed once "
        "instead of on every request (~0.3 ms a request)",
    )
    patching.replace(
        responses,
        "gen_amzn_requestid_long",
        request_id,
        kind=SPEED,
        expect="(headerdict=None)",
        reason="the 52-character request id takes one random.choices call instead of 52 random.choice",
    )


def request_id(headerdict: dict[str, Any] | None = None) -> str:
    """moto's x-amzn-requestid: 52 letters and digits, from moto's (seedable) random source."""
    from moto.moto_api._internal import mock_random

    value = "".join(mock_random.choices(REQUEST_ID_CHARACTERS, k=52))
    if isinstance(headerdict, dict):
        headerdict["x-amzn-requestid"] = value
    return value


# -- DynamoDB responses ------------------------------------------------------------------------------


def _patch_dynamodb_responses() -> None:
    from moto.core import serialize
    from moto.dynamodb import responses
    from moto.dynamodb.models import utilities
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict

    generic_to_dict = utilities.dynamo_to_dict
    plain = (str, int, float, bool, type(None))
    dictionaries = (dict, LimitedSizeDict)  # neither has to_json: dynamo_to_dict copies them

    def dynamo_to_dict(value: Any) -> Any:
        """moto's dynamo_to_dict, with a short path for what results are made of."""
        kind = type(value)
        if kind is DynamoType:
            if value.type in ("B", "BS"):
                return generic_to_dict(value)
            inner = value.value
            return {value.type: inner if type(inner) in plain else dynamo_to_dict(inner)}
        if kind in dictionaries:
            return {key: dynamo_to_dict(member) for key, member in value.items()}
        if kind is list:
            return [dynamo_to_dict(member) for member in value]
        if kind in plain:
            return value
        return generic_to_dict(value)  # datetimes, objects with to_json, subclasses

    patching.replace(
        responses,
        "dynamo_to_dict",
        dynamo_to_dict,
        kind=SPEED,
        expect="(obj)",
        reason="DynamoDB results (DynamoResult) converted to dictionaries with a short path for moto's own types",
    )

    class AttributeValueJSONSerializer(serialize.JSONSerializer):
        """moto's JSON serializer; AttributeValues (and maps and lists of them) written directly."""

        def _serialize_type_structure(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
            if key and shape.name == "AttributeValue" and isinstance(value, dict):
                serialized[self.get_serialized_name(shape, key)] = attribute_value_json(value)
                return
            super()._serialize_type_structure(serialized, value, shape, key)

        def _serialize_type_map(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
            if _is_attribute_map(shape) and _all_dicts(value.values()):
                serialized[self.get_serialized_name(shape, key)] = attribute_map_json(value)
                return
            super()._serialize_type_map(serialized, value, shape, key)

        def _serialize_type_list(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
            member = shape.member
            if (
                member.type_name == "map"
                and _is_attribute_map(member)
                and _all_dicts(value)
                and all(_all_dicts(item.values()) for item in value)
            ):
                serialized[self.get_serialized_name(shape, key)] = [attribute_map_json(item) for item in value]
                return
            super()._serialize_type_list(serialized, value, shape, key)

    for service in ("dynamodb", "dynamodbstreams"):
        # moto has no serializer of its own for these (its generic JSONSerializer answers): expect no entry.
        patching.replace(
            serialize.SERVICE_SPECIFIC_SERIALIZERS.setdefault(service, {}),
            "json",
            AttributeValueJSONSerializer,
            kind=SPEED,
            expect=patching.MISSING,
            owner_name=f"moto.core.serialize.SERVICE_SPECIFIC_SERIALIZERS[{service!r}]",
            reason="AttributeValues, attribute maps and item lists in responses written directly "
            "instead of walked through the botocore shape",
        )


def _is_attribute_map(shape: Any) -> bool:
    return getattr(shape, "value", None) is not None and shape.value.name == "AttributeValue"


def _all_dicts(values: Any) -> bool:
    return all(isinstance(value, dict) for value in values)


def attribute_map_json(value: dict[str, Any]) -> dict[str, Any]:
    return {name: attribute_value_json(member) for name, member in value.items()}


_STRING_TYPES = ("S", "N")
_STRING_SET_TYPES = ("SS", "NS")


def attribute_value_json(value: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB AttributeValue as moto's JSON serializer writes it (members it does not know, and
    None members, left out; binaries base64-encoded), without walking the botocore shape."""
    result: dict[str, Any] = {}
    for type_, inner in value.items():
        if inner is None:
            continue
        if type_ in _STRING_TYPES:
            result[type_] = str(inner) if inner not in ({}, []) else inner
        elif type_ == "M":
            result["M"] = {
                name: attribute_value_json(member) for name, member in inner.items() if isinstance(member, dict)
            }
        elif type_ == "L":
            result["L"] = [attribute_value_json(member) if isinstance(member, dict) else member for member in inner]
        elif type_ in ("BOOL", "NULL"):
            result[type_] = inner
        elif type_ in _STRING_SET_TYPES:
            result[type_] = [str(member) for member in inner]
        elif type_ == "B":
            result["B"] = _base64(inner)
        elif type_ == "BS":
            result["BS"] = [_base64(member) for member in inner]
    return result


def _base64(value: str | bytes) -> str:
    return base64.b64encode(value.encode("utf-8") if isinstance(value, str) else value).strip().decode("utf-8")


# -- DynamoDB requests -------------------------------------------------------------------------------

# The AttributeValue structure of DynamoDB and DynamoDB Streams, member by member.
ATTRIBUTE_VALUE_MEMBERS = ("S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL")


def _patch_json_requests() -> None:
    from moto.core import parse

    class AttributeValueJSONParser(parse.JSONParser):
        """moto's JSON request parser; DynamoDB AttributeValues parsed without walking the shape."""

        def _parse_structure(self, shape: Any, value: Any) -> Any:
            if isinstance(value, dict) and shape.name == "AttributeValue" and _is_dynamodb_attribute_value(shape):
                return self._attribute_value(shape, value)
            return super()._parse_structure(shape, value)

        def _attribute_value(self, shape: Any, value: dict[str, Any]) -> Any:
            # What the generic walk gives: members in the shape's order, None and unknown ones left
            # out, strings, numbers and booleans as they are, binaries decoded, M and L recursively.
            parsed = self.MAP_TYPE()
            for name in ATTRIBUTE_VALUE_MEMBERS:
                raw = value.get(name)
                if raw is None:
                    continue
                if name == "M":
                    parsed[name] = {key: self._parse_structure(shape, member) for key, member in raw.items()}
                elif name == "L":
                    parsed[name] = [self._parse_structure(shape, member) for member in raw]
                elif name == "B":
                    parsed[name] = self._blob_parser(raw)
                elif name == "BS":
                    parsed[name] = [self._blob_parser(member) for member in raw]
                elif name in ("SS", "NS"):
                    parsed[name] = [member for member in raw]
                else:
                    parsed[name] = raw
            return parsed

    patching.replace(
        parse.PROTOCOL_PARSERS,
        "json",
        AttributeValueJSONParser,
        kind=SPEED,
        expect=parse.JSONParser,
        owner_name="moto.core.parse.PROTOCOL_PARSERS",
        reason="DynamoDB AttributeValues in requests parsed directly instead of member by member through the shape",
    )


def _is_dynamodb_attribute_value(shape: Any) -> bool:
    """Only DynamoDB's (and DynamoDB Streams') AttributeValue takes the short path: a structure of
    that name with exactly its ten members, in its order."""
    return tuple(shape.members) == ATTRIBUTE_VALUE_MEMBERS


# -- DynamoDB Query ----------------------------------------------------------------------------------


def _patch_dynamodb_query() -> None:
    from moto.dynamodb.models import table
    from moto.dynamodb.responses import DynamoHandler

    def marking_query_response(original_query_action: Any) -> Any:
        @functools.wraps(original_query_action)
        def query_action(self: DynamoHandler) -> Any:
            # The items Table.query returns go straight into new response dictionaries (dynamo_to_dict),
            # under the endpoint's lock: its deep copy of them protects nothing here.
            _local.query_response = True
            try:
                return original_query_action(self)
            finally:
                _local.query_response = False

        return query_action

    patching.replace(
        table,
        "copy",
        _CopyUnlessQueryResponse(),
        kind=SPEED,
        expect=copy,
        reason="Table.query's deep copy of every item it returns skipped while a Query API call builds its response",
    )
    patching.replace(
        DynamoHandler,
        "query",
        wrap=marking_query_response,
        kind=SPEED,
        expect="(self)",
        reason="marks a Query API call building its response, for the copy patch of moto.dynamodb.models.table",
    )


class _CopyUnlessQueryResponse:
    """The `copy` module as moto.dynamodb.models.table sees it: deepcopy is skipped while a Query API
    call builds its response (see query_action), and is the real one otherwise."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        if getattr(_local, "query_response", False):
            return value
        return copy.deepcopy(value, memo)


# -- DynamoDB items ----------------------------------------------------------------------------------


def _patch_dynamodb_items() -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    def item_init(self: Item, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        self.attrs = LimitedSizeDict()
        total = 0
        for key, value in attrs.items():
            typed = DynamoType(value)
            # LimitedSizeDict.__setitem__ raises when the sizes of what is there plus the new
            # attribute exceed the limit; the running total is that sum.
            total += bytesize(key) + typed.size()
            if total > ITEM_SIZE_LIMIT:
                raise ItemSizeTooLarge
            dict.__setitem__(self.attrs, key, typed)

    patching.replace(
        Item,
        "__init__",
        item_init,
        kind=SPEED,
        expect="(self, hash_key, range_key, attrs)",
        reason="an item's size adds each attribute once instead of re-adding all of them at every "
        "insert; the same 405,000-byte limit at the same attribute",
    )


# -- SQS ---------------------------------------------------------------------------------------------


def _patch_sqs() -> None:
    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs.models import Queue, SQSBackend

    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Any) -> bool:
        retention_period = self.get_queue(queue_name).message_retention_period
        return retention_period + message.sent_timestamp / 1000 > unix_time()

    # moto's Message.visible is `now > visible_at` and Message.delayed is `now < delayed_until`, each
    # reading the clock; a pass over the queue reads it once.
    def messages(self: Queue) -> list[Any]:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def number_delayed(self: Queue) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def number_not_visible(self: Queue) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    patching.replace(
        SQSBackend,
        "is_message_valid_based_on_retention_period",
        is_message_valid_based_on_retention_period,
        kind=SPEED,
        expect="(self, queue_name, message)",
        reason="ReceiveMessage reads the retention period directly instead of computing every queue "
        "attribute once per message received",
    )
    for name, getter in (
        ("messages", messages),
        ("approximate_number_of_messages_delayed", number_delayed),
        ("approximate_number_of_messages_not_visible", number_not_visible),
    ):
        patching.replace(
            Queue,
            name,
            property(getter),
            kind=SPEED,
            expect="(self)",
            reason="a pass over the queue's messages reads the clock once instead of twice a message",
        )
