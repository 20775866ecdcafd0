"""When does a usage limit reset? Parse the time an agent's screen gives, pure.

The CLIs print the reset time in a handful of shapes (recorded screens and the
CLIs' bundles, ``tests/screens/*/README.md``):

- a time of day, maybe with a date and a zone: ``resets 3pm (Europe/London)``,
  ``reset at 3:05 PM``, ``resets Oct 9, 5pm``, ``try again at Dec 3rd, 2026 3:05 PM``;
- a duration: ``try again in 2 hours 5 minutes``, ``in 4 days 1 hour``, ``in 45s``.

``parse_reset(text, now, tz)`` returns the epoch seconds of the first reset time
found in ``text`` (a time of day without a date is the next such time after
``now``, or a moment ago when it passed less than an hour since), or None when
there is none. ``tz`` is the zone for times that name none (the machine's local
zone by default).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
#: A time of day at most this far in the past is the reset that just happened (the
#: screen shows minutes; the notice may be older than the tick that reads it), not
#: tomorrow's.
RECENT_S = 3600.0
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(
    r"\bin\s+((?:\d+\s*(?:days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b[\s,]*(?:and\s+)?)+)",
    re.IGNORECASE,
)
_PART = re.compile(r"(\d+)\s*([dhms])", re.IGNORECASE)
_AT = re.compile(
    r"\b(?:resets?|reset at|resets at|try again at|available at|until)\s+"
    r"(?:(?:on\s+)?(?:mon|tue|wed|thu|fri|sat|sun)\w*,?\s+)?"
    r"(?:(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\w*\.?\s+"
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:(?P<year>\d{4}),?\s+)?(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?"
    r"(?:\s*\((?P<zone>[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*)\))?",
    re.IGNORECASE,
)


def _zone(name: str | None, default: tzinfo) -> tzinfo:
    if not name:
        return default
    if name.upper() in {"UTC", "GMT", "Z"}:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default


def _duration_s(text: str) -> float | None:
    m = _DURATION.search(text)
    if m is None:
        return None
    total = 0
    for amount, unit in _PART.findall(m.group(1)):
        total += int(amount) * _UNIT_S[unit.lower()]
    return float(total) if total > 0 else None


def parse_reset(text: str, now: float, tz: tzinfo | None = None) -> float | None:
    """Epoch seconds of the reset time ``text`` gives (module docstring), or None."""
    local = tz or datetime.now().astimezone().tzinfo or UTC
    m = _AT.search(text)
    if m is not None and (m.group("ampm") or m.group("minute") or m.group("month")):
        hour, minute = int(m.group("hour")), int(m.group("minute") or 0)
        ampm = (m.group("ampm") or "").lower().replace(".", "")
        if ampm == "pm" and hour < 12:
            hour += 12
        elif ampm == "am" and hour == 12:
            hour = 0
        if hour < 24 and minute < 60:
            zone = _zone(m.group("zone"), local)
            current = datetime.fromtimestamp(now, zone)
            if m.group("month"):
                year = int(m.group("year") or current.year)
                try:
                    day = date(year, _MONTHS[m.group("month")[:3].lower()], int(m.group("day")))
                except ValueError:
                    day = None
                if day is not None:
                    when = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                    if not m.group("year") and when.timestamp() < now - 86400:
                        when = when.replace(year=when.year + 1)
                    return when.timestamp()
            when = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if when.timestamp() <= now - RECENT_S:
                when += timedelta(days=1)
            return when.timestamp()
    seconds = _duration_s(text)
    return now + seconds if seconds is not None else None
