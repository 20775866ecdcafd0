"""The composition root: every component built with only what it uses, started in order.

``start(tg, infra)`` is the one place the feature packages meet (an import contract
holds the rest apart, docs/architecture.md). Each component is started with
``await tg.start(component.run, ...)``, which returns it once it said ``started``,
so a component is handed to the next only when it is ready:

1. the escalation spool (the ``Pager`` port everyone pages through);
2. the activity monitor (reads the ``AgentTable`` as ``AgentView``);
3. the supervisor, which owns its restart runner (liveness, spawns, restarts);
4. the bus (deliveries, held by the monitor's ``ActivityGate``);
5. the session watcher (tmux hooks: deaths within a second), its events to the
   supervisor;
6. the work loop, the scheduler (cron entries and loops: it sends what a crash
   left persisted before it says started) and the owner's line (its sources connect
   in the background);
7. the ticker (the ``TickView`` port), the control socket, the heartbeat and the
   last-known-good recorder.

Two channels belong to the daemon rather than to any component: the *wake* channel
(``Wakeups``: the monitor, the supervisor and its runner tell the bus that what waits
for an agent may go in now; the bus drains it once it runs) and the session watcher's
queue. Both carry agent ids only, so a component never holds another that was started
after it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from netskyd.activity.monitor import Monitor
from netskyd.agents.sessions import SessionWatcher, hook_command
from netskyd.agents.spawn import Spawner
from netskyd.agents.tmux import Tmux
from netskyd.app.ticker import Ticker
from netskyd.bus.watcher import Bus
from netskyd.control import server as control
from netskyd.control.api import Services
from netskyd.escalation.spool import Spool
from netskyd.keepalive import health
from netskyd.keepalive.heartbeat import Pulse
from netskyd.keepalive.lkg.task import LkgTask
from netskyd.keepalive.sdnotify import Notifier
from netskyd.owner.channels import OwnerChannels
from netskyd.ports import Clock, Monotonic, SettingsView, TickView
from netskyd.schedule.scheduler import Scheduler
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder
from netskyd.store.schedule import ScheduleRecords
from netskyd.store.work import WorkRecords
from netskyd.supervision.supervisor import Supervisor
from netskyd.supervision.table import AgentTable
from netskyd.work.git import Git
from netskyd.work.loop import WorkLoop


class Wakeups:
    """The ``Wake`` port (netskyd.ports): agent ids into the daemon's wake channel,
    which the bus drains once it runs. Unbounded and never blocking: a wake is a few
    bytes and idempotent."""

    def __init__(self, send: MemoryObjectSendStream[str]) -> None:
        self._send = send

    def kick(self, agent: str) -> None:
        try:
            self._send.send_nowait(agent)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the bus is gone: the daemon is stopping


@dataclass(frozen=True)
class Infra:
    """What the daemon opened before any component: settings, environment, stores."""

    settings: SettingsView
    environ: Mapping[str, str]
    config_path: Path | None
    store: Store
    recorder: Recorder
    tmux: Tmux
    notifier: Notifier
    clock: Clock = time.time
    monotonic: Monotonic = time.monotonic


@dataclass(frozen=True)
class Components:
    """The running components, for the lifecycle (shutdown summary, stop, the revived
    page) and for tests that look inside a daemon."""

    pager: Spool
    table: AgentTable
    monitor: Monitor
    supervisor: Supervisor
    bus: Bus
    sessions: SessionWatcher | None
    ticker: Ticker
    work: WorkLoop
    schedule: Scheduler
    owner: OwnerChannels


def health_refresher(infra: Infra, table: AgentTable, monitor: Monitor) -> Any:
    """``refresh(ticks)``: rebuild and write the health report (keepalive.health)."""
    return partial(
        health.refresh,
        settings=infra.settings,
        agents=table,
        activity=monitor,
        notifier=infra.notifier,
        recorder=infra.recorder,
        clock=infra.clock,
    )


async def start(tg: TaskGroup, infra: Infra) -> Components:
    """Build and start every component in ``tg`` (module docstring); returns them once
    each is ready. Raises what a component's start raises (e.g. TmuxError while
    adopting), which ends the daemon before it says READY."""
    s = infra.settings
    wake_send, wake_receive = anyio.create_memory_object_stream[str](math.inf)
    wake = Wakeups(wake_send)
    pager: Spool = await tg.start(
        Spool(
            settings=s,
            environ=infra.environ,
            recorder=infra.recorder,
            store=infra.store,
            clock=infra.clock,
        ).run
    )
    table = AgentTable(s)
    monitor: Monitor = await tg.start(
        Monitor(
            agents=table,
            settings=s,
            tmux=infra.tmux,
            recorder=infra.recorder,
            pager=pager,
            wake=wake,
            clock=infra.clock,
            monotonic=infra.monotonic,
        ).run
    )
    sessions = None
    if s().session_watch:
        sessions = SessionWatcher(
            infra.tmux,
            hook_command(sys.executable, s().paths.socket),
            sweep_s=s().session_sweep_s or None,
        )
    spawner = Spawner(
        settings=s,
        environ=infra.environ,
        config_path=infra.config_path,
        tmux=infra.tmux,
        recorder=infra.recorder,
        activity=monitor,
    )
    supervisor: Supervisor = await tg.start(
        Supervisor(
            table=table,
            spawner=spawner,
            settings=s,
            tmux=infra.tmux,
            recorder=infra.recorder,
            store=infra.store,
            activity=monitor,
            wake=wake,
            pager=pager,
            sessions=sessions,
            clock=infra.clock,
            monotonic=infra.monotonic,
        ).run
    )
    bus: Bus = await tg.start(
        Bus(
            agents=table,
            activity=monitor,
            settings=s,
            tmux=infra.tmux,
            store=infra.store,
            recorder=infra.recorder,
            pager=pager,
            clock=infra.clock,
            monotonic=infra.monotonic,
        ).run,
        wake_receive,
    )
    if sessions is not None:
        await tg.start(sessions.run, supervisor.on_session_event)
    work = WorkLoop(
        settings=s,
        git=Git(s().git_timeout_s, infra.environ),
        records=WorkRecords(infra.store),
        recorder=infra.recorder,
        crew=supervisor,
        agents=table,
        clock=infra.clock,
    )
    await work.recover()
    schedule: Scheduler = await tg.start(
        Scheduler(
            settings=s,
            records=ScheduleRecords(infra.store),
            recorder=infra.recorder,
            agents=table,
            clock=infra.clock,
        ).run
    )
    owner: OwnerChannels = await tg.start(
        OwnerChannels(
            settings=s,
            environ=infra.environ,
            store=infra.store,
            recorder=infra.recorder,
            pager=pager,
            clock=infra.clock,
        ).run
    )
    refresh = health_refresher(infra, table, monitor)
    ticker: Ticker = await tg.start(
        Ticker(
            settings=s,
            tmux=infra.tmux,
            store=infra.store,
            recorder=infra.recorder,
            notifier=infra.notifier,
            supervisor=supervisor,
            monitor=monitor,
            bus=bus,
            pager=pager,
            refresh_health=refresh,
            clock=infra.clock,
            monotonic=infra.monotonic,
        ).run
    )
    ticks: TickView = ticker
    services = Services(
        settings=s,
        clock=infra.clock,
        ticks=ticks,
        store=infra.store,
        pager=pager,
        supervisor=supervisor,
        monitor=monitor,
        bus=bus,
        sessions=sessions,
        work=work,
        schedule=schedule,
        owner=owner,
        refresh_health=partial(refresh, ticks=ticks),
    )
    await tg.start(control.run, services)
    await tg.start(
        Pulse(
            settings=s,
            ticks=ticks,
            notifier=infra.notifier,
            recorder=infra.recorder,
            clock=infra.clock,
        ).run
    )
    await tg.start(
        LkgTask(
            settings=s,
            ticks=ticks,
            recorder=infra.recorder,
            environ=infra.environ,
            clock=infra.clock,
            monotonic=infra.monotonic,
        ).run
    )
    return Components(
        pager, table, monitor, supervisor, bus, sessions, ticker, work, schedule, owner
    )
