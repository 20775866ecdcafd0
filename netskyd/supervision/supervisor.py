"""The supervisor: desired state, adoption, liveness, and the one spawn path's bookkeeping.

Long-running task ``Supervisor.run`` owns a task group in which first spawns run, so a slow
readiness wait never holds up a tick or a control request. ``check()`` is the liveness pass, run by
every tick and at once when a tmux hook reports a death (netskyd.agents.sessions): it compares
tmux's sessions with the desired set, spawns agents that were never up, and hands every death of an
agent that was up to the restart runner (netskyd.supervision.restart.runner), whose restart state
machine decides what happens next. While a restart covers an agent, its liveness is the watchdog's,
except that the death of a session the restart itself spawned is handed on too (it fails the attempt
at once, e.g. while verifying).

This module holds the ``Supervisor`` (its construction, the desired state, the liveness check, the
status rows, ``run``); the rest lives in its mixins: ``netskyd.supervision.adoption`` (adopting
running sessions), ``netskyd.supervision.spawning`` (the spawn bookkeeping and the readiness
wait) and ``netskyd.supervision.restart_control`` (the ``AgentControl`` port).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netsky_shared.errors import CorruptMarker, NetskyError, UnknownAgent
from netsky_shared.ids import ROOT, WATCHDOG, is_agent_id, role_of, sort_key
from netsky_shared.maildir import pending_count
from netsky_shared.markers import read_marker, write_marker
from netsky_shared.paths import Paths
from netskyd.agents.sessions import SessionEvent, SessionWatcher
from netskyd.agents.spawn import Spawner
from netskyd.agents.tmux import PaneInfo, Tmux
from netskyd.config import Runtime
from netskyd.ports import ActivityView, Clock, Monotonic, Pager, SettingsView, Wake
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder
from netskyd.supervision import desired as desired_mod
from netskyd.supervision.adoption import Adoption
from netskyd.supervision.desired import Desired
from netskyd.supervision.restart.runner import RestartRunner
from netskyd.supervision.restart_control import RestartControl
from netskyd.supervision.spawning import READY_POLL_S, Spawning
from netskyd.supervision.table import AgentState, AgentTable

# What callers import from here, including the names that moved to the modules above.
__all__ = ["DESIRED_MARKER", "READY_POLL_S", "Supervisor"]

DESIRED_MARKER = "desired.json"


class Supervisor(Adoption, Spawning, RestartControl):
    """Keeps the running constellation equal to the desired one.

    Built with only what it uses (the wiring, netskyd.app.wiring): the agent table it
    keeps, the spawn path, tmux, the Recorder and the Store, the settings in force, the
    activity monitor's last word (``ActivityView``, for a spawn failure's reason), the
    bus's ``Wake``, the session watcher (None: the tick alone notices deaths), the
    ``Pager`` and the clocks. It owns its restart runner (``self.restarts``,
    netskyd.supervision.restart.runner), which reaches back only through the
    ``AgentControl`` methods (``RestartControl``: kill, spawn and wait for restart, still
    up, pane tail, set clones, the desired set). Its other steps come from the mixins
    (``Adoption``, ``Spawning``), which declare what they use of it; the state they share
    (``unknown_sessions``, ``_tg``, ``_changed``) is set up here.
    """

    def __init__(
        self,
        *,
        table: AgentTable,
        spawner: Spawner,
        settings: SettingsView,
        tmux: Tmux,
        recorder: Recorder,
        store: Store,
        activity: ActivityView,
        wake: Wake,
        pager: Pager,
        sessions: SessionWatcher | None = None,
        clock: Clock = time.time,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.table = table
        self.spawner = spawner
        self.settings = settings
        self.tmux = tmux
        self.recorder = recorder
        self.store = store
        self.activity = activity
        self.wake = wake
        self.sessions = sessions
        self.monotonic = monotonic
        self.restarts = RestartRunner(
            control=self,
            settings=settings,
            tmux=tmux,
            recorder=recorder,
            store=store,
            pager=pager,
            wake=wake,
            clock=clock,
        )
        self.unknown_sessions: list[str] = []
        self._tg: TaskGroup | None = None
        self._changed = anyio.Event()
        self._check_lock = anyio.Lock()

    # ----- desired state -------------------------------------------------------------------

    async def load_desired(self) -> None:
        """Read ``state/desired.json``; with none, the constellation is up (first start)."""
        path = self.paths.marker(DESIRED_MARKER)
        try:
            value = read_marker(path)
            loaded = Desired.from_json(value) if value is not None else None
        except (CorruptMarker, ValueError) as e:
            await self.recorder.event("desired.corrupt", level="error", error=str(e))
            loaded = None
        if loaded is None:
            loaded = desired_mod.constellation(self.settings().clones)
            await self._save(loaded, by="start")
        self.table.desired = loaded
        await self.recorder.event(
            "desired.loaded", state="up" if loaded.up else "down", agents=loaded.wanted()
        )

    @property
    def paths(self) -> Paths:
        return self.settings().paths

    @property
    def desired(self) -> Desired:
        """The desired constellation (the table's)."""
        return self.table.desired

    @property
    def agents(self) -> Mapping[str, AgentState]:
        """Every agent seen so far (the table's)."""
        return self.table.agents

    async def _save(self, desired: Desired, by: str) -> None:
        write_marker(self.paths.marker(DESIRED_MARKER), desired.to_json(by))
        self.table.desired = desired

    def runtime_of(self, agent: str) -> Runtime:
        return self.table.runtime_of(agent)

    def state_of(self, agent: str) -> AgentState:
        return self.table.state_of(agent)

    async def set_up(self, clones: int | None) -> list[str]:
        """``up [N]``: want agent0, N clones (default ``clones``) and agentinfinity."""
        n = self.settings().clones if clones is None else clones
        new = desired_mod.constellation(n, self.desired)
        await self._save(new, by="up")
        await self.recorder.event("desired.up", clones=n, agents=new.wanted())
        extra = [a for a in self.agents if a not in new.agents and self.agents[a].alive]
        for agent in extra:  # clones beyond N are stopped
            await self.restarts.cancel(agent, "up")
            await self._kill_session(agent, reason="up")
        await self.check(reason="up")
        return new.wanted()

    async def set_down(self) -> list[str]:
        """``down``: stop every agent and remember it (the marker survives restarts)."""
        down = Desired(up=False, agents=self.desired.agents, work=self.desired.work)
        await self._save(down, by="down")
        await self.recorder.event("desired.down")
        await self.restarts.cancel_all("down")
        killed = []
        panes = await self.tmux.list_panes()
        for name in sorted(panes, key=sort_key):
            if is_agent_id(name) and await self._kill_session(name, reason="down"):
                killed.append(name)
        return killed

    async def add_agent(
        self, agent: str, runtime: Runtime | None, work: dict[str, str] | None = None
    ) -> list[str]:
        """``agent N [--runtime R]``: want this agent (with an optional runtime override);
        ``work`` (a brief, netskyd.work): its workspace, where it is spawned. A live agent
        whose runtime or workspace changes is ended and spawned again."""
        if not self.desired.up:
            raise NetskyError("the constellation is down; run 'netskyctl up' first")
        st = self.agents.get(agent)
        moved = work is not None and self.desired.work.get(agent) != work
        new = desired_mod.with_agent(
            self.desired, agent, runtime.value if runtime else None, work
        )
        await self._save(new, by="brief" if work is not None else "agent")
        retyped = runtime is not None and st is not None and st.runtime != runtime
        if st is not None and st.alive and (retyped or moved):
            await self._kill_session(agent, reason="work-change" if moved else "runtime-change")
        if st is not None:
            st.runtime = self.runtime_of(agent)
        await self.check(reason="agent")
        return [agent]

    async def kill(self, agent: str) -> dict[str, Any]:
        """``kill AGENT``: end its session. A clone leaves the desired set; agent0 and
        agentinfinity are always wanted while up, so they come back on the next check."""
        if not is_agent_id(agent):
            raise UnknownAgent(f"not an agent id: {agent!r}")
        if agent not in (ROOT, WATCHDOG) and agent in self.desired.agents:
            await self._save(desired_mod.without_clone(self.desired, agent), by="kill")
        await self.restarts.cancel(agent, "kill")
        killed = await self._kill_session(agent, reason="kill")
        return {"agent": agent, "killed": killed, "desired": agent in self.desired.wanted()}

    async def _kill_session(self, agent: str, reason: str) -> bool:
        """End ``agent``'s session on purpose: its disappearance is not a death."""
        st = self.agents.get(agent)
        if st is not None:  # before the kill, so the session-closed hook finds it expected
            st.alive = st.ready = st.known = False
        killed = await self.tmux.kill_session(agent)
        if st is not None:
            st.session_id = st.pane_pid = None
        if killed:
            await self.recorder.event("agent.killed", agent=agent, reason=reason)
        return killed

    # ----- liveness ------------------------------------------------------------------------

    async def check(
        self, reason: str = "tick", panes: dict[str, PaneInfo] | None = None
    ) -> dict[str, Any]:
        """The liveness pass: compare tmux's sessions with the desired set.

        Spawns wanted agents that were never up; hands each death of a known agent
        to the watchdog; notices late readiness. Raises TmuxTimeout when tmux does
        not answer (nothing is concluded from silence). Returns
        ``{"alive": [...], "spawning": [...], "not_ready": [...], "gone": [...]}``.
        """
        async with self._check_lock:
            return await self._check(reason, panes)

    async def _check(self, reason: str, panes: dict[str, PaneInfo] | None) -> dict[str, Any]:
        if panes is None:
            panes = await self.tmux.list_panes()
        wanted = self.desired.wanted()
        wd = self.restarts
        for agent, st in self.agents.items():
            pane = panes.get(agent)
            st.alive = pane is not None and not pane.pane_dead
            st.pane_pid = pane.pane_pid if pane else None
            if pane is not None and pane.pane_dead:
                st.exit_status = pane.dead_status
            if not st.alive:
                st.ready = False
        gone: list[str] = []
        for agent in wanted:
            st = self.state_of(agent)
            if st.spawning or wd.owns(agent) or wd.busy(agent):
                if st.known and not st.alive and wd.fails_on_death(agent):
                    gone.append(agent)  # its restart's fresh session died: fail it now
                continue  # a spawn or a restart (maybe waiting for its retry) has it
            if not st.alive:
                if st.known:
                    gone.append(agent)
                else:
                    self.start_spawn(agent, reason="missing" if st.spawns else reason)
            elif not st.ready:
                if st.session_id is None:  # e.g. new-session timed out after creating it
                    st.session_id = await self.tmux.show_env(agent, "NETSKY_SESSION_ID")
                st.ready = await self._ready_now(st)
                if st.ready:
                    await self.recorder.event("agent.ready", agent=agent, late=True)
                    self.wake.kick(agent)
        for agent in gone:
            if wd.owns(agent) and not wd.fails_on_death(agent):
                continue  # e.g. a clone, once agent0's restart (which covers it) began
            st = self.state_of(agent)
            pane = panes.get(agent)
            status = st.exit_status if pane is not None else None
            failure = f"exit-{status}" if status is not None else "session-gone"
            why = (
                f"exit status {status}"
                if status is not None
                else "its tmux session is gone"
                if pane is None
                else "its pane is dead"
            )
            await self.recorder.event(
                "agent.gone",
                level="warning",
                agent=agent,
                session_id=st.session_id,
                exit_status=status,
                noticed_by=reason,
            )
            await wd.notice_gone(
                agent,
                reason=why,
                failure=failure,
                noticed_by=reason,
                session_id=st.session_id,
                exit_status=status,
            )
        return {
            "alive": [a for a in wanted if self.state_of(a).alive],
            "spawning": [a for a in wanted if self.state_of(a).spawning],
            "not_ready": [a for a in wanted if not self.state_of(a).ready],
            "gone": gone,
        }

    async def on_session_event(self, event: SessionEvent) -> None:
        """A tmux hook (or the session watcher's sweep) said an agent's pane died or its
        session closed: run the liveness check at once (the watcher's ``notice``)."""
        await self._check_quietly(f"{event.source}:{event.event}")

    async def _check_quietly(self, reason: str) -> None:
        try:
            await self.check(reason=reason)
        except NetskyError as e:
            await self.recorder.event("check.failed", level="warning", error=str(e))

    # ----- reporting -----------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """One status row per known or wanted agent (shape in docs/protocol.md)."""
        wanted = self.desired.wanted()
        names = sorted(set(self.agents) | set(wanted), key=sort_key)
        rows = []
        for agent in names:
            st = self.state_of(agent)
            if agent not in wanted and not st.alive and not st.spawning:
                continue
            activity, reason = self.activity.activity(agent)
            rows.append(
                {
                    "agent": agent,
                    "role": role_of(agent),
                    "runtime": st.runtime.value,
                    "wanted": agent in wanted,
                    "alive": st.alive,
                    "spawning": st.spawning,
                    "ready": st.ready,
                    "session_id": st.session_id,
                    "pane_pid": st.pane_pid,
                    "spawns": st.spawns,
                    "inbox_pending": pending_count(self.paths, agent),
                    "last_delivery_ts": st.last_delivery_ts,
                    "last_error": st.last_error,
                    "exit_status": st.exit_status,
                    "pane_changed_at": st.pane_changed_at,
                    "activity": activity,
                    "activity_reason": reason,
                }
            )
        return rows

    # ----- the task ------------------------------------------------------------------------

    async def run(
        self, *, task_status: TaskStatus[Supervisor] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Long-running task: adopt running agents and load the restart machines, then
        host spawns and restart work until cancelled. ``await tg.start(sup.run)``
        returns the supervisor once both are ready."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self.load_desired()
            await self.adopt()
            await tg.start(self.restarts.run)
            task_status.started(self)
            await anyio.sleep_forever()
