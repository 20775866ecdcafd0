"""The ports: how one component of the daemon calls another (docs/architecture.md).

Each port is a small ``typing.Protocol`` naming exactly what a caller may ask of a
component it does not own; ``netskyd.app.wiring`` hands every component the ports it
uses, implemented by the components started before it. Nothing here imports a feature
package at run time (only under ``TYPE_CHECKING``), so a port never forms an import
circle between the packages it joins.

| port | implemented by | used by |
|---|---|---|
| ``Pager`` | escalation.spool.Spool | activity, bus, supervision, app, control |
| ``AgentView`` | supervision.table.AgentTable | activity, bus, keepalive |
| ``AgentControl`` | supervision.supervisor.Supervisor | its restart runner (supervision.restart) |
| ``Crew`` | supervision.supervisor.Supervisor | the work loop (briefed clones) |
| ``ActivityGate`` | activity.monitor.Monitor | bus (held deliveries), supervision (readiness) |
| ``ActivityView`` | activity.monitor.Monitor | keepalive.health, supervision (spawn failures) |
| ``Wake`` | app.wiring.Wakeups (the daemon's wake channel to the bus) | activity, supervision |
| ``TickView`` | app.ticker.Ticker | keepalive, control |

Time is passed as callables: ``Clock`` is wall time (epoch seconds), ``Monotonic`` is
``time.monotonic``; both injectable for tests. ``SettingsView`` returns the settings in
force (SIGHUP may replace them; ``home`` and ``tmux_socket`` never change).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from netskyd.activity.classify import Verdict
    from netskyd.config import Runtime, Settings
    from netskyd.supervision.desired import Desired
    from netskyd.supervision.table import AgentState

#: Wall-clock time, epoch seconds (``time.time``).
Clock = Callable[[], float]
#: Monotonic seconds (``time.monotonic``), for durations and deadlines.
Monotonic = Callable[[], float]
#: The settings in force now (``Daemon.reload`` swaps them on SIGHUP).
SettingsView = Callable[[], "Settings"]


class Pager(Protocol):
    """Page the owner about a condition, and say when it went away (escalation.spool).

    ``key`` names the condition (``hang:agent3``, ``agent0:crash-loop``); an open
    incident for the same key within its quiet period is joined, not paged again.
    """

    async def escalate(
        self,
        subject: str,
        body: str,
        key: str,
        severity: str = "warning",
        *,
        exclude_legs: list[str] | None = None,
        wait: bool = False,
    ) -> Any:
        """Open, re-page or join the incident for ``key``; returns the Incident. Raises
        ValueError (empty key or subject, unknown severity), IncidentsBusy, OSError."""
        ...

    async def resolve(self, key: str, resolution: str) -> Any:
        """Close the open incident for ``key`` with an all-clear; the Incident or None."""
        ...

    def is_open(self, key: str) -> bool:
        """True when an incident for ``key`` was open at the spool's last pass (or was
        opened since)."""
        ...


class AgentView(Protocol):
    """What the daemon knows of each agent now (supervision.table.AgentTable)."""

    @property
    def agents(self) -> Mapping[str, AgentState]:
        """Every agent seen so far, by id."""
        ...

    @property
    def desired(self) -> Desired:
        """The desired constellation (``state/desired.json``)."""
        ...

    def state_of(self, agent: str) -> AgentState:
        """``agent``'s state, created (not alive, not known) on first ask."""
        ...


class AgentControl(Protocol):
    """What the restart runner may do to agents (supervision.supervisor.Supervisor)."""

    @property
    def desired(self) -> Desired:
        """The desired constellation."""
        ...

    async def kill_for_restart(self, agent: str) -> bool:
        """Teardown: end ``agent``'s session; False when there was none."""
        ...

    async def spawn_for_restart(self, agents: list[str], reason: str) -> list[str]:
        """Spawn (or adopt a live session of) each of ``agents``; the ones spawned now."""
        ...

    async def wait_for_restart(
        self, agents: list[str], timeout_s: float
    ) -> dict[str, tuple[str, str]]:
        """Wait until each is ready; ``{agent: (failure class, detail)}`` for the rest."""
        ...

    async def still_up(self, agent: str) -> bool:
        """True when ``agent``'s session is alive now (asks tmux)."""
        ...

    async def pane_tail(self, agent: str, lines: int) -> str | None:
        """The last ``lines`` non-empty lines of ``agent``'s pane; None when it is gone."""
        ...

    async def set_clones(self, clones: int) -> None:
        """The desired set becomes agent0, ``clones`` clones and agentinfinity."""
        ...


class Crew(Protocol):
    """The constellation as the work loop changes it (supervision.supervisor.Supervisor)."""

    async def add_agent(
        self, agent: str, runtime: Runtime | None, work: dict[str, str] | None = None
    ) -> list[str]:
        """Want ``agent`` (spawned in ``work["workdir"]`` when given); returns [agent].
        Raises NetskyError when the constellation is down."""
        ...

    async def wait_ready(self, agents: list[str], timeout_s: float) -> bool:
        """True once every one of ``agents`` is ready; False at the deadline."""
        ...

    async def kill(self, agent: str) -> dict[str, Any]:
        """End ``agent``'s session; a clone leaves the desired set.
        ``{"agent", "killed": bool, "desired": bool}``."""
        ...


class ActivityGate(Protocol):
    """The activity monitor as the bus and the readiness wait see it."""

    def held(self, agent: str) -> str | None:
        """Why deliveries to ``agent`` wait now (a dialog up, a usage limit), or None."""
        ...

    async def observe(self, agent: str, text: str | None, source: str) -> Verdict:
        """Classify ``agent`` from ``text`` (its pane; None: no capture) and act on it
        (answer a dialog per policy, park on a limit)."""
        ...


class ActivityView(Protocol):
    """The activity monitor's last word on each agent, for reports."""

    def activity(self, agent: str) -> tuple[str | None, str | None]:
        """``(class, reason)`` of ``agent``'s last verdict; ``(None, None)`` before one."""
        ...

    def verdict(self, agent: str) -> Verdict | None:
        """``agent``'s last verdict with its evidence, or None."""
        ...


class Wake(Protocol):
    """Tell the bus that what waits for ``agent`` may go in now (it became ready, a
    dialog or a usage limit let go). Never blocks; a wake is idempotent."""

    def kick(self, agent: str) -> None: ...


class TickView(Protocol):
    """The ticker's record of the daemon's own liveness (app.ticker.Ticker)."""

    @property
    def started_at(self) -> float:
        """When this daemon started (epoch s)."""
        ...

    @property
    def last_tick_at(self) -> float | None:
        """When the last tick finished (epoch s), None before the first."""
        ...

    @property
    def tick_count(self) -> int:
        """Ticks finished since start."""
        ...
