"""`python -m bench [PART] [--quick] [--endpoint URL ...]`: run the benchmarks (PART: see below).

With no part, emulator, pipeline and smoke run one after another (each on an endpoint of its own);
robustness (about seven minutes: lock hold, sustained load, killed workers), deterministic (about
ten: deterministic mode's cost, virtual time, exploration, trace size) and console (about one: the
pipeline's throughput with the console open in chromium) run only when named.
Each part prints its Markdown table and writes `bench/results/<part>.json` and `.md`, and SVG plots
next to them where it has figures to plot (bench/plots.py). `--quick` runs
smaller samples (a check that the benchmarks work, not figures to quote). `--only` runs some sections
of the emulator part (startup, calls, two_hop, throughput) or of the robustness part (lock_hold, load,
kill_workers), e.g. while working on one of them. The smoke part runs its workload on a fresh embedded
endpoint, on LocalStack at ESJOIN_LOCALSTACK_ENDPOINT if one answers, and on every `--endpoint URL` given.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench import plots

PARTS = ("emulator", "pipeline", "smoke")  # what runs with no part named
EXPLICIT_PARTS = ("robustness", "deterministic", "console")  # too long for every run: only when named


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "part", nargs="?", choices=PARTS + EXPLICIT_PARTS, help=f"one part (default: {', '.join(PARTS)})"
    )
    parser.add_argument("--quick", action="store_true", help="smaller samples: checks the benchmarks run")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections of the emulator part "
        "(startup,calls,two_hop,throughput) or of the robustness part (lock_hold,load,kill_workers)",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="smoke part: also run the workload on this local endpoint (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = [args.part] if args.part else list(PARTS)
    failed = []
    for part in parts:
        began = time.monotonic()
        print(f"== bench {part}{' (quick)' if args.quick else ''}", flush=True)
        if part == "emulator":
            from bench import emulator_bench

            sections = tuple(s for s in args.only.split(",") if s) or ("startup", "calls", "two_hop", "throughput")
            report = emulator_bench.run(args.quick, sections)
        elif part == "robustness":
            from bench import robustness_bench

            sections = tuple(s for s in args.only.split(",") if s) or robustness_bench.SECTIONS
            unknown = set(sections) - set(robustness_bench.SECTIONS)
            if unknown:
                print(f"bench: unknown robustness section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
                return 2
            report = robustness_bench.run(args.quick, sections)
        elif part == "deterministic":
            from bench import deterministic_bench

            report = deterministic_bench.run(args.quick)
        elif part == "pipeline":
            from bench import pipeline_bench

            report = pipeline_bench.run(args.quick)
        elif part == "console":
            from bench import console_bench

            report = console_bench.run(args.quick)
        else:
            from bench import smoke_bench

            report = smoke_bench.run(args.quick, args.endpoint)
        json_path, md_path = report.write()
        plotted = plots.write(part, report.data, json_path.parent)
        print(report.markdown())
        print(
            f"wrote {json_path} and {md_path}{''.join(f', {p}' for p in plotted)} in {time.monotonic() - began:.0f} s",
            flush=True,
        )
        if report.data.get("failed"):
            failed.append(part)
    if failed:
        print(f"bench: {', '.join(failed)} did not complete its checks (see the notes above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
