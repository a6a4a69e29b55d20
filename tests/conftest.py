"""Shared by every suite: the `support` packages' asserts are rewritten as the tests' own are (a failed
check in a helper says what it compared). Registered here, before any test module imports them."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.unit.support", "tests.emulator.support", "tests.integration.support")
