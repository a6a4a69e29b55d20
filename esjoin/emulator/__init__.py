"""The embedded AWS endpoint: one port, moto for the data services, our Lambda service and event
source mapping engine. `python -m esjoin.emulator` runs it in the foreground; from Python:

    from esjoin.emulator import Emulator

    with Emulator(port=0) as endpoint:          # a free port; ESJOIN_* settings apply, keywords win
        endpoint.endpoint_url                   # http://127.0.0.1:<port>
"""

from __future__ import annotations

from typing import Any

__all__ = ["Emulator", "EmulatorConfig"]


def __getattr__(name: str) -> Any:
    # Lazily: `python -m esjoin.emulator` and readers of the config need not import moto through here.
    if name == "Emulator":
        from esjoin.emulator.server import Emulator

        return Emulator
    if name == "EmulatorConfig":
        from esjoin.emulator.config import EmulatorConfig

        return EmulatorConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
