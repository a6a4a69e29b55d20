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
    parser.add_argument("--seed", type=int, help="deterministic mode with this seed (ESJOIN_SEED)")
    parser.add_argument("--pace", choices=("wall", "virtual"), help="deterministic mode's pace (ESJOIN_PACE)")
    parser.add_argument("--replay", metavar="TRACE", help="replay a recorded trace (its seed, clock and pace)")
    parser.add_argument("--until", type=int, metavar="STEP", help="with --replay: stop after this step")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: each invocation, -vv: each request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trace = None
    try:
        seed, pace, clock_start_ms = args.seed, args.pace, None
        if args.replay:
            from esjoin.emulator.aids.trace import read_trace

            trace = read_trace(args.replay)
            seed, pace, clock_start_ms = trace.seed, trace.header.get("pace"), trace.header.get("clockStartMs")
        config = EmulatorConfig.from_env(
            host=args.host,
            port=args.port,
            region=args.region,
            timing=args.timing,
            state_dir=args.state_dir,
            seed=seed,
            pace=pace,
            clock_start_ms=clock_start_ms,
        )
    except ValueError as error:  # TraceError is a ValueError: it names the file and the problem
        print(f"esjoin emulator: {error}", file=sys.stderr)
        return 2
    if config.seed is not None and os.environ.get("PYTHONHASHSEED") != "0":
        # Deterministic mode: string hashes (set and dict orders inside moto) must not vary per run.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "esjoin.emulator", *(sys.argv[1:] if argv is None else argv)])
    level = {0: config.log_level, 1: "INFO"}.get(args.verbose, "DEBUG")
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from esjoin.emulator.server import Emulator

    emulator = Emulator(config)
    if trace is not None:
        emulator.replay(trace, args.until)
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
