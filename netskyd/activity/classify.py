"""Activity classes: what an agent is doing, decided from evidence. Pure.

``classify(obs) -> Verdict``. The classes, first match wins:

1. ``dead``: its pane's process is gone (or the session is), and no spawn is
   under way (``unknown`` while one is).
2. ``unknown``: no screen to judge by (tmux did not answer, or the runtime has
   no idle prompt to recognise and nothing else is known).
3. ``limited``: a usage/rate-limit notice is on screen, or the agent is parked
   until its reset time. Parked agents are never hung and never restarted.
4. ``hung``: hang-suspected — the pane's *fingerprint* (``netskyd.runtimes.screen``:
   spinners, clocks and counters do not count as movement) has not moved for
   ``hang_after_s`` while work is pending (envelopes in its inbox or claimed, or
   delivered since it was last seen at its prompt) or a blocking dialog is up.
   An agent at its prompt with nothing pending is idle however long it sits.
5. ``waiting``: a known dialog, or a question for the owner, is on screen; or
   a menu of dialog shape that no catalogue entry names (``dialog: unknown``;
   never ``hung``: it is paged once as ``dialog:<agent>``, and never answered).
6. ``busy``: a turn is running (the runtime's busy mark), or it is not at its
   prompt, or envelopes wait for it.
7. ``idle``: at its prompt, nothing pending.

Evidence (``Verdict.evidence``, JSON)::

    {"screen": [lines that decided], "fingerprint_age_s": 12.0, "raw_age_s": 1.0,
     "pending": {"inbox": 0, "claimed": 0, "unanswered_since": RFC 3339 | null},
     "process": {"alive": true, "spawning": false, "pane_pid": 123, "exit_status": null},
     "dialog": Dialog.to_json() | null, "limit": {"reset_at": RFC 3339 | null,
     "notice": "..."} | null, "at_prompt": true, "busy_mark": "..." | null}

Source: issue 5 and ARCHITECTURE.md "Hang detection".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from netsky_shared.ids import rfc3339
from netskyd.activity.dialogs import Dialog
from netskyd.config import Runtime, Settings
from netskyd.runtimes.catalogue import REGION, Kind, screens_for
from netskyd.runtimes.screen import screen_lines


class Activity(StrEnum):
    BUSY = "busy"
    IDLE = "idle"
    WAITING = "waiting"
    LIMITED = "limited"
    HUNG = "hung"
    DEAD = "dead"
    UNKNOWN = "unknown"


def iso(ts: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC (None stays None)."""
    if ts is None:
        return None
    return rfc3339(datetime.fromtimestamp(ts, UTC), digits=0)


@dataclass(frozen=True)
class ScreenFacts:
    """What one screen shows, per the runtime's catalogue entry."""

    at_prompt: bool
    prompt_line: str | None
    busy_mark: str | None
    limit_notice: str | None
    #: A line that says the runtime is still starting (it takes no input yet).
    starting: str | None = None


def custom_idle(settings: Settings) -> re.Pattern[str] | None:
    """The ``custom`` runtime's idle prompt (``custom_ready_regex``), if configured."""
    return re.compile(settings.custom_ready_regex) if settings.custom_ready_regex else None


def read_screen(runtime: Runtime, text: str, custom: re.Pattern[str] | None = None) -> ScreenFacts:
    """Prompt and busy mark on ``text`` (its last REGION lines), limit notice (anywhere).

    Readiness rests on two signals where the runtime has them, so no single footer
    string decides it: a ``ready`` line (``Screens.ready``) makes the nearest prompt
    line above it the prompt and rules out ``starting``; without one, the prompt is
    looked for in the last six non-blank lines and a ``starting`` mark vetoes it.
    """
    screens = screens_for(runtime)
    idle = custom if runtime is Runtime.CUSTOM else screens.idle
    every = screen_lines(text)
    lines = every[-REGION:]
    prompt_line = None
    ready = next((ln for ln in reversed(lines) for p in screens.ready if p.search(ln)), None)
    if idle is not None:
        # Claude draws its prompt inside the input box, above a footer: any of the
        # last few lines may hold it; a shell's prompt is the last line.
        tail = [ln for ln in lines if ln.strip()][-6:]
        if runtime is Runtime.CUSTOM:  # the owner's regex, over the whole screen
            m = idle.search("\n".join(lines).rstrip("\n "))
            prompt_line = (m.group(0) or "(match)") if m else None
        elif runtime in (Runtime.SHELL, Runtime.DEMO):  # the last line is the prompt
            prompt_line = tail[-1] if tail and idle.search(tail[-1]) else None
        elif ready is not None:  # the composer above the line only a ready screen shows
            above = lines[: lines.index(ready)]
            prompt_line = next((ln for ln in reversed(above) if idle.search(ln)), None)
        else:
            prompt_line = next((ln for ln in reversed(tail) if idle.search(ln)), None)
    busy = next((ln for ln in lines for p in screens.busy if p.search(ln)), None)
    limit = next((ln for ln in reversed(every) for p in screens.limit if p.search(ln)), None)
    starting = None
    if ready is None:
        starting = next((ln for ln in lines for p in screens.starting if p.search(ln)), None)
    at_prompt = prompt_line is not None and starting is None
    return ScreenFacts(at_prompt, prompt_line, busy, limit, starting)


@dataclass(frozen=True)
class Observation:
    """Everything ``classify`` judges by; times are epoch seconds."""

    agent: str
    runtime: Runtime
    now: float
    alive: bool
    spawning: bool = False
    pane_pid: int | None = None
    exit_status: int | None = None
    #: The visible pane text; None when there is no capture.
    screen: str | None = None
    facts: ScreenFacts | None = None
    dialog: Dialog | None = None
    fp_changed_at: float | None = None
    raw_changed_at: float | None = None
    inbox: int = 0
    claimed: int = 0
    last_delivery_at: float | None = None
    #: When it was last seen at its prompt (before this observation).
    last_idle_at: float | None = None
    hang_after_s: float = 600.0
    #: Parked by a usage limit until this time (None: not parked).
    limited_until: float | None = None
    limit_reset_at: float | None = None


@dataclass(frozen=True)
class Verdict:
    """A class, a one-line reason and the evidence (module docstring)."""

    activity: Activity
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def hang_suspected(self) -> bool:
        return self.activity is Activity.HUNG

    def to_json(self) -> dict[str, Any]:
        return {"activity": self.activity.value, "reason": self.reason, "evidence": self.evidence}


def unanswered_since(obs: Observation) -> float | None:
    """When the oldest delivery it has not come back to its prompt from was made."""
    if obs.last_delivery_at is None:
        return None
    if obs.last_idle_at is not None and obs.last_idle_at > obs.last_delivery_at:
        return None
    return obs.last_delivery_at


def _tail(text: str, n: int = 5) -> list[str]:
    """The last ``n`` non-blank lines of a screen: what it shows at the bottom."""
    return [ln for ln in screen_lines(text) if ln.strip()][-n:]


def _age(now: float, ts: float | None) -> float | None:
    return None if ts is None else round(max(0.0, now - ts), 1)


def classify(obs: Observation) -> Verdict:
    """The activity class of one agent (module docstring), with its evidence."""
    facts = obs.facts
    unanswered = unanswered_since(obs)
    if facts is not None and facts.at_prompt and obs.dialog is None:
        unanswered = None  # back at its prompt: it has dealt with what it was given
    evidence: dict[str, Any] = {
        "screen": [],
        "fingerprint_age_s": _age(obs.now, obs.fp_changed_at),
        "raw_age_s": _age(obs.now, obs.raw_changed_at),
        "pending": {
            "inbox": obs.inbox,
            "claimed": obs.claimed,
            "unanswered_since": iso(unanswered),
        },
        "process": {
            "alive": obs.alive,
            "spawning": obs.spawning,
            "pane_pid": obs.pane_pid,
            "exit_status": obs.exit_status,
        },
        "dialog": obs.dialog.to_json() if obs.dialog else None,
        "limit": None,
        "at_prompt": facts.at_prompt if facts else None,
        "busy_mark": facts.busy_mark if facts else None,
    }

    def verdict(activity: Activity, reason: str, *lines: str | None) -> Verdict:
        evidence["screen"] = [ln for ln in lines if ln]
        return Verdict(activity, reason, evidence)

    if not obs.alive:
        if obs.spawning:
            return verdict(Activity.UNKNOWN, "starting: its session is being created")
        status = f" (exit status {obs.exit_status})" if obs.exit_status is not None else ""
        return verdict(Activity.DEAD, f"its pane's process is gone{status}")
    if obs.screen is None or facts is None:
        return verdict(Activity.UNKNOWN, "no screen capture (tmux did not answer)")
    parked = obs.limited_until is not None and obs.limited_until > obs.now
    if facts.limit_notice is not None or parked:
        reset = obs.limit_reset_at
        evidence["limit"] = {"reset_at": iso(reset), "notice": facts.limit_notice}
        when = f"; resets {iso(reset)}" if reset else "; no reset time on screen"
        return verdict(Activity.LIMITED, f"usage limit{when}", facts.limit_notice)
    pending = obs.inbox + obs.claimed
    fp_age = None if obs.fp_changed_at is None else obs.now - obs.fp_changed_at
    blocking = obs.dialog is not None and obs.dialog.spec.blocking
    if obs.dialog is not None and obs.dialog.spec.kind is Kind.UNKNOWN:
        # Never hung, never busy: it waits on a dialog netsky cannot read, and the
        # owner is paged for that once (key dialog:<agent>), not again as a hang.
        return verdict(
            Activity.WAITING,
            f"a dialog netsky does not know is on screen: {obs.dialog.spec.describe}",
            *obs.dialog.lines,
        )
    if fp_age is not None and fp_age >= obs.hang_after_s and (pending or unanswered or blocking):
        why = (
            f"dialog {obs.dialog.name} up"
            if obs.dialog is not None
            else f"{pending} envelope(s) waiting"
            if pending
            else f"no answer to a delivery made {iso(unanswered)}"
        )
        lines = obs.dialog.lines if obs.dialog else tuple(_tail(obs.screen))
        return verdict(Activity.HUNG, f"pane unchanged for {fp_age:.0f}s while {why}", *lines)
    if obs.dialog is not None:
        return verdict(
            Activity.WAITING, f"{obs.dialog.name}: {obs.dialog.spec.describe}", *obs.dialog.lines
        )
    if facts.busy_mark is not None:
        return verdict(Activity.BUSY, "a turn is running", facts.busy_mark)
    if facts.starting is not None:
        return verdict(Activity.UNKNOWN, "starting up (no input taken yet)", facts.prompt_line)
    if screens_for(obs.runtime).idle is None and obs.runtime is not Runtime.CUSTOM:
        return verdict(Activity.UNKNOWN, f"runtime {obs.runtime.value} has no known prompt")
    if not facts.at_prompt:
        if obs.runtime is Runtime.CUSTOM and not pending and unanswered is None:
            return verdict(Activity.UNKNOWN, "no idle prompt recognised (custom_ready_regex)")
        return verdict(Activity.BUSY, "not at its prompt", *_tail(obs.screen))
    if pending:
        return verdict(
            Activity.BUSY, f"{pending} envelope(s) waiting for delivery", facts.prompt_line
        )
    return verdict(Activity.IDLE, "at its prompt, nothing pending", facts.prompt_line)
