"""Deterministic mode: one seeded scheduler decides every step the endpoint takes, on a virtual clock.

Everything that acts inside the endpoint is an *actor*: a mapping's worker, one delivery (an
invocation and every AWS call its function makes), an asynchronous invocation, an outside request.
Exactly one actor runs at a time (it holds the baton). When it parks (wants to go on), waits (for a
condition or a virtual time) or finishes, and no actor just created has reached its first park, the
scheduler thread chooses the next one among the runnable ones with a seeded `random.Random`, and
writes the decision to the trace. Several invocations are in flight at once, as on AWS; each AWS call
one of them makes is a step granted in that seeded order, so a seed is an interleaving.

Time is virtual (epoch milliseconds): it moves 1 ms per step, and when nothing can run it jumps to the
next due actor (a batching window, a backoff, a visibility timeout, a delayed message, an injected
delay). The endpoint's process follows it through `time-machine` (time.time, datetime.now: moto's
timestamps included; time.monotonic stays real, so socket and worker timeouts do not); workers follow
it per invocation and per answered call (lambda_service/worker_program.py).

Two paces:
- `virtual` (replays, exploration): nothing waits on the wall clock; an idle endpoint with a timer
  pending jumps to it at once.
- `wall` (an endpoint driven live by an outside client, `esjoin emulator start --seed`): before a
  jump the scheduler gives outside requests a moment to arrive, and when idle the clock catches up
  with the wall clock, so a live client's "now" and the functions' agree. What happened is recorded,
  so the trace still replays exactly.

Replay (`follow`): the scheduler grants what the recorded trace granted, in order, injects each
recorded outside request when its grant comes, and reports the first decision that cannot be
followed (the divergence); from there on it chooses with its seed and feeds the remaining outside
requests at their recorded steps.

Lock order: the scheduler's condition is a leaf for everything but `ready` predicates, which read
plain attributes without locks (they are written only by the running actor, and read only while
none runs).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from esjoin.emulator.aids.trace import TraceRecorder

log = logging.getLogger("esjoin.schedule")

NEW, RUNNING, PARKED, WAITING, DONE = "new", "running", "parked", "waiting", "done"
PACE_WALL = "wall"
PACE_VIRTUAL = "virtual"
PACES = (PACE_WALL, PACE_VIRTUAL)
STEP_MS = 1  # the virtual clock moves this much per granted step
PCT_CHANGE_ODDS = 10  # PCT: on average one change point every this many AWS calls
SETTLE = "settle"  # in scripted inputs: admit what follows only once all before it has settled
WALL_GRACE_SECONDS = 0.05  # wall pace: how long outside requests may arrive before the clock jumps
CATCH_UP_MS = 1000  # wall pace: how far the virtual clock may fall behind the wall clock while idle
NEW_ACTOR_TIMEOUT_SECONDS = 30.0  # an actor created and never parked: a bug, reported loudly


@dataclass(eq=False)
class Actor:
    name: str
    state: str = NEW
    label: str = ""
    ready: Callable[[], bool] | None = None
    due_ms: int | None = None
    request: dict[str, Any] | None = None  # an outside request: what the trace records
    blobs: dict[str, bytes] = field(default_factory=dict)  # what its request names by hash
    recorded: bool = False  # its request is in the trace (written with its first grant)
    priority: float = 0.0  # PCT: the highest runnable priority runs (Scheduler._pick)
    created: float = field(default_factory=time.monotonic)
    granted: threading.Event = field(default_factory=threading.Event)

    def runnable(self, now_ms: int) -> bool:
        if self.state == PARKED:
            return True
        if self.state != WAITING:
            return False
        if self.due_ms is not None and self.due_ms <= now_ms:
            return True
        return bool(self.ready is not None and self.ready())


@dataclass
class Follow:
    """A recorded run's decisions, for replay."""

    decisions: list[dict[str, Any]]
    until_step: int | None = None
    position: int = 0
    divergence: dict[str, Any] | None = None
    pending_requests: list[dict[str, Any]] = field(default_factory=list)  # after a divergence

    def next(self) -> dict[str, Any] | None:
        return self.decisions[self.position] if self.position < len(self.decisions) else None


class Scheduler:
    def __init__(
        self,
        seed: int,
        *,
        clock_start_ms: int | None = None,
        pace: str = PACE_WALL,
        header: dict[str, Any] | None = None,
    ) -> None:
        if pace not in PACES:
            raise ValueError(f"pace must be one of {PACES}, got {pace!r}")
        self.seed = seed
        self.pace = pace
        self.now_ms = int(time.time() * 1000) if clock_start_ms is None else int(clock_start_ms)
        self.step = 0
        self.trace = TraceRecorder({"seed": seed, "clockStartMs": self.now_ms, "pace": pace, **(header or {})})
        self.injector: Callable[[dict[str, Any], Actor], None] | None = None  # replay: runs a recorded request
        self.replay_blobs: dict[str, bytes] = {}  # replay: the recorded trace's blobs
        self._choices = random.Random(f"esjoin-choices:{seed}")
        self._ids = random.Random(f"esjoin-ids:{seed}")
        self._cond = threading.Condition()
        self._actors: dict[str, Actor] = {}
        self._running: Actor | None = None
        self._counters: dict[str, int] = {}
        self._local = threading.local()
        self._follow: Follow | None = None
        self._inputs: list[Any] = []  # submitted, not yet admitted: (request, blobs), or SETTLE
        self._input_priority: float | None = None  # the next input's, drawn when it comes to the head
        self._input_actor: Actor | None = None  # the input admitted last (the next waits for its answer)
        self._changes = 0  # PCT: change points so far
        self._hold_internal = False  # after --until: only outside requests (the report's reads) run
        self._stopped = False
        self._travel: Any = None
        self._coordinates: Any = None
        self._original_uuid4: Callable[[], uuid.UUID] | None = None
        self._thread = threading.Thread(target=self._run, name="esjoin-scheduler", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Take over the process's clock and ids (before anything that reads them is built)."""
        import time_machine
        from moto.moto_api._internal import mock_random

        self._travel = time_machine.travel(self.now_ms / 1000, tick=False)
        self._coordinates = self._travel.start()
        mock_random.seed(self._ids.getrandbits(64))  # moto's ids: request ids, message ids, event ids
        self._original_uuid4 = uuid.uuid4
        uuid.uuid4 = self._uuid4  # type: ignore[assignment]

    def run(self) -> None:
        """Start deciding (after start(), once the front door has set the injector)."""
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            for actor in self._actors.values():
                actor.granted.set()  # nothing waits for a grant any more
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._original_uuid4 is not None:
            uuid.uuid4 = self._original_uuid4  # type: ignore[assignment]
            self._original_uuid4 = None
        if self._travel is not None:
            self._travel.stop()
            self._travel = None

    @property
    def stopped(self) -> bool:
        return self._stopped

    def follow(self, follow: Follow) -> None:
        """Replay a recorded run's decisions (before start())."""
        self._follow = follow

    @property
    def divergence(self) -> dict[str, Any] | None:
        return self._follow.divergence if self._follow else None

    # -- what actors call --------------------------------------------------------------------------

    def spawn(self, kind: str) -> Actor:
        """A new actor, named deterministically (`kind:n`). Called by the running actor (or before any
        runs): the scheduler decides nothing until the new actor's thread has parked or waited."""
        with self._cond:
            number = self._counters.get(kind, 0) + 1
            self._counters[kind] = number
            actor = Actor(f"{kind}:{number}", priority=self._choices.random())
            self._actors[actor.name] = actor
            return actor

    def arrive(self, label: str, request: dict[str, Any], blobs: dict[str, bytes] | None = None) -> Actor:
        """An outside request (live): a new actor, already parked, that runs when granted."""
        with self._cond:
            number = self._counters.get("ext", 0) + 1
            self._counters["ext"] = number
            actor = Actor(
                f"ext:{number}",
                state=PARKED,
                label=label,
                request=request,
                blobs=blobs or {},
                priority=self._choices.random(),
            )
            self._actors[actor.name] = actor
            self._cond.notify_all()
        self._await_grant(actor)
        return actor

    def park(self, actor: Actor, label: str) -> None:
        """`actor` wants to take a step now: give up the baton and wait for the grant."""
        self._block(actor, PARKED, label, None, None)

    def wait(
        self, actor: Actor, label: str, ready: Callable[[], bool] | None = None, due_ms: int | None = None
    ) -> None:
        """`actor` can go on when ready() or at virtual time due_ms (None: no timer)."""
        self._block(actor, WAITING, label, ready, due_ms)

    def sleep(self, seconds: float, label: str) -> None:
        """The running actor sleeps `seconds` of virtual time (others run meanwhile)."""
        actor = self.current()
        if actor is None:
            time.sleep(seconds)
            return
        self.wait(actor, label, due_ms=self.now_ms + max(0, round(seconds * 1000)))

    def wait_until(self, label: str, ready: Callable[[], bool], due_ms: int | None = None) -> bool:
        """The running actor waits for ready() (another actor's doing), or due_ms; returns ready()."""
        actor = self.current()
        if actor is None:
            return ready()
        if not ready():
            self.wait(actor, label, ready, due_ms)
        return ready()

    def call(self, name: str, label: str) -> Actor | None:
        """A running actor's function calls the endpoint (the X-Esjoin-Actor header named it): park the
        call until granted. None if no such actor is running (the caller treats it as outside)."""
        with self._cond:
            actor = self._actors.get(name)
            if actor is None or actor is not self._running:
                return None
        self.park(actor, label)
        return actor

    def finish(self, actor: Actor) -> None:
        with self._cond:
            actor.state = DONE
            self._actors.pop(actor.name, None)
            if self._running is actor:
                self._running = None
            self._cond.notify_all()
        if getattr(self._local, "actor", None) is actor:
            self._local.actor = None

    def current(self) -> Actor | None:
        """The actor the calling thread runs for, if it holds the baton."""
        actor = getattr(self._local, "actor", None)
        return actor if actor is not None and actor is self._running else None

    def done(self, actor: Actor) -> bool:
        return actor.state == DONE

    def note(self, entry: dict[str, Any]) -> None:
        """Record an observation (a delivery, a fault, a response) at the current step."""
        self.trace.add({"step": self.step, "t": self.now_ms, **entry})

    def new_id(self) -> int:
        """128 seeded bits (for ids drawn by the running actor)."""
        return self._ids.getrandbits(128)

    def submit(self, requests: list[Any]) -> None:
        """Scripted outside requests (`POST /_esjoin/schedule/inputs`): admitted one after the other, in
        order, each at a decision point the seed chooses, so when they arrive does not matter. A SETTLE
        item holds the ones after it until everything before it has settled (nothing can run, no timer).
        A script is one client: each request is admitted once the previous one has been answered."""
        with self._cond:
            self._inputs.extend(requests)
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        with self._cond:
            actors = sorted(self._actors.values(), key=_order)
            return {
                "seed": self.seed,
                "pace": self.pace,
                "step": self.step,
                "clockMs": self.now_ms,
                "running": self._running.name if self._running else None,
                "settled": self._settled_locked(),
                "actors": [{"name": a.name, "state": a.state, "label": a.label, "dueMs": a.due_ms} for a in actors],
                "divergence": self.divergence,
                "following": bool(self._follow and self._follow.divergence is None and self._follow.next()),
                "held": self._hold_internal,
                "inputsPending": len(self._inputs),
                "replayDone": self._replay_done_locked(),
            }

    def _replay_done_locked(self) -> bool:
        """A replay has done what it can: it holds at its last step, or it diverged and settled."""
        if self._follow is None or self._running is not None:
            return False
        if any(a.request is not None and a.state in (NEW, PARKED) for a in self._actors.values()):
            return False
        return self._hold_internal or (self._follow.divergence is not None and self._settled_locked())

    def settled(self) -> bool:
        """Nothing runs, nothing can run, no timer is pending and nothing recorded is left to feed."""
        with self._cond:
            return self._settled_locked()

    # -- inside ------------------------------------------------------------------------------------

    def _settled_locked(self) -> bool:
        if self._running is not None:
            return False
        for actor in self._actors.values():
            if actor.state in (NEW, PARKED) or actor.due_ms is not None or actor.runnable(self.now_ms):
                return False
        follow = self._follow
        if self._inputs:
            return False
        return not (follow and ((follow.divergence is None and follow.next()) or follow.pending_requests))

    def _block(
        self, actor: Actor, state: str, label: str, ready: Callable[[], bool] | None, due_ms: int | None
    ) -> None:
        with self._cond:
            actor.state, actor.label, actor.ready, actor.due_ms = state, label, ready, due_ms
            actor.granted.clear()
            if self._running is actor:
                self._running = None
            self._cond.notify_all()
        self._await_grant(actor)

    def _await_grant(self, actor: Actor) -> None:
        while not actor.granted.wait(0.5):
            if self._stopped:  # the endpoint is stopping: everything runs free to wind up
                break
        self._local.actor = actor

    def _uuid4(self) -> uuid.UUID:
        if self.current() is None and threading.current_thread() is not self._thread:
            assert self._original_uuid4 is not None
            return self._original_uuid4()
        return uuid.UUID(int=self._ids.getrandbits(128), version=4)

    def _move_clock(self, now_ms: int) -> None:
        self.now_ms = now_ms
        if self._coordinates is not None:
            self._coordinates.move_to(now_ms / 1000)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._running is not None or self._has_new():
                    self._cond.wait(1.0)
                    self._check_new()
                    continue
                try:
                    if not self._decide():
                        self._idle()
                except Exception:  # a bug: say so, and keep deciding (the actors would wait forever)
                    log.exception("the scheduler failed to take a decision at step %d", self.step)
                    self._cond.wait(1.0)

    def _has_new(self) -> bool:
        return any(a.state == NEW for a in self._actors.values())

    def _check_new(self) -> None:
        for actor in self._actors.values():
            if actor.state == NEW and time.monotonic() - actor.created > NEW_ACTOR_TIMEOUT_SECONDS:
                log.error("actor %s was created %.0f s ago and never parked", actor.name, NEW_ACTOR_TIMEOUT_SECONDS)
                actor.created = time.monotonic()

    def _candidates(self) -> list[Actor]:
        runnable = [a for a in self._actors.values() if a.runnable(self.now_ms)]
        if self._hold_internal:
            runnable = [a for a in runnable if a.request is not None]
        return sorted(runnable, key=_order)

    def _decide(self) -> bool:
        """Under the condition, nothing running: take one decision. False when there was none to take."""
        candidates = self._candidates()
        follow = self._follow
        if follow is not None and follow.divergence is None and not self._hold_internal:
            return self._follow_one(follow, candidates)
        if follow is not None and follow.pending_requests and self._feed_pending(follow, bool(candidates)):
            return True
        if self._inputs and self._inputs[0] is SETTLE and not candidates and not self._timers():
            self._inputs.pop(0)  # everything before the marker has settled: the next inputs may come
            return True
        previous = self._input_actor
        if (
            self._inputs
            and self._inputs[0] is not SETTLE
            and self.injector is not None
            and (previous is None or previous.state == DONE)
        ):
            # a script is one client: its next request once the previous one is answered, as one more
            # choice among the runnable actors, with a priority of its own
            if self._input_priority is None:
                self._input_priority = self._choices.random()
            best = self._pick(candidates) if candidates else None
            if best is None or self._input_priority > best.priority:
                request, blobs = self._inputs.pop(0)
                self._input_priority = None
                actor = self.spawn("ext")
                actor.request, actor.blobs = request, blobs
                self._input_actor = actor
                self.injector(request, actor)
                return True
            self._grant(best)
            return True
        if candidates:
            if self.pace == PACE_WALL and self._catch_up(candidates):
                return True
            self._grant(self._pick(candidates))
            return True
        return self._advance()

    def _pick(self, candidates: list[Actor]) -> Actor:
        """PCT (Burckhardt et al., "A Randomized Scheduler with Probabilistic Guarantees of Finding
        Bugs", ASPLOS 2010): every actor has a seeded random priority and the highest runnable one runs;
        at seeded random AWS calls (one in PCT_CHANGE_ODDS) the actor making it drops below every actor
        not dropped yet, above those dropped before. So a snapshot run dropped between its read and its
        write stays paused while another run and its trim go by. Measured on the snapshot-race scenario
        (esjoin/testing/explore.py): 4 failing seeds of 10 this way, 0 of 10 when each drop went below
        all earlier ones (later drops of the trim's steps let the paused run go on too early)."""
        return max(candidates, key=lambda actor: actor.priority)

    def _catch_up(self, candidates: list[Actor]) -> bool:
        """Wall pace: when only outside requests wait (the endpoint was idle), the virtual clock first
        catches up with the wall clock, so a live client's "now" and the functions' agree. Recorded as
        an advance, so a replay repeats it."""
        if self._hold_internal or any(a.request is None for a in candidates):
            return False
        wall = _wall_ms()
        if wall <= self.now_ms + CATCH_UP_MS:
            return False
        self._record_advance(wall)
        return True

    def _timers(self) -> list[int]:
        return [a.due_ms for a in self._actors.values() if a.state == WAITING and a.due_ms is not None]

    def _advance(self) -> bool:
        if self._hold_internal:
            return False
        timers = self._timers()
        if not timers:
            return False
        if self.pace == PACE_WALL:
            arrived = self._cond.wait_for(
                lambda: self._stopped or self._running or self._external_parked(), WALL_GRACE_SECONDS
            )
            if arrived:
                return True
            # in that moment a condition may have come true (an actor's own doing), or time moved on
            if self._candidates():
                return True
        self._record_advance(max(self.now_ms, min(timers)))
        return True

    def _external_parked(self) -> bool:
        return any(a.request is not None and a.state == PARKED for a in self._actors.values())

    def _idle(self) -> None:
        """Nothing can run and no timer is pending: wait for an outside request or a change."""
        self._cond.wait(1.0)

    def _record_advance(self, now_ms: int) -> None:
        self.step += 1
        self._move_clock(now_ms)
        self.trace.add({"step": self.step, "t": self.now_ms, "advance": True})

    def _grant(self, actor: Actor) -> None:
        self.step += 1
        self._move_clock(self.now_ms + STEP_MS)
        entry: dict[str, Any] = {"step": self.step, "t": self.now_ms, "grant": actor.name, "label": actor.label}
        if actor.request is not None and not actor.recorded:
            for digest in sorted(actor.blobs):
                self.trace.blob(actor.blobs[digest])
            entry["request"] = actor.request
            actor.recorded = True
        self.trace.add(entry)
        actor.state = RUNNING
        actor.due_ms = None
        actor.ready = None
        if _is_call(actor.label) and self._choices.randrange(PCT_CHANGE_ODDS) == 0:
            # a change point: this actor drops below every actor not yet dropped, and above the ones
            # dropped before it (so the first one dropped stays paused until nothing else can run)
            self._changes += 1
            actor.priority = -1.0 + self._changes * 1e-6
        self._running = actor
        actor.granted.set()

    # -- replay ------------------------------------------------------------------------------------

    def _follow_one(self, follow: Follow, candidates: list[Actor]) -> bool:
        expected = follow.next()
        if expected is None or (follow.until_step is not None and expected["step"] > follow.until_step):
            # the recording's end (or --until): from here on only outside requests (a report's reads) run
            self._hold_internal = True
            return self._decide()
        if "advance" in expected:
            # a timer's jump came when nothing could run; a wall-pace catch-up when only outside requests
            # (and calls of functions they invoked) waited
            internal = [a for a in candidates if a.request is None]
            if internal:
                return self._diverge(follow, expected, f"{internal[0].name} could run: {internal[0].label}")
            follow.position += 1
            self._record_advance(int(expected["t"]))
            return True
        name = expected["grant"]
        actor = self._actors.get(name)
        if actor is None and "request" in expected and self.injector is not None:
            actor = self.spawn_named(name, expected["request"])
            self.injector(expected["request"], actor)
            return True  # its thread parks it; the decision is taken then
        if actor is None or actor not in candidates:
            seen = ", ".join(f"{a.name} ({a.label})" for a in candidates) or "nothing runnable"
            return self._diverge(follow, expected, seen)
        if actor.label != expected.get("label"):
            return self._diverge(follow, expected, f"{actor.name} ({actor.label})")
        follow.position += 1
        self._grant(actor)
        return True

    def spawn_named(self, name: str, request: dict[str, Any]) -> Actor:
        actor = Actor(name, request=request)
        kind, _, number = name.partition(":")
        if number.isdigit():
            self._counters[kind] = max(self._counters.get(kind, 0), int(number))
        self._actors[name] = actor
        return actor

    def _diverge(self, follow: Follow, expected: dict[str, Any], seen: str) -> bool:
        follow.divergence = {
            "step": self.step + 1,
            "expected": {k: v for k, v in expected.items() if k != "request"},
            "actual": seen,
        }
        if "request" in expected:
            follow.divergence["expected"]["request"] = _request_summary(expected["request"])
        follow.pending_requests = [
            d for d in follow.decisions[follow.position :] if "request" in d and d["grant"] not in self._actors
        ]
        log.warning("replay diverged at step %d: expected %s, found %s", self.step + 1, expected, seen)
        self.trace.add({"step": self.step, "t": self.now_ms, "divergence": follow.divergence})
        return True

    def _feed_pending(self, follow: Follow, busy: bool) -> bool:
        """After a divergence: feed the next recorded outside request at its step, or when idle."""
        upcoming = follow.pending_requests[0]
        if busy and upcoming["step"] > self.step:
            return False
        follow.pending_requests.pop(0)
        if self.injector is None:
            return False
        actor = self.spawn_named(upcoming["grant"], upcoming["request"])
        self.injector(upcoming["request"], actor)
        return True


def _is_call(label: str) -> bool:
    """An AWS call (`service.Operation`): where PCT puts its change points."""
    return "." in label and " " not in label


def _order(actor: Actor) -> tuple[str, int, str]:
    kind, _, number = actor.name.partition(":")
    return (kind, int(number) if number.isdigit() else 0, number)


def _wall_ms() -> int:
    import time_machine

    if time_machine.escape_hatch.is_travelling():
        return int(time_machine.escape_hatch.time.time() * 1000)
    return int(time.time() * 1000)


def _request_summary(request: dict[str, Any]) -> str:
    return f"{request.get('method', '')} {request.get('path', '')} ({request.get('service', 'unsigned')})"
