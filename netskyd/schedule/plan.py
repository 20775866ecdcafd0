"""Scheduling decisions, pure: when a cron entry or a loop is due, and what a daemon that was
down does about the slots it missed (docs/schedule.md).

Time is epoch seconds (UTC) in and out; a cron expression is read in its entry's time zone
(``zoneinfo``), so DST is the zone's: a slot that does not exist on the day the clocks go
forward fires at the first minute that does, a slot that happens twice when they go back
fires once. Expressions are 5-field cron, parsed by cronsim (a maintained library; the
same rules as Debian's cron).

Catch-up after downtime (``catchup``): ``one`` (the default) fires once for any number of
missed slots, marked late with how many were missed; ``all`` fires every missed slot, one
at a time, oldest first (the scheduler sends the next only once the previous one is not
pending: never a burst); ``none`` fires nothing and waits for the next slot. No clock is
read here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

#: Catch-up policies.
CATCHUP = ("one", "all", "none")
#: Missed slots are counted up to this many (a year of an every-minute entry is more).
COUNT_LIMIT = 100_000
#: A slot this late or less is on time (not "missed"): the scheduler's own wake-up jitter.
ON_TIME_S = 1.0

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


class ScheduleError(ValueError):
    """Raised when a schedule, a time zone, an interval or a policy is not valid; the
    message names what and why."""


def zone(name: str) -> ZoneInfo:
    """The time zone ``name`` (``Europe/Berlin``, ``UTC``). Raises ScheduleError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ScheduleError(f"unknown time zone {name!r}") from e


def check_schedule(expr: str, tz: str = "UTC") -> None:
    """Raise ScheduleError unless ``expr`` is a valid 5-field cron expression in ``tz``."""
    if len(expr.split()) != 5:
        raise ScheduleError(f"schedule {expr!r} must have 5 fields (minute hour day month weekday)")
    try:
        CronSim(expr, datetime.now(zone(tz)))
    except CronSimError as e:
        raise ScheduleError(f"schedule {expr!r}: {e}") from e


def next_slot(expr: str, tz: str, after: float) -> float:
    """The first slot of ``expr`` in ``tz`` strictly after ``after`` (epoch s)."""
    start = datetime.fromtimestamp(after, UTC).astimezone(zone(tz))
    try:
        return next(iter(CronSim(expr, start))).timestamp()
    except CronSimError as e:
        raise ScheduleError(f"schedule {expr!r}: {e}") from e


def slots_between(expr: str, tz: str, after: float, until: float, limit: int) -> list[float]:
    """The slots of ``expr`` in ``(after, until]``, at most ``limit`` of the earliest."""
    out: list[float] = []
    t = after
    while len(out) < limit:
        t = next_slot(expr, tz, t)
        if t > until:
            break
        out.append(t)
    return out


@dataclass(frozen=True)
class Fire:
    """One fire to send now: the ``slot`` it stands for (epoch s), how late it is, and how
    many earlier slots it stands in for (``missed``; 0 on time)."""

    slot: float
    late_s: float
    missed: int


@dataclass(frozen=True)
class Decision:
    """What to do for one cron entry at ``now``: the fires to send (in order), the slots
    skipped by the catch-up policy, the slot to persist as the last one handled (None:
    nothing handled yet), and the next slot to sleep until."""

    fires: tuple[Fire, ...]
    skipped: int
    handled: float | None
    next_at: float


def decide(
    expr: str, tz: str, catchup: str, last: float | None, created: float, now: float
) -> Decision:
    """The cron decision at ``now`` (module docstring). ``last``: the last slot handled
    (fired or skipped), None for an entry that has handled none (slots then count from
    ``created``). ``all`` hands back its oldest missed slot only, so the scheduler sends
    them one at a time, never as a burst. Raises ScheduleError (expression, zone, policy).
    """
    if catchup not in CATCHUP:
        raise ScheduleError(f"catchup must be one of {', '.join(CATCHUP)}, not {catchup!r}")
    since = created if last is None else last
    first = slots_between(expr, tz, since, now, 2)
    if not first:
        return Decision((), 0, last, next_slot(expr, tz, max(since, now)))
    oldest = first[0]
    if len(first) == 1 and now - oldest <= ON_TIME_S:
        return Decision((Fire(oldest, max(0.0, now - oldest), 0),), 0, oldest,
                        next_slot(expr, tz, now))  # fmt: skip
    if catchup == "all":  # the oldest only: cheap however long the scheduler was away
        return Decision((Fire(oldest, now - oldest, 0),), 0, oldest, next_slot(expr, tz, oldest))
    due = slots_between(expr, tz, since, now, COUNT_LIMIT)
    newest = due[-1] if len(due) < COUNT_LIMIT else _newest_slot(expr, tz, now)
    total = len(due)
    late = now - newest
    if catchup == "none":
        return Decision((), total, newest, next_slot(expr, tz, now))
    return Decision((Fire(newest, late, total - 1),), 0, newest, next_slot(expr, tz, now))


def _newest_slot(expr: str, tz: str, now: float) -> float:
    """The newest slot at or before ``now``, searching back in growing windows."""
    window = 3600.0
    while True:
        slots = slots_between(expr, tz, now - window, now, COUNT_LIMIT)
        if slots:
            return slots[-1]
        window *= 8


def parse_interval(text: str) -> float:
    """Seconds in ``10m``, ``90s``, ``2h``, ``1d`` (a bare number is seconds); at least 1 s.
    Raises ScheduleError."""
    m = _INTERVAL.match(text)
    if m is None:
        raise ScheduleError(f"interval {text!r}: a number with s, m, h or d (e.g. 10m)")
    seconds = float(m.group(1)) * _UNIT_S[(m.group(2) or "s").lower()]
    if seconds < 1:
        raise ScheduleError(f"interval {text!r} is shorter than 1 s")
    return seconds


def loop_decide(created: float, interval_s: float, handled: float | None, now: float) -> Decision:
    """The loop decision at ``now``: a loop's slots are its grid ``created + k * interval``
    (k >= 1); ``handled`` is the newest slot it handled (None: none yet). A loop that was
    down fires once for every slot it missed (its newest, ``missed`` counting the
    others), then keeps its grid: loops catch up ``one``, always."""
    k_done = 0 if handled is None else round((handled - created) / interval_s)
    first = created + (k_done + 1) * interval_s
    if first > now:
        return Decision((), 0, handled, first)
    k_now = max(k_done + 1, int((now - created) // interval_s))
    slot = created + k_now * interval_s
    missed = k_now - k_done - 1
    late = max(0.0, now - slot)
    fire = Fire(slot, late, 0 if missed == 0 and late <= ON_TIME_S else missed)
    return Decision((fire,), 0, slot, created + (k_now + 1) * interval_s)


def loop_over(count: int | None, until: float | None, fired: int, at: float) -> bool:
    """True when a loop with ``count`` fires (None: no limit) and an end time ``until``
    (None: none) has no fire left at ``at``."""
    return (count is not None and fired >= count) or (until is not None and at > until)
