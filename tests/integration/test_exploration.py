"""Exploration: the stock scenarios under many seeds, each seed one interleaving on a deterministic
endpoint of its own (esjoin/testing/explore.py, docs/reproduce.md).

The original example's snapshot logic (SNAPSHOT_MODE=original) loses events in two ways, and the
exploration must find both: the stale, unconditional snapshot write that moves the watermark back
below events a trim deleted (`snapshot-race`), and the timestamp filter that skips younger events
below the new watermark (`late-events`). A failing seed fails every time it runs, a passing seed
passes every time, its trace replays exactly, and the safe mode passes every seed.
`--esjoin-explore K` sets how many seeds each scenario runs under.
"""

from __future__ import annotations

import pytest

from esjoin.testing.explore import SCENARIOS, Exploration, SeedResult
from esjoin.testing.reproduce import replay_trace

pytestmark = pytest.mark.embedded_only("runs deterministic endpoints of its own, one per seed")

REPEATS = 3  # a failing seed is run this many times more (docs/benchmarks.md: 20 out of 20)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Exploration:
    return Exploration(tmp_path_factory.mktemp("explore-original"), "xorig", {"snapshot_mode": "original"})


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Exploration:
    return Exploration(tmp_path_factory.mktemp("explore-safe"), "xsafe", {"snapshot_mode": "safe"})


def explore(exploration: Exploration, scenario: str, seeds: int) -> list[SeedResult]:
    return list(exploration.run(SCENARIOS[scenario], range(1, seeds + 1)))


@pytest.mark.parametrize("scenario", ["snapshot-race", "late-events"])
def test_exploration_finds_the_original_losses_and_a_seed_always_gives_the_same_outcome(
    scenario, original, esjoin_explore_seeds
):
    results = explore(original, scenario, esjoin_explore_seeds)
    failing = [r for r in results if r.failed]
    assert failing, (
        f"{scenario}: none of {len(results)} seeds found the original snapshot logic's loss "
        f"(steps per seed: {[r.steps for r in results]})"
    )
    first = failing[0]
    for _ in range(REPEATS):
        again = original.run_seed(SCENARIOS[scenario], first.seed)
        assert (again.problems, again.steps) == (first.problems, first.steps), (
            f"seed {first.seed} gave another run: {again.problems} in {again.steps} steps, "
            f"first {first.problems} in {first.steps} steps"
        )
    passing = next((r for r in results if not r.failed), None)
    if passing is not None:
        again = original.run_seed(SCENARIOS[scenario], passing.seed)
        assert not again.failed and again.steps == passing.steps, f"seed {passing.seed} failed on a second run"
    # and the failing seed's trace replays exactly, ending with the same loss
    assert first.trace is not None
    replayed = replay_trace(first.trace)
    assert replayed.exact, (replayed.divergence, replayed.difference)
    report = replayed.report["xorig"]
    assert any("expected" in line for line in report), report


@pytest.mark.parametrize("scenario", ["snapshot-race", "late-events"])
def test_the_safe_mode_survives_the_same_exploration(scenario, safe, esjoin_explore_seeds):
    results = explore(safe, scenario, esjoin_explore_seeds)
    failing = {r.seed: r.problems for r in results if r.failed}
    assert not failing, f"{scenario} lost events in safe mode under seeds {failing} (traces in {safe.workdir})"
