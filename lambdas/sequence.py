"""Kinesis sequence numbers as DynamoDB sort keys, and the snapshot watermark built from them."""

from __future__ import annotations

from typing import Any

NO_WATERMARK = ""
"""The watermark of a user with no snapshot: sorts before every encoded sequence number."""


def encode_seq(sequence_number: str) -> str:
    """Kinesis sequence number (decimal string, up to 128 digits) -> a string that sorts numerically.

    DynamoDB compares string sort keys byte by byte, so "9" > "10"; prefixing the length
    (``f"{len(s):03d}{s}"``) makes the string order the numeric order for numbers without leading zeros.
    """
    if not (isinstance(sequence_number, str) and sequence_number.isascii() and sequence_number.isdigit()):
        raise ValueError(f"Kinesis sequence number must be a decimal string, got {sequence_number!r}")
    digits = sequence_number.lstrip("0") or "0"
    if len(digits) > 999:
        raise ValueError("Kinesis sequence number longer than 999 digits")
    return f"{len(digits):03d}{digits}"


def decode_seq(encoded: str) -> str:
    if not is_encoded_seq(encoded):
        raise ValueError(f"not an encoded sequence number: {encoded!r}")
    return encoded[3:]


def is_encoded_seq(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) > 3
        and value.isascii()
        and value.isdigit()
        and int(value[:3]) == len(value) - 3
    )
