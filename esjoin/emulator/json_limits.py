"""How deep a JSON request may nest: measured before any recursive parser sees the body.

A body of a million `[` makes json.loads raise RecursionError, and a few hundred levels inside a
DynamoDB item make moto recurse; either would surface as a bare 500. AWS refuses such requests, so
the endpoint does too, with AWS's SerializationException.
"""

from __future__ import annotations

import json
import re
from typing import Any

from esjoin.emulator.aws_errors import AwsError

MAX_JSON_DEPTH = 128
"""Nesting refused beyond this (DynamoDB's own limit is 32 levels of an item, about 66 of JSON)."""
# A string, closed or not: without the optional closing quote, a body of unclosed `"\"\"...` made the
# regex rescan the rest of the body from every quote (quadratic; 1 MiB: about 40 minutes, holding the GIL).
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_json(body: bytes) -> Any:
    """The parsed body; SerializationException for one that is not JSON or nests deeper than MAX_JSON_DEPTH.

    The depth is measured before parsing, on the brackets outside strings (C-speed bytes operations),
    so a hostile body never reaches a recursive parser."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in (91, 123) else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                raise AwsError(
                    400, "SerializationException", f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels"
                )
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise AwsError(400, "SerializationException", "the request body is not valid JSON") from None
