"""Desired state: which agents should be running, remembered in ``state/desired.json``.

Marker shape::

    {"state": "up" | "down", "agents": {"agent0": null, "agent2": "codex", ...},
     "work": {"agent2": {"workdir", "workspace", "branch", "base"}},
     "ts": RFC 3339 UTC, "by": "up" | "down" | "agent" | "kill" | "start" | "brief"}

``agents`` maps each wanted agent to a runtime override (null = the configured
default). ``work`` (absent in markers older than the work loop) maps a briefed clone to
its workspace: it is spawned in ``workdir`` and its prompt names the workspace.
``down`` is the owner's last word and survives daemon restarts: a
freshly started daemon brings the constellation up unless the marker says down.
Pure functions here; the supervisor writes the marker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netsky_shared.ids import ROOT, WATCHDOG, clone_id, is_agent_id, sort_key
from netsky_shared.maildir import now_rfc3339


@dataclass(frozen=True)
class Desired:
    """What should run: ``up`` or not, and the agents with their runtime overrides."""

    up: bool
    agents: dict[str, str | None] = field(default_factory=dict)
    #: Briefed clones' workspaces: ``{agent: {"workdir", "workspace", "branch", "base"}}``.
    work: dict[str, dict[str, str]] = field(default_factory=dict)

    def wanted(self) -> list[str]:
        """Agents that should be running now, in reading order ([] when down)."""
        return sorted(self.agents, key=sort_key) if self.up else []

    def to_json(self, by: str) -> dict[str, Any]:
        return {
            "state": "up" if self.up else "down",
            "agents": dict(self.agents),
            "work": {a: dict(w) for a, w in self.work.items()},
            "ts": now_rfc3339(),
            "by": by,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Desired:
        """Parse a marker; raises ValueError when its shape is wrong."""
        state = value.get("state")
        agents = value.get("agents", {})
        if state not in ("up", "down") or not isinstance(agents, dict):
            raise ValueError(f"desired marker has a bad shape: {value!r}")
        work = value.get("work", {})
        bad = [a for a in (*agents, *work) if not is_agent_id(a)]
        if bad:
            raise ValueError(f"desired marker names unknown agents: {bad}")
        if not isinstance(work, dict) or not all(
            isinstance(w, dict) and isinstance(w.get("workdir"), str) for w in work.values()
        ):
            raise ValueError(f"desired marker has a bad work map: {work!r}")
        return cls(
            up=state == "up",
            agents={a: (r or None) for a, r in agents.items()},
            work={a: {k: str(v) for k, v in w.items()} for a, w in work.items() if a in agents},
        )


def constellation(clones: int, previous: Desired | None = None) -> Desired:
    """Desired state for ``up N``: agent0, agent1..agentN, agentinfinity.

    Runtime overrides given earlier (``agent N --runtime R``) are kept.
    """
    prev = previous.agents if previous else {}
    wanted = [ROOT, *(clone_id(i) for i in range(1, clones + 1)), WATCHDOG]
    work = {a: w for a, w in (previous.work if previous else {}).items() if a in wanted}
    return Desired(up=True, agents={a: prev.get(a) for a in wanted}, work=work)


def with_agent(
    desired: Desired, agent: str, runtime: str | None, work: dict[str, str] | None = None
) -> Desired:
    """Add (or re-type) one agent; agent0 and agentinfinity come along when missing.
    ``work``: the clone's workspace (a brief); None keeps what it had."""
    agents = dict(desired.agents)
    agents.setdefault(ROOT, None)
    agents.setdefault(WATCHDOG, None)
    agents[agent] = runtime if runtime else agents.get(agent)
    assigned = dict(desired.work)
    if work is not None:
        assigned[agent] = dict(work)
    return Desired(up=True, agents=agents, work=assigned)


def without_clone(desired: Desired, agent: str) -> Desired:
    """Drop a clone from the desired set (agent0 and agentinfinity always stay)."""
    if agent in (ROOT, WATCHDOG):
        return desired
    return Desired(
        up=desired.up,
        agents={a: r for a, r in desired.agents.items() if a != agent},
        work={a: w for a, w in desired.work.items() if a != agent},
    )
