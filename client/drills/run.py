"""One drill run: its clock, its steps, its timings and its deadline (stdlib only).

Every wait of every drill goes through ``Run.wait``, so no wait outlives the drill's
overall deadline, and a wait that gives up is a ``DrillFailed`` whose message is the
verdict's reason, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from netsky_shared.errors import NetskyError

T = TypeVar("T")
#: Seconds between "still waiting" lines on stderr (human output only).
PROGRESS_EVERY_S = 5.0


class DrillFailed(NetskyError):
    """Raised when a drill's check fails or one of its waits passes its deadline; the
    message is the report's ``reason``."""


class DrillInterrupted(KeyboardInterrupt):
    """Raised when the person running a drill stops it with SIGTERM (client.drills turns
    SIGTERM into this). A KeyboardInterrupt, so that no "not yet" handler swallows it."""


class Run:
    """The record of one drill run.

    ``deadline_s``: the whole drill's budget in seconds (every wait is capped by what
    is left of it). ``echo(line)`` gets each step as it is recorded; ``progress(line)``
    gets a "still waiting" line every PROGRESS_EVERY_S during long waits. Both may be
    None (``--json``). ``clock`` is ``time.monotonic`` unless a test injects one.
    """

    def __init__(
        self,
        name: str,
        deadline_s: float,
        *,
        echo: Callable[[str], None] | None = None,
        progress: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.deadline_s = deadline_s
        self.echo = echo
        self.progress = progress
        self.clock = clock
        self.t0 = clock()
        self.started_wall = time.time()
        self.steps: list[dict[str, Any]] = []
        self.timings_ms: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def elapsed_ms(self) -> float:
        """Milliseconds since the drill started."""
        return (self.clock() - self.t0) * 1000

    def remaining_s(self) -> float:
        """Seconds left before the drill's deadline (negative once it passed)."""
        return self.deadline_s - (self.clock() - self.t0)

    def step(self, step: str, detail: str = "") -> None:
        """Record ``{"t_ms", "step", "detail"}`` and echo it (human output)."""
        row = {"t_ms": round(self.elapsed_ms(), 1), "step": step, "detail": detail}
        self.steps.append(row)
        if self.echo is not None:
            self.echo(format_step(row))

    def timing(self, name: str, since: float, until: float | None = None) -> float:
        """Record ``timings_ms[name]``: from the monotonic ``since`` to ``until`` (now by
        default), in milliseconds, rounded to 0.1; return it."""
        end = self.clock() if until is None else until
        ms = round(max(0.0, end - since) * 1000, 1)
        self.timings_ms[name] = ms
        return ms

    def budget_s(self, wanted_s: float) -> float:
        """``wanted_s`` capped by what is left of the deadline; raises DrillFailed when
        nothing is left."""
        left = self.remaining_s()
        if left <= 0:
            raise DrillFailed(f"the drill's deadline of {self.deadline_s:g}s passed")
        return min(wanted_s, left)

    def wait(
        self,
        check: Callable[[], T | None],
        what: str,
        *,
        timeout_s: float = 60.0,
        poll_s: float = 0.1,
        note: Callable[[], str] | None = None,
    ) -> T:
        """Poll ``check`` until it returns something truthy and return that.

        ``check`` raising NetskyError, OSError or ValueError counts as "not yet" (a
        daemon restarting, a file half there); the last such error is named in the
        failure; DrillFailed from ``check`` ends the wait at once (it is a verdict).
        The wait ends at ``timeout_s`` or the drill's deadline, whichever is first,
        with DrillFailed("timed out after Ns waiting for <what>"). ``note()`` adds a
        detail to the progress lines and the failure (e.g. "2/3 agents ready").
        """
        limit_s = min(timeout_s, max(0.0, self.remaining_s()))
        start = self.clock()
        last_progress = start
        last_error: str | None = None
        while True:
            try:
                value = check()
                if value:
                    return value
            except DrillFailed as e:
                if self.remaining_s() > 0:
                    raise
                last_error = str(e)  # the deadline, met inside ``check``: say what we waited for
            except (NetskyError, OSError, ValueError) as e:
                last_error = f"{type(e).__name__}: {e}"
            now = self.clock()
            if now - start >= limit_s:
                detail = _detail(note, last_error)
                cause = "the drill's deadline" if limit_s < timeout_s else "its deadline"
                raise DrillFailed(
                    f"timed out after {now - start:.1f}s ({cause}) waiting for {what}{detail}"
                )
            if self.progress is not None and now - last_progress >= PROGRESS_EVERY_S:
                self.progress(f"  ... waiting for {what} ({now - start:.0f}s){_detail(note, None)}")
                last_progress = now
            time.sleep(min(poll_s, max(0.0, limit_s - (now - start))))

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (capped by the deadline): a settle time, never a wait."""
        time.sleep(max(0.0, min(seconds, self.remaining_s())))


def _detail(note: Callable[[], str] | None, error: str | None) -> str:
    parts = []
    if note is not None:
        try:
            parts.append(note())
        except (NetskyError, OSError, ValueError) as e:
            parts.append(f"({type(e).__name__}: {e})")
    if error:
        parts.append(f"last error: {error}")
    return f" ({'; '.join(p for p in parts if p)})" if any(parts) else ""


def format_step(row: dict[str, Any]) -> str:
    """``   12.3s  step  detail``: one human line for a step row."""
    detail = f"  {row['detail']}" if row.get("detail") else ""
    return f"{row['t_ms'] / 1000:7.1f}s  {row['step']}{detail}"
