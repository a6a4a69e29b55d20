"""Debian's chromium, driven by Playwright, for the console's browser tests and its benchmark: where it
is, and the flags it needs here (headless, as root, and none of its background fetches, which a closed
network refuses by the dozen)."""

from __future__ import annotations

import os
import shutil
from typing import Any

CHROMIUM = os.environ.get("ESJOIN_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -c constraints.txt -e '.[dev]')"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM}: apt-get install chromium (make test does, as root)"
    return None


def launch(playwright: Any) -> Any:
    """A headless chromium from Playwright's `sync_playwright()` object."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
