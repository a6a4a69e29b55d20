"""Part `deterministic` (issue 11): what deterministic mode costs, and what it buys.

1. Cost against fast mode: the demo pipeline on an endpoint of its own, 2,000 events for 20 users put
   as fast as PutRecords takes them (with snapshots and trims, a 2 s horizon), timed until every view
   row equals the oracle's fold and the endpoint is quiescent; once in fast mode, once in
   deterministic mode (`ESJOIN_SEED`, wall pace: a live client, as a test suite is).
2. Virtual time: the stock stack with the default 60 s snapshot horizon (snapshot requests are
   delayed 60 s): 30 events for 3 users, scripted, until settled. Real seconds against the virtual
   seconds the run covered.
3. Exploration: the snapshot-race and late-events scenarios on the original snapshot logic under
   seeds 1..N (schedules a minute, failing seeds); every seed a second time (each outcome and step
   count must repeat); the first failing seed 20 more times; and the safe logic under the same seeds.
4. Trace size: a scripted run of 1,000 events (10 users) against the same run with none: the trace
   bytes the events add, compressed, per 1,000 events.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import Measurement, PartReport, load_average
from esjoin.testing.backends import own_embedded
from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from esjoin.testing.explore import CLOCK_START_MS, SCENARIOS, Exploration, Inputs, deploy_stage
from esjoin.testing.pipeline import Pipeline


def run(quick: bool = False) -> PartReport:
    report = PartReport("deterministic", "Deterministic mode: its cost, virtual time, exploration, traces", quick)
    work = Path(tempfile.mkdtemp(prefix="esjoin-bench-deterministic-"))
    events, users = (400, 10) if quick else (2000, 20)
    fast = pipeline_seconds(work / "fast", None, events, users)
    deterministic = pipeline_seconds(work / "deterministic", 1, events, users)
    report.data["pipeline"] = {"events": events, "users": users, "fast": fast, "deterministic": deterministic}
    report.add(
        Measurement(
            f"pipeline, {events:,} events: fast mode",
            round(events / fast["seconds"]),
            "events/s",
            detail=f"{fast['seconds']:.1f} s to converged",
        )
    )
    report.add(
        Measurement(
            f"pipeline, {events:,} events: deterministic mode (wall pace)",
            round(events / deterministic["seconds"]),
            "events/s",
            detail=f"{deterministic['seconds']:.1f} s to converged; {deterministic['steps']:,} steps, "
            f"trace {deterministic['traceBytes']:,} bytes",
        )
    )
    report.add(
        Measurement(
            "deterministic mode's cost on the pipeline",
            round(100 * (deterministic["seconds"] / fast["seconds"] - 1), 1),
            "%",
            detail="time to converged, against fast mode",
        )
    )

    horizon = virtual_time(work / "horizon")
    report.data["virtualTime"] = horizon
    report.add(
        Measurement(
            "60 s snapshot horizon, scripted: virtual time covered per real second",
            round(horizon["virtualSeconds"] / horizon["realSeconds"], 1),
            "x",
            detail=f"{horizon['virtualSeconds']:.0f} virtual s in {horizon['realSeconds']:.1f} real s "
            f"({horizon['steps']} steps)",
        )
    )

    seeds = 6 if quick else 20
    repeats = 3 if quick else 20
    exploration: dict[str, Any] = {}
    for name in ("snapshot-race", "late-events"):
        exploration[name] = explore(work / name, name, seeds, repeats)
        found = exploration[name]
        report.add(
            Measurement(
                f"{name}, original logic: failing seeds of {seeds}",
                len(found["failing"]),
                "",
                target=">= 1",
                met=bool(found["failing"]),
                detail=f"seeds {found['failing']}; {found['perMinute']:.1f} schedules a minute",
            )
        )
        report.add(
            Measurement(
                f"{name}: every seed run again gives the same outcome and steps",
                found["secondPassSame"],
                f"of {seeds}",
                target=f"{seeds} of {seeds}",
                met=found["secondPassSame"] == seeds,
            )
        )
        if found["failing"]:
            report.add(
                Measurement(
                    f"{name}: seed {found['failing'][0]} fails again, same steps",
                    found["reproduced"],
                    f"of {repeats}",
                    target=f"{repeats} of {repeats}",
                    met=found["reproduced"] == repeats,
                )
            )
        report.add(
            Measurement(
                f"{name}, safe logic: failing seeds of {seeds}",
                len(found["safeFailing"]),
                "",
                target="0",
                met=not found["safeFailing"],
            )
        )
    report.data["exploration"] = exploration

    size = trace_size(work / "size", 200 if quick else 1000)
    report.data["traceSize"] = size
    report.add(
        Measurement(
            "trace size per 1,000 events (gzip)",
            round(size["perThousandEvents"] / 1024),
            "KiB",
            detail=f"{size['events']:,} events: {size['withEvents']:,} bytes; without them "
            f"{size['without']:,} bytes (the stack's state and code)",
        )
    )
    return report


def pipeline_seconds(directory: Path, seed: int | None, events: int, users: int) -> dict[str, Any]:
    environment = {"ESJOIN_SEED": str(seed)} if seed is not None else {}
    backend = own_embedded(directory, extra_env=environment, control_timeout=60)
    try:
        outputs = deploy_stage(
            backend, {"stage": "bench", "snapshot_horizon_seconds": 2, "snapshot_threshold": 20}, None
        )
        pipeline = Pipeline(backend, outputs)
        now = now_ms()
        batch = []
        for index in range(events):
            user = f"user-{index % users}"
            if index < users:
                batch.append(user_created(user, user, now - 60_000))
            else:
                batch.append((logged_in if index % 3 else order_submitted)(user, now - 60_000 + index))
        load = load_average()
        started = time.monotonic()
        pipeline.put_events(batch)
        assert_converged(pipeline, pipeline.log.users(), deadline=600)
        seconds = time.monotonic() - started
        result: dict[str, Any] = {"seconds": round(seconds, 2), "load": load}
        if seed is not None:
            result["steps"] = backend.control.schedule()["step"]
            result["traceBytes"] = len(backend.control.trace())
        return result
    finally:
        backend.stop()


def virtual_time(directory: Path) -> dict[str, Any]:
    exploration = Exploration(directory, "horizon", {"snapshot_horizon_seconds": 60, "snapshot_threshold": 5})
    exploration.prepare()

    def scenario(inputs: Inputs) -> None:
        for user in ("h-a", "h-b", "h-c"):
            now = inputs.clock_ms
            inputs.put_events([user_created(user, user, now)] + [order_submitted(user, now + i) for i in range(9)])

    started = time.monotonic()
    result = exploration.run_seed(scenario, 1, keep_trace=True)
    real = time.monotonic() - started
    assert result.trace is not None and not result.problems, result.problems
    from esjoin.emulator.aids.trace import read_trace

    trace = read_trace(result.trace)
    end = max(entry.get("t", 0) for entry in trace.entries)
    return {
        "realSeconds": round(real, 2),
        "virtualSeconds": round((end - CLOCK_START_MS) / 1000, 1),
        "steps": result.steps,
    }


def explore(directory: Path, scenario: str, seeds: int, repeats: int) -> dict[str, Any]:
    original = Exploration(directory / "original", "borig", {"snapshot_mode": "original"})
    original.prepare()
    started = time.monotonic()
    results = list(original.run(SCENARIOS[scenario], range(1, seeds + 1)))
    minutes = (time.monotonic() - started) / 60
    failing = [r for r in results if r.failed]
    again = list(original.run(SCENARIOS[scenario], range(1, seeds + 1)))  # every seed a second time
    same = sum((a.failed, a.steps) == (r.failed, r.steps) for a, r in zip(again, results, strict=True))
    reproduced = 0
    if failing:
        first = failing[0]
        for _ in range(repeats):
            again = original.run_seed(SCENARIOS[scenario], first.seed)
            reproduced += (again.problems, again.steps) == (first.problems, first.steps)
    safe = Exploration(directory / "safe", "bsafe", {"snapshot_mode": "safe"})
    safe_failing = [r.seed for r in safe.run(SCENARIOS[scenario], range(1, seeds + 1)) if r.failed]
    return {
        "seeds": seeds,
        "failing": [r.seed for r in failing],
        "perMinute": round(seeds / minutes, 1),
        "reproduced": reproduced,
        "secondPassSame": same,
        "repeats": repeats,
        "safeFailing": safe_failing,
        "steps": {r.seed: r.steps for r in results},
    }


def trace_size(directory: Path, events: int) -> dict[str, Any]:
    exploration = Exploration(directory, "size")
    exploration.prepare()
    users = 10

    def with_events(inputs: Inputs) -> None:
        now = inputs.clock_ms
        for start in range(0, events, 50):
            batch = []
            for index in range(start, min(events, start + 50)):
                user = f"s-{index % users}"
                first = index < users
                batch.append(user_created(user, user, now) if first else order_submitted(user, now + index))
            inputs.put_events(batch)

    full = exploration.run_seed(with_events, 1)
    empty = exploration.run_seed(lambda inputs: None, 1)
    assert not full.problems, full.problems
    return {
        "events": events,
        "withEvents": full.trace_bytes,
        "without": empty.trace_bytes,
        "perThousandEvents": round((full.trace_bytes - empty.trace_bytes) * 1000 / events),
        "steps": full.steps,
    }
