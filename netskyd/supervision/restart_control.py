"""The supervisor's side of the ``AgentControl`` port: the restart runner's primitives.

A mixin of ``netskyd.supervision.supervisor.Supervisor``. The restart runner
(``netskyd.supervision.restart.runner``) reaches back into the supervisor only through these
methods (``netskyd.ports.AgentControl``): kill, spawn and wait for a restart, still up, pane
tail, set clones (and the host's ``desired``). A restart's spawn goes through the same path
as any other (``netskyd.supervision.spawning``), adopting a live session a previous attempt
already created, so there is never a second session of an agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from netsky_shared.errors import TmuxError
from netskyd.agents.spawn import Spawned
from netskyd.agents.tmux import PaneInfo
from netskyd.supervision import desired as desired_mod

if TYPE_CHECKING:
    from netsky_shared.paths import Paths
    from netskyd.agents.tmux import Tmux
    from netskyd.store.recorder import Recorder
    from netskyd.supervision.desired import Desired
    from netskyd.supervision.table import AgentState

_NO_PANE = PaneInfo(session="", session_id="", pane_id="", pane_pid=0, pane_dead=False, created=0)


class RestartControl:
    """What the restart runner may do to agents; the host class provides ``tmux``,
    ``recorder``, ``paths``, ``desired``, ``state_of``, ``_save``, ``_kill_session`` and
    the spawn path's ``_create`` and ``_await_ready``."""

    tmux: Tmux
    recorder: Recorder

    # Declared for the type checker only: a runtime stub could shadow the host's method.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        @property
        def desired(self) -> Desired: ...

        def state_of(self, agent: str) -> AgentState: ...

        async def _save(self, desired: Desired, by: str) -> None: ...

        async def _kill_session(self, agent: str, reason: str) -> bool: ...

        async def _create(self, agent: str, reason: str) -> Spawned: ...

        async def _await_ready(
            self, spawned: Spawned, timeout_s: float
        ) -> tuple[str, str] | None: ...

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
