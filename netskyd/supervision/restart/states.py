"""The restart machine's vocabulary: its states, its persisted record, its events and its
actions (docs/supervision.md, "The restart state machine").

Data only, imported by the pure rules (``netskyd.supervision.restart.machine``), the
runner and its steps, and the markers; nothing here reads a clock or the disk.
``Machine.to_json`` / ``Machine.from_json`` are the shape of an entry of
``state/restart-inflight.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

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
