"""The deterministic scheduler's own logic (esjoin/emulator/aids/schedule.py), with plain threads as
actors: one actor runs at a time, a seed is an interleaving, timers jump the virtual clock, and a
replay follows a recorded run or reports where it cannot. (The endpoint wired to it: see
tests/emulator/test_deterministic.py.) The clock is not installed here (no start()): only run()."""

from __future__ import annotations

import threading

import pytest

from esjoin.emulator.aids.schedule import PACE_VIRTUAL, Follow, Scheduler
from esjoin.emulator.aids.trace import parse_trace

CLOCK = 1_800_000_000_000


def run_actors(scheduler: Scheduler, plan: dict[str, list[str]], sleeps: dict[str, float] | None = None) -> list[str]:
    """Each actor parks once per step of its plan and appends what it did; returns the order."""
    done: list[str] = []
    lock = threading.Lock()
    actors = {name: scheduler.spawn(name) for name in plan}

    def body(name: str) -> None:
        actor = actors[name]
        for step in plan[name]:
            scheduler.park(actor, step)
            with lock:
                done.append(f"{actor.name}/{step}")
            if sleeps and step in sleeps:
                scheduler.sleep(sleeps[step], f"{step} sleeps")
        scheduler.finish(actor)

    threads = [threading.Thread(target=body, args=(name,)) for name in plan]
    for thread in threads:
        thread.start()
    scheduler.run()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "an actor was never granted its steps"
    scheduler.stop()
    return done


def new(seed: int) -> Scheduler:
    return Scheduler(seed, clock_start_ms=CLOCK, pace=PACE_VIRTUAL)


PLAN = {"a": ["a1", "a2", "a3"], "b": ["b1", "b2", "b3"], "c": ["c1", "c2"]}


def test_a_seed_is_one_interleaving_and_another_seed_another():
    orders = {seed: run_actors(new(seed), PLAN) for seed in (1, 1, 2, 3, 4)}
    assert run_actors(new(1), PLAN) == orders[1]
    assert len({tuple(order) for order in orders.values()}) > 1, "every seed gave the same interleaving"
    for order in orders.values():  # each actor's own steps stay in its order
        for name, steps in PLAN.items():
            assert [s.split("/")[1] for s in order if s.startswith(name + ":")] == steps


def test_the_same_seed_writes_the_same_trace_byte_for_byte():
    first, second = new(9), new(9)
    run_actors(first, PLAN)
    run_actors(second, PLAN)
    assert first.trace.compressed() == second.trace.compressed()
    other = new(10)
    run_actors(other, PLAN)
    assert other.trace.digest() != first.trace.digest()


def test_a_sleeping_actor_lets_the_others_run_and_the_clock_jumps_to_its_wake_up():
    scheduler = new(3)
    order = run_actors(scheduler, {"slow": ["s1", "s2"], "fast": ["f1", "f2", "f3"]}, sleeps={"s1": 60.0})
    assert order.index("slow:1/s2") > order.index("fast:1/f3"), order
    assert scheduler.now_ms >= CLOCK + 60_000, "the clock did not jump to the sleeper's wake-up"
    advances = [line for line in scheduler.trace.lines() if b'"advance":true' in line]
    assert len(advances) == 1


def test_a_replay_follows_the_recorded_decisions_and_reports_a_divergence():
    recorded = new(5)
    order = run_actors(recorded, PLAN)
    trace = parse_trace(recorded.trace.compressed())

    follower = new(999)  # another seed: only following the recording gives the same order
    follower.follow(Follow(trace.decisions()))
    assert run_actors(follower, PLAN) == order
    assert follower.divergence is None

    changed = new(5)  # "a code change": actor c takes one step fewer
    changed.follow(Follow(trace.decisions()))
    run_actors(changed, {**PLAN, "c": ["c1"]})
    divergence = changed.divergence
    assert divergence is not None, "a run that cannot follow its recording must say where"
    assert divergence["expected"]["grant"].startswith(("a:", "b:", "c:"))


def test_a_wait_for_a_condition_is_granted_once_it_holds():
    scheduler = new(1)
    flag = {"set": False}
    log: list[str] = []
    waiter, setter = scheduler.spawn("waiter"), scheduler.spawn("setter")

    def wait_side() -> None:
        scheduler.wait(waiter, "wait for the flag", ready=lambda: flag["set"])
        log.append("woke")
        scheduler.finish(waiter)

    def set_side() -> None:
        scheduler.park(setter, "set the flag")
        flag["set"] = True
        log.append("set")
        scheduler.finish(setter)

    threads = [threading.Thread(target=wait_side), threading.Thread(target=set_side)]
    for thread in threads:
        thread.start()
    scheduler.run()
    for thread in threads:
        thread.join(10)
    scheduler.stop()
    assert log == ["set", "woke"]
    assert scheduler.settled()


@pytest.mark.parametrize("pace", ["wall", "virtual"])
def test_settled_means_nothing_runnable_and_no_timer(pace):
    scheduler = Scheduler(1, clock_start_ms=CLOCK, pace=pace)
    assert scheduler.settled()
    actor = scheduler.spawn("x")
    assert not scheduler.settled(), "an actor created and not yet parked is work to come"
    scheduler.finish(actor)
    assert scheduler.settled()
