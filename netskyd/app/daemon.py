"""netskyd's lifecycle: ``startup() -> run tasks -> shutdown()``.

``startup()`` takes the lock and opens what every component needs (the Store, the
Recorder, the tmux port, the sd_notify channel); ``serve()`` then starts the signal
task and every component through the composition root (netskyd.app.wiring), each
with ``await tg.start(...)``, so "ready" means every task said ``started``; then it
waits for a stop. The shutdown trigger is injectable (tests pass ``event.wait``); by
default it is the signal task: SIGTERM/SIGINT stop, SIGHUP reloads the config.
Agents' tmux sessions are left running on shutdown; the next daemon adopts them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netsky_shared.errors import ConfigError, NetskyError
from netsky_shared.ids import format_uptime
from netskyd import __version__
from netskyd import log as logmod
from netskyd.agents.tmux import Tmux
from netskyd.app import wiring
from netskyd.app.lock import DaemonLock
from netskyd.config import Settings, load_settings
from netskyd.keepalive import heartbeat
from netskyd.keepalive.sdnotify import NOTIFY_VARS, Notifier
from netskyd.store.db import Store
from netskyd.store.journal import Journal
from netskyd.store.recorder import Recorder

log = logmod.get("netskyd")


class Daemon:
    """One netskyd: holds the lock, the settings in force and the task group."""

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
        self.notifier = Notifier()
        self.infra: wiring.Infra | None = None
        self.parts: wiring.Components | None = None
        self.started_at = time.time()
        self._stopping_sent = False

    def current_settings(self) -> Settings:
        """The settings in force (the ``SettingsView`` every component is given)."""
        return self.settings

    async def startup(self) -> wiring.Infra:
        """Take the lock, open the stores and the tmux port. Raises DaemonAlreadyRunning."""
        paths = self.settings.paths
        self.lock.acquire()
        self.notifier = self._take_notifier()
        for d in (paths.state, paths.prompts, paths.ready, paths.logs, paths.channels):
            d.mkdir(parents=True, exist_ok=True)
        store = await Store.open(paths.db)
        recorder = Recorder(Journal(paths.logs), store)
        self.infra = infra = wiring.Infra(
            settings=self.current_settings,
            environ=self.environ,
            config_path=self.config_path,
            store=store,
            recorder=recorder,
            tmux=Tmux(self.settings.tmux_socket, self.settings.tmux_timeout_s),
            notifier=self.notifier,
        )
        await recorder.event(
            "daemon.starting",
            pid=os.getpid(),
            version=__version__,
            home=str(paths.home),
            tmux_socket=self.settings.tmux_socket,
            schema_version=await store.schema_version(),
        )
        return infra

    async def serve(self) -> None:
        """Run until the shutdown trigger fires (or a signal stops us), then shut down."""
        infra = await self.startup()
        try:
            async with anyio.create_task_group() as tg:
                # Signals first: a SIGTERM that comes as soon as the socket answers must
                # stop the daemon cleanly (heartbeat marked stopped, socket removed).
                await tg.start(self._signals, tg)
                self.parts = parts = await wiring.start(tg, infra)
                await infra.recorder.event(
                    "daemon.ready",
                    pid=os.getpid(),
                    socket=str(self.settings.paths.socket),
                    tick_interval_s=self.settings.tick_interval_s,
                    **self.notifier.describe(),
                )
                # Every task said started(): now the manager may count us as up.
                self.notifier.ready(
                    f"ready: pid {os.getpid()}, {len(parts.table.agents)} agents known, "
                    f"tick every {self.settings.tick_interval_s:g}s"
                )
                if self.environ.get("NETSKY_REVIVED_BY"):
                    await self._page_revived(infra, parts, self.environ["NETSKY_REVIVED_BY"])
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

    async def _page_revived(
        self, infra: wiring.Infra, parts: wiring.Components, who: str
    ) -> None:
        """The daemon died and ``who`` (the shim) started this one: page the owner, with the
        last tick the dead daemon recorded."""
        async with infra.store.conn.execute("SELECT MAX(finished_ts) FROM ticks") as cur:
            row = await cur.fetchone()
        last = row[0] if row and row[0] else "never"
        body = (
            f"netskyd was not running and {who} started it again (pid {os.getpid()}). The "
            f"last tick before that finished at {last}. Agents whose tmux sessions survived "
            "are adopted, not respawned. Why it died: logs/netskyd.jsonl and the service "
            "manager's log (journalctl --user -u netskyd, or the launchd log file)."
        )
        try:
            await parts.pager.escalate(
                f"netskyd died and was revived by {who}", body, "daemon:revived"
            )
        except (OSError, NetskyError, ValueError) as e:
            await infra.recorder.event("daemon.revived_page_failed", level="error", error=str(e))
        await infra.recorder.event("daemon.revived", level="warning", by=who, last_tick=last)

    async def _stop_when(self, trigger: Callable[[], Awaitable[object]], tg: TaskGroup) -> None:
        await trigger()
        await self._begin_stop(tg, "trigger")

    async def _begin_stop(self, tg: TaskGroup, why: str) -> None:
        self._notify_stopping(why)
        if self.infra is not None:
            await self.infra.recorder.event("daemon.stopping", reason=why)
        if self.parts is not None:
            self.parts.bus.stop.set()
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
        # sd_notify(3): RELOADING=1 now, READY=1 once the reload is over (either way).
        self.notifier.reloading("reloading config")
        try:
            await self._reload()
        finally:
            self.notifier.ready(f"ready: pid {os.getpid()}, config reloaded")

    async def _reload(self) -> None:
        assert self.infra is not None, "reload before startup"
        recorder = self.infra.recorder
        try:
            new = load_settings(self.config_path, self.environ)
        except ConfigError as e:
            await recorder.event("config.reload_failed", level="error", error=str(e))
            return
        if new.home != self.settings.home or new.tmux_socket != self.settings.tmux_socket:
            await recorder.event(
                "config.reload_failed",
                level="error",
                error="home and tmux_socket cannot change while running; restart netskyd",
            )
            return
        self.settings = new  # every component reads it through current_settings()
        await recorder.event("config.reloaded")

    async def shutdown(self) -> None:
        """Remove the socket, close the stores, log one summary line, release the lock."""
        infra = self.infra
        if infra is None:
            self.lock.release()
            return
        self._notify_stopping("shutdown")
        paths = self.settings.paths
        paths.socket.unlink(missing_ok=True)
        heartbeat.mark_stopped(paths.heartbeat, time.time())
        parts = self.parts
        alive = sum(1 for st in parts.table.agents.values() if st.alive) if parts else 0
        in_flight = parts.bus.in_flight() if parts else 0
        uptime = format_uptime(time.time() - self.started_at)
        try:
            await infra.recorder.event(
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
            await infra.store.close()
            self.lock.release()
