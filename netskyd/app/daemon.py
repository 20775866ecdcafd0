"""netskyd's lifecycle: ``startup() -> run tasks -> shutdown()``.

``serve()`` starts each long-running task with ``await tg.start(...)``, so
"ready" means every task called ``task_status.started()``. The shutdown trigger
is injectable (tests pass ``event.wait``); by default it is the signal task:
SIGTERM/SIGINT stop, SIGHUP reloads the config. Agents' tmux sessions are left
running on shutdown; the next daemon adopts them.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netsky_shared.errors import ConfigError, NetskyError
from netsky_shared.ids import format_uptime
from netskyd import __version__
from netskyd import log as logmod
from netskyd.activity import monitor
from netskyd.activity.monitor import Monitor
from netskyd.agents.sessions import SessionEvent, SessionWatcher, hook_command
from netskyd.agents.tmux import Tmux
from netskyd.app import ticker
from netskyd.app.lock import DaemonLock
from netskyd.bus import watcher as bus
from netskyd.bus.watcher import Bus
from netskyd.config import Settings, load_settings
from netskyd.context import Context
from netskyd.control import server as control
from netskyd.escalation import spool as escalate
from netskyd.keepalive import heartbeat as pulse
from netskyd.keepalive.lkg import task as lkgtask
from netskyd.keepalive.sdnotify import NOTIFY_VARS, Notifier
from netskyd.store.db import Store
from netskyd.store.journal import Journal
from netskyd.store.recorder import Recorder
from netskyd.supervision import supervisor
from netskyd.supervision.restart import runner as watchdog
from netskyd.supervision.restart.runner import Watchdog
from netskyd.supervision.supervisor import Supervisor

log = logmod.get("netskyd")


class Daemon:
    """One netskyd: holds the lock, the context and the task group."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.environ = dict(environ or {})
        self.shutdown_trigger = shutdown_trigger
        self.lock = DaemonLock(settings.paths.lock)
        self.ctx: Context | None = None
        self.notifier = Notifier()
        self._stopping_sent = False

    async def startup(self) -> Context:
        """Take the lock, open the stores, build the context. Raises DaemonAlreadyRunning."""
        paths = self.settings.paths
        self.lock.acquire()
        self.notifier = self._take_notifier()
        for d in (paths.state, paths.prompts, paths.ready, paths.logs, paths.channels):
            d.mkdir(parents=True, exist_ok=True)
        store = await Store.open(paths.db)
        recorder = Recorder(Journal(paths.logs), store)
        ctx = Context(
            settings=self.settings,
            tmux=Tmux(self.settings.tmux_socket, self.settings.tmux_timeout_s),
            store=store,
            recorder=recorder,
            config_path=self.config_path,
            environ=self.environ,
            notifier=self.notifier,
        )
        ctx.supervisor = Supervisor(ctx)
        ctx.monitor = Monitor(ctx)
        ctx.bus = Bus(ctx)
        ctx.watchdog = Watchdog(ctx)
        if self.settings.session_watch:
            ctx.sessions = SessionWatcher(
                ctx.tmux,
                hook_command(sys.executable, paths.socket),
                self._session_event,
                sweep_s=self.settings.session_sweep_s or None,
            )
        self.ctx = ctx
        await recorder.event(
            "daemon.starting",
            pid=os.getpid(),
            version=__version__,
            home=str(paths.home),
            tmux_socket=self.settings.tmux_socket,
            schema_version=await store.schema_version(),
        )
        return ctx

    async def serve(self) -> None:
        """Run until the shutdown trigger fires (or a signal stops us), then shut down."""
        ctx = await self.startup()
        try:
            async with anyio.create_task_group() as tg:
                # Signals first: a SIGTERM that comes as soon as the socket answers must
                # stop the daemon cleanly (heartbeat marked stopped, socket removed).
                await tg.start(self._signals, tg)
                await tg.start(escalate.run, ctx)
                await tg.start(control.run, ctx)
                await tg.start(supervisor.run, ctx)
                await tg.start(watchdog.run, ctx)
                await tg.start(bus.run, ctx)
                await tg.start(monitor.run, ctx)
                if ctx.sessions is not None:
                    await tg.start(ctx.sessions.run)
                await tg.start(ticker.run, ctx)
                await tg.start(pulse.run, ctx)
                await tg.start(lkgtask.run, ctx)
                await ctx.recorder.event(
                    "daemon.ready",
                    pid=os.getpid(),
                    socket=str(ctx.paths.socket),
                    tick_interval_s=self.settings.tick_interval_s,
                    **self.notifier.describe(),
                )
                # Every task said started(): now the manager may count us as up.
                self.notifier.ready(
                    f"ready: pid {os.getpid()}, {len(ctx.sup().agents)} agents known, "
                    f"tick every {self.settings.tick_interval_s:g}s"
                )
                if self.environ.get("NETSKY_REVIVED_BY"):
                    await self._page_revived(ctx, self.environ["NETSKY_REVIVED_BY"])
                if self.shutdown_trigger is not None:
                    tg.start_soon(self._stop_when, self.shutdown_trigger, tg)
        finally:
            with anyio.CancelScope(shield=True):
                await self.shutdown()

    def _take_notifier(self) -> Notifier:
        """The sd_notify channel from NOTIFY_SOCKET/WATCHDOG_*, which are then taken out of
        this process's environment (sd_notify(3) ``unset_environment``): the tmux server
        the daemon starts, hence every agent, and other children must not speak to the
        service manager as if they were netskyd."""
        notifier = Notifier.from_environ(self.environ)
        for var in NOTIFY_VARS:
            value = self.environ.pop(var, None)
            if value is not None and os.environ.get(var) == value:
                del os.environ[var]
        return notifier

    def _notify_stopping(self, why: str) -> None:
        if not self._stopping_sent:
            self._stopping_sent = True
            self.notifier.stopping(f"stopping ({why})")

    async def _page_revived(self, ctx: Context, who: str) -> None:
        """The daemon died and ``who`` (the shim) started this one: page the owner, with the
        last tick the dead daemon recorded."""
        from netskyd.escalation.spool import escalate

        async with ctx.store.conn.execute("SELECT MAX(finished_ts) FROM ticks") as cur:
            row = await cur.fetchone()
        last = row[0] if row and row[0] else "never"
        body = (
            f"netskyd was not running and {who} started it again (pid {os.getpid()}). The "
            f"last tick before that finished at {last}. Agents whose tmux sessions survived "
            "are adopted, not respawned. Why it died: logs/netskyd.jsonl and the service "
            "manager's log (journalctl --user -u netskyd, or the launchd log file)."
        )
        try:
            await escalate(ctx, f"netskyd died and was revived by {who}", body, "daemon:revived")
        except (OSError, NetskyError, ValueError) as e:
            await ctx.recorder.event("daemon.revived_page_failed", level="error", error=str(e))
        await ctx.recorder.event("daemon.revived", level="warning", by=who, last_tick=last)

    async def _session_event(self, event: SessionEvent) -> None:
        """A tmux hook (or the watcher's sweep) said an agent's pane died or its session
        closed: run the liveness check at once."""
        assert self.ctx is not None
        ctx = self.ctx
        try:
            await ctx.sup().check(reason=f"{event.source}:{event.event}")
        except NetskyError as e:
            await ctx.recorder.event("check.failed", level="warning", error=str(e))

    async def _stop_when(self, trigger: Callable[[], Awaitable[object]], tg: TaskGroup) -> None:
        await trigger()
        await self._begin_stop(tg, "trigger")

    async def _begin_stop(self, tg: TaskGroup, why: str) -> None:
        assert self.ctx is not None
        self._notify_stopping(why)
        await self.ctx.recorder.event("daemon.stopping", reason=why)
        self.ctx.the_bus().stop.set()
        tg.cancel_scope.cancel()

    async def _signals(
        self, tg: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                await self._begin_stop(tg, signal.Signals(signum).name)
                return

    async def reload(self) -> None:
        """SIGHUP: re-read config.toml; keep the old settings when the new ones are invalid."""
        assert self.ctx is not None
        # sd_notify(3): RELOADING=1 now, READY=1 once the reload is over (either way).
        self.notifier.reloading("reloading config")
        try:
            await self._reload(self.ctx)
        finally:
            self.notifier.ready(f"ready: pid {os.getpid()}, config reloaded")

    async def _reload(self, ctx: Context) -> None:
        try:
            new = load_settings(self.config_path, self.environ)
        except ConfigError as e:
            await ctx.recorder.event("config.reload_failed", level="error", error=str(e))
            return
        if new.home != self.settings.home or new.tmux_socket != self.settings.tmux_socket:
            await ctx.recorder.event(
                "config.reload_failed",
                level="error",
                error="home and tmux_socket cannot change while running; restart netskyd",
            )
            return
        self.settings = ctx.settings = new
        await ctx.recorder.event("config.reloaded")

    async def shutdown(self) -> None:
        """Remove the socket, close the stores, log one summary line, release the lock."""
        ctx = self.ctx
        if ctx is None:
            self.lock.release()
            return
        self._notify_stopping("shutdown")
        ctx.paths.socket.unlink(missing_ok=True)
        pulse.mark_stopped(ctx.paths.heartbeat, ctx.clock())
        alive = sum(1 for st in ctx.sup().agents.values() if st.alive)
        in_flight = ctx.the_bus().in_flight()
        uptime = format_uptime(ctx.clock() - ctx.started_at)
        try:
            await ctx.recorder.event(
                "daemon.stopped",
                agents_left_running=alive,
                envelopes_in_flight=in_flight,
                uptime=uptime,
            )
        finally:
            log.info(
                f"stopped: {alive} agents left running, {in_flight} envelopes in flight, "
                f"uptime {uptime}"
            )
            await ctx.store.close()
            self.lock.release()
