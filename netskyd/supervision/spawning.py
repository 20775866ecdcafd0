"""The supervisor's spawns: the one spawn path's bookkeeping and the readiness wait.

A mixin of ``netskyd.supervision.supervisor.Supervisor``. ``start_spawn`` runs a first spawn
(or a respawn of an agent that was never up) in the supervisor's task group, so a slow
readiness wait never holds up a tick or a control request. ``_create`` is steps 1-4 of the
spawn path (``netskyd.agents.spawn``) with its records (``agent.spawned``, a ``spawns`` row);
``_await_ready`` is step 5, the wait for readiness, which the restart runner's spawns share
(``netskyd.supervision.restart_control``). ``wait_ready`` is the work loop's wait (``Crew``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from netsky_shared.errors import (
    NetskyError,
    ReadinessTimeout,
    SessionNotFound,
    SpawnFailed,
    TmuxError,
)
from netsky_shared.ids import role_of
from netsky_shared.maildir import now_rfc3339
from netskyd.agents.spawn import Spawned

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from netskyd.agents.sessions import SessionWatcher
    from netskyd.agents.spawn import Spawner
    from netskyd.agents.tmux import PaneInfo, Tmux
    from netskyd.config import Runtime
    from netskyd.ports import ActivityView, Monotonic, SettingsView, Wake
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder
    from netskyd.supervision.desired import Desired
    from netskyd.supervision.table import AgentState

READY_POLL_S = 0.1


class Spawning:
    """Spawning and waiting for readiness; the host class provides ``spawner``,
    ``settings``, ``tmux``, ``recorder``, ``store``, ``activity``, ``wake``, ``sessions``,
    ``monotonic``, its task group (``_tg``), ``_changed`` (set when a spawn ends or an
    agent becomes ready), ``desired``, ``state_of``, ``runtime_of``, ``check`` and
    ``_check_quietly``."""

    spawner: Spawner
    settings: SettingsView
    tmux: Tmux
    recorder: Recorder
    store: Store
    activity: ActivityView
    wake: Wake
    sessions: SessionWatcher | None
    monotonic: Monotonic
    _tg: TaskGroup | None
    _changed: anyio.Event

    # Declared for the type checker only: a runtime stub could shadow the host's method.
    if TYPE_CHECKING:

        @property
        def desired(self) -> Desired: ...

        def state_of(self, agent: str) -> AgentState: ...

        def runtime_of(self, agent: str) -> Runtime: ...

        async def check(
            self, reason: str = "tick", panes: dict[str, PaneInfo] | None = None
        ) -> dict[str, Any]: ...

        async def _check_quietly(self, reason: str) -> None: ...

    def start_spawn(self, agent: str, reason: str) -> None:
        """Spawn ``agent`` in the background unless a spawn is already under way."""
        st = self.state_of(agent)
        if st.spawning or self._tg is None:
            return
        st.spawning = True
        self._tg.start_soon(self._spawn, agent, reason)

    async def _spawn(self, agent: str, reason: str) -> None:
        st = self.state_of(agent)
        try:
            spawned = await self._create(agent, reason)
            failure = await self._await_ready(spawned, self.settings().ready_timeout_s)
            if failure is not None:
                raise SpawnFailed(failure[1])
        except NetskyError as e:
            st.last_error = str(e)
            await self.recorder.event(
                "agent.spawn_failed", level="error", agent=agent, error=str(e), reason=reason
            )
            if self._tg is not None:  # a death while spawning: the check hands it on
                self._tg.start_soon(self._check_quietly, "spawn-failed")
        finally:
            st.spawning = False
            self._changed.set()

    async def _create(self, agent: str, reason: str) -> Spawned:
        """Steps 1-4 of the spawn path, with the records. Raises SpawnFailed and friends."""
        st = self.state_of(agent)
        st.runtime = self.runtime_of(agent)
        st.ready = False
        st.exit_status = None
        spawned = await self.spawner.create_session(
            agent, st.runtime, self.desired.wanted(), self.desired.work.get(agent)
        )
        sessions = self.sessions
        if sessions is not None and sessions.hooked_pid is None:
            # The first spawn may have started the tmux server: hook it now, not at the
            # watcher's next sweep, so a death right after start is noticed at once.
            await sessions.install()
        st.session_id, st.pane_pid = spawned.session_id, spawned.pane.pane_pid
        st.alive = st.known = True
        st.spawned_at = now_rfc3339()
        st.spawns += 1
        await self.recorder.event(
            "agent.spawned",
            agent=agent,
            role=role_of(agent),
            runtime=st.runtime.value,
            session_id=spawned.session_id,
            pane_pid=spawned.pane.pane_pid,
            reason=reason,
        )
        await self.store.add_spawn(
            st.spawned_at,
            agent,
            spawned.session_id,
            st.runtime.value,
            reason,
            spawned.pane.pane_pid,
        )
        return spawned

    async def _await_ready(self, spawned: Spawned, timeout_s: float) -> tuple[str, str] | None:
        """Step 5: wait for readiness; None when ready, else ``(failure class, detail)``.

        A death is seen through ``alive`` (kept by the hook-driven check) and, as a
        backstop, by asking tmux about this pane every second.
        """
        agent, st = spawned.agent, self.state_of(spawned.agent)
        start = self.monotonic()
        next_probe = start + 1.0
        with anyio.move_on_after(timeout_s):
            while True:
                if st.session_id != spawned.session_id:
                    return "replaced", f"{agent}: session {spawned.session_id[:8]} was replaced"
                try:
                    if self.monotonic() >= next_probe:
                        next_probe = self.monotonic() + 1.0
                        pane = (await self.tmux.list_panes()).get(agent)
                        st.alive = pane is not None and not pane.pane_dead
                        if pane is not None and pane.pane_dead:
                            st.exit_status = pane.dead_status
                    if not st.alive:
                        status = st.exit_status
                        failure = f"exit-{status}" if status is not None else "session-gone"
                        return failure, (
                            f"{agent} exited before it was ready (runtime {st.runtime.value}"
                            + (f", exit status {status})" if status is not None else ")")
                        )
                    if await self.spawner.is_ready(agent, spawned.runtime, spawned.session_id):
                        break
                except SessionNotFound:
                    st.alive = False
                    continue
                except TmuxError:
                    pass  # a slow tmux is not a dead agent; the deadline still holds
                await anyio.sleep(READY_POLL_S)
            took = self.monotonic() - start
            st.ready, st.last_error = True, None
            ts = await self.recorder.event("agent.ready", agent=agent, took_s=round(took, 3))
            await self.store.finish_spawn(spawned.session_id, "ready", ts)
            self.wake.kick(agent)
            self._changed.set()
            return None
        await self.store.finish_spawn(spawned.session_id, "failed", None)
        err = ReadinessTimeout(
            f"{agent} was not ready within {timeout_s:g}s (runtime {spawned.runtime.value})"
            + self._waiting_on(agent)
        )
        return "ready-timeout", str(err)

    def _waiting_on(self, agent: str) -> str:
        """``": waiting on dialog <name> (...)"`` when the monitor last saw a dialog on
        ``agent``'s screen (the reason its readiness never came), else ``""``."""
        verdict = self.activity.verdict(agent)
        dialog = verdict.evidence.get("dialog") if verdict is not None else None
        if not isinstance(dialog, dict):
            return ""
        lines = [str(line).strip() for line in dialog.get("lines") or [] if str(line).strip()]
        options = " / ".join(str(o) for o in dialog.get("options") or [])
        shown = f"; screen: {' | '.join(lines[:6])}" if lines else ""
        return f": waiting on dialog {dialog.get('name')} (options: {options}){shown}"

    async def _ready_now(self, st: AgentState) -> bool:
        try:
            return await self.spawner.is_ready(st.agent, st.runtime, st.session_id)
        except TmuxError:
            return False

    async def wait_ready(self, agents: list[str], timeout_s: float) -> bool:
        """Wait until every agent in ``agents`` is ready; False when the deadline passed."""
        with anyio.move_on_after(timeout_s):
            while not all(self.state_of(a).ready for a in agents):
                if not any(self.state_of(a).spawning for a in agents):
                    try:
                        await self.check(reason="wait")  # e.g. late readiness, or a died spawn
                    except TmuxError:
                        pass  # the deadline still holds
                self._changed = anyio.Event()
                with anyio.move_on_after(0.2):
                    await self._changed.wait()
            return True
        return False
