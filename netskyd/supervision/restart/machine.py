"""The restart state machine: a pure function ``step(machine, event, now) -> (machine, actions)``.

One machine per supervised agent. For ``agent0`` a restart is the constellation
restart (tear down every ``^agent[0-9]+$`` session, respawn agent0 and the
clones, hand the handoff to the fresh agent0); for a clone or agentinfinity it
is that agent alone, with no handoff. Source: ARCHITECTURE.md, "Supervision"::

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from netsky_shared.errors import IllegalTransition
from netskyd.timing import exp_backoff_s

ROOT = "agent0"
_T = TypeVar("_T")


class State(StrEnum):
    """Where one agent's restart stands."""

    IDLE = "idle"
    CLAIMED = "claimed"
    TEARING_DOWN = "tearing_down"
    SPAWNING = "spawning"
    AWAITING_READY = "awaiting_ready"
    HANDING_OFF = "handing_off"
    VERIFYING = "verifying"
    FAILED = "failed"
    GAVE_UP = "gave_up"
    CRASH_LOOP = "crash_loop"


#: States in which a restart is being carried out (the runner owns the agent's sessions).
ACTIVE = frozenset(
    {
        State.CLAIMED,
        State.TEARING_DOWN,
        State.SPAWNING,
        State.AWAITING_READY,
        State.HANDING_OFF,
        State.VERIFYING,
    }
)
#: States that wait for ``retry_at``.
PARKED = frozenset({State.FAILED, State.GAVE_UP, State.CRASH_LOOP})
#: Active states in which the agent's fresh session exists (or is being created): its
#: death (``Gone``) fails the attempt at once, whichever step is running. So whoever
#: learns of a death must feed it in these states too, not leave it to the step: a
#: Verify only looks at the end of ``verify_s``, a handoff waits for its deadline.
DEATH_FAILS = frozenset({State.SPAWNING, State.AWAITING_READY, State.HANDING_OFF, State.VERIFYING})


@dataclass(frozen=True)
class Budget:
    """Restart budget; every duration in seconds. Built from Settings by the runner."""

    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0
    #: Backoff jitter as a fraction: the delay is scaled by 1 +/- jitter.
    jitter: float = 0.2
    #: Failed attempts in one incident before GAVE_UP.
    max_attempts: int = 5
    giveup_cooldown_s: float = 1800.0
    #: K: restart starts allowed inside ``crashloop_window_s`` (W).
    crashloop_restarts: int = 5
    crashloop_window_s: float = 600.0
    #: First crash-loop cooldown; doubles per consecutive loop up to the cap.
    crashloop_cooldown_s: float = 900.0
    crashloop_cooldown_cap_s: float = 3600.0
    #: Verified and up this long: the loop streak and the paged classes are forgotten.
    stable_after_s: float = 600.0
    #: How long a respawned agent must stay up before the restart counts as verified.
    verify_s: float = 5.0
    #: A step with no answer for this long fails as ``stuck-<state>`` (e.g. after a
    #: lost action); the runner's own per-action deadlines are shorter.
    step_deadline_s: float = 300.0


@dataclass(frozen=True)
class Machine:
    """One agent's restart state (persisted as JSON; see ``to_json``)."""

    agent: str
    state: State = State.IDLE
    #: When ``state`` was entered (epoch seconds).
    since: float = 0.0
    restart_id: str | None = None
    #: "planned" (a restart request) or "crash" (the agent went away on its own).
    cause: str | None = None
    #: What happened, for people: "restart requested by agent0", "exit status 3".
    reason: str | None = None
    handoff: str | None = None
    #: Clones to bring up with agent0 (planned restart with N); None = keep the desired set.
    clones: int | None = None
    #: Failed attempts in the current incident.
    attempts: int = 0
    #: Class of the latest failure: "exit-3", "killed", "ready-timeout", ...
    failure: str | None = None
    retry_at: float | None = None
    #: Start times of recent restarts (the crash-loop window).
    starts: tuple[float, ...] = ()
    #: Consecutive crash loops (the cooldown doubles with each).
    loops: int = 0
    #: "<kind>:<failure class>" already paged in this streak.
    paged: tuple[str, ...] = ()
    last_ok_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The machine as a JSON object (``state/restart-inflight.json`` entry)."""
        return {
            "agent": self.agent,
            "state": self.state.value,
            "since": self.since,
            "restart_id": self.restart_id,
            "cause": self.cause,
            "reason": self.reason,
            "handoff": self.handoff,
            "clones": self.clones,
            "attempts": self.attempts,
            "failure": self.failure,
            "retry_at": self.retry_at,
            "starts": list(self.starts),
            "loops": self.loops,
            "paged": list(self.paged),
            "last_ok_at": self.last_ok_at,
        }

    @classmethod
    def from_json(cls, value: Any) -> Machine:
        """Parse ``to_json`` output; raises ValueError on a bad shape (types are
        checked, not coerced: a marker edited by hand must not turn into nonsense)."""
        if not isinstance(value, dict):
            raise ValueError("restart machine: not a JSON object")
        v = value
        try:
            starts = v.get("starts", [])
            paged = v.get("paged", [])
            if not isinstance(starts, list) or not isinstance(paged, list):
                raise ValueError("starts and paged must be lists")
            return cls(
                agent=_str(v["agent"], "agent"),
                state=State(v["state"]),
                since=_num(v["since"], "since"),
                restart_id=_opt(v.get("restart_id"), _str, "restart_id"),
                cause=_opt(v.get("cause"), _str, "cause"),
                reason=_opt(v.get("reason"), _str, "reason"),
                handoff=_opt(v.get("handoff"), _str, "handoff"),
                clones=_opt(v.get("clones"), _count, "clones"),
                attempts=_count(v.get("attempts", 0), "attempts"),
                failure=_opt(v.get("failure"), _str, "failure"),
                retry_at=_opt(v.get("retry_at"), _num, "retry_at"),
                starts=tuple(_num(t, "starts") for t in starts),
                loops=_count(v.get("loops", 0), "loops"),
                paged=tuple(_str(p, "paged") for p in paged),
                last_ok_at=_opt(v.get("last_ok_at"), _num, "last_ok_at"),
            )
        except KeyError as e:
            raise ValueError(f"restart machine: missing {e}") from e

    @property
    def constellation(self) -> bool:
        """True when a restart of this agent is the constellation restart (agent0)."""
        return self.agent == ROOT


def _str(v: object, name: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"restart machine: {name} must be a string, not {v!r}")
    return v


def _num(v: object, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"restart machine: {name} must be a number, not {v!r}")
    return float(v)


def _count(v: object, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"restart machine: {name} must be a count (0 or more), not {v!r}")
    return v


def _opt(v: object, parse: Callable[[object, str], _T], name: str) -> _T | None:
    return None if v is None else parse(v, name)


# ----- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gone:
    """The agent's session died or vanished with no restart request pending."""

    restart_id: str
    reason: str
    #: Failure class: "exit-3", "killed", "vanished", ...
    failure: str


@dataclass(frozen=True)
class Requested:
    """A planned restart was claimed (``state/restart-request`` or ``netskyctl restart``).

    ``force`` (the owner asked) lets it start from FAILED, GAVE_UP or CRASH_LOOP
    and past the crash-loop budget.
    """

    restart_id: str
    handoff: str
    by: str
    clones: int | None = None
    force: bool = False


@dataclass(frozen=True)
class Claimed:
    """The claim is done; ``handoff`` is what the fresh agent0 gets (None: no handoff)."""

    handoff: str | None


@dataclass(frozen=True)
class TornDown:
    """The sessions in the restart's scope are gone."""


@dataclass(frozen=True)
class Spawned:
    """The sessions in scope were created (or adopted, when resuming)."""


@dataclass(frozen=True)
class Ready:
    """Every agent in scope reported readiness."""


@dataclass(frozen=True)
class HandedOff:
    """The handoff envelope was delivered to the fresh agent0."""


@dataclass(frozen=True)
class Verified:
    """The agent stayed up for ``verify_s``."""


@dataclass(frozen=True)
class StepFailed:
    """The current step failed; ``failure`` is its class, ``detail`` the message."""

    failure: str
    detail: str


@dataclass(frozen=True)
class Cancelled:
    """The owner took the agent down (``down``, ``kill``): any restart stops here."""

    reason: str


@dataclass(frozen=True)
class Tick:
    """Time passed: retries fall due, stuck steps fail, stable agents reset their budget."""


Event = (
    Gone
    | Requested
    | Claimed
    | TornDown
    | Spawned
    | Ready
    | HandedOff
    | Verified
    | StepFailed
    | Cancelled
    | Tick
)


# ----- actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Build the handoff (crash: synthetic, from the dead pane's last lines); answer Claimed."""

    agent: str


@dataclass(frozen=True)
class TearDown:
    """Kill the sessions in scope (``constellation``: every ``^agent[0-9]+$``); answer TornDown."""

    agent: str
    constellation: bool


@dataclass(frozen=True)
class Spawn:
    """Spawn (or adopt) the agents in scope; answer Spawned."""

    agent: str
    constellation: bool
    clones: int | None


@dataclass(frozen=True)
class AwaitReady:
    """Wait for readiness of the agents in scope, with a deadline; answer Ready."""

    agent: str
    constellation: bool


@dataclass(frozen=True)
class DeliverHandoff:
    """Send ``text`` to agent0 as a ``handoff`` envelope, once (``envelope_id`` is fixed)."""

    envelope_id: str
    text: str


@dataclass(frozen=True)
class Verify:
    """Check at ``at`` that the agent is still up; answer Verified."""

    agent: str
    at: float


@dataclass(frozen=True)
class Wake:
    """Feed a Tick at ``at`` (a retry or a cooldown ends)."""

    at: float


@dataclass(frozen=True)
class Page:
    """Page the owner through ``escalate(subject, body, key, severity)``."""

    subject: str
    body: str
    key: str
    severity: str = "critical"


@dataclass(frozen=True)
class WriteMarker:
    """Write the agent's entry in ``state/<name>.json`` (``gave-up`` or ``crashloop``)."""

    name: str
    entry: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class ArchiveMarkers:
    """Move the agent's gave-up and crash-loop entries to ``state/archive/``."""

    agent: str


@dataclass(frozen=True)
class RestartStarted:
    """Record the start of attempt ``attempt`` of restart ``restart_id``."""

    restart_id: str
    attempt: int


@dataclass(frozen=True)
class RestartFinished:
    """Record how attempt ``attempt`` ended: outcome "ok", "failed" (with ``failure``),
    or "cancelled" (``failure`` says why)."""

    restart_id: str
    attempt: int
    outcome: str
    failure: str | None


Action = (
    Claim
    | TearDown
    | Spawn
    | AwaitReady
    | DeliverHandoff
    | Verify
    | Wake
    | Page
    | WriteMarker
    | ArchiveMarkers
    | RestartStarted
    | RestartFinished
)


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
