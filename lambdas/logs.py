"""Structured logs: one JSON object per line, quiet by default (LOG_LEVEL, default WARNING).

Each handler writes one summary line per batch at INFO and a line per problem at WARNING/ERROR.
The Lambda Python runtime installs a handler on the root logger; elsewhere (the embedded endpoint's
worker, a test) a stdout handler is added so the lines reach the function's log stream.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_LOGGER_NAME = "esjoin"


def get_logger(level: str) -> logging.Logger:
    logger = logging.getLogger(_LOGGER_NAME)
    logger.setLevel(level.upper())
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    return logger


def log(logger: logging.Logger, level: int, message: str, /, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        line = {"level": logging.getLevelName(level), "message": message, **fields}
        logger.log(level, json.dumps(line, default=str, separators=(",", ":")))
