"""Scheduling decisions on a simulated clock (netskyd.schedule.plan): tables of slots across
DST changes, leap days and ``*/7``, and catch-up after downtime without a burst."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from netskyd.schedule.plan import (
    Fire,
    ScheduleError,
    check_schedule,
    decide,
    loop_decide,
    loop_over,
    next_slot,
    parse_interval,
    slots_between,
)

BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int, tz: ZoneInfo | None = None) -> float:
    return datetime(*args, tzinfo=tz or UTC).timestamp()  # type: ignore[misc]


def local(t: float, tz: ZoneInfo = BERLIN) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%a %Y-%m-%d %H:%M %Z")


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        # every minute: the next whole minute
        ("* * * * *", "UTC", ts(2026, 12, 6, 10, 0, 30), [ts(2026, 12, 6, 10, 1)]),
        # */7 restarts at each hour (0, 7, ..., 56, then 0)
        (
            "*/7 * * * *",
            "UTC",
            ts(2026, 12, 6, 10, 50),
            [ts(2026, 12, 6, 10, 56), ts(2026, 12, 6, 11, 0), ts(2026, 12, 6, 11, 7)],
        ),
        # Feb 29: the next leap day
        ("0 9 29 2 *", "UTC", ts(2026, 1, 1), [ts(2028, 2, 29, 9)]),
    ],
)
def test_slots(expr: str, tz: str, after: float, expected: list[float]) -> None:
    got = slots_between(expr, tz, after, expected[-1], 100)
    assert got == expected


def test_weekdays_at_eleven_in_berlin_across_both_dst_changes() -> None:
    # Spring forward: Sunday 2026-03-29 02:00 -> 03:00 (CET -> CEST).
    spring = slots_between("0 11 * * 1-5", "Europe/Berlin", ts(2026, 3, 26), ts(2026, 4, 1), 10)
    assert [local(t) for t in spring] == [
        "Thu 2026-03-26 11:00 CET",
        "Fri 2026-03-27 11:00 CET",
        "Mon 2026-03-30 11:00 CEST",
        "Tue 2026-03-31 11:00 CEST",
    ]
    assert spring[2] - spring[1] == 3 * 86400 - 3600  # the weekend was an hour short
    # Fall back: Sunday 2026-10-25 03:00 -> 02:00 (CEST -> CET).
    autumn = slots_between("0 11 * * 1-5", "Europe/Berlin", ts(2026, 10, 22), ts(2026, 10, 28), 10)
    assert [local(t) for t in autumn] == [
        "Thu 2026-10-22 11:00 CEST",
        "Fri 2026-10-23 11:00 CEST",
        "Mon 2026-10-26 11:00 CET",
        "Tue 2026-10-27 11:00 CET",
    ]
    assert autumn[2] - autumn[1] == 3 * 86400 + 3600


def test_a_slot_in_the_spring_gap_fires_once_after_it_and_one_in_the_repeat_once() -> None:
    gap = slots_between("30 2 * * *", "Europe/Berlin", ts(2026, 3, 28, 12), ts(2026, 3, 30, 12), 5)
    assert [local(t) for t in gap] == ["Sun 2026-03-29 03:00 CEST", "Mon 2026-03-30 02:30 CEST"]
    twice = slots_between(
        "30 2 * * *", "Europe/Berlin", ts(2026, 10, 24, 12), ts(2026, 10, 26, 12), 5
    )
    assert len(twice) == 2  # 02:30 happens twice on the 25th; it fires once


NOW = ts(2026, 12, 6, 13, 0, 0)
THREE_H = 3 * 3600


@pytest.mark.parametrize(
    ("catchup", "fires", "skipped", "next_at"),
    [
        # one: a single fire for the 180 missed minutes, marked late with how many
        ("one", [(NOW, 0.0, 179)], 0, NOW + 60),
        # none: nothing, every missed slot skipped
        ("none", [], 180, NOW + 60),
        # all: the oldest missed slot only; the next one is due at once (then the next)
        ("all", [(NOW - THREE_H + 60, THREE_H - 60.0, 0)], 0, NOW - THREE_H + 120),
    ],
)
def test_catch_up_after_three_hours_down(
    catchup: str, fires: list[tuple[float, float, int]], skipped: int, next_at: float
) -> None:
    last = NOW - THREE_H  # the last slot handled before the daemon went down
    d = decide("* * * * *", "UTC", catchup, last, NOW - 86400, NOW)
    assert [(f.slot, f.late_s, f.missed) for f in d.fires] == fires
    assert d.skipped == skipped
    assert d.next_at == next_at


def test_all_sends_missed_slots_one_at_a_time_then_catches_up() -> None:
    last, sent = NOW - 600, []
    for _ in range(20):
        d = decide("* * * * *", "UTC", "all", last, NOW - 86400, NOW)
        if not d.fires:
            break
        sent += [f.slot for f in d.fires]
        last = d.handled if d.handled is not None else last
    assert sent == [NOW - 600 + 60 * k for k in range(1, 11)]


def test_an_on_time_slot_is_not_late_and_nothing_is_due_between_slots() -> None:
    d = decide("* * * * *", "UTC", "one", NOW - 60, NOW - 3600, NOW + 0.4)
    assert [(f.slot, f.missed) for f in d.fires] == [(NOW, 0)]
    quiet = decide("* * * * *", "UTC", "one", NOW, NOW - 3600, NOW + 30)
    assert quiet.fires == () and quiet.handled == NOW and quiet.next_at == NOW + 60


def test_a_new_entry_counts_from_its_creation() -> None:
    d = decide("0 * * * *", "UTC", "one", None, NOW - 90, NOW + 0.2)
    assert [f.slot for f in d.fires] == [NOW]


@pytest.mark.parametrize(
    ("expr", "tz", "why"),
    [
        ("61 * * * *", "UTC", "Bad minute"),
        ("* * *", "UTC", "5 fields"),
        ("* * * * * *", "UTC", "5 fields"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("not a cron", "UTC", "5 fields"),
    ],
)
def test_bad_schedules_and_zones_are_refused(expr: str, tz: str, why: str) -> None:
    with pytest.raises(ScheduleError, match=why):
        check_schedule(expr, tz)


def test_bad_policy() -> None:
    with pytest.raises(ScheduleError, match="catchup"):
        decide("* * * * *", "UTC", "some", None, NOW, NOW)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600), ("90s", 90), ("2h", 7200), ("1d", 86400), ("45", 45)]
)
def test_intervals(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "0s", "-5m", "5y"])
def test_bad_intervals(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_interval(text)


def test_loops_keep_their_grid_and_end() -> None:
    created = NOW
    waiting = loop_decide(created, 600, None, NOW + 10)
    assert waiting.fires == () and waiting.next_at == NOW + 600
    first = loop_decide(created, 600, None, NOW + 600.2)
    assert first.fires == (Fire(NOW + 600, pytest.approx(0.2), 0),)
    assert first.handled == NOW + 600 and first.next_at == NOW + 1200
    # a loop that was down an hour fires once for the five slots it missed, then keeps
    # its grid
    late = loop_decide(created, 600, NOW + 600, NOW + 3600 + 5)
    assert late.fires == (Fire(NOW + 3600, 5.0, 4),)
    assert late.handled == NOW + 3600 and late.next_at == NOW + 4200
    assert not loop_over(3, None, 2, NOW)
    assert loop_over(3, None, 3, NOW)
    assert loop_over(None, NOW + 100, 0, NOW + 101)
    assert next_slot("0 0 1 1 *", "UTC", ts(2026, 6, 1)) == ts(2027, 1, 1)
