"""The restart state machine (supervision/restart/machine.py): tables, pure rules, a simulated
runner.

- ROWS has at least one row for every ``# OLD -> NEW`` branch in restart.py (checked against
  the source, so a new branch without a row fails), and every (state, event type) pair
  without a row must raise IllegalTransition;
- the pure rules: backoff, crash-loop cooldown, the start window, JSON, resume actions;
- a hypothesis RuleBasedStateMachine plays the runner (time passes, the agent crashes,
  steps succeed or fail, the owner asks) and checks the promises the module makes: no more
  than K starts in any window W, one page per (key, failure class) per stable period, a
  valid machine at every step, and an agent that stays up gets back to IDLE.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import pytest
from hypothesis import event as note
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from netsky_shared.errors import IllegalTransition
from netskyd.supervision.restart import machine as restart
from netskyd.supervision.restart.machine import (
    ACTIVE,
    PARKED,
    Action,
    ArchiveMarkers,
    AwaitReady,
    Budget,
    Cancelled,
    Claim,
    Claimed,
    DeliverHandoff,
    Event,
    Gone,
    HandedOff,
    Machine,
    Page,
    Ready,
    Requested,
    RestartFinished,
    RestartStarted,
    Spawn,
    Spawned,
    State,
    StepFailed,
    TearDown,
    Tick,
    TornDown,
    Verified,
    Verify,
    Wake,
    WriteMarker,
    backoff_s,
    crashloop_cooldown_s,
    handoff_envelope_id,
    next_allowed_start,
    recent_starts,
    resume_actions,
    step,
)

pytestmark = pytest.mark.timeout(60)

#: A small budget: K=3 starts in W=100 s, three attempts, verified after 5 s.
B = Budget(
    backoff_base_s=1.0,
    backoff_cap_s=20.0,
    jitter=0.2,
    max_attempts=3,
    giveup_cooldown_s=200.0,
    crashloop_restarts=3,
    crashloop_window_s=100.0,
    crashloop_cooldown_s=150.0,
    crashloop_cooldown_cap_s=600.0,
    stable_after_s=300.0,
    verify_s=5.0,
    step_deadline_s=60.0,
)
#: A second shape: cooldown shorter than the window (retry_at comes from the window),
#: K=2, a single retry before GAVE_UP, a stable period shorter than the window.
B2 = Budget(
    backoff_base_s=5.0,
    backoff_cap_s=40.0,
    jitter=0.5,
    max_attempts=2,
    giveup_cooldown_s=100.0,
    crashloop_restarts=2,
    crashloop_window_s=50.0,
    crashloop_cooldown_s=10.0,
    crashloop_cooldown_cap_s=80.0,
    stable_after_s=40.0,
    verify_s=30.0,
    step_deadline_s=45.0,
)

T0 = 10_000.0
RID = "r-1"
RID2 = "r-2"

#: Every event class restart.py declares (a new one must get an example and rows).
EVENT_TYPES: tuple[type, ...] = typing.get_args(restart.Event)
EXAMPLE_EVENTS: dict[type, Event] = {
    Gone: Gone(RID2, "exit status 3", "exit-3"),
    # force=True: the most permissive request; it still may not land where no row says so
    Requested: Requested(RID2, "h", "owner", force=True),
    Claimed: Claimed("h"),
    TornDown: TornDown(),
    Spawned: Spawned(),
    Ready: Ready(),
    HandedOff: HandedOff(),
    Verified: Verified(),
    StepFailed: StepFailed("spawn-failed", "tmux said no"),
    Cancelled: Cancelled("netskyctl down"),
    Tick: Tick(),
}


def mk(state: State = State.IDLE, agent: str = "agent0", **kw: Any) -> Machine:
    """A machine in ``state`` with the fields a runner would have set to get there."""
    base: dict[str, Any] = {"since": T0 - 10.0}
    if state is not State.IDLE:
        base.update(restart_id=RID, cause="crash", reason="exit status 3")
    if state in PARKED:
        base.update(retry_at=T0 + 10.0, failure="exit-3")
    if state is State.HANDING_OFF:
        base.update(handoff="h")
    base.update(kw)
    return Machine(agent, state, **base)


# ----- the table ---------------------------------------------------------------------------

# The branch labels, verbatim from restart.py.
L_GONE_IDLE = "IDLE -> CLAIMED (or -> CRASH_LOOP when the budget is spent)"
L_GONE_NOOP = "CLAIMED/TEARING_DOWN/FAILED/GAVE_UP/CRASH_LOOP -> same: the restart owns it already"
L_GONE_FAIL = "SPAWNING/AWAITING_READY/HANDING_OFF/VERIFYING -> FAILED: the new session died"
L_REQUESTED = "IDLE -> CLAIMED; FAILED/GAVE_UP/CRASH_LOOP -> CLAIMED (the owner asked)"
L_STEP_FAILED = "CLAIMED/TEARING_DOWN/SPAWNING/AWAITING_READY/HANDING_OFF/VERIFYING -> FAILED"
L_CLAIMED = "CLAIMED -> TEARING_DOWN"
L_TORN_DOWN = "TEARING_DOWN -> SPAWNING"
L_SPAWNED = "SPAWNING -> AWAITING_READY"
L_READY_HANDOFF = "AWAITING_READY -> HANDING_OFF"
L_READY_VERIFY = "AWAITING_READY -> VERIFYING (no handoff: a clone or agentinfinity)"
L_HANDED_OFF = "HANDING_OFF -> VERIFYING"
L_VERIFIED = "VERIFYING -> IDLE: verified; markers archived, the attempt count cleared"
L_GAVE_UP = "(any step) -> GAVE_UP: attempts spent; page, then wait out the cooldown"
L_FAILED = "(any step) -> FAILED: retry after a jittered exponential backoff"
L_STABLE = "IDLE -> IDLE: stable for stable_after_s; loop streak and paged classes forgotten"
L_WINDOW = "IDLE -> IDLE: old starts leave the window"
L_WAITING = "FAILED/GAVE_UP/CRASH_LOOP -> same: still waiting"
L_RETRY = "FAILED/GAVE_UP/CRASH_LOOP -> CLAIMED: the wait is over, try again (budget permitting)"
L_STUCK = "(any active step) -> FAILED: no answer within step_deadline_s"
L_WORKING = "(any active step) -> same: still working"
L_CANCEL_IDLE = "IDLE -> IDLE: nothing to cancel"
L_CANCEL = "(any other) -> IDLE: cancelled by the owner; its markers are moot now"


@dataclass(frozen=True)
class Like:
    """An expected action of type ``type`` whose listed fields match (dicts: as a subset).

    ``has`` lists substrings a string field must contain, e.g. a Page subject.
    """

    type: type
    fields: Mapping[str, object] = field(default_factory=dict)
    has: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def check(self, action: Action) -> None:
        assert type(action) is self.type, (action, self.type)
        for name, want in self.fields.items():
            got = getattr(action, name)
            if isinstance(want, dict):
                assert {k: got[k] for k in want} == want, (name, got)
            else:
                assert got == want, (name, got, want)
        for name, parts in self.has.items():
            for part in parts:
                assert part in getattr(action, name), (name, part, action)


@dataclass(frozen=True)
class Row:
    """One labelled transition: (machine, event, now, budget) -> (state, actions, fields)."""

    id: str
    labels: tuple[str, ...]
    m: Machine
    event: Event
    state: State
    #: Exactly these actions, in order: an Action instance compares equal, a Like by fields.
    actions: tuple[Action | Like, ...]
    #: Fields of the new machine.
    fields: Mapping[str, object] = field(default_factory=dict)
    now: float = T0
    budget: Budget = B
    #: Anything else to assert on (new machine, actions).
    check: Callable[[Machine, list[Action]], None] | None = None


def _backoff_at(attempts: int, rid: str = RID, now: float = T0, b: Budget = B) -> float:
    return now + backoff_s(b, attempts, rid)


def _failed_row(
    id: str,
    labels: tuple[str, ...],
    m: Machine,
    event: Event,
    failure: str,
    now: float = T0,
    **kw: Any,
) -> Row:
    """A row that ends in FAILED: the attempt is recorded, a backoff Wake follows."""
    attempt = m.attempts + 1
    retry_at = _backoff_at(attempt, m.restart_id or m.agent, now)
    return Row(
        id,
        (*labels, L_FAILED),
        m,
        event,
        State.FAILED,
        (RestartFinished(m.restart_id or "", attempt, "failed", failure), Wake(retry_at)),
        {"attempts": attempt, "failure": failure, "retry_at": retry_at, "since": now},
        now=now,
        **kw,
    )


def _started(rid: str, attempt: int, agent: str = "agent0") -> tuple[Action, ...]:
    return (RestartStarted(rid, attempt), Claim(agent))


def _backoff_in_range(lo: float, hi: float) -> Callable[[Machine, list[Action]], None]:
    def check(m: Machine, _: list[Action]) -> None:
        assert m.retry_at is not None and lo <= m.retry_at - T0 <= hi, m.retry_at

    return check


def _crashloop_marker(loops: int, retry_at: float, failure: str, in_window: int) -> Like:
    entry = {
        "agent": "agent0",
        "since": T0,
        "failure": failure,
        "loops": loops,
        "retry_at": retry_at,
        "restarts_in_window": in_window,
        "window_s": B.crashloop_window_s,
    }
    return Like(WriteMarker, {"name": "crashloop", "entry": entry})


def _crash_page(failure: str) -> Like:
    return Like(
        Page,
        {"key": "agent0:crash-loop"},
        {"subject": ("agent0", "crash-looping", f"({failure})")},
    )


def _gave_up_rows() -> list[Row]:
    """(any step) -> GAVE_UP, reached by every road: StepFailed, Gone, a stuck step."""
    at_max: dict[str, Any] = {"attempts": B.max_attempts - 1, "failure": "exit-3"}
    retry_at = T0 + B.giveup_cooldown_s
    page = Like(
        Page,
        {"key": "agent0:gave-up"},
        {"subject": ("agent0", "gave up after 3 attempts", "(ready-timeout)")},
    )

    def marker(failure: str) -> Like:
        entry = {"agent": "agent0", "failure": failure, "attempts": 3, "retry_at": retry_at}
        return Like(WriteMarker, {"name": "gave-up", "entry": entry})

    after = {"attempts": 3, "retry_at": retry_at, "since": T0}
    return [
        Row(
            "gave-up-after-step-failed",
            (L_STEP_FAILED, L_GAVE_UP),
            mk(State.AWAITING_READY, **at_max),
            StepFailed("ready-timeout", "agent0 not ready in 120s"),
            State.GAVE_UP,
            (
                RestartFinished(RID, 3, "failed", "ready-timeout"),
                marker("ready-timeout"),
                page,
                Wake(retry_at),
            ),
            {**after, "failure": "ready-timeout", "paged": ("gave-up:ready-timeout",)},
        ),
        Row(
            "gave-up-pages-once-per-failure-class",
            (L_STEP_FAILED, L_GAVE_UP),
            mk(State.AWAITING_READY, **at_max, paged=("gave-up:ready-timeout",)),
            StepFailed("ready-timeout", "agent0 not ready in 120s"),
            State.GAVE_UP,
            (
                RestartFinished(RID, 3, "failed", "ready-timeout"),
                marker("ready-timeout"),
                Wake(retry_at),
            ),
            {**after, "paged": ("gave-up:ready-timeout",)},
        ),
        Row(
            "gave-up-new-failure-class-pages-again",
            (L_STEP_FAILED, L_GAVE_UP),
            mk(State.AWAITING_READY, **at_max, paged=("gave-up:exit-3",)),
            StepFailed("ready-timeout", "agent0 not ready in 120s"),
            State.GAVE_UP,
            (
                RestartFinished(RID, 3, "failed", "ready-timeout"),
                marker("ready-timeout"),
                page,
                Wake(retry_at),
            ),
            {**after, "paged": ("gave-up:exit-3", "gave-up:ready-timeout")},
        ),
        Row(
            "gave-up-after-gone-while-verifying",
            (L_GONE_FAIL, L_GAVE_UP),
            mk(State.VERIFYING, **at_max),
            Gone(RID2, "exit status 3", "exit-3"),
            State.GAVE_UP,
            (
                RestartFinished(RID, 3, "failed", "exit-3"),
                marker("exit-3"),
                Like(Page, {"key": "agent0:gave-up"}, {"subject": ("(exit-3)",)}),
                Wake(retry_at),
            ),
            {**after, "restart_id": RID},
        ),
        Row(
            "gave-up-after-stuck-step",
            (L_STUCK, L_GAVE_UP),
            mk(State.SPAWNING, since=T0 - B.step_deadline_s, **at_max),
            Tick(),
            State.GAVE_UP,
            (
                RestartFinished(RID, 3, "failed", "stuck-spawning"),
                marker("stuck-spawning"),
                Like(Page, {"key": "agent0:gave-up"}, {"subject": ("(stuck-spawning)",)}),
                Wake(retry_at),
            ),
            after,
        ),
        Row(
            "gave-up-again-after-a-failed-retry",
            (L_STEP_FAILED, L_GAVE_UP),
            mk(State.CLAIMED, attempts=3, paged=("gave-up:exit-3",)),
            StepFailed("exit-3", "claim failed"),
            State.GAVE_UP,
            (
                RestartFinished(RID, 4, "failed", "exit-3"),
                Like(WriteMarker, {"name": "gave-up", "entry": {"attempts": 4}}),
                Wake(retry_at),
            ),
            {"attempts": 4, "retry_at": retry_at},
        ),
    ]


def _rows() -> list[Row]:
    full = (T0 - 90.0, T0 - 50.0, T0 - 10.0)  # K=3 starts inside W=100
    rows: list[Row] = [
        # --- Gone
        Row(
            "gone-idle-agent0-starts",
            (L_GONE_IDLE,),
            mk(State.IDLE, starts=(T0 - 150.0, T0 - 50.0), last_ok_at=T0 - 40.0),
            Gone(RID, "exit status 3", "exit-3"),
            State.CLAIMED,
            _started(RID, 1),
            {
                "restart_id": RID,
                "cause": "crash",
                "reason": "exit status 3",
                "failure": "exit-3",
                "handoff": None,
                "clones": None,
                "attempts": 0,
                "retry_at": None,
                "since": T0,
                "starts": (T0 - 50.0, T0),  # the old start left the window
            },
        ),
        Row(
            "gone-idle-clone-starts",
            (L_GONE_IDLE,),
            mk(State.IDLE, agent="agent2", starts=full[1:]),
            Gone(RID, "vanished", "vanished"),
            State.CLAIMED,
            _started(RID, 1, "agent2"),
            {"starts": (*full[1:], T0)},
        ),
        Row(
            "gone-idle-with-k-starts-in-window-crash-loops",
            (L_GONE_IDLE,),
            mk(State.IDLE, starts=full, last_ok_at=T0 - 5.0),
            Gone(RID, "exit status 3", "exit-3"),
            State.CRASH_LOOP,
            (
                _crashloop_marker(1, T0 + 150.0, "exit-3", 3),
                _crash_page("exit-3"),
                Wake(T0 + 150.0),
            ),
            {
                "loops": 1,
                "retry_at": T0 + 150.0,
                "since": T0,
                "paged": ("crash-loop:exit-3",),
                "attempts": 0,
                "starts": full,
            },
        ),
        Row(
            "gone-idle-start-exactly-w-ago-is-outside-the-window",
            (L_GONE_IDLE,),
            mk(State.IDLE, starts=(T0 - 100.0, T0 - 50.0, T0 - 10.0)),
            Gone(RID, "exit status 3", "exit-3"),
            State.CLAIMED,
            _started(RID, 1),
            {"starts": (T0 - 50.0, T0 - 10.0, T0)},
        ),
        Row(
            "crash-loop-pages-once-per-failure-class-cooldown-doubles",
            (L_GONE_IDLE,),
            mk(State.IDLE, starts=full, loops=1, paged=("crash-loop:exit-3",)),
            Gone(RID, "exit status 3", "exit-3"),
            State.CRASH_LOOP,
            (_crashloop_marker(2, T0 + 300.0, "exit-3", 3), Wake(T0 + 300.0)),
            {"loops": 2, "retry_at": T0 + 300.0, "paged": ("crash-loop:exit-3",)},
        ),
        Row(
            "crash-loop-cooldown-capped",
            (L_GONE_IDLE,),
            mk(State.IDLE, starts=full, loops=5, paged=("crash-loop:killed",)),
            Gone(RID, "killed", "exit-3"),
            State.CRASH_LOOP,
            (
                _crashloop_marker(6, T0 + 600.0, "exit-3", 3),
                _crash_page("exit-3"),
                Wake(T0 + 600.0),
            ),
            {"loops": 6, "paged": ("crash-loop:killed", "crash-loop:exit-3")},
        ),
        Row(
            "crash-loop-waits-for-the-window-when-cooldown-is-shorter",
            (L_GONE_IDLE,),
            mk(State.IDLE, starts=(T0 - 20.0, T0 - 5.0)),
            Gone(RID, "exit status 3", "exit-3"),
            State.CRASH_LOOP,
            (
                Like(WriteMarker, {"name": "crashloop", "entry": {"retry_at": T0 + 30.0}}),
                Like(Page, {"key": "agent0:crash-loop"}),
                Wake(T0 + 30.0),  # oldest start + W, later than now + cooldown (T0 + 10)
            ),
            {"retry_at": T0 + 30.0, "loops": 1},
            budget=B2,
        ),
    ]
    for s in (State.CLAIMED, State.TEARING_DOWN, *sorted(PARKED)):
        rows.append(
            Row(
                f"gone-{s.value}-noop",
                (L_GONE_NOOP,),
                mk(s),
                Gone(RID2, "exit status 1", "exit-1"),
                s,
                (),
                {"since": T0 - 10.0, "restart_id": RID, "attempts": 0},
                check=_unchanged(mk(s)),
            )
        )
    for s in (State.SPAWNING, State.AWAITING_READY, State.HANDING_OFF, State.VERIFYING):
        rows.append(
            _failed_row(
                f"gone-{s.value}-fails",
                (L_GONE_FAIL,),
                mk(s),
                Gone(RID2, "exit status 1", "killed"),
                "killed",
                check=lambda m2, _, s=s: _has_reason(m2, f"died while {s.value}", "exit status 1"),
            )
        )
    # --- Requested
    rows += [
        Row(
            "requested-idle-agent0",
            (L_REQUESTED,),
            mk(State.IDLE, loops=1, paged=("crash-loop:exit-3",), failure="exit-3"),
            Requested(RID2, "handoff text", "agent0", clones=4),
            State.CLAIMED,
            _started(RID2, 1),
            {
                "restart_id": RID2,
                "cause": "planned",
                "reason": "restart requested by agent0",
                "handoff": "handoff text",
                "clones": 4,
                "attempts": 0,
                "failure": None,
                "loops": 1,
                "starts": (),  # a planned first attempt neither needs nor spends budget
            },
        ),
        Row(
            "requested-idle-budget-spent-still-starts",
            (L_REQUESTED,),
            mk(State.IDLE, starts=(T0 - 150.0, *full)),
            Requested(RID2, "h", "agent0"),
            State.CLAIMED,
            _started(RID2, 1),
            {"cause": "planned", "handoff": "h", "restart_id": RID2, "starts": full},
        ),
        Row(
            "requested-idle-force",
            (L_REQUESTED,),
            mk(State.IDLE, starts=full),
            Requested(RID2, "h", "owner", force=True),
            State.CLAIMED,
            _started(RID2, 1),
            {"starts": full},
        ),
    ]
    for s in sorted(PARKED):
        rows.append(
            Row(
                f"requested-force-from-{s.value}",
                (L_REQUESTED,),
                mk(
                    s,
                    attempts=2,
                    retry_at=T0 + 1000.0,
                    starts=full,
                    loops=2,
                    paged=("crash-loop:exit-3",),
                ),
                Requested(RID2, "h", "owner", clones=1, force=True),
                State.CLAIMED,
                _started(RID2, 1),
                {
                    "restart_id": RID2,
                    "attempts": 0,
                    "failure": None,
                    "retry_at": None,
                    "handoff": "h",
                    "clones": 1,
                    "cause": "planned",
                    "reason": "restart requested by owner",
                    "loops": 2,
                    "paged": ("crash-loop:exit-3",),
                    "starts": full,
                },
            )
        )
    # --- StepFailed (-> FAILED below max_attempts)
    for s in sorted(ACTIVE):
        rows.append(
            _failed_row(
                f"step-failed-{s.value}",
                (L_STEP_FAILED,),
                mk(s, handoff="h"),
                StepFailed("spawn-failed", "tmux said no"),
                "spawn-failed",
                check=_backoff_in_range(0.8, 1.2),
            )
        )
    rows.append(
        _failed_row(
            "step-failed-second-attempt-backs-off-longer",
            (L_STEP_FAILED,),
            mk(State.SPAWNING, attempts=1),
            StepFailed("spawn-failed", "tmux said no"),
            "spawn-failed",
            check=_backoff_in_range(1.6, 2.4),
        )
    )
    # --- the happy steps
    rows += [
        Row(
            "claimed-agent0",
            (L_CLAIMED,),
            mk(State.CLAIMED),
            Claimed("synthetic handoff"),
            State.TEARING_DOWN,
            (TearDown("agent0", True),),
            {"handoff": "synthetic handoff", "since": T0},
        ),
        Row(
            "claimed-clone",
            (L_CLAIMED,),
            mk(State.CLAIMED, agent="agent3"),
            Claimed(None),
            State.TEARING_DOWN,
            (TearDown("agent3", False),),
            {"handoff": None},
        ),
        Row(
            "torn-down-agent0",
            (L_TORN_DOWN,),
            mk(State.TEARING_DOWN, clones=4),
            TornDown(),
            State.SPAWNING,
            (Spawn("agent0", True, 4),),
            {"since": T0},
        ),
        Row(
            "torn-down-agentinfinity",
            (L_TORN_DOWN,),
            mk(State.TEARING_DOWN, agent="agentinfinity"),
            TornDown(),
            State.SPAWNING,
            (Spawn("agentinfinity", False, None),),
        ),
        Row(
            "spawned-agent0",
            (L_SPAWNED,),
            mk(State.SPAWNING),
            Spawned(),
            State.AWAITING_READY,
            (AwaitReady("agent0", True),),
            {"since": T0},
        ),
        Row(
            "spawned-clone",
            (L_SPAWNED,),
            mk(State.SPAWNING, agent="agent1"),
            Spawned(),
            State.AWAITING_READY,
            (AwaitReady("agent1", False),),
        ),
        Row(
            "ready-agent0-hands-off",
            (L_READY_HANDOFF,),
            mk(State.AWAITING_READY, handoff="the handoff"),
            Ready(),
            State.HANDING_OFF,
            (DeliverHandoff(handoff_envelope_id(RID), "the handoff"),),
            {"since": T0},
        ),
        Row(
            "ready-clone-verifies",
            (L_READY_VERIFY,),
            mk(State.AWAITING_READY, agent="agent1"),
            Ready(),
            State.VERIFYING,
            (Verify("agent1", T0 + B.verify_s),),
            {"since": T0},
        ),
        Row(
            "ready-agentinfinity-verifies",
            (L_READY_VERIFY,),
            mk(State.AWAITING_READY, agent="agentinfinity"),
            Ready(),
            State.VERIFYING,
            (Verify("agentinfinity", T0 + 30.0),),
            budget=B2,
        ),
        Row(
            "handed-off",
            (L_HANDED_OFF,),
            mk(State.HANDING_OFF),
            HandedOff(),
            State.VERIFYING,
            (Verify("agent0", T0 + B.verify_s),),
            {"since": T0},
        ),
        Row(
            "verified-first-attempt",
            (L_VERIFIED,),
            mk(State.VERIFYING),
            Verified(),
            State.IDLE,
            (RestartFinished(RID, 1, "ok", None), ArchiveMarkers("agent0")),
            {"attempts": 0, "retry_at": None, "last_ok_at": T0, "failure": None, "since": T0},
        ),
        Row(
            "verified-third-attempt",
            (L_VERIFIED,),
            mk(State.VERIFYING, agent="agent2", attempts=2, failure="exit-3", loops=1),
            Verified(),
            State.IDLE,
            (RestartFinished(RID, 3, "ok", None), ArchiveMarkers("agent2")),
            # the loop streak is forgotten only after a stable period, not on verification
            {"attempts": 0, "failure": None, "loops": 1},
        ),
    ]
    rows += _gave_up_rows()
    # --- Cancelled
    kept: dict[str, Any] = {
        "last_ok_at": T0 - 500.0,
        "loops": 2,
        "paged": ("gave-up:exit-3",),
        "starts": full,
    }
    rows.append(
        Row(
            "cancelled-idle-noop",
            (L_CANCEL_IDLE,),
            mk(**kept),
            Cancelled("netskyctl down"),
            State.IDLE,
            (),
            check=_unchanged(mk(**kept)),
        )
    )
    for s in sorted(ACTIVE | PARKED):
        attempts = 3 if s is State.GAVE_UP else 1
        finished: tuple[Action, ...] = ()
        if s in ACTIVE:  # the attempt under way is recorded as cancelled
            finished = (RestartFinished(RID, attempts + 1, "cancelled", "netskyctl down"),)
        rows.append(
            Row(
                f"cancelled-{s.value}",
                (L_CANCEL,),
                mk(s, attempts=attempts, failure="exit-3", **kept),
                Cancelled("netskyctl down"),
                State.IDLE,
                (*finished, ArchiveMarkers("agent0")),
                {
                    "attempts": 0,
                    "retry_at": None,
                    "failure": None,
                    "since": T0,
                    "restart_id": RID,
                    "starts": full,  # the crash-loop window stays
                    # loops and paged: the owner acted, the streak ends
                },
            )
        )
    # --- Tick in IDLE
    rows += [
        Row(
            "tick-idle-stable-forgets-loops-and-pages",
            (L_STABLE,),
            mk(last_ok_at=T0 - 300.0, loops=2, paged=("crash-loop:exit-3", "gave-up:exit-3")),
            Tick(),
            State.IDLE,
            (),
            {"loops": 0, "paged": (), "since": T0 - 10.0},
        ),
        Row(
            "tick-idle-not-yet-stable",
            (L_WINDOW,),
            mk(last_ok_at=T0 - 299.0, loops=2, paged=("crash-loop:exit-3",)),
            Tick(),
            State.IDLE,
            (),
            {"loops": 2, "paged": ("crash-loop:exit-3",)},
        ),
        Row(
            "tick-idle-never-verified-keeps-loops",
            (L_WINDOW,),
            mk(loops=1, paged=("crash-loop:exit-3",)),
            Tick(),
            State.IDLE,
            (),
            {"loops": 1, "paged": ("crash-loop:exit-3",)},
        ),
        Row(
            "tick-idle-old-starts-leave-the-window",
            (L_WINDOW,),
            mk(starts=(T0 - 150.0, T0 - 100.0, T0 - 99.0)),
            Tick(),
            State.IDLE,
            (),
            {"starts": (T0 - 99.0,)},
        ),
        Row(
            "tick-idle-nothing-to-do",
            (L_WINDOW,),
            mk(starts=(T0 - 99.0,)),
            Tick(),
            State.IDLE,
            (),
            check=_unchanged(mk(starts=(T0 - 99.0,))),
        ),
    ]
    # --- Tick in parked states
    for s in sorted(PARKED):
        attempts = {State.FAILED: 1, State.GAVE_UP: 3, State.CRASH_LOOP: 0}[s]
        parked = mk(s, attempts=attempts, retry_at=T0 + 10.0, starts=(T0 - 100.0,))
        rows += [
            Row(
                f"tick-{s.value}-before-retry-at",
                (L_WAITING,),
                parked,
                Tick(),
                s,
                (),
                now=T0 + 9.999,
                check=_unchanged(parked),
            ),
            Row(
                f"tick-{s.value}-at-retry-at",
                (L_RETRY,),
                parked,
                Tick(),
                State.CLAIMED,
                _started(RID, attempts + 1),
                {
                    "attempts": attempts,
                    "retry_at": None,
                    "since": T0 + 10.0,
                    "starts": (T0 + 10.0,),
                    "restart_id": RID,
                },
                now=T0 + 10.0,
            ),
            Row(
                f"tick-{s.value}-after-retry-at",
                (L_RETRY,),
                parked,
                Tick(),
                State.CLAIMED,
                _started(RID, attempts + 1),
                {"since": T0 + 500.0},
                now=T0 + 500.0,
            ),
        ]
    rows += [
        Row(
            "tick-failed-retry-with-budget-spent-crash-loops",
            (L_RETRY,),
            mk(State.FAILED, attempts=1, retry_at=T0, starts=full, failure="exit-3"),
            Tick(),
            State.CRASH_LOOP,
            (
                _crashloop_marker(1, T0 + 150.0, "exit-3", 3),
                _crash_page("exit-3"),
                Wake(T0 + 150.0),
            ),
            {"attempts": 1, "loops": 1, "retry_at": T0 + 150.0},
        ),
        Row(
            "tick-failed-planned-restart-retry-spends-budget",
            (L_RETRY,),
            mk(State.FAILED, cause="planned", attempts=1, retry_at=T0, starts=full[1:]),
            Tick(),
            State.CLAIMED,
            _started(RID, 2),
            {"starts": (*full[1:], T0)},
        ),
        Row(
            "tick-failed-planned-restart-retry-needs-budget",
            (L_RETRY,),
            mk(State.FAILED, cause="planned", attempts=1, retry_at=T0, starts=full),
            Tick(),
            State.CRASH_LOOP,
            (
                _crashloop_marker(1, T0 + 150.0, "exit-3", 3),
                _crash_page("exit-3"),
                Wake(T0 + 150.0),
            ),
            {"cause": "planned", "attempts": 1, "starts": full},
        ),
        Row(
            "tick-failed-without-retry-at-retries-now",
            (L_RETRY,),
            mk(State.FAILED, attempts=1, retry_at=None),
            Tick(),
            State.CLAIMED,
            _started(RID, 2),
        ),
    ]
    # --- Tick in active states
    for s in sorted(ACTIVE):
        active = mk(s, since=T0 - 10.0, handoff="h")
        rows += [
            _failed_row(
                f"tick-{s.value}-stuck-at-step-deadline",
                (L_STUCK,),
                active,
                Tick(),
                f"stuck-{s.value}",
                now=T0 - 10.0 + B.step_deadline_s,
            ),
            Row(
                f"tick-{s.value}-still-working",
                (L_WORKING,),
                active,
                Tick(),
                s,
                (),
                now=T0 - 10.0 + B.step_deadline_s - 0.001,
                check=_unchanged(active),
            ),
        ]
    return rows


def _unchanged(want: Machine) -> Callable[[Machine, list[Action]], None]:
    """A row check: the machine comes back exactly as it went in ("noted, nothing to do")."""

    def check(got: Machine, _: list[Action]) -> None:
        assert got == want

    return check


def _has_reason(m: Machine, *parts: str) -> None:
    assert m.reason is not None and all(p in m.reason for p in parts), m.reason


ROWS = _rows()
#: (state, event type) pairs the table says are legal; every other pair must raise.
ALLOWED = frozenset((r.m.state, type(r.event)) for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_transition_table(row: Row) -> None:
    m2, actions = step(row.m, row.event, row.now, row.budget)
    assert m2.state is row.state
    assert [type(a) for a in actions] == [
        a.type if isinstance(a, Like) else type(a) for a in row.actions
    ]
    for want, got in zip(row.actions, actions, strict=True):
        if isinstance(want, Like):
            want.check(got)
        else:
            assert got == want
    for name, value in row.fields.items():
        assert getattr(m2, name) == value, (name, getattr(m2, name), value)
    if m2.state is not row.m.state:
        assert m2.since == row.now  # the state's entry time is recorded
        if m2.state in PARKED:  # and the runner is told when to come back
            assert m2.retry_at is not None and Wake(m2.retry_at) in actions
        if m2.state is State.FAILED:  # base * 2^(n-1), jittered, capped
            b, raw = row.budget, row.budget.backoff_base_s * 2.0 ** (m2.attempts - 1)
            assert m2.retry_at is not None
            wait = m2.retry_at - row.now
            assert min(b.backoff_cap_s, raw * (1 - b.jitter)) <= wait
            assert wait <= min(b.backoff_cap_s, raw * (1 + b.jitter))
    if row.check is not None:
        row.check(m2, actions)


def _source_labels() -> set[str]:
    src = inspect.getsource(restart)
    return {m.group(1).strip() for m in re.finditer(r"^\s*#\s+(.*->.*)$", src, flags=re.MULTILINE)}


def test_every_labelled_branch_has_a_row() -> None:
    in_source = _source_labels()
    in_table = {label for r in ROWS for label in r.labels}
    assert len(in_source) >= 20
    assert in_source - in_table == set(), "branches without a row"
    assert in_table - in_source == set(), "rows naming a branch restart.py no longer has"


@pytest.mark.parametrize(
    ("state", "event_type"),
    [
        (s, e)
        for s in State
        for e in EVENT_TYPES
        if (s, e) not in ALLOWED  # derived from the table, so the two stay in sync
    ],
    ids=lambda v: v.value if isinstance(v, State) else v.__name__,
)
def test_pairs_without_a_row_are_illegal(state: State, event_type: type) -> None:
    m = mk(state, handoff="h")
    with pytest.raises(IllegalTransition):
        step(m, EXAMPLE_EVENTS[event_type], T0, B)


def test_the_legal_pairs_are_exactly_these() -> None:
    """The transition matrix in one place; changing it means changing restart.py's contract."""
    steps = {
        (State.CLAIMED, Claimed),
        (State.TEARING_DOWN, TornDown),
        (State.SPAWNING, Spawned),
        (State.AWAITING_READY, Ready),
        (State.HANDING_OFF, HandedOff),
        (State.VERIFYING, Verified),
    }
    assert ALLOWED == (
        {(s, Tick) for s in State}
        | {(s, Gone) for s in State}
        | {(s, Cancelled) for s in State}
        | {(s, Requested) for s in (State.IDLE, *PARKED)}
        | {(s, StepFailed) for s in ACTIVE}
        | steps
    )
    assert set(EVENT_TYPES) == set(EXAMPLE_EVENTS) and len(EVENT_TYPES) == 11


@pytest.mark.parametrize("state", sorted(PARKED | ACTIVE))
def test_requested_without_force_is_illegal_outside_idle(state: State) -> None:
    with pytest.raises(IllegalTransition):
        step(mk(state), Requested(RID2, "h", "agent0"), T0, B)


def test_ready_for_agent0_without_handoff_verifies_directly() -> None:
    m2, actions = step(mk(State.AWAITING_READY, handoff=None), Ready(), T0, B)
    assert m2.state is State.VERIFYING and actions == [Verify("agent0", T0 + B.verify_s)]


def _streak_after_cancel(last_ok_at: float | None) -> tuple[int, tuple[str, ...]]:
    """Loop streak and paged classes of a crash-looping agent cancelled at T0, ticked after."""
    m = mk(State.CRASH_LOOP, loops=1, paged=("crash-loop:exit-1",), last_ok_at=last_ok_at)
    m, _ = step(m, Cancelled("netskyctl down"), T0, B)
    m, _ = step(m, Tick(), T0 + 1.0, B)
    return m.loops, m.paged


def test_a_cancel_ends_the_streak_or_not_whatever_the_last_verification() -> None:
    """Whether a cancel ends the page streak must not hang on when the agent was last verified.

    Either fix passes: Cancelled clears last_ok_at (nothing forgotten until a verified
    restart has been up for stable_after_s, as Budget.stable_after_s says), or Cancelled
    forgets the streak itself (the owner acted; a new streak starts).
    """
    assert _streak_after_cancel(None) == _streak_after_cancel(T0 - B.stable_after_s)


# ----- whole restarts ----------------------------------------------------------------------


def _drive(m: Machine, events: list[tuple[Event, float]]) -> tuple[Machine, list[Any]]:
    trail: list[Any] = []
    for event, now in events:
        m, actions = step(m, event, now, B)
        trail.append((m.state, actions))
    return m, trail


def test_agent0_planned_restart_happy_path() -> None:
    m0 = Machine("agent0", since=T0 - 1000.0)
    m, trail = _drive(
        m0,
        [
            (Requested(RID, "handoff text", "agent0", clones=2), T0),
            (Claimed("handoff text"), T0 + 1),
            (TornDown(), T0 + 2),
            (Spawned(), T0 + 3),
            (Ready(), T0 + 4),
            (HandedOff(), T0 + 5),
            (Verified(), T0 + 10),
        ],
    )
    assert [s for s, _ in trail] == [
        State.CLAIMED,
        State.TEARING_DOWN,
        State.SPAWNING,
        State.AWAITING_READY,
        State.HANDING_OFF,
        State.VERIFYING,
        State.IDLE,
    ]
    assert [a for _, acts in trail for a in acts] == [
        RestartStarted(RID, 1),
        Claim("agent0"),
        TearDown("agent0", True),
        Spawn("agent0", True, 2),
        AwaitReady("agent0", True),
        DeliverHandoff(handoff_envelope_id(RID), "handoff text"),
        Verify("agent0", T0 + 5 + B.verify_s),
        RestartFinished(RID, 1, "ok", None),
        ArchiveMarkers("agent0"),
    ]
    assert m.last_ok_at == T0 + 10 and m.attempts == 0
    assert m.starts == ()  # asked for, not a crash: the crash-loop budget is untouched


def test_clone_crash_restart_happy_path_has_no_handoff() -> None:
    m0 = Machine("agent4", since=T0 - 1000.0)
    m, trail = _drive(
        m0,
        [
            (Gone(RID, "exit status 1", "exit-1"), T0),
            (Claimed(None), T0 + 1),
            (TornDown(), T0 + 2),
            (Spawned(), T0 + 3),
            (Ready(), T0 + 4),
            (Verified(), T0 + 9),
        ],
    )
    assert [s for s, _ in trail] == [
        State.CLAIMED,
        State.TEARING_DOWN,
        State.SPAWNING,
        State.AWAITING_READY,
        State.VERIFYING,
        State.IDLE,
    ]
    actions = [a for _, acts in trail for a in acts]
    assert not any(isinstance(a, DeliverHandoff) for a in actions)
    assert TearDown("agent4", False) in actions and Spawn("agent4", False, None) in actions
    assert actions[-2:] == [RestartFinished(RID, 1, "ok", None), ArchiveMarkers("agent4")]


def test_failed_attempts_back_off_then_give_up_then_retry_after_cooldown() -> None:
    m = Machine("agent1", since=T0)
    now = T0
    m, _ = step(m, Gone(RID, "exit status 1", "exit-1"), now, B)
    waits = []
    for _ in range(B.max_attempts):
        m, actions = step(m, StepFailed("spawn-failed", "no"), now, B)
        assert m.retry_at is not None
        waits.append(m.retry_at - now)
        if m.state is State.GAVE_UP:
            break
        assert step(m, Tick(), m.retry_at - 0.01, B)[0] == m  # not before retry_at
        now = m.retry_at
        m, actions = step(m, Tick(), now, B)
        assert m.state is State.CLAIMED
    assert m.state is State.GAVE_UP and m.attempts == B.max_attempts
    assert waits[0] < waits[1] and waits[-1] == B.giveup_cooldown_s
    m, actions = step(m, Tick(), now + B.giveup_cooldown_s, B)
    assert m.state is State.CLAIMED and actions[0] == RestartStarted(RID, B.max_attempts + 1)


def _give_up(m: Machine, now: float, failure: str) -> tuple[Machine, list[Action]]:
    """Fail every attempt of a crash restart with ``failure`` until GAVE_UP."""
    m, _ = step(m, Gone(f"crash-{now}", "exit status 1", failure), now, B)
    while True:
        m, actions = step(m, StepFailed(failure, "no"), now, B)
        if m.state is State.GAVE_UP:
            return m, actions
        assert m.retry_at is not None
        now = m.retry_at
        m, _ = step(m, Tick(), now, B)


def _recover(m: Machine, now: float) -> Machine:
    assert m.retry_at is not None
    now = max(now, m.retry_at)
    m, _ = step(m, Tick(), now, B)
    for event in (Claimed("h"), TornDown(), Spawned(), Ready(), HandedOff(), Verified()):
        m, _ = step(m, event, now, B)
    assert m.state is State.IDLE and m.last_ok_at == now
    return m


def pages(actions: list[Action]) -> list[Page]:
    return [a for a in actions if isinstance(a, Page)]


def test_gave_up_pages_once_per_class_until_a_stable_period() -> None:
    m, actions = _give_up(Machine("agent0", since=T0), T0, "exit-1")
    assert len(pages(actions)) == 1
    m = _recover(m, T0)
    ok_at = m.last_ok_at
    assert ok_at is not None
    # up, but not for stable_after_s: the same failure does not page again
    m, _ = step(m, Tick(), ok_at + B.stable_after_s - 1, B)
    m, actions = _give_up(m, ok_at + B.stable_after_s - 1, "exit-1")
    assert m.state is State.GAVE_UP and pages(actions) == []
    # a different failure class does
    m = _recover(m, ok_at)
    m, actions = _give_up(m, m.since + B.crashloop_window_s, "killed")
    assert len(pages(actions)) == 1
    # stable for stable_after_s: the next give-up with the first class pages again
    m = _recover(m, m.since)
    ok_at = m.last_ok_at
    assert ok_at is not None
    m, _ = step(m, Tick(), ok_at + B.stable_after_s, B)
    assert m.paged == () and m.loops == 0
    m, actions = _give_up(m, ok_at + B.stable_after_s + 1, "exit-1")
    assert [p.key for p in pages(actions)] == ["agent0:gave-up"]


def test_crash_loop_pages_once_per_streak() -> None:
    m = Machine("agent1", since=T0)
    now = T0
    paged = []
    for _ in range(3):  # three crash loops in a row, the agent up a few seconds each time
        for _ in range(B.crashloop_restarts + 1):
            m, actions = step(m, Gone(f"c{now}", "exit status 1", "exit-1"), now, B)
            paged += [a for a in actions if isinstance(a, Page)]
            if m.state is State.CRASH_LOOP:
                break
            for event in (Claimed(None), TornDown(), Spawned(), Ready(), Verified()):
                m, _ = step(m, event, now, B)
            now += 1.0
            m, _ = step(m, Tick(), now, B)
        assert m.state is State.CRASH_LOOP and m.retry_at is not None
        now = m.retry_at
        m, _ = step(m, Tick(), now, B)
        for event in (Claimed(None), TornDown(), Spawned(), Ready(), Verified()):
            m, _ = step(m, event, now, B)
    assert m.loops == 3 and len(paged) == 1 and paged[0].key == "agent1:crash-loop"


# ----- the pure rules ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    rid=st.text(max_size=12),
    attempts=st.integers(1, 40),
    base=st.floats(0.01, 10.0),
    cap=st.floats(0.01, 5000.0),
    jitter=st.floats(0.0, 0.9),
)
def test_backoff_stays_within_jitter_of_the_exponential_and_under_the_cap(
    rid: str, attempts: int, base: float, cap: float, jitter: float
) -> None:
    b = Budget(backoff_base_s=base, backoff_cap_s=cap, jitter=jitter)
    raw = base * 2.0 ** (attempts - 1)
    got = backoff_s(b, attempts, rid)
    assert got <= cap
    assert got == backoff_s(b, attempts, rid)  # deterministic
    if raw * (1 + jitter) <= cap:
        assert raw * (1 - jitter) * (1 - 1e-9) <= got <= raw * (1 + jitter) * (1 + 1e-9)
    if raw * (1 - jitter) >= cap:
        assert got == cap


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    b = replace(B, jitter=0.0)
    assert [backoff_s(b, n, RID) for n in range(1, 8)] == [1, 2, 4, 8, 16, 20, 20]


@pytest.mark.parametrize("rid", ["r-1", "r-2", "x" * 40, ""])
def test_backoff_grows_strictly_until_the_cap(rid: str) -> None:
    # with jitter 0.2 the next attempt's lowest delay (1.6x) beats this one's highest (1.2x)
    delays = [backoff_s(B, n, rid) for n in range(1, 12)]
    capped = [d for d in delays if d == B.backoff_cap_s]
    growing = delays[: len(delays) - len(capped)]
    assert capped and len(growing) >= 4
    assert all(a < b for a, b in zip(growing, growing[1:], strict=False))


def test_backoff_jitter_spreads_restart_ids_and_is_deterministic() -> None:
    b = replace(B, backoff_cap_s=1e9)
    ids = [f"restart-{i}" for i in range(200)]
    first = [backoff_s(b, 3, i) for i in ids]
    assert first == [backoff_s(b, 3, i) for i in ids]
    assert len(set(first)) > 190  # different agents do not retry in step
    assert backoff_s(b, 3, "restart-0") != backoff_s(b, 3, "restart-1")
    assert min(first) < 4.0 * 0.85 and max(first) > 4.0 * 1.15  # the jitter is used
    # and the attempt number feeds the hash too
    assert backoff_s(b, 1, "a") / 1.0 != backoff_s(b, 2, "a") / 2.0


@pytest.mark.parametrize(
    ("loops", "cooldown"),
    [(0, 150.0), (1, 150.0), (2, 300.0), (3, 600.0), (4, 600.0), (50, 600.0)],
)
def test_crashloop_cooldown_doubles_and_caps(loops: int, cooldown: float) -> None:
    assert crashloop_cooldown_s(B, loops) == cooldown


@pytest.mark.parametrize(
    ("starts", "allowed"),
    [
        ((), None),
        ((T0 - 50.0, T0 - 10.0), None),  # K-1 in the window
        ((T0 - 90.0, T0 - 50.0, T0 - 10.0), T0 + 10.0),  # K: wait for the oldest to leave
        ((T0 - 10.0, T0 - 90.0, T0 - 50.0), T0 + 10.0),  # order does not matter
        ((T0 - 200.0, T0 - 100.0, T0 - 50.0, T0 - 10.0), None),  # two outside (W ago too)
        ((T0 - 95.0, T0 - 90.0, T0 - 50.0, T0 - 10.0), T0 + 10.0),  # K+1 (forced): 2nd oldest
        ((T0, T0, T0), T0 + 100.0),
    ],
)
def test_next_allowed_start(starts: tuple[float, ...], allowed: float | None) -> None:
    m = mk(starts=starts)
    assert next_allowed_start(m, B, T0) == allowed
    if allowed is not None:  # at that moment a start fits
        assert next_allowed_start(m, B, allowed) is None


def test_recent_starts_window_is_half_open() -> None:
    m = mk(starts=(T0 - 100.0, T0 - 99.999, T0))
    assert recent_starts(m, B, T0) == (T0 - 99.999, T0)


def test_handoff_envelope_id_is_fixed_per_restart() -> None:
    a = handoff_envelope_id(RID)
    assert a == handoff_envelope_id(RID) and re.fullmatch(r"[0-9a-f]{32}", a)
    assert a != handoff_envelope_id(RID2)


finite = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)
opt_text = st.none() | st.text(max_size=20)
machines = st.builds(
    Machine,
    agent=st.sampled_from(["agent0", "agent1", "agent17", "agentinfinity"]),
    state=st.sampled_from(list(State)),
    since=finite,
    restart_id=opt_text,
    cause=st.none() | st.sampled_from(["planned", "crash"]),
    reason=opt_text,
    handoff=opt_text,
    clones=st.none() | st.integers(0, 64),
    attempts=st.integers(0, 100),
    failure=opt_text,
    retry_at=st.none() | finite,
    starts=st.lists(finite, max_size=6).map(tuple),
    loops=st.integers(0, 100),
    paged=st.lists(st.text(max_size=20), max_size=4).map(tuple),
    last_ok_at=st.none() | finite,
)


@settings(max_examples=200, deadline=None)
@given(machines)
def test_json_round_trip(m: Machine) -> None:
    assert Machine.from_json(m.to_json()) == m
    assert Machine.from_json(json.loads(json.dumps(m.to_json()))) == m


def test_from_json_fills_defaults() -> None:
    m = Machine.from_json({"agent": "agent1", "state": "idle", "since": 5})
    assert m == Machine("agent1", State.IDLE, since=5.0)


GOOD = Machine("agent0", State.FAILED, since=1.0, retry_at=2.0, starts=(1.0,)).to_json()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({k: v for k, v in GOOD.items() if k != "agent"}, id="no-agent"),
        pytest.param({k: v for k, v in GOOD.items() if k != "state"}, id="no-state"),
        pytest.param({k: v for k, v in GOOD.items() if k != "since"}, id="no-since"),
        pytest.param({**GOOD, "state": "sleeping"}, id="unknown-state"),
        pytest.param({**GOOD, "since": None}, id="null-since"),
        pytest.param({**GOOD, "since": "soon"}, id="text-since"),
        pytest.param({**GOOD, "retry_at": "later"}, id="text-retry-at"),
        pytest.param({**GOOD, "attempts": "many"}, id="text-attempts"),
        pytest.param({**GOOD, "clones": [1]}, id="list-clones"),
        pytest.param({**GOOD, "starts": 5}, id="number-starts"),
        pytest.param({**GOOD, "starts": [None]}, id="null-in-starts"),
        pytest.param({**GOOD, "loops": None}, id="null-loops"),
        pytest.param(["agent0", "idle"], id="a-list"),
        pytest.param("agent0", id="a-string"),
        pytest.param(None, id="null"),
        # coercible, but not what to_json writes: a hand-edited file must not become nonsense
        pytest.param({**GOOD, "agent": None}, id="null-agent"),
        pytest.param({**GOOD, "starts": "12"}, id="string-starts"),
        pytest.param({**GOOD, "paged": [1]}, id="number-in-paged"),
        pytest.param({**GOOD, "attempts": -1}, id="negative-attempts"),
        pytest.param({**GOOD, "attempts": 1.5}, id="fractional-attempts"),
        pytest.param({**GOOD, "since": True}, id="bool-since"),
    ],
)
def test_from_json_rejects_bad_shapes(bad: Any) -> None:
    with pytest.raises(ValueError):
        Machine.from_json(bad)


RESUME: dict[State, tuple[Machine, list[Action]]] = {
    State.IDLE: (mk(), []),
    State.CLAIMED: (mk(State.CLAIMED), [Claim("agent0")]),
    State.TEARING_DOWN: (mk(State.TEARING_DOWN, agent="agent2"), [TearDown("agent2", False)]),
    State.SPAWNING: (mk(State.SPAWNING, clones=3), [Spawn("agent0", True, 3)]),
    State.AWAITING_READY: (mk(State.AWAITING_READY), [AwaitReady("agent0", True)]),
    State.HANDING_OFF: (
        mk(State.HANDING_OFF, handoff="h"),
        [DeliverHandoff(handoff_envelope_id(RID), "h")],  # same id: never sent twice
    ),
    # since = T0 - 10 and verify_s = 5: the verification is overdue, check now
    State.VERIFYING: (mk(State.VERIFYING), [Verify("agent0", T0)]),
    State.FAILED: (mk(State.FAILED, retry_at=T0 + 3.0), [Wake(T0 + 3.0)]),
    State.GAVE_UP: (mk(State.GAVE_UP, retry_at=T0 + 200.0), [Wake(T0 + 200.0)]),
    State.CRASH_LOOP: (mk(State.CRASH_LOOP, retry_at=T0 - 1.0), [Wake(T0 - 1.0)]),
}


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_resume_actions_carry_every_state_on(state: State) -> None:
    m, want = RESUME[state]
    assert m.state is state
    assert resume_actions(m, T0, B) == want


def test_resume_verifying_waits_out_the_rest_of_verify_s() -> None:
    m = mk(State.VERIFYING, since=T0 - 2.0)
    assert resume_actions(m, T0, B) == [Verify("agent0", T0 + 3.0)]


# ----- the runner, simulated ----------------------------------------------------------------

AGENTS = ["agent0", "agent1", "agentinfinity"]
FAILURES = st.sampled_from(["exit-1", "killed"])  # few classes: repeats must not page
#: Time steps: small ones (several events inside one window), large ones, exact integers
#: (to land on boundaries such as retry_at or the window's edge) and arbitrary floats.
DT = st.one_of(
    st.integers(0, 5).map(float),
    st.integers(0, 400).map(float),
    st.floats(0.0, 400.0, allow_nan=False),
)
#: The work action each active state's entry must ask for.
WORK: dict[State, type] = {
    State.CLAIMED: Claim,
    State.TEARING_DOWN: TearDown,
    State.SPAWNING: Spawn,
    State.AWAITING_READY: AwaitReady,
    State.HANDING_OFF: DeliverHandoff,
    State.VERIFYING: Verify,
}
#: Liveness bound: events from any state to IDLE when everything succeeds from now on.
LIVENESS_EVENTS = 50


def _success(m: Machine) -> Event:
    """What the runner answers when the pending step of ``m`` succeeds."""
    if m.state is State.CLAIMED:
        # agent0 gets a handoff: the requested one, or a synthetic one after a crash
        return Claimed((m.handoff or "synthetic handoff") if m.constellation else None)
    answers: dict[State, Event] = {
        State.TEARING_DOWN: TornDown(),
        State.SPAWNING: Spawned(),
        State.AWAITING_READY: Ready(),
        State.HANDING_OFF: HandedOff(),
        State.VERIFYING: Verified(),
    }
    return answers[m.state]


def settle(m: Machine, now: float, b: Budget) -> int:
    """Events until IDLE when the agent stays up and every step succeeds; fails past the bound.

    The runner ticks before each answer (so a step left hanging fails as stuck and is
    retried) and sleeps until ``retry_at`` when parked.
    """
    events = 0
    while m.state is not State.IDLE:
        if events >= LIVENESS_EVENTS:
            raise AssertionError(f"not back to IDLE after {events} events: {m}")
        if m.state in PARKED:
            assert m.retry_at is not None
            now = max(now, m.retry_at)
        else:
            now += 1.0
            if m.state is State.VERIFYING:
                now = max(now, m.since + b.verify_s)
        m, _ = step(m, Tick(), now, b)
        events += 1
        if m.state in ACTIVE:
            m, _ = step(m, _success(m), now, b)
            events += 1
    return events


def starts_over_budget(times: list[float], b: Budget) -> list[float] | None:
    """K+1 start times inside one window of length W (half-open), or None."""
    k, w = b.crashloop_restarts, b.crashloop_window_s
    ts = sorted(times)
    for i in range(len(ts) - k):
        if ts[i + k] - ts[i] < w:
            return ts[i : i + k + 1]
    return None


def repeated_pages(log: list[tuple[str, float, Any]], b: Budget) -> tuple[int, int] | None:
    """Two pages with the same (key, failure) and no stable period between them, or None.

    ``log`` holds ("page", t, (key, failure)), ("ok", t, None) when a restart is verified,
    ("leave", t, None) when the machine leaves IDLE (a start or a crash loop) and
    ("cancel", t, None) when the owner took the agent down. A stable period is an "ok" at L
    whose next "leave" comes at L + stable_after_s or later. A cancel also separates two
    pages: the owner has acted, so paging again after it is not a storm (whether the streak
    ends there: restart.py resets loops and paged on Cancelled).
    """
    last: dict[Any, int] = {}
    for j, (kind, _, key) in enumerate(log):
        if kind != "page":
            continue
        i = last.get(key)
        if i is not None and not any(
            log[k][0] == "cancel" or (log[k][0] == "ok" and _stable_after(log, k, b))
            for k in range(i + 1, j)
        ):
            return i, j
        last[key] = j
    return None


def _stable_after(log: list[tuple[str, float, Any]], k: int, b: Budget) -> bool:
    ok_at = log[k][1]
    for kind, t, _ in log[k + 1 :]:
        if kind == "leave":
            return t - ok_at >= b.stable_after_s
    return False  # still IDLE: no page can follow before a leave anyway


class RestartRunner(RuleBasedStateMachine):
    """Plays the restart runner against ``step`` and checks the budget promises.

    The budget invariant counts every start except the first attempt of a planned restart
    (asked for, not a crash: exempt by design, forced or not); its retries count.
    """

    budget: ClassVar[Budget] = B

    def __init__(self) -> None:
        super().__init__()
        self.m = Machine("agent0", since=T0)
        self.now = T0
        self.n = 0
        self.verify_at = T0
        #: Times of the RestartStarted that spend budget (all but planned first attempts).
        self.starts: list[float] = []
        self.log: list[tuple[str, float, Any]] = []
        self.open_attempt: tuple[str, int] | None = None

    @initialize(agent=st.sampled_from(AGENTS))
    def pick_agent(self, agent: str) -> None:
        self.m = Machine(agent, since=T0)

    def _feed(self, event: Event) -> None:
        before = self.m
        m, actions = step(before, event, self.now, self.budget)
        for a in actions:
            if isinstance(a, RestartStarted):
                # every attempt is recorded as finished before the next one starts
                assert self.open_attempt is None, (self.open_attempt, a)
                assert a.restart_id == m.restart_id and a.attempt == m.attempts + 1
                self.open_attempt = (a.restart_id, a.attempt)
                if not (m.cause == "planned" and a.attempt == 1):
                    self.starts.append(self.now)
                    assert m.starts[-1:] == (self.now,)
            elif isinstance(a, RestartFinished):
                assert self.open_attempt == (a.restart_id, a.attempt), (self.open_attempt, a)
                self.open_attempt = None
                outcome = {Verified: "ok", Cancelled: "cancelled"}.get(type(event), "failed")
                assert a.outcome == outcome, (a, event)
            elif isinstance(a, Page):
                assert a.key.startswith(f"{m.agent}:")
                self.log.append(("page", self.now, (a.key, m.failure or "unknown")))
                note(f"page {a.key.split(':')[1]}")
            elif isinstance(a, Wake):
                assert a.at == m.retry_at and a.at >= self.now
            elif isinstance(a, Verify):
                self.verify_at = a.at
        note(f"{before.state.value} -> {m.state.value}")  # --hypothesis-show-statistics
        if before.paged and not m.paged:
            note("stable: pages forgotten")
        if before.state is State.IDLE and m.state is not State.IDLE:
            self.log.append(("leave", self.now, None))
        if m.state is not before.state:
            assert m.since == self.now
            if m.state is State.IDLE and isinstance(event, Verified):
                assert m.last_ok_at == self.now
                self.log.append(("ok", self.now, None))
            elif m.state is State.IDLE:
                assert isinstance(event, Cancelled)
                self.log.append(("cancel", self.now, None))
            elif m.state in ACTIVE:
                assert [type(a) for a in actions].count(WORK[m.state]) == 1, actions
            else:
                assert Wake(m.retry_at or -1.0) in actions
        elif m.state is not State.IDLE:
            # "noted, nothing to do": in particular a wake never re-parks in the same state
            assert actions == [] and m == before
        self.m = m

    @rule(dt=DT)
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self._feed(Tick())

    @precondition(lambda self: self.m.state in PARKED)
    @rule(late=st.sampled_from([0.0, 0.0, 0.5, 30.0]))
    def wake(self, late: float) -> None:
        assert self.m.retry_at is not None
        self.now = max(self.now, self.m.retry_at) + late
        self._feed(Tick())

    @precondition(lambda self: self.m.state is State.IDLE or self.m.state in ACTIVE)
    @rule(dt=st.integers(0, 20).map(float) | DT, failure=FAILURES)
    def crash(self, dt: float, failure: str) -> None:
        self.now += dt
        self.n += 1
        self._feed(Gone(f"crash-{self.n}", "exit status 1", failure))

    @precondition(lambda self: self.m.state in ACTIVE)
    @rule(dts=st.lists(st.integers(0, 10).map(float), min_size=1, max_size=6))
    def steps_succeed(self, dts: list[float]) -> None:
        # several steps at once: a whole restart succeeds often enough to reach VERIFYING,
        # IDLE and then the quick crashes that make a crash loop
        for dt in dts:
            if self.m.state not in ACTIVE:
                break
            self.now += dt
            if self.m.state is State.VERIFYING:
                self.now = max(self.now, self.verify_at)
            self._feed(_success(self.m))

    @precondition(lambda self: self.m.state in ACTIVE)
    @rule(dt=st.integers(0, 3).map(float))
    def restart_completes(self, dt: float) -> None:
        # every remaining step succeeds quickly: with quick crashes, this is a crash loop
        self.steps_succeed([dt] * len(WORK))
        assert self.m.state is State.IDLE

    @precondition(lambda self: self.m.state is State.IDLE)
    @rule(dts=st.lists(st.integers(0, 40).map(float), min_size=2, max_size=8), failure=FAILURES)
    def crash_storm(self, dts: list[float], failure: str) -> None:
        # the agent dies soon after every restart: the case the crash-loop budget is for
        for dt in dts:
            if self.m.state is not State.IDLE:
                break
            self.crash(dt, failure)
            if self.m.state in ACTIVE:
                self.restart_completes(0.0)

    @precondition(lambda self: self.m.state in ACTIVE)
    @rule(dt=st.integers(0, 10).map(float), failure=FAILURES)
    def step_fails(self, dt: float, failure: str) -> None:
        self.now += dt
        self._feed(StepFailed(failure, "the step failed"))

    @precondition(lambda self: self.m.state is State.IDLE or self.m.state in PARKED)
    @rule(dt=DT, force=st.booleans(), clones=st.none() | st.integers(0, 3))
    def request(self, dt: float, force: bool, clones: int | None) -> None:
        self.now += dt
        self.n += 1
        event = Requested(f"planned-{self.n}", "handoff text", "agent0", clones, force)
        if self.m.state in PARKED and not force:
            with pytest.raises(IllegalTransition):
                step(self.m, event, self.now, self.budget)
            return
        self._feed(event)

    @rule(dt=DT)
    def owner_takes_it_down(self, dt: float) -> None:
        self.now += dt
        self._feed(Cancelled("netskyctl down"))

    @rule()
    def agent_stays_up(self) -> None:
        settle(self.m, self.now, self.budget)

    @invariant()
    def machine_is_valid(self) -> None:
        m, b = self.m, self.budget
        assert isinstance(m.state, State)
        assert m.attempts >= 0 and m.loops >= 0
        assert m.since <= self.now
        assert len(set(m.paged)) == len(m.paged)
        if m.state in PARKED:
            assert m.retry_at is not None and m.retry_at >= m.since
        if m.state is State.FAILED:
            assert 0 < m.attempts < b.max_attempts
        if m.state is State.GAVE_UP:
            assert m.attempts >= b.max_attempts
        assert all(t <= self.now for t in m.starts)
        if m.state in ACTIVE:
            assert m.restart_id is not None
        if m.state is State.HANDING_OFF:
            assert m.constellation and m.handoff is not None

    @invariant()
    def at_most_k_starts_in_any_window(self) -> None:
        assert starts_over_budget(self.starts, self.budget) is None, self.starts

    @invariant()
    def one_page_per_failure_class_per_stable_period(self) -> None:
        assert repeated_pages(self.log, self.budget) is None, self.log


class RestartRunnerB2(RestartRunner):
    budget: ClassVar[Budget] = B2


# ~5 s each when green; the longer timeout leaves room to shrink a failure to a short story
RUNNER_SETTINGS = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestRestartRunner = pytest.mark.timeout(180)(RestartRunner.TestCase)
TestRestartRunner.settings = RUNNER_SETTINGS
TestRestartRunnerB2 = pytest.mark.timeout(180)(RestartRunnerB2.TestCase)
TestRestartRunnerB2.settings = RUNNER_SETTINGS


# ----- the invariant checkers themselves must be able to fail ----------------------------


def test_starts_over_budget_detects_k_plus_one_in_a_window() -> None:
    assert starts_over_budget([0.0, 10.0, 20.0], B) is None
    assert starts_over_budget([0.0, 10.0, 20.0, 100.0], B) is None  # half-open window
    assert starts_over_budget([0.0, 10.0, 20.0, 99.9], B) == [0.0, 10.0, 20.0, 99.9]


def test_repeated_pages_needs_a_stable_period_between() -> None:
    key = ("agent0:gave-up", "exit-1")
    page = ("page", 0.0, key)
    assert repeated_pages([page, ("ok", 10.0, None), ("leave", 20.0, None), page], B)
    assert repeated_pages([page, ("ok", 10.0, None), ("leave", 310.0, None), page], B) is None
    assert repeated_pages([page, ("page", 1.0, ("agent0:gave-up", "killed"))], B) is None


def test_repeated_pages_after_the_owner_acted_are_not_a_storm() -> None:
    page = ("page", 0.0, ("agent0:crash-loop", "exit-1"))
    assert repeated_pages([page, ("cancel", 5.0, None), ("leave", 6.0, None), page], B) is None


def test_settle_fails_on_a_machine_that_never_gets_back() -> None:
    m = mk(State.CRASH_LOOP, retry_at=T0)
    # a misconfiguration: verification outlasts the step deadline, so it is always "stuck"
    stuck = replace(B, verify_s=B.step_deadline_s + 1)
    with pytest.raises(AssertionError, match="not back to IDLE"):
        settle(m, T0, stuck)
    # the Tick into CLAIMED and Claimed, then a Tick and an answer for each later step
    assert settle(m, T0, B) == 2 + 2 * 5


def test_table_covers_gone_in_every_state_and_tick_in_every_state() -> None:
    assert {s for s, e in ALLOWED if e is Gone} == set(State)
    assert {s for s, e in ALLOWED if e is Tick} == set(State)
    assert {s for s, e in ALLOWED if e is StepFailed} == set(ACTIVE)


# ----- a death seen while VERIFYING acts at once (issue 14) ----------------------------------

#: Verification long enough that waiting it out would show: 300 s, as in the e2e test.
BV = replace(B, verify_s=300.0)


def test_death_fails_is_exactly_where_gone_fails_the_attempt() -> None:
    """restart.DEATH_FAILS (what the supervisor hands on) and step() agree state by state."""
    for s in State:
        m2, _ = step(mk(s), Gone(RID2, "exit status 3", "exit-3"), T0, B)
        failed = m2.state in (State.FAILED, State.GAVE_UP) and s in ACTIVE
        assert failed is (s in restart.DEATH_FAILS), s
    assert restart.DEATH_FAILS < ACTIVE
    assert State.VERIFYING in restart.DEATH_FAILS and State.HANDING_OFF in restart.DEATH_FAILS


@dataclass(frozen=True)
class Death:
    """The fresh agent dies ``after_s`` into VERIFYING (entered at T0, verify_s = 300)."""

    id: str
    m: Machine
    gone: Gone
    after_s: float
    state: State
    actions: tuple[Action | Like, ...]
    fields: Mapping[str, object] = field(default_factory=dict)
    budget: Budget = BV


def _verifying(agent: str = "agent0", **kw: Any) -> Machine:
    return mk(State.VERIFYING, agent=agent, since=T0, **kw)


DEATHS = [
    Death(
        "crash-restart-of-a-clone-exits",
        _verifying("agent1"),
        Gone(RID2, "exit status 3", "exit-3"),
        1.0,
        State.FAILED,
        (
            RestartFinished(RID, 1, "failed", "exit-3"),
            Wake(T0 + 1.0 + backoff_s(BV, 1, RID)),
        ),
        {"attempts": 1, "failure": "exit-3", "since": T0 + 1.0, "restart_id": RID},
    ),
    Death(
        "planned-restart-of-agent0-session-gone",
        _verifying(cause="planned", reason="restart requested by owner", handoff="h"),
        Gone(RID2, "its tmux session is gone", "session-gone"),
        0.2,
        State.FAILED,
        (
            RestartFinished(RID, 1, "failed", "session-gone"),
            Wake(T0 + 0.2 + backoff_s(BV, 1, RID)),
        ),
        # still the same restart, still planned: the retry carries the same handoff
        {"cause": "planned", "handoff": "h", "failure": "session-gone", "restart_id": RID},
    ),
    Death(
        "second-attempt-backs-off-longer",
        _verifying(attempts=1, failure="exit-3"),
        Gone(RID2, "exit status 3", "exit-3"),
        2.0,
        State.FAILED,
        (
            RestartFinished(RID, 2, "failed", "exit-3"),
            Wake(T0 + 2.0 + backoff_s(BV, 2, RID)),
        ),
        {"attempts": 2},
    ),
    Death(
        "last-attempt-gives-up-at-once",
        _verifying(attempts=BV.max_attempts - 1, failure="exit-3"),
        Gone(RID2, "exit status 3", "exit-3"),
        1.0,
        State.GAVE_UP,
        (
            RestartFinished(RID, BV.max_attempts, "failed", "exit-3"),
            Like(WriteMarker, {"name": "gave-up", "entry": {"since": T0 + 1.0}}),
            Like(Page, {"key": "agent0:gave-up"}, {"subject": ("(exit-3)",)}),
            Wake(T0 + 1.0 + BV.giveup_cooldown_s),
        ),
        {"retry_at": T0 + 1.0 + BV.giveup_cooldown_s},
    ),
]


@pytest.mark.parametrize("d", DEATHS, ids=lambda d: d.id)
def test_a_death_while_verifying_fails_when_it_happens_not_after_verify_s(d: Death) -> None:
    now = T0 + d.after_s
    m2, actions = step(d.m, d.gone, now, d.budget)
    assert m2.state is d.state
    assert len(actions) == len(d.actions), actions
    for got, want in zip(actions, d.actions, strict=True):
        if isinstance(want, Like):
            want.check(got)
        else:
            assert got == want
    for name, want in d.fields.items():
        assert getattr(m2, name) == want, name
    assert m2.since == now and m2.retry_at is not None
    # the retry is due long before the verification window would have ended
    if d.state is State.FAILED:
        assert m2.retry_at < d.m.since + d.budget.verify_s
    _has_reason(m2, "died while verifying", d.gone.reason)
    assert not any(isinstance(a, Verify) for a in actions)


def test_the_verify_answer_of_a_failed_attempt_cannot_land() -> None:
    """After the death, the Verify task's late answer is illegal (the runner drops it by
    generation); the retry's resume is a Wake at the backoff, not a Verify."""
    m2, _ = step(_verifying(), Gone(RID2, "exit status 3", "exit-3"), T0 + 1.0, BV)
    with pytest.raises(IllegalTransition):
        step(m2, Verified(), T0 + BV.verify_s, BV)
    with pytest.raises(IllegalTransition):
        step(m2, StepFailed("died-verifying", "agent0 did not stay up"), T0 + BV.verify_s, BV)
    assert resume_actions(m2, T0 + 1.0, BV) == [Wake(m2.retry_at or 0.0)]
    # a second report of the same death (hook, then sweep or tick) changes nothing
    assert step(m2, Gone("r-3", "exit status 3", "exit-3"), T0 + 1.5, BV) == (m2, [])


def test_an_agent_that_dies_in_every_verification_crash_loops_without_waiting_it_out() -> None:
    """Each attempt fails the moment its agent dies; retries spend the crash-loop budget,
    so the K+1st start is refused (CRASH_LOOP, one page) within seconds, not K * verify_s."""
    b = replace(BV, max_attempts=10)  # the crash-loop budget, not the attempts, runs out
    m = Machine("agent1", since=T0)
    now = T0
    m, _ = step(m, Gone(RID, "exit status 3", "exit-3"), now, b)
    starts, failed_at, paged = [now], [], []
    for _ in range(10):
        for event in (Claimed(None), TornDown(), Spawned(), Ready()):
            now += 0.1
            m, _ = step(m, event, now, b)
        assert m.state is State.VERIFYING
        now += 0.5  # dies half a second into its 300 s verification
        m, actions = step(m, Gone(f"c{now}", "exit status 3", "exit-3"), now, b)
        assert m.state in PARKED and m.since == now
        failed_at.append(now)
        paged += pages(actions)
        if m.state is not State.FAILED:
            break
        assert m.retry_at is not None
        now = m.retry_at
        m, actions = step(m, Tick(), now, b)
        paged += pages(actions)
        if m.state is State.CRASH_LOOP:
            break
        starts.append(now)
    assert m.state is State.CRASH_LOOP, m
    assert len(starts) == b.crashloop_restarts  # K starts, then refused
    assert now - T0 < b.verify_s  # every attempt ended long before one verify_s
    assert [p.key for p in paged] == ["agent1:crash-loop"]
    assert m.failure == "exit-3"
