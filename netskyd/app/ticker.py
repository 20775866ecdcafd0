"""The ticker: every ``tick_interval_s``, run one tick and record one tick row.

A tick: one batched tmux snapshot (every pane's state and the live agents' screens),
the liveness check (first spawns, deaths handed to the watchdog, late readiness),
the activity monitor (classes, hang check, dialogs, usage limits; netskyd/activity/monitor.py),
the watchdog's tick (due retries, a pending
restart request), lease expiry, pruning, and an inbox rescan as the watcher's
backstop. A tmux that does not answer is an incident (``escalate``), not a
reason to hang. Ticks are
scheduled on a fixed grid from the monotonic clock, so they do not drift; a tick
that overruns skips the missed slots instead of bunching up. Each tick has a
deadline; one that hits it is recorded as ``timed_out`` and never wedges the next.
A lock keeps one tick at a time even when another path asks for a tick. After each
tick the service manager gets a one-line ``STATUS=`` (netskyd.keepalive.sdnotify) and the health
report is rewritten (netskyd.keepalive.health); neither can fail the tick.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus

from netsky_shared.errors import NetskyError, TmuxTimeout
from netsky_shared.ids import rfc3339
from netskyd.activity.monitor import Monitor
from netskyd.agents.tmux import Tmux
from netskyd.bus.watcher import Bus
from netskyd.escalation.spool import Spool
from netskyd.keepalive.sdnotify import Notifier
from netskyd.periodic import every
from netskyd.ports import Clock, Monotonic, SettingsView
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder
from netskyd.supervision.supervisor import Supervisor
from netskyd.timing import tick_deadline_s


def tick_status(
    summary: dict[str, Any],
    duration_ms: float,
    *,
    alive: int,
    known: int,
    ready: int,
    open_incidents: int | None,
) -> str:
    """The one-line ``STATUS=`` after a tick, e.g. ``tick 42 ok in 12ms; agents 3/3 alive,
    3 ready; 0 open incidents`` (``open_incidents`` None: the spool is not running)."""
    if summary.get("timed_out"):
        outcome = "timed out"
    elif "error" in summary:
        outcome = "failed"
    else:
        outcome = "ok"
    line = (
        f"tick {summary.get('n', '?')} {outcome} in {duration_ms:.0f}ms; "
        f"agents {alive}/{known} alive, {ready} ready"
    )
    if open_incidents is not None:
        line += f"; {open_incidents} open incident{'' if open_incidents == 1 else 's'}"
    if outcome == "failed":
        line += f"; {summary['error']}"
    return line


TMUX_KEY = "tmux:unresponsive"


class Ticker:
    """The tick, and the ``TickView`` port (netskyd.ports): when the daemon started, how
    many ticks finished and when the last one did.

    The ticker meets every feature (it is the app's, not a feature's): the supervisor
    (liveness and its restart runner's tick), the activity monitor, the bus (leases,
    pruning, the rescan), the escalation spool (the tmux incident), the health report,
    tmux, the Store, the Recorder and the sd_notify channel.
    """

    def __init__(
        self,
        *,
        settings: SettingsView,
        tmux: Tmux,
        store: Store,
        recorder: Recorder,
        notifier: Notifier,
        supervisor: Supervisor,
        monitor: Monitor,
        bus: Bus,
        pager: Spool,
        refresh_health: Callable[..., Awaitable[object]],
        clock: Clock = time.time,
        monotonic: Monotonic = time.monotonic,
        started_at: float | None = None,
    ) -> None:
        self.settings = settings
        self.tmux = tmux
        self.store = store
        self.recorder = recorder
        self.notifier = notifier
        self.supervisor = supervisor
        self.monitor = monitor
        self.bus = bus
        self.pager = pager
        self.refresh_health = refresh_health
        self.clock = clock
        self.monotonic = monotonic
        self._started_at = clock() if started_at is None else started_at
        self._last_tick_at: float | None = None
        self._tick_count = 0
        #: One tick at a time, whoever asks for it.
        self.lock = anyio.Lock()

    @property
    def started_at(self) -> float:
        return self._started_at

    @property
    def last_tick_at(self) -> float | None:
        return self._last_tick_at

    @property
    def tick_count(self) -> int:
        return self._tick_count

    async def tick_once(self) -> dict[str, Any]:
        """Run one tick; return its summary (also recorded as a ``ticks`` row and an event)."""
        s = self.settings()
        async with self.lock:
            started = datetime.now(UTC)
            t0 = self.monotonic()
            summary: dict[str, Any] = {"n": self._tick_count + 1, "timed_out": False}
            deadline = tick_deadline_s(s.tick_interval_s, s.tmux_timeout_s)
            with anyio.move_on_after(deadline) as scope:
                try:
                    sup = self.supervisor
                    # One tmux round trip: every pane's state plus the text of live agents.
                    live = [a for a, st in sup.agents.items() if st.alive]
                    snap = await self.tmux.snapshot(live, s.pane_capture_lines)
                    summary["liveness"] = await sup.check(reason="tick", panes=snap.panes)
                    summary["activity"] = await self.monitor.observe_all(snap.captures)
                    await self._tmux_answers()
                except TmuxTimeout as e:
                    summary["error"] = str(e)
                    summary["incident"] = await self._tmux_incident(str(e))
                except NetskyError as e:
                    summary["error"] = str(e)
                summary["watchdog"] = await self.supervisor.restarts.tick()
                summary["leases_expired"] = await self.bus.expire_leases()
                summary["pruned"] = sum((await self.bus.prune()).values())
                self.bus.rescan()
            if scope.cancelled_caught:
                summary["timed_out"] = True
            duration_ms = (self.monotonic() - t0) * 1000
            finished = datetime.now(UTC)
            self._tick_count += 1
            self._last_tick_at = self.clock()
            level = "warning" if summary["timed_out"] or "error" in summary else "debug"
            await self.recorder.event(
                "tick", level=level, duration_ms=round(duration_ms, 1), **summary
            )
            await self.store.add_tick(_ts(started), _ts(finished), duration_ms, summary)
        self._notify_status(summary, duration_ms)
        await self._refresh_health()
        return summary

    def _notify_status(self, summary: dict[str, Any], duration_ms: float) -> None:
        if not self.notifier.enabled:
            return
        states = list(self.supervisor.agents.values())
        self.notifier.status(
            tick_status(
                summary,
                duration_ms,
                alive=sum(1 for st in states if st.alive),
                known=len(states),
                ready=sum(1 for st in states if st.ready),
                open_incidents=len(self.pager.open_keys),
            )
        )

    async def _refresh_health(self) -> None:
        """Rewrite ``state/health.json``; a failure is recorded, never raised (the tick and
        the pulse must not depend on the report), and the refresh has the tick's deadline."""
        s = self.settings()
        deadline = tick_deadline_s(s.tick_interval_s, s.tmux_timeout_s)
        try:
            with anyio.fail_after(deadline):
                await self.refresh_health(ticks=self)
        except Exception as e:  # whatever breaks the report, the tick goes on
            error = f"timed out after {deadline:g}s" if isinstance(e, TimeoutError) else repr(e)
            await self.recorder.event("health.failed", level="warning", error=error)

    async def _tmux_incident(self, error: str) -> str:
        """tmux did not answer: page (one incident while it lasts); nothing is concluded
        about the agents from its silence."""
        incident = await self.pager.escalate(
            "tmux is not answering",
            f"The watchdog tick could not reach the tmux server ({error}). Agents' liveness "
            "is unknown until it answers; netsky keeps ticking. Is the tmux server stopped "
            "(SIGSTOP) or overloaded?",
            key=TMUX_KEY,
        )
        return str(incident.id)

    async def _tmux_answers(self) -> None:
        """tmux answered this tick: close a ``tmux:unresponsive`` incident the spool knows
        open."""
        if self.pager.is_open(TMUX_KEY):
            await self.pager.resolve(
                TMUX_KEY, "The tmux server answers again; the tick saw every pane."
            )

    async def run(self, *, task_status: TaskStatus[Ticker] = anyio.TASK_STATUS_IGNORED) -> None:
        """Long-running task: tick at once, then every ``tick_interval_s`` until cancelled.
        ``await tg.start(ticker.run)`` returns the ticker (the ``TickView``)."""
        task_status.started(self)

        async def tick() -> None:
            await self.tick_once()

        await every(
            lambda: self.settings().tick_interval_s, tick, at_once=True, clock=self.monotonic
        )


def _ts(dt: datetime) -> str:
    return rfc3339(dt)
