"""DynamoDB AttributeValues as a client sends them (Hypothesis strategies), and the items of the test
tables the speed comparisons write (tests/emulator/test_speed_dynamodb_*.py)."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import strategies as st

# Attribute names are never empty here: AWS refuses empty names (HowItWorks.NamingRulesDataTypes),
# moto accepts them and answers them differently once patched (test_empty_attribute_names_...).
NAMES = st.text(min_size=1, max_size=8)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**38), max_value=10**38).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),  # "1E+5", "-0.000", "1.2E-7"
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,37})(\.[0-9]{1,38})?([eE][+-]?[0-9]{1,3})?\Z"),
)
BINARIES = st.binary(max_size=24).map(lambda data: base64.b64encode(data).decode())
SCALARS = st.one_of(
    st.builds(lambda text: {"S": text}, st.text(max_size=12)),  # empty strings and any unicode
    st.builds(lambda number: {"N": number}, NUMBERS),
    st.builds(lambda data: {"B": data}, BINARIES),
    st.builds(lambda flag: {"BOOL": flag}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda texts: {"SS": texts}, st.lists(st.text(max_size=6), min_size=1, max_size=4, unique=True)),
    st.builds(lambda numbers: {"NS": numbers}, st.lists(NUMBERS, min_size=1, max_size=4, unique=True)),
    st.builds(lambda blobs: {"BS": blobs}, st.lists(BINARIES, min_size=1, max_size=3, unique=True)),
)
ATTRIBUTE_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.builds(lambda members: {"L": members}, st.lists(children, max_size=4)),
        st.builds(lambda members: {"M": members}, st.dictionaries(NAMES, children, max_size=4)),
    ),
    max_leaves=12,
)
KEY_NAMES = ("pk", "sk", "g")  # the tables' hash, range and index keys
# Smaller items where a test makes many requests (the serialization tests take the large ones).
SMALL_ATTRIBUTE_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.builds(lambda members: {"L": members}, st.lists(children, max_size=2)),
        st.builds(lambda members: {"M": members}, st.dictionaries(NAMES, children, max_size=2)),
    ),
    max_leaves=4,
)
FIELDS = st.sampled_from(["f", "h", "ü"])  # names requests refer to (filters, projections, updates)
ATTRIBUTES = st.dictionaries(
    FIELDS | NAMES.filter(lambda name: name not in KEY_NAMES), SMALL_ATTRIBUTE_VALUES, max_size=3
)


def as_parsed(value: dict[str, Any]) -> dict[str, Any]:
    """A wire AttributeValue as moto's request parser leaves it: binaries decoded to bytes."""
    ((kind, member),) = value.items()
    if kind == "B":
        return {kind: base64.b64decode(member)}
    if kind == "BS":
        return {kind: [base64.b64decode(blob) for blob in member]}
    if kind == "L":
        return {kind: [as_parsed(child) for child in member]}
    if kind == "M":
        return {kind: {name: as_parsed(child) for name, child in member.items()}}
    return value


@st.composite
def items(draw: st.DrawFn, attributes: st.SearchStrategy[dict[str, Any]] = ATTRIBUTES) -> dict[str, Any]:
    """An item of the test tables: keys from a small domain (so writes collide), any other attributes."""
    item = {"pk": {"S": draw(st.sampled_from(["a", "b"]))}, "sk": {"N": str(draw(st.integers(0, 2)))}}
    if draw(st.booleans()):
        item["g"] = {"S": draw(st.sampled_from(["x", "y"]))}
    item.update(draw(attributes))
    return item


LARGE_ITEMS = items(st.dictionaries(NAMES.filter(lambda name: name not in KEY_NAMES), ATTRIBUTE_VALUES, max_size=5))


KEYS = st.builds(lambda pk, sk: {"pk": {"S": pk}, "sk": {"N": str(sk)}}, st.sampled_from(["a", "b"]), st.integers(0, 2))
