"""The session watcher: learn within a second that an agent's tmux session died.

Design. Three parts, each small:

1. **remain-on-exit.** ``Tmux.new_session`` sets tmux's ``remain-on-exit`` on every
   agent's window, in the same client invocation. When the agent's process exits, its
   pane stays, dead, with its exit status (``#{pane_dead_status}``) and its last lines
   still capturable, until netskyd kills the session. So a crash can be explained (the
   status, the last screen) and not only noticed.
2. **Global tmux hooks.** ``Tmux.install_hooks`` sets ``pane-died[4242]`` and
   ``session-closed[4242]`` on the server (a fixed index: installing again replaces
   them, and the user's own hooks are never touched). For agent sessions only
   (``if-shell -F '#{m/r:^agent([0-9]+|infinity)$,...}'``, decided inside tmux, so the
   user's other sessions cost nothing) each runs ``run-shell -b`` of the hook client,
   ``python -m client.hook --socket netskyd.sock EVENT SESSION [STATUS]``
   (``hook_command``), which sends one ``session.event`` request on the control socket
   and always exits 0 (a dead daemon must not put errors in the user's tmux). The
   control method calls ``SessionWatcher.post``; the watcher hands each event, in order,
   to ``notice`` (the supervisor's "session gone": a liveness check now, without
   waiting for the tick).
3. **A sweep, then the tick, as backstops.** Every ``sweep_s`` (0.5 s) the watcher lists
   the server's panes (one ``list-panes``, ``Tmux.nudge_unreaped``) and posts, with
   ``source="sweep"``, what no hook reported: an agent session seen by the previous
   sweep and gone now (``session-closed``, at once), and an agent pane found dead by two
   sweeps in a row (``pane-died`` with its status; the second sighting leaves the hook,
   which normally comes within 50 ms, time to win). That covers the last session of a
   server (tmux exits with it and kills the hook's job), hooks not installed yet on a
   new server, a hook client that failed, a pane already dead when the daemon started.
   Whatever is still lost (daemon down or restarting, a full queue), every tick
   compares ``list-panes`` with the desired constellation and sees a dead pane
   (``pane_dead``) or a missing session. ``notice`` must therefore be idempotent: the
   same death may be reported twice.

tmux facts this relies on (tmux 3.3a, checked on a private server):

- A session's own ``session-closed`` hook never fires (it is gone with the session);
  a *global* one does, with the closed name in ``#{hook_session_name}``
  (``#{session_name}`` is then some other session). For the last session the hook
  fires, but the server exits at once and SIGTERMs the hook's ``run-shell`` job
  before it can run: that close is left to the sweep.
- A global ``pane-died`` hook (stored with the window hooks: ``show-hooks -gw``) sees
  the dead pane's ``#{session_name}`` and ``#{pane_dead_status}``;
  ``#{hook_session_name}`` is empty there. The status is empty for a process killed by
  a signal. ``pane-died`` fires only with ``remain-on-exit``; without it the session
  closes and ``session-closed`` reports it.
- ``run-shell`` expands formats in its command and runs it with ``/bin/sh -c``; any
  output, or a non-zero exit, is shown in a pane (view mode), so the hook command is
  silenced with ``>/dev/null 2>&1 || true``.
- Linux tmux before 3.5 linked with libutempter loses the SIGCHLD of a pane process
  that exits while utempter's helper runs (tmux issue #311): the pane shows dead but
  tmux has not reaped it, so no status and no ``pane-died`` until some other child of
  the server exits. On this machine that was about half of all exits. The sweep sends
  such a server SIGCHLD, which makes tmux reap and fire the hook. The sweep also sees
  the server's pid, so hooks are installed within ``sweep_s`` of a tmux server
  starting or being replaced, not only every ``reinstall_s``.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from netsky_shared.errors import TmuxError
from netsky_shared.ids import is_agent_id
from netskyd import log as logmod
from netskyd.agents.tmux import Tmux
from netskyd.periodic import every

log = logmod.get("netskyd.agents.sessions")

PANE_DIED = "pane-died"
SESSION_CLOSED = "session-closed"
EVENTS = frozenset({PANE_DIED, SESSION_CLOSED})


def hook_command(python: str, socket: Path) -> str:
    """The shell command line tmux's hooks run (event, session and status appended).

    ``python`` is an interpreter that can import ``client`` (the daemon passes
    ``sys.executable``); ``socket`` is ``netskyd.sock``. Both are shell-quoted, so
    paths with spaces or quotes are safe: ``<python> -m client.hook --socket <socket>``.
    """
    return shlex.join([python, "-m", "client.hook", "--socket", str(socket)])


@dataclass(frozen=True)
class SessionEvent:
    """One report that an agent's session died: from tmux's hooks, or the sweep.

    ``agent``: the session name (an agent id). ``event``: ``pane-died`` (the agent's
    process exited, its pane stays dead) or ``session-closed`` (the session is gone).
    ``status``: the exit status for ``pane-died``, None when killed by a signal or for
    ``session-closed``. ``received_at``: the watcher's clock (monotonic seconds).
    ``source``: ``hook`` (tmux's hook, via the control socket) or ``sweep`` (the
    watcher's own sweep found the session gone or its pane dead, unreported).
    """

    agent: str
    event: str
    status: int | None
    received_at: float
    source: str = "hook"


def parse_event(params: Mapping[str, Any], now: float) -> SessionEvent | None:
    """Build a SessionEvent from ``session.event`` params, or None when malformed.

    ``params``: ``{"event": "pane-died" | "session-closed", "session": agent id,
    "status": int | null}``. Not an agent id (``netsky_shared.ids.is_agent_id``), an unknown
    event, or a status that is not an integer (booleans included): None.
    """
    agent, event, status = params.get("session"), params.get("event"), params.get("status")
    if not isinstance(agent, str) or not is_agent_id(agent):
        return None
    if event not in EVENTS:
        return None
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
        return None
    return SessionEvent(agent=agent, event=str(event), status=status, received_at=now)


class SessionWatcher:
    """Installs the hooks, keeps them installed, and delivers their events in order.

    ``tmux``: the port. ``command``: ``hook_command(...)``. ``clock``: monotonic seconds (stamps
    ``received_at``). ``reinstall_s``: hooks are set again this often (a restarted tmux server has
    none). ``sweep_s``: period of the unreaped-pane sweep (None: no sweep). ``max_pending``: events
    queued beyond this are dropped (logged; the tick is the backstop). An event equal in agent and
    kind to one still queued is coalesced into it.
    """

    def __init__(
        self,
        tmux: Tmux,
        command: str,
        clock: Callable[[], float] = time.monotonic,
        *,
        reinstall_s: float = 30.0,
        sweep_s: float | None = 0.5,
        max_pending: int = 256,
    ) -> None:
        self.tmux = tmux
        self.command = command
        self.clock = clock
        self.reinstall_s = reinstall_s
        self.sweep_s = sweep_s
        self._send, self._receive = anyio.create_memory_object_stream[SessionEvent](max_pending)
        self._queued: set[tuple[str, str]] = set()
        #: agent sessions the last sweep saw (None: no sweep yet).
        self._seen: set[str] | None = None
        #: agents whose current dead pane was reported (by a hook or a sweep).
        self._dead_reported: set[str] = set()
        #: agents the last sweep found dead and unreported: posted if still so next time.
        self._dead_pending: set[str] = set()
        #: pid of the tmux server the hooks were last installed on (None: not installed).
        self.hooked_pid: int | None = None
        self.delivered = 0
        self.dropped = 0

    def post(self, event: SessionEvent) -> bool:
        """Queue ``event`` for ``notice`` without blocking; True when queued.

        Dropped (False): an agent name that is not an agent id, an unknown event kind,
        a duplicate of one still queued (coalesced, not counted as dropped), or a full
        queue (logged).
        """
        if not is_agent_id(event.agent) or event.event not in EVENTS:
            log.warning("sessions.malformed", agent=event.agent, hook_event=event.event)
            return False
        key = (event.agent, event.event)
        # Reported: the sweep need not.
        if event.event == PANE_DIED:
            self._dead_reported.add(event.agent)
        else:
            self._dead_reported.discard(event.agent)
            self._dead_pending.discard(event.agent)
            if self._seen is not None:
                self._seen.discard(event.agent)
        if key in self._queued:
            return False
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
            log.warning("sessions.dropped", agent=event.agent, hook_event=event.event)
            return False
        self._queued.add(key)
        return True

    def post_params(self, params: Mapping[str, Any]) -> bool:
        """``post`` the event described by ``session.event`` params (``parse_event``);
        False when they are malformed or the event was not queued."""
        event = parse_event(params, self.clock())
        if event is None:
            log.warning("sessions.malformed", params=dict(params))
            return False
        return self.post(event)

    async def install(self) -> bool:
        """Install (or re-install) the hooks on the current tmux server.

        Returns False when there is no server yet or tmux refused (logged); never
        raises TmuxError. Remembers the server's pid, so a new server is noticed.
        """
        try:
            installed = await self.tmux.install_hooks(self.command)
            pid = await self.tmux.server_pid() if installed else None
        except TmuxError as e:
            log.warning("sessions.install_failed", error=str(e))
            return False
        if installed and pid != self.hooked_pid:
            log.info("sessions.hooks_installed", tmux_pid=pid)
        self.hooked_pid = pid if installed else None
        return installed

    async def sweep(self) -> list[SessionEvent]:
        """One sweep (``Tmux.nudge_unreaped``): unreaped dead panes are nudged, hooks are
        installed on a new server, and what no hook reported is posted with
        ``source="sweep"`` (module docstring, part 3).

        Returns the events so posted; never raises TmuxError.
        """
        try:
            seen = await self.tmux.nudge_unreaped()
        except TmuxError as e:
            log.debug("sessions.sweep_failed", error=str(e))
            return []
        if seen.server_pid is not None and seen.server_pid != self.hooked_pid:
            await self.install()
        if seen.unreaped:
            log.debug("sessions.nudged", sessions=list(seen.unreaped), tmux_pid=seen.server_pid)
        now = self.clock()
        agents = {name for name in seen.sessions if is_agent_id(name)}
        gone = sorted(self._seen - agents) if self._seen is not None else []
        self._seen = agents
        dead = {a: status for a, status in seen.dead.items() if is_agent_id(a)}
        self._dead_reported &= dead.keys()  # alive again, or gone: forget
        unreported = {a for a in dead if a not in self._dead_reported}
        late = sorted(unreported & self._dead_pending)
        self._dead_pending = unreported - set(late)
        events = [SessionEvent(a, SESSION_CLOSED, None, now, source="sweep") for a in gone]
        events += [SessionEvent(a, PANE_DIED, dead[a], now, source="sweep") for a in late]
        for event in events:
            self.post(event)
        return events

    async def run(
        self,
        notice: Callable[[SessionEvent], Awaitable[None]],
        *,
        task_status: TaskStatus[SessionWatcher] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Long-running task: install the hooks, say started, then deliver events to
        ``notice`` (awaited once per event, one at a time, in arrival order; an exception
        from it is logged, never fatal: the supervisor's ``on_session_event``).

        Re-installs every ``reinstall_s`` and sweeps every ``sweep_s`` alongside, until
        cancelled.
        """
        await self.install()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reinstall_loop)
            if self.sweep_s is not None:
                tg.start_soon(self._sweep_loop, self.sweep_s)
            task_status.started(self)
            async with self._receive:
                async for event in self._receive:
                    await self._deliver(notice, event)

    async def _deliver(
        self, notice: Callable[[SessionEvent], Awaitable[None]], event: SessionEvent
    ) -> None:
        self._queued.discard((event.agent, event.event))
        log.info(
            "sessions.event",
            agent=event.agent,
            hook_event=event.event,
            status=event.status,
            source=event.source,
            queued_s=round(self.clock() - event.received_at, 3),
        )
        try:
            await notice(event)
        except Exception:  # one failing notice must not end the watcher
            log.exception("sessions.notice_failed", agent=event.agent, hook_event=event.event)
        self.delivered += 1

    async def _reinstall_loop(self) -> None:
        await every(self.reinstall_s, self.install)

    async def _sweep_loop(self, period_s: float) -> None:
        await every(period_s, self.sweep)
