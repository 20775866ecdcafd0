"""The health report: ``state/health.json``, rewritten at every tick and on ``health``.

``refresh(...)`` builds the report of docs/keepalive.md ("Health report", source
``daemon``) from what the daemon holds in memory (the supervisor's agent states, the
monitor's last classes, the last tick) and from the files under NETSKY_HOME
(``netsky_shared.health``: markers, incidents, legs, heartbeat, last-known-good, the
shim's journal), writes it atomically and returns it. ``install`` comes from the
pulse's ``install_kind``, ``sd_notify`` and ``watchdog_s`` from the context's notifier.
It asks tmux nothing, so it is cheap enough for every tick, and it never raises for a
bad file: the file is named in ``reasons`` and the status is ``degraded``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

import netskyd
from netsky_shared import health as healthfiles
from netsky_shared.ids import sort_key
from netsky_shared.incidents import rfc3339
from netskyd.keepalive.sdnotify import Notifier
from netskyd.ports import ActivityView, AgentView, Clock, SettingsView, TickView
from netskyd.store.recorder import Recorder


def _agents(sup: AgentView, activity: ActivityView) -> tuple[list[dict[str, Any]], list[str]]:
    """The report's agents (wanted, or alive, or spawning) and the wanted ones not alive."""
    wanted = sup.desired.wanted()
    names = sorted(set(sup.agents) | set(wanted), key=sort_key)
    rows: list[dict[str, Any]] = []
    not_alive: list[str] = []
    for agent in names:
        st = sup.agents.get(agent)
        alive = bool(st and st.alive)
        if agent not in wanted and not alive and not (st and st.spawning):
            continue
        cls = activity.activity(agent)[0]
        rows.append(
            {"agent": agent, "alive": alive, "ready": bool(st and st.ready), "activity": cls}
        )
        if agent in wanted and not alive:
            not_alive.append(agent)
    return rows, not_alive


async def refresh(
    *,
    settings: SettingsView,
    agents: AgentView,
    activity: ActivityView,
    ticks: TickView,
    notifier: Notifier,
    recorder: Recorder,
    clock: Clock,
) -> dict[str, Any]:
    """Build the health report, write ``state/health.json`` atomically, return it.

    From the agents (``AgentView``), the monitor's classes (``ActivityView``), the
    ticker's record (``TickView``), the sd_notify channel and the files under
    NETSKY_HOME (netsky_shared.health).

    Never raises for a bad file under NETSKY_HOME; a report that cannot be written is
    still returned (the failure is recorded as ``health.write_failed``).
    """
    from netskyd.keepalive.heartbeat import (
        install_kind,  # pulse -> ticker -> health: not at import time
    )

    s = settings()
    home = str(s.home)
    now = clock()
    last_tick_at, started_at = ticks.last_tick_at, ticks.started_at
    files = await anyio.to_thread.run_sync(healthfiles.collect, home, now)
    rows, not_alive = _agents(agents, activity)
    ticked = last_tick_at is not None
    tick_age = now - (last_tick_at if last_tick_at is not None else started_at)
    daemon = {
        "pid": os.getpid(),
        "version": netskyd.__version__,
        "uptime_s": round(now - started_at, 1),
        "last_tick_ts": rfc3339(last_tick_at) if last_tick_at is not None else None,
        "last_tick_age_s": round(tick_age, 1) if ticked else None,
        "tick_interval_s": s.tick_interval_s,
        "heartbeat_age_s": healthfiles.heartbeat_age_s(files["heartbeat"], now),
        "install": install_kind(sys.executable, s.paths.lkg),
        "executable": sys.executable,
        "sd_notify": notifier.enabled,
        "watchdog_s": notifier.watchdog_s,
    }
    status, reasons = healthfiles.judge(
        running=True,
        tick_age_s=tick_age,
        ticked=ticked,
        tick_interval_s=s.tick_interval_s,
        not_alive=not_alive,
        markers=files["markers"],
        critical=files["incidents"]["critical"],
        legs=files["legs"],
        failing_after=s.escalation_leg_failing_after,
        problems=files["problems"],
    )
    report = healthfiles.report(
        now_s=now,
        status=status,
        reasons=reasons,
        source="daemon",
        daemon=daemon,
        agents=rows,
        files=files,
    )
    try:
        await anyio.to_thread.run_sync(healthfiles.write_report, home, report)
    except OSError as e:
        await recorder.event("health.write_failed", level="error", error=str(e))
    return report
