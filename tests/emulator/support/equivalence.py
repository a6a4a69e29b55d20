"""How many random examples a comparison of a fast path with what it replaced runs (test_speed_*.py,
test_dispatch_equivalence.py, test_http_header_parser.py): `@examples(count)`."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Random examples, new ones on every run (a failure is a real difference, and Hypothesis prints it).
# ESJOIN_SPEED_EQUIVALENCE_SCALE=10 runs ten times as many, for a deeper check after changing a patch.
SCALE = int(os.environ.get("ESJOIN_SPEED_EQUIVALENCE_SCALE", "1"))
COMPARE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(count: int) -> settings:
    return settings(COMPARE, max_examples=count * SCALE)
