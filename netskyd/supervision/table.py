"""The agent table: what the daemon knows of each agent now, and the desired set.

One ``AgentTable`` per daemon, built by the wiring and handed to the supervisor (which
keeps it: spawns, deaths, readiness, the desired set), and, as the read-only
``AgentView`` port (netskyd.ports), to the activity monitor, the bus and the health
report. Each ``AgentState`` field has one writer, named beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from netskyd.config import Runtime
from netskyd.ports import SettingsView
from netskyd.supervision.desired import Desired


@dataclass
class AgentState:
    """What the daemon knows of one agent right now (writers in brackets)."""

    agent: str
    runtime: Runtime
    #: [supervisor] the session's NETSKY_SESSION_ID and its pane's pid.
    session_id: str | None = None
    pane_pid: int | None = None
    #: [supervisor] alive: the pane runs; ready: readiness seen for this session.
    alive: bool = False
    ready: bool = False
    spawning: bool = False
    spawned_at: str | None = None
    spawns: int = 0
    #: [bus] the last delivery's timestamp (RFC 3339) and when it was acknowledged
    #: (epoch s; the hang check's input).
    last_delivery_ts: str | None = None
    last_delivery_at: float | None = None
    #: [supervisor] the last spawn failure.
    last_error: str | None = None
    #: [supervisor] exit status of the pane's process when tmux kept the dead pane
    #: (remain-on-exit).
    exit_status: int | None = None
    #: [supervisor] True once this agent was up under netsky (spawned, adopted, or
    #: recorded in meta.db): from then on its disappearance is a death, not a first start.
    known: bool = False
    #: [activity monitor] hash of the pane's text at the last observation, and when it
    #: last changed (epoch s).
    pane_hash: str | None = None
    pane_changed_at: float | None = None


class AgentTable:
    """Every agent's AgentState plus the desired constellation (the ``AgentView`` port)."""

    def __init__(self, settings: SettingsView) -> None:
        self.settings = settings
        self.desired = Desired(up=False)
        self.agents: dict[str, AgentState] = {}

    def runtime_of(self, agent: str) -> Runtime:
        """``agent``'s runtime: its override in the desired set, else the settings'."""
        override = self.desired.agents.get(agent)
        return Runtime(override) if override else self.settings().runtime_for(agent)

    def state_of(self, agent: str) -> AgentState:
        """``agent``'s state, created (not alive, not known) on first ask."""
        st = self.agents.get(agent)
        if st is None:
            st = self.agents[agent] = AgentState(agent, self.runtime_of(agent))
        return st
