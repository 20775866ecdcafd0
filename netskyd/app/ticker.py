"""The ticker: every ``tick_interval_s``, run one tick and record one tick row.

A tick: one batched tmux snapshot (every pane's state and the live agents' screens),
the liveness check (first spawns, deaths handed to the watchdog, late readiness),
the activity monitor (classes, hang check, dialogs, usage limits; netskyd/monitor.py),
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

from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus

from netsky_shared.errors import NetskyError, TmuxTimeout
from netsky_shared.ids import rfc3339
from netskyd.context import Context
from netskyd.escalation.spool import escalate, resolve
from netskyd.keepalive import health
from netskyd.periodic import every


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


def tick_deadline_s(interval: float, tmux_timeout_s: float) -> float:
    """How long one tick may run: long enough for several tmux calls, at most 30 s."""
    return max(4 * tmux_timeout_s, min(interval, 30.0))


async def tick_once(ctx: Context) -> dict[str, Any]:
    """Run one tick; return its summary (also recorded as a ``ticks`` row and an event)."""
    async with ctx.tick_lock:
        started = datetime.now(UTC)
        t0 = ctx.monotonic()
        summary: dict[str, Any] = {"n": ctx.tick_count + 1, "timed_out": False}
        deadline = tick_deadline_s(ctx.settings.tick_interval_s, ctx.settings.tmux_timeout_s)
        with anyio.move_on_after(deadline) as scope:
            try:
                sup = ctx.sup()
                # One tmux round trip: every pane's state plus the text of live agents.
                live = [a for a, st in sup.agents.items() if st.alive]
                snap = await ctx.tmux.snapshot(live, ctx.settings.pane_capture_lines)
                summary["liveness"] = await sup.check(reason="tick", panes=snap.panes)
                summary["activity"] = await ctx.the_monitor().observe_all(snap.captures)
                await _tmux_answers(ctx)
            except TmuxTimeout as e:
                summary["error"] = str(e)
                summary["incident"] = await _tmux_incident(ctx, str(e))
            except NetskyError as e:
                summary["error"] = str(e)
            summary["watchdog"] = await ctx.the_watchdog().tick()
            bus = ctx.the_bus()
            summary["leases_expired"] = await bus.expire_leases()
            summary["pruned"] = sum((await bus.prune()).values())
            bus.rescan()
        if scope.cancelled_caught:
            summary["timed_out"] = True
        duration_ms = (ctx.monotonic() - t0) * 1000
        finished = datetime.now(UTC)
        ctx.tick_count += 1
        ctx.last_tick_at = ctx.clock()
        level = "warning" if summary["timed_out"] or "error" in summary else "debug"
        await ctx.recorder.event("tick", level=level, duration_ms=round(duration_ms, 1), **summary)
        await ctx.store.add_tick(_ts(started), _ts(finished), duration_ms, summary)
    _notify_status(ctx, summary, duration_ms)
    await _refresh_health(ctx)
    return summary


def _notify_status(ctx: Context, summary: dict[str, Any], duration_ms: float) -> None:
    if not ctx.notifier.enabled:
        return
    states = list(ctx.supervisor.agents.values()) if ctx.supervisor is not None else []
    ctx.notifier.status(
        tick_status(
            summary,
            duration_ms,
            alive=sum(1 for st in states if st.alive),
            known=len(states),
            ready=sum(1 for st in states if st.ready),
            open_incidents=None if ctx.spool is None else len(ctx.spool.open_keys),
        )
    )


async def _refresh_health(ctx: Context) -> None:
    """Rewrite ``state/health.json``; a failure is recorded, never raised (the tick and
    the pulse must not depend on the report), and the refresh has the tick's deadline."""
    deadline = tick_deadline_s(ctx.settings.tick_interval_s, ctx.settings.tmux_timeout_s)
    try:
        with anyio.fail_after(deadline):
            await health.refresh(ctx)
    except Exception as e:  # whatever breaks the report, the tick goes on
        error = f"timed out after {deadline:g}s" if isinstance(e, TimeoutError) else repr(e)
        await ctx.recorder.event("health.failed", level="warning", error=error)


TMUX_KEY = "tmux:unresponsive"


async def _tmux_incident(ctx: Context, error: str) -> str:
    """tmux did not answer: page (one incident while it lasts); nothing is concluded
    about the agents from its silence."""
    incident = await escalate(
        ctx,
        "tmux is not answering",
        f"The watchdog tick could not reach the tmux server ({error}). Agents' liveness "
        "is unknown until it answers; netsky keeps ticking. Is the tmux server stopped "
        "(SIGSTOP) or overloaded?",
        key=TMUX_KEY,
    )
    return incident.id


async def _tmux_answers(ctx: Context) -> None:
    """tmux answered this tick: close a ``tmux:unresponsive`` incident the spool knows open."""
    if ctx.spool is not None and TMUX_KEY in ctx.spool.open_keys:
        ctx.spool.open_keys.discard(TMUX_KEY)
        await resolve(ctx, TMUX_KEY, "The tmux server answers again; the tick saw every pane.")


def _ts(dt: datetime) -> str:
    return rfc3339(dt)


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Long-running task: tick at once, then every ``tick_interval_s`` until cancelled."""
    task_status.started()

    async def tick() -> None:
        await tick_once(ctx)

    await every(lambda: ctx.settings.tick_interval_s, tick, at_once=True, clock=ctx.monotonic)
