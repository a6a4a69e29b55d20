"""`python -m esjoin.emulator`: run the embedded endpoint in the foreground until SIGINT/SIGTERM.

`esjoin emulator start` and the container image call `main()`; `make up` starts it in the
background through `esjoin up`. Flags override the ESJOIN_* environment (esjoin.emulator.config).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from esjoin.emulator.config import TIMING_AWS, TIMING_FAST, EmulatorConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m esjoin.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="address to bind (ESJOIN_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (ESJOIN_PORT, default 4566)")
    parser.add_argument("--region", help="default region (ESJOIN_REGION, default us-east-1)")
    parser.add_argument("--timing", choices=(TIMING_FAST, TIMING_AWS), help="poll timing (ESJOIN_TIMING)")
    parser.add_argument("--state-dir", help="function code and checkpoints (ESJOIN_STATE_DIR)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: each invocation, -vv: each request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = EmulatorConfig.from_env(
            host=args.host, port=args.port, region=args.region, timing=args.timing, state_dir=args.state_dir
        )
    except ValueError as error:
        print(f"esjoin emulator: {error}", file=sys.stderr)
        return 2
    level = {0: config.log_level, 1: "INFO"}.get(args.verbose, "DEBUG")
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from esjoin.emulator.server import Emulator

    emulator = Emulator(config)
    try:
        emulator.start(freeze_gc=True)
    except RuntimeError as error:
        print(f"esjoin emulator: {error}", file=sys.stderr)
        emulator.stop()
        return 1

    def stop(signum: int, _frame: object) -> None:
        logging.getLogger("esjoin.emulator").info("signal %d: stopping", signum)
        emulator.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"status": "ready", "endpoint": emulator.endpoint_url, "pid": os.getpid()}), flush=True)
    emulator.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
