"""The restart state machine: a pure function ``step(machine, event, now) -> (machine, actions)``.

One machine per supervised agent; its states, record, events and actions are
``netskyd.supervision.restart.states`` (re-exported here). For ``agent0`` a restart is the
constellation restart (tear down every ``^agent[0-9]+$`` session, respawn agent0 and the clones,
hand the handoff to the fresh agent0); for a clone or agentinfinity it is that agent alone, with no
handoff. Source: ARCHITECTURE.md, "Supervision"::

    IDLE -> CLAIMED -> TEARING_DOWN -> SPAWNING -> AWAITING_READY -> HANDING_OFF
         -> VERIFYING -> IDLE
    any step fails -> FAILED -> (attempts < max) -> backoff -> CLAIMED
                            -> (attempts == max) -> GAVE_UP (page; retry after cooldown)
    K restarts inside window W -> CRASH_LOOP (cooldown with backoff, page once)
    a verified restart archives gave-up / crash-loop markers

Every branch below is labelled ``# OLD -> NEW``; ``step`` raises
IllegalTransition for any (state, event) pair not listed. The function reads no
clock and no randomness: ``now`` (seconds since the epoch) is passed in, and the
backoff jitter is derived from the restart id and attempt number, so a table
test or a replay gives the same answer every time. The daemon's restart runner
(``netskyd/supervision/restart/runner.py``) persists each new machine in
``state/restart-inflight.json``, records the transition, then carries out the
actions, each of which reports back with the next event.

Budget rules (why the owner is not paged in a storm):

- A restart *start* (entering CLAIMED) is allowed only while fewer than
  ``crashloop_restarts`` starts lie inside the last ``crashloop_window_s``;
  otherwise the machine enters CRASH_LOOP. So no sequence of crashes yields
  more than K starts in any window W (the hypothesis test checks this). The
  first attempt of a planned restart is exempt (asked for, not a crash); its
  retries are not.
- Failed attempts back off exponentially with +/- ``jitter`` and a cap.
- A page is emitted once per (kind, failure class) until the agent has been
  stable for ``stable_after_s``: a loop failing the same way pages once.
- Nothing is given up for good: GAVE_UP and CRASH_LOOP wake at ``retry_at``.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from netsky_shared.errors import IllegalTransition
from netskyd.supervision.restart.states import (
    ACTIVE,
    DEATH_FAILS,
    PARKED,
    ROOT,
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
)
from netskyd.timing import exp_backoff_s

__all__ = [
    "ROOT",
    "State",
    "ACTIVE",
    "PARKED",
    "DEATH_FAILS",
    "Budget",
    "Machine",
    "Gone",
    "Requested",
    "Claimed",
    "TornDown",
    "Spawned",
    "Ready",
    "HandedOff",
    "Verified",
    "StepFailed",
    "Cancelled",
    "Tick",
    "Event",
    "Claim",
    "TearDown",
    "Spawn",
    "AwaitReady",
    "DeliverHandoff",
    "Verify",
    "Wake",
    "Page",
    "WriteMarker",
    "ArchiveMarkers",
    "RestartStarted",
    "RestartFinished",
    "Action",
    "handoff_envelope_id",
    "backoff_s",
    "crashloop_cooldown_s",
    "recent_starts",
    "next_allowed_start",
    "step",
    "resume_actions",
]


# ----- the pure rules ----------------------------------------------------------------------


def handoff_envelope_id(restart_id: str) -> str:
    """The fixed envelope id of a restart's handoff: redoing the step never sends two."""
    return hashlib.sha256(f"handoff:{restart_id}".encode()).hexdigest()[:32]


def backoff_s(budget: Budget, attempts: int, restart_id: str) -> float:
    """Delay before retry ``attempts`` (1-based) of a restart: ``exp_backoff_s`` with the
    budget's base, cap and jitter, keyed by ``restart_id`` so agents do not retry in step.
    """
    return exp_backoff_s(
        attempts, budget.backoff_base_s, budget.backoff_cap_s, jitter=budget.jitter, key=restart_id
    )


def crashloop_cooldown_s(budget: Budget, loops: int) -> float:
    """Cooldown of crash loop number ``loops`` (1-based): doubles each time, capped."""
    return min(
        budget.crashloop_cooldown_cap_s, budget.crashloop_cooldown_s * 2.0 ** max(0, loops - 1)
    )


def recent_starts(m: Machine, budget: Budget, now: float) -> tuple[float, ...]:
    """Restart starts inside the crash-loop window ending at ``now``."""
    return tuple(t for t in m.starts if now - t < budget.crashloop_window_s)


def next_allowed_start(m: Machine, budget: Budget, now: float) -> float | None:
    """When the next restart may start (None: now)."""
    recent = sorted(recent_starts(m, budget, now))
    if len(recent) < budget.crashloop_restarts:
        return None
    # The oldest start that has to leave the window for one more to fit.
    return recent[len(recent) - budget.crashloop_restarts] + budget.crashloop_window_s


def step(
    m: Machine, event: Event, now: float, budget: Budget | None = None
) -> tuple[Machine, list[Action]]:
    """Apply ``event`` at ``now`` (epoch seconds) to ``m``; return (new machine, actions).

    Raises IllegalTransition when ``event`` cannot happen in ``m.state``. A
    transition to the same state with no actions means "noted, nothing to do".
    """
    b = budget or Budget()
    s = m.state
    if isinstance(event, Tick):
        return _tick(m, now, b)
    if isinstance(event, Cancelled):
        if s == State.IDLE:
            # IDLE -> IDLE: nothing to cancel
            return m, []
        # (any other) -> IDLE: cancelled by the owner; its markers are moot now
        # The owner acted: that ends the streak too (a later loop pages afresh).
        actions: list[Action] = []
        if s in ACTIVE:
            rid = m.restart_id or ""
            actions.append(RestartFinished(rid, m.attempts + 1, "cancelled", event.reason))
        m = replace(
            _enter(m, State.IDLE, now), attempts=0, retry_at=None, failure=None, loops=0, paged=()
        )
        return m, [*actions, ArchiveMarkers(m.agent)]
    if isinstance(event, Gone):
        if s == State.IDLE:
            # IDLE -> CLAIMED (or -> CRASH_LOOP when the budget is spent)
            m = replace(m, restart_id=event.restart_id, cause="crash", reason=event.reason)
            m = replace(m, handoff=None, clones=None, attempts=0, failure=event.failure)
            return _start(m, now, b, force=False)
        if s not in DEATH_FAILS:
            # CLAIMED/TEARING_DOWN/FAILED/GAVE_UP/CRASH_LOOP -> same: the restart owns it already
            return m, []
        # SPAWNING/AWAITING_READY/HANDING_OFF/VERIFYING -> FAILED: the new session died
        return _fail(m, event.failure, f"died while {s.value}: {event.reason}", now, b)
    if isinstance(event, Requested):
        if s == State.IDLE or (s in PARKED and event.force):
            # IDLE -> CLAIMED; FAILED/GAVE_UP/CRASH_LOOP -> CLAIMED (the owner asked)
            m = replace(
                m,
                restart_id=event.restart_id,
                cause="planned",
                reason=f"restart requested by {event.by}",
                handoff=event.handoff,
                clones=event.clones,
                attempts=0,
                failure=None,
            )
            return _start(m, now, b, force=event.force)
        raise IllegalTransition(f"{m.agent}: a planned restart cannot start in state {s.value}")
    if isinstance(event, StepFailed):
        if s in ACTIVE:
            # CLAIMED/TEARING_DOWN/SPAWNING/AWAITING_READY/HANDING_OFF/VERIFYING -> FAILED
            return _fail(m, event.failure, event.detail, now, b)
        raise IllegalTransition(f"{m.agent}: step failure reported in state {s.value}")
    if isinstance(event, Claimed) and s == State.CLAIMED:
        # CLAIMED -> TEARING_DOWN
        m = _enter(replace(m, handoff=event.handoff), State.TEARING_DOWN, now)
        return m, [TearDown(m.agent, m.constellation)]
    if isinstance(event, TornDown) and s == State.TEARING_DOWN:
        # TEARING_DOWN -> SPAWNING
        m = _enter(m, State.SPAWNING, now)
        return m, [Spawn(m.agent, m.constellation, m.clones)]
    if isinstance(event, Spawned) and s == State.SPAWNING:
        # SPAWNING -> AWAITING_READY
        m = _enter(m, State.AWAITING_READY, now)
        return m, [AwaitReady(m.agent, m.constellation)]
    if isinstance(event, Ready) and s == State.AWAITING_READY:
        if m.handoff is not None and m.restart_id is not None:
            # AWAITING_READY -> HANDING_OFF
            text, rid = m.handoff, m.restart_id
            m = _enter(m, State.HANDING_OFF, now)
            return m, [DeliverHandoff(handoff_envelope_id(rid), text)]
        # AWAITING_READY -> VERIFYING (no handoff: a clone or agentinfinity)
        m = _enter(m, State.VERIFYING, now)
        return m, [Verify(m.agent, now + b.verify_s)]
    if isinstance(event, HandedOff) and s == State.HANDING_OFF:
        # HANDING_OFF -> VERIFYING
        m = _enter(m, State.VERIFYING, now)
        return m, [Verify(m.agent, now + b.verify_s)]
    if isinstance(event, Verified) and s == State.VERIFYING:
        # VERIFYING -> IDLE: verified; markers archived, the attempt count cleared
        rid, attempt = m.restart_id or "", m.attempts + 1
        m = _enter(m, State.IDLE, now)
        m = replace(m, attempts=0, retry_at=None, last_ok_at=now, failure=None)
        return m, [RestartFinished(rid, attempt, "ok", None), ArchiveMarkers(m.agent)]
    raise IllegalTransition(f"{m.agent}: {type(event).__name__} cannot happen in state {s.value}")


def resume_actions(m: Machine, now: float, budget: Budget | None = None) -> list[Action]:
    """The actions that carry ``m`` on after a daemon restart (each step is idempotent)."""
    b = budget or Budget()
    s = m.state
    if s == State.CLAIMED:
        return [Claim(m.agent)]
    if s == State.TEARING_DOWN:
        return [TearDown(m.agent, m.constellation)]
    if s == State.SPAWNING:
        return [Spawn(m.agent, m.constellation, m.clones)]
    if s == State.AWAITING_READY:
        return [AwaitReady(m.agent, m.constellation)]
    if s == State.HANDING_OFF and m.restart_id is not None and m.handoff is not None:
        return [DeliverHandoff(handoff_envelope_id(m.restart_id), m.handoff)]
    if s == State.VERIFYING:
        return [Verify(m.agent, max(now, m.since + b.verify_s))]
    if s in PARKED and m.retry_at is not None:
        return [Wake(m.retry_at)]
    return []


def _enter(m: Machine, state: State, now: float) -> Machine:
    return replace(m, state=state, since=now)


def _start(m: Machine, now: float, b: Budget, *, force: bool) -> tuple[Machine, list[Action]]:
    """Enter CLAIMED, unless the crash-loop budget is spent (then CRASH_LOOP).

    The first attempt of a planned restart is asked for, not a crash: it neither
    needs nor spends budget. Its retries (it failed) do.
    """
    starts = recent_starts(m, b, now)
    m = replace(m, starts=starts)
    budgeted = not (m.cause == "planned" and m.attempts == 0)
    allowed_at = next_allowed_start(m, b, now) if budgeted and not force else None
    if allowed_at is not None:
        return _crash_loop(m, now, b, allowed_at)
    attempt = m.attempts + 1
    if budgeted:
        starts = (*starts, now)
    m = replace(_enter(m, State.CLAIMED, now), starts=starts, retry_at=None)
    return m, [RestartStarted(m.restart_id or "", attempt), Claim(m.agent)]


def _crash_loop(
    m: Machine, now: float, b: Budget, allowed_at: float
) -> tuple[Machine, list[Action]]:
    loops = m.loops + 1
    retry_at = max(now + crashloop_cooldown_s(b, loops), allowed_at)
    failure = m.failure or "unknown"
    m = replace(_enter(m, State.CRASH_LOOP, now), loops=loops, retry_at=retry_at)
    actions: list[Action] = [
        WriteMarker(
            "crashloop",
            {
                "agent": m.agent,
                "since": now,
                "failure": failure,
                "restarts_in_window": len(m.starts),
                "window_s": b.crashloop_window_s,
                "loops": loops,
                "retry_at": retry_at,
            },
        )
    ]
    page_key = f"crash-loop:{failure}"
    if page_key not in m.paged:
        m = replace(m, paged=(*m.paged, page_key))
        actions.append(
            Page(
                subject=f"{m.agent} is crash-looping ({failure})",
                body=(
                    f"{m.agent} needed {len(m.starts)} restarts within "
                    f"{b.crashloop_window_s:g}s; last: {m.reason}. netsky waits "
                    f"{retry_at - now:.0f}s before trying again and will not page again "
                    "for this failure."
                ),
                key=f"{m.agent}:crash-loop",
            )
        )
    actions.append(Wake(retry_at))
    return m, actions


def _fail(
    m: Machine, failure: str, detail: str, now: float, b: Budget
) -> tuple[Machine, list[Action]]:
    attempts = m.attempts + 1
    finished = RestartFinished(m.restart_id or "", attempts, "failed", failure)
    m = replace(m, attempts=attempts, failure=failure, reason=detail)
    if attempts >= b.max_attempts:
        # (any step) -> GAVE_UP: attempts spent; page, then wait out the cooldown
        retry_at = now + b.giveup_cooldown_s
        m = replace(_enter(m, State.GAVE_UP, now), retry_at=retry_at)
        actions: list[Action] = [
            finished,
            WriteMarker(
                "gave-up",
                {
                    "agent": m.agent,
                    "since": now,
                    "failure": failure,
                    "detail": detail,
                    "attempts": attempts,
                    "retry_at": retry_at,
                },
            ),
        ]
        page_key = f"gave-up:{failure}"
        if page_key not in m.paged:
            m = replace(m, paged=(*m.paged, page_key))
            actions.append(
                Page(
                    subject=f"{m.agent}: restart gave up after {attempts} attempts ({failure})",
                    body=(
                        f"Restarting {m.agent} failed {attempts} times; last: {detail}. "
                        f"netsky tries again in {b.giveup_cooldown_s:.0f}s."
                    ),
                    key=f"{m.agent}:gave-up",
                )
            )
        actions.append(Wake(retry_at))
        return m, actions
    # (any step) -> FAILED: retry after a jittered exponential backoff
    retry_at = now + backoff_s(b, attempts, m.restart_id or m.agent)
    m = replace(_enter(m, State.FAILED, now), retry_at=retry_at)
    return m, [finished, Wake(retry_at)]


def _tick(m: Machine, now: float, b: Budget) -> tuple[Machine, list[Action]]:
    s = m.state
    if s == State.IDLE:
        starts = recent_starts(m, b, now)
        stable = m.last_ok_at is not None and now - m.last_ok_at >= b.stable_after_s
        if stable and (m.loops or m.paged):
            # IDLE -> IDLE: stable for stable_after_s; loop streak and paged classes forgotten
            return replace(m, starts=starts, loops=0, paged=()), []
        # IDLE -> IDLE: old starts leave the window
        return (replace(m, starts=starts) if starts != m.starts else m), []
    if s in PARKED:
        if m.retry_at is not None and now < m.retry_at:
            # FAILED/GAVE_UP/CRASH_LOOP -> same: still waiting
            return m, []
        # FAILED/GAVE_UP/CRASH_LOOP -> CLAIMED: the wait is over, try again (budget permitting)
        return _start(m, now, b, force=False)
    if now - m.since >= b.step_deadline_s:
        # (any active step) -> FAILED: no answer within step_deadline_s
        return _fail(
            m, f"stuck-{s.value}", f"no progress in {s.value} for {now - m.since:.0f}s", now, b
        )
    # (any active step) -> same: still working
    return m, []
