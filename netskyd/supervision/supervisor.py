"""The supervisor: desired state, adoption, liveness, and the one spawn path's bookkeeping.

Long-running task ``Supervisor.run`` owns a task group in which first spawns run, so a slow
readiness wait never holds up a tick or a control request. ``check()`` is the liveness pass, run by
every tick and at once when a tmux hook reports a death (netskyd.agents.sessions): it compares
tmux's sessions with the desired set, spawns agents that were never up, and hands every death of an
agent that was up to the restart runner (netskyd.supervision.restart.runner), whose restart state
machine decides what happens next. While a restart covers an agent, its liveness is the watchdog's,
except that the death of a session the restart itself spawned is handed on too (it fails the attempt
at once, e.g. while verifying).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netsky_shared.errors import (
    CorruptMarker,
    NetskyError,
    ReadinessTimeout,
    SessionNotFound,
    SpawnFailed,
    TmuxError,
    UnknownAgent,
)
from netsky_shared.ids import ROOT, WATCHDOG, is_agent_id, role_of, sort_key
from netsky_shared.maildir import now_rfc3339, pending_count
from netsky_shared.markers import read_marker, write_marker
from netsky_shared.paths import Paths
from netskyd.agents.sessions import SessionEvent, SessionWatcher
from netskyd.agents.spawn import Spawned, Spawner
from netskyd.agents.tmux import PaneInfo, Tmux
from netskyd.config import Runtime
from netskyd.ports import ActivityView, Clock, Monotonic, Pager, SettingsView, Wake
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder
from netskyd.supervision import desired as desired_mod
from netskyd.supervision.desired import Desired
from netskyd.supervision.restart.runner import RestartRunner
from netskyd.supervision.table import AgentState, AgentTable

DESIRED_MARKER = "desired.json"
READY_POLL_S = 0.1
_NO_PANE = PaneInfo(session="", session_id="", pane_id="", pane_pid=0, pane_dead=False, created=0)


class Supervisor:
    """Keeps the running constellation equal to the desired one.

    Built with only what it uses (the wiring, netskyd.app.wiring): the agent table it
    keeps, the spawn path, tmux, the Recorder and the Store, the settings in force, the
    activity monitor's last word (``ActivityView``, for a spawn failure's reason), the
    bus's ``Wake``, the session watcher (None: the tick alone notices deaths), the
    ``Pager`` and the clocks. It owns its restart runner (``self.restarts``,
    netskyd.supervision.restart.runner), which reaches back only through the
    ``AgentControl`` methods below (kill, spawn and wait for restart, still up, pane
    tail, set clones, the desired set).
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

    async def adopt(self) -> None:
        """Adopt agent sessions already running (they outlive the daemon).

        A session counts as ours when its environment carries this home's
        ``NETSKY_HOME`` and a per-spawn nonce (``NETSKY_SESSION_ID``); any other
        session is reported in ``unknown_sessions`` and left alone. A wanted agent
        with no session but a spawn recorded in meta.db is *known*: the next
        check treats it as dead (crash recovery), not as a first start.
        """
        panes = await self.tmux.list_panes()
        unknown = sorted(n for n in panes if not is_agent_id(n))
        for name, pane in sorted(panes.items()):
            if not is_agent_id(name):
                continue
            env = await self.tmux.environment(name)  # one client per session
            session_id, home = env.get("NETSKY_SESSION_ID"), env.get("NETSKY_HOME")
            if session_id is None or home != str(self.settings().home):
                unknown.append(name)
                await self.recorder.event(
                    "session.unrecognised", level="warning", agent=name, home=home
                )
                continue
            st = self.state_of(name)
            st.alive, st.pane_pid, st.known = not pane.pane_dead, pane.pane_pid, True
            st.exit_status = pane.dead_status if pane.pane_dead else None
            st.session_id = session_id
            runtime = env.get("NETSKY_RUNTIME")
            if runtime is not None and runtime in {r.value for r in Runtime}:
                st.runtime = Runtime(runtime)
            st.ready = st.alive and await self._ready_now(st)
            await self.recorder.event(
                "agent.adopted",
                agent=name,
                session_id=st.session_id,
                pane_pid=pane.pane_pid,
                ready=st.ready,
                dead=pane.pane_dead,
                wanted=name in self.desired.wanted(),
            )
        self.unknown_sessions = sorted(set(unknown), key=lambda n: (not is_agent_id(n), n))
        for agent in self.desired.wanted():
            st = self.state_of(agent)
            if not st.known and await self.store.last_spawn(agent) is not None:
                st.known = True

    async def _ready_now(self, st: AgentState) -> bool:
        try:
            return await self.spawner.is_ready(st.agent, st.runtime, st.session_id)
        except TmuxError:
            return False

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

    async def on_session_event(self, event: SessionEvent) -> None:
        """A tmux hook (or the session watcher's sweep) said an agent's pane died or its
        session closed: run the liveness check at once (the watcher's ``notice``)."""
        await self._check_quietly(f"{event.source}:{event.event}")

    async def _check_quietly(self, reason: str) -> None:
        try:
            await self.check(reason=reason)
        except NetskyError as e:
            await self.recorder.event("check.failed", level="warning", error=str(e))

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

    # ----- the AgentControl port: the restart runner's primitives ----------------------------

    async def kill_for_restart(self, agent: str) -> bool:
        """Teardown: end ``agent``'s session (dead or alive); False when there was none."""
        self.paths.ready_file(agent).unlink(missing_ok=True)
        return await self._kill_session(agent, reason="restart")

    async def spawn_for_restart(self, agents: list[str], reason: str) -> list[str]:
        """Spawn each of ``agents``, adopting a live session a previous attempt (or a
        daemon killed mid-restart) already created; never a second session. Returns
        the agents spawned now. Raises SpawnFailed (and friends) on the first failure."""
        panes = await self.tmux.list_panes()
        spawned = []
        for agent in agents:
            pane = panes.get(agent)
            st = self.state_of(agent)
            if pane is not None and not pane.pane_dead:
                st.session_id = await self.tmux.show_env(agent, "NETSKY_SESSION_ID")
                st.alive, st.known, st.pane_pid = True, True, pane.pane_pid
                await self.recorder.event(
                    "agent.adopted", agent=agent, session_id=st.session_id, reason=reason
                )
                continue
            if pane is not None:  # a dead pane kept by remain-on-exit
                await self._kill_session(agent, reason="restart")
            await self._create(agent, reason)
            spawned.append(agent)
        return spawned

    async def wait_for_restart(
        self, agents: list[str], timeout_s: float
    ) -> dict[str, tuple[str, str]]:
        """Wait (concurrently, one deadline) until every agent in ``agents`` is ready.

        Returns ``{agent: (failure class, detail)}`` for those that were not.
        """
        failures: dict[str, tuple[str, str]] = {}

        async def one(agent: str) -> None:
            st = self.state_of(agent)
            if st.session_id is None:
                failures[agent] = ("session-gone", f"{agent} has no session")
                return
            spawned = Spawned(agent, st.runtime, st.session_id, _NO_PANE)
            failure = await self._await_ready(spawned, timeout_s)
            if failure is not None:
                failures[agent] = failure

        async with anyio.create_task_group() as tg:
            for agent in agents:
                tg.start_soon(one, agent)
        return failures

    async def still_up(self, agent: str) -> bool:
        """True when ``agent``'s session is alive now (asks tmux)."""
        pane = (await self.tmux.list_panes()).get(agent)
        st = self.state_of(agent)
        st.alive = pane is not None and not pane.pane_dead
        return st.alive

    async def pane_tail(self, agent: str, lines: int) -> str | None:
        """The last ``lines`` non-empty lines of ``agent``'s pane, or None when it is gone."""
        if lines <= 0:
            return None
        try:
            text = await self.tmux.capture(agent, lines=lines)
        except TmuxError:
            return None
        rows = [r for r in text.rstrip().splitlines() if r.strip()]
        return "\n".join(rows[-lines:]) or None

    async def set_clones(self, clones: int) -> None:
        """Planned restart with N: the desired set becomes agent0, N clones, agentinfinity."""
        await self._save(desired_mod.constellation(clones, self.desired), by="restart")
        await self.recorder.event("desired.restart", clones=clones)

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
