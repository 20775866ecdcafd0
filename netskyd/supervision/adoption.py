"""The supervisor's adoption of agent sessions already running (they outlive the daemon).

A mixin of ``netskyd.supervision.supervisor.Supervisor``; ``Supervisor.run`` adopts once,
before the restart machines load, so a restarted daemon neither spawns a second session of an
agent nor takes another home's sessions for its own (docs/supervision.md, "Adoption").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsky_shared.ids import is_agent_id
from netskyd.config import Runtime

if TYPE_CHECKING:
    from netskyd.agents.tmux import Tmux
    from netskyd.ports import SettingsView
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder
    from netskyd.supervision.desired import Desired
    from netskyd.supervision.table import AgentState


class Adoption:
    """Adopting running sessions; the host class provides ``settings``, ``tmux``,
    ``recorder``, ``store``, ``desired``, ``state_of``, the readiness probe ``_ready_now``
    and keeps ``unknown_sessions`` (agent-named sessions that are not ours)."""

    settings: SettingsView
    tmux: Tmux
    recorder: Recorder
    store: Store
    unknown_sessions: list[str]

    # Declared for the type checker only: a runtime stub could shadow the host's method.
    if TYPE_CHECKING:

        @property
        def desired(self) -> Desired: ...

        def state_of(self, agent: str) -> AgentState: ...

        async def _ready_now(self, st: AgentState) -> bool: ...

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
