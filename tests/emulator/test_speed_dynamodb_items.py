"""esjoin.emulator.moto_layer.speed's linear DynamoDB item construction, compared with moto's
Item.__init__: the same attributes, and the same failure at the same attribute past the size limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from esjoin.emulator.moto_layer import speed as moto_speed
from tests.emulator.support.attribute_values import ATTRIBUTE_VALUES, NAMES, as_parsed
from tests.emulator.support.equivalence import examples
from tests.emulator.support.moto_speed import original


def built_item(init: Callable[..., None], attributes: dict[str, Any]) -> tuple[str, ...]:
    """An Item built with `init` (moto's Item.__init__ or the patched one): its attributes, or the error."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    item = Item.__new__(Item)
    hash_key, range_key = DynamoType({"S": "a"}), None
    try:
        init(item, hash_key, range_key, attributes)
    except Exception as error:
        return ("raised", type(error).__name__, str(error))
    assert type(item.attrs) is LimitedSizeDict and item.hash_key is hash_key and item.range_key is range_key
    return (
        "built",
        repr([(name, type(value).__name__, value.type, repr(value.to_json())) for name, value in item.attrs.items()]),
    )


@examples(150)
@given(attributes=st.lists(st.tuples(NAMES, ATTRIBUTE_VALUES), max_size=6))
def test_items_are_built_as_moto_builds_them(speed_patches: None, attributes: list[tuple[str, Any]]) -> None:
    from moto.dynamodb.models.dynamo_type import Item

    stored = {name: as_parsed(value) for name, value in dict(attributes).items()}
    assert built_item(Item.__init__, stored) == built_item(original(Item, "__init__"), stored)


@st.composite
def near_the_limit(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Attributes whose running size crosses moto's 405,000-byte item limit somewhere, or ends within a
    few bytes of it (either side)."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.utilities import bytesize

    names = NAMES.filter(lambda name: not name.startswith(("big", "filler")))
    attributes = draw(st.lists(st.tuples(names, ATTRIBUTE_VALUES), max_size=4, unique_by=lambda pair: pair[0]))
    for number in range(draw(st.integers(0, 3))):
        attributes.append((f"big{number}", {"S": "x" * draw(st.integers(0, 200_000))}))
    draw(st.randoms()).shuffle(attributes)
    size = sum(bytesize(name) + DynamoType(value).size() for name, value in attributes)
    filler = moto_speed.ITEM_SIZE_LIMIT - size - len("filler") + draw(st.integers(-3, 3))
    if filler >= 0:
        filler_value = {"S": "é" * (filler // 2) + "x" * (filler % 2)}
        attributes.insert(draw(st.integers(0, len(attributes))), ("filler", filler_value))
    return attributes


@examples(30)
@given(attributes=near_the_limit())
def test_an_item_over_the_size_limit_fails_at_the_same_attribute(
    speed_patches: None, attributes: list[tuple[str, Any]]
) -> None:
    """Each prefix of the attributes builds, or fails with ItemSizeTooLarge, alike: the first failing
    prefix names the attribute at which both refuse the item."""
    from moto.dynamodb.models.dynamo_type import Item

    outcomes = []
    for end in range(len(attributes) + 1):
        prefix = dict(attributes[:end])
        patched, own = built_item(Item.__init__, prefix), built_item(original(Item, "__init__"), prefix)
        assert patched == own, f"after {end} attributes"
        outcomes.append(patched[0])
    assert outcomes == sorted(outcomes)  # "built" until the attribute that breaks the limit, "raised" after


def test_the_size_limit_is_moto_s_to_the_byte(speed_patches: None) -> None:
    from moto.dynamodb.models.dynamo_type import Item

    for extra in (-1, 0, 1):
        attributes = {"a": {"S": "x" * (moto_speed.ITEM_SIZE_LIMIT - 1 + extra)}}
        patched, own = built_item(Item.__init__, attributes), built_item(original(Item, "__init__"), attributes)
        assert patched == own
        assert patched[0] == ("raised" if extra > 0 else "built")
