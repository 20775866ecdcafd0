"""Periodic work on a drift-free deadline grid: the one helper for every loop that repeats.

``every(period_s, fn)`` runs ``fn`` at ``start + k * period`` (``start``: when it was
called), so a loop does not drift by the time its work takes, and a run that
overruns skips the slots it missed instead of bunching up (arq's ``utils.poll``
idea, on the grid the ticker has always used). ``period_s`` may be a callable,
read again before every sleep (a SIGHUP may change the setting behind it).
Errors are the caller's: ``fn`` catches what its loop must survive, and anything
it lets through ends the loop (and its task), as a bare ``while True`` would.

Users: the ticker, the pulse (sd_notify and the heartbeat), the escalation spool,
the monitor's dialog poll, the session watcher's hook re-install and sweep, and
the last-known-good recorder.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

import anyio

from netskyd.timing import next_deadline


async def every(
    period_s: float | Callable[[], float],
    fn: Callable[[], Awaitable[object]],
    *,
    at_once: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> NoReturn:
    """Await ``fn()`` every ``period_s`` seconds on the grid, forever (until cancelled).

    ``at_once``: the first run is at ``start`` (else one period later). ``clock``:
    a monotonic clock in seconds (injected by the daemon's context and by tests).
    A period that is not positive raises ValueError.
    """
    start = clock()
    if at_once:
        await fn()
    while True:
        period = period_s() if callable(period_s) else period_s
        if period <= 0:
            raise ValueError(f"a period must be positive, not {period!r}")
        now = clock()
        await anyio.sleep(next_deadline(start, period, now) - now)
        await fn()
