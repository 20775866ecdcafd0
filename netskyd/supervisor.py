"""The supervisor: desired state, adoption, liveness, and spawns in the background.

Long-running task ``run(ctx)`` owns a task group in which spawns run, so a
slow readiness wait never holds up a tick or a control request. Liveness is the
simplest correct version: each check, a wanted agent with no session is
spawned (the restart state machine replaces this in a later issue).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netskyd import desired as desired_mod
from netskyd.config import Runtime
from netskyd.context import Context
from netskyd.desired import Desired
from netskyd.errors import CorruptMarker, NetskyError, TmuxError, UnknownAgent
from netskyd.ids import ROOT, WATCHDOG, is_agent_id, role_of, sort_key
from netskyd.maildir import now_rfc3339, pending_count
from netskyd.spawn import create_session, is_ready, wait_ready
from netskyd.store.markers import read_marker, write_marker

DESIRED_MARKER = "desired.json"


@dataclass
class AgentState:
    """What the daemon knows of one agent right now."""

    agent: str
    runtime: Runtime
    session_id: str | None = None
    pane_pid: int | None = None
    alive: bool = False
    ready: bool = False
    spawning: bool = False
    spawned_at: str | None = None
    spawns: int = 0
    last_delivery_ts: str | None = None
    last_error: str | None = None


class Supervisor:
    """Keeps the running constellation equal to the desired one."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.desired = Desired(up=False)
        self.agents: dict[str, AgentState] = {}
        self.unknown_sessions: list[str] = []
        self._tg: TaskGroup | None = None
        self._changed = anyio.Event()

    # ----- desired state -------------------------------------------------------------------

    async def load_desired(self) -> None:
        """Read ``state/desired.json``; with none, the constellation is up (first start)."""
        path = self.ctx.paths.marker(DESIRED_MARKER)
        try:
            value = read_marker(path)
            loaded = Desired.from_json(value) if value is not None else None
        except (CorruptMarker, ValueError) as e:
            await self.ctx.recorder.event("desired.corrupt", level="error", error=str(e))
            loaded = None
        if loaded is None:
            loaded = desired_mod.constellation(self.ctx.settings.clones)
            await self._save(loaded, by="start")
        self.desired = loaded
        await self.ctx.recorder.event(
            "desired.loaded", state="up" if loaded.up else "down", agents=loaded.wanted()
        )

    async def _save(self, desired: Desired, by: str) -> None:
        write_marker(self.ctx.paths.marker(DESIRED_MARKER), desired.to_json(by))
        self.desired = desired

    def runtime_of(self, agent: str) -> Runtime:
        override = self.desired.agents.get(agent)
        return Runtime(override) if override else self.ctx.settings.runtime_for(agent)

    def state_of(self, agent: str) -> AgentState:
        st = self.agents.get(agent)
        if st is None:
            st = self.agents[agent] = AgentState(agent, self.runtime_of(agent))
        return st

    async def set_up(self, clones: int | None) -> list[str]:
        """``up [N]``: want agent0, N clones (default ``clones``) and agentinfinity."""
        n = self.ctx.settings.clones if clones is None else clones
        new = desired_mod.constellation(n, self.desired)
        await self._save(new, by="up")
        await self.ctx.recorder.event("desired.up", clones=n, agents=new.wanted())
        extra = [a for a in self.agents if a not in new.agents and self.agents[a].alive]
        for agent in extra:  # clones beyond N are stopped
            await self._kill_session(agent, reason="up")
        await self.check(reason="up")
        return new.wanted()

    async def set_down(self) -> list[str]:
        """``down``: stop every agent and remember it (the marker survives restarts)."""
        await self._save(Desired(up=False, agents=self.desired.agents), by="down")
        await self.ctx.recorder.event("desired.down")
        killed = []
        panes = await self.ctx.tmux.list_panes()
        for name in sorted(panes, key=sort_key):
            if is_agent_id(name) and await self._kill_session(name, reason="down"):
                killed.append(name)
        return killed

    async def add_agent(self, agent: str, runtime: Runtime | None) -> list[str]:
        """``agent N [--runtime R]``: want this agent (with an optional runtime override)."""
        if not self.desired.up:
            raise NetskyError("the constellation is down; run 'netskyctl up' first")
        st = self.agents.get(agent)
        new = desired_mod.with_agent(self.desired, agent, runtime.value if runtime else None)
        await self._save(new, by="agent")
        if st is not None and runtime is not None and st.runtime != runtime and st.alive:
            await self._kill_session(agent, reason="runtime-change")
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
        killed = await self._kill_session(agent, reason="kill")
        return {"agent": agent, "killed": killed, "desired": agent in self.desired.wanted()}

    async def _kill_session(self, agent: str, reason: str) -> bool:
        killed = await self.ctx.tmux.kill_session(agent)
        st = self.agents.get(agent)
        if st is not None:
            st.alive = st.ready = False
            st.session_id = st.pane_pid = None
        if killed:
            await self.ctx.recorder.event("agent.killed", agent=agent, reason=reason)
        return killed

    # ----- liveness ------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Adopt agent sessions already running (they outlive the daemon)."""
        panes = await self.ctx.tmux.list_panes()
        self.unknown_sessions = sorted(n for n in panes if not is_agent_id(n))
        for name, pane in sorted(panes.items()):
            if not is_agent_id(name):
                continue
            st = self.state_of(name)
            st.alive, st.pane_pid = True, pane.pane_pid
            st.session_id = await self.ctx.tmux.show_env(name, "NETSKY_SESSION_ID")
            runtime = await self.ctx.tmux.show_env(name, "NETSKY_RUNTIME")
            if runtime is not None and runtime in {r.value for r in Runtime}:
                st.runtime = Runtime(runtime)
            st.ready = await self._ready_now(st)
            await self.ctx.recorder.event(
                "agent.adopted",
                agent=name,
                session_id=st.session_id,
                pane_pid=pane.pane_pid,
                ready=st.ready,
                wanted=name in self.desired.wanted(),
            )

    async def _ready_now(self, st: AgentState) -> bool:
        try:
            return await is_ready(self.ctx, st.agent, st.runtime, st.session_id)
        except TmuxError:
            return False

    async def check(self, reason: str = "tick") -> dict[str, Any]:
        """Compare running sessions with the desired set; spawn what is missing.

        Returns ``{"alive": [...], "spawning": [...], "not_ready": [...]}``.
        """
        panes = await self.ctx.tmux.list_panes()
        wanted = self.desired.wanted()
        for agent, st in self.agents.items():
            pane = panes.get(agent)
            was_alive = st.alive
            st.alive = pane is not None and not pane.pane_dead
            st.pane_pid = pane.pane_pid if pane else None
            if was_alive and not st.alive and not st.spawning:
                st.ready = False
                await self.ctx.recorder.event(
                    "agent.gone",
                    level="warning",
                    agent=agent,
                    session_id=st.session_id,
                    wanted=agent in wanted,
                    noticed_by=reason,
                )
        for agent in wanted:
            st = self.state_of(agent)
            if st.spawning:
                continue
            if not st.alive:
                self.start_spawn(agent, reason="missing" if st.spawns else reason)
            elif not st.ready:
                if st.session_id is None:  # e.g. new-session timed out after creating it
                    st.session_id = await self.ctx.tmux.show_env(agent, "NETSKY_SESSION_ID")
                st.ready = await self._ready_now(st)
                if st.ready:
                    await self.ctx.recorder.event("agent.ready", agent=agent, late=True)
                    self.ctx.the_bus().kick(agent)
        return {
            "alive": [a for a in wanted if self.agents[a].alive],
            "spawning": [a for a in wanted if self.agents[a].spawning],
            "not_ready": [a for a in wanted if not self.agents[a].ready],
        }

    def start_spawn(self, agent: str, reason: str) -> None:
        """Spawn ``agent`` in the background unless a spawn is already under way."""
        st = self.state_of(agent)
        if st.spawning or self._tg is None:
            return
        st.spawning = True
        self._tg.start_soon(self._spawn, agent, reason)

    async def _spawn(self, agent: str, reason: str) -> None:
        st = self.state_of(agent)
        st.runtime = self.runtime_of(agent)
        st.ready = False
        rec = self.ctx.recorder
        try:
            spawned = await create_session(self.ctx, agent, st.runtime, self.desired.wanted())
            st.session_id, st.pane_pid, st.alive = spawned.session_id, spawned.pane.pane_pid, True
            st.spawned_at = now_rfc3339()
            st.spawns += 1
            await rec.event(
                "agent.spawned",
                agent=agent,
                role=role_of(agent),
                runtime=st.runtime.value,
                session_id=spawned.session_id,
                pane_pid=spawned.pane.pane_pid,
                reason=reason,
            )
            await self.ctx.store.add_spawn(
                st.spawned_at,
                agent,
                spawned.session_id,
                st.runtime.value,
                reason,
                spawned.pane.pane_pid,
            )
            took = await wait_ready(self.ctx, spawned, self.ctx.settings.ready_timeout_s)
            st.ready, st.last_error = True, None
            ts = await rec.event("agent.ready", agent=agent, took_s=round(took, 3))
            await self.ctx.store.finish_spawn(spawned.session_id, "ready", ts)
            self.ctx.the_bus().kick(agent)
        except NetskyError as e:
            st.last_error = str(e)
            await rec.event(
                "agent.spawn_failed", level="error", agent=agent, error=str(e), reason=reason
            )
            if st.session_id:
                await self.ctx.store.finish_spawn(st.session_id, "failed", None)
        finally:
            st.spawning = False
            self._changed.set()

    async def wait_ready(self, agents: list[str], timeout_s: float) -> bool:
        """Wait until every agent in ``agents`` is ready; False when the deadline passed."""
        with anyio.move_on_after(timeout_s):
            while not all(self.state_of(a).ready for a in agents):
                if not any(self.state_of(a).spawning for a in agents):
                    await self.check(reason="wait")  # e.g. late readiness, or a died spawn
                self._changed = anyio.Event()
                with anyio.move_on_after(0.2):
                    await self._changed.wait()
            return True
        return False

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
                    "inbox_pending": pending_count(self.ctx.paths, agent),
                    "last_delivery_ts": st.last_delivery_ts,
                    "last_error": st.last_error,
                }
            )
        return rows


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Long-running task: adopt running agents, then host spawns until cancelled."""
    sup = ctx.sup()
    async with anyio.create_task_group() as tg:
        sup._tg = tg
        await sup.load_desired()
        await sup.adopt()
        task_status.started()
        await anyio.sleep_forever()
