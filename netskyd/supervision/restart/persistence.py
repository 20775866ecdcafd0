"""The restart machines on disk: persisted before every effect, loaded and reconciled at start.

A mixin of ``netskyd.supervision.restart.runner.RestartRunner``. ``_persist`` writes every
machine to ``state/restart-inflight.json`` (``netskyd.supervision.restart.markers``) before the
runner carries out any action, so a daemon killed at any point resumes from the last decided
state. On start, ``load()`` reconciles: a corrupt file is moved aside and reported; a marker
entry that disagrees with its machine is archived as stale; an unfinished machine resumes
where it stopped (each step is idempotent: teardown kills what is there, spawn adopts a
session it already created, the handoff envelope has a fixed id).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsky_shared.errors import CorruptMarker
from netsky_shared.ids import sort_key
from netsky_shared.markers import read_marker
from netskyd.supervision.restart.machine import Machine, State
from netskyd.supervision.restart.markers import (
    INFLIGHT,
    MARKER_STATE,
    MARKERS,
    archive_entry,
    save_machines,
)

if TYPE_CHECKING:
    from pathlib import Path

    from netsky_shared.paths import Paths
    from netskyd.store.recorder import Recorder


class RestartPersistence:
    """Saving and loading the machines; the host class provides ``recorder``,
    ``machines``, ``paths`` and ``machine``."""

    recorder: Recorder
    machines: dict[str, Machine]

    # Declared for the type checker only: a runtime stub could shadow the host's method.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        def machine(self, agent: str) -> Machine: ...

    def _path(self, name: str) -> Path:
        return self.paths.marker(name)

    def _persist(self) -> None:
        save_machines(self.paths, self.machines)

    async def load(self) -> list[str]:
        """Read the persisted machines and reconcile markers; return the agents to resume."""
        rec = self.recorder
        try:
            value = read_marker(self._path(INFLIGHT))
        except CorruptMarker as e:
            await rec.event("restart.inflight_corrupt", level="error", error=str(e))
            value = None
        for agent, raw in ((value or {}).get("machines") or {}).items():
            try:
                self.machines[agent] = Machine.from_json(raw)
            except ValueError as e:
                await rec.event("restart.inflight_bad", level="error", agent=agent, error=str(e))
        for kind, name in MARKERS.items():
            await self._reconcile_marker(kind, name)
        resume = [a for a, m in self.machines.items() if m.state != State.IDLE]
        for agent in resume:
            m = self.machines[agent]
            await rec.event(
                "restart.resumed",
                agent=agent,
                state=m.state.value,
                restart_id=m.restart_id,
                attempts=m.attempts,
            )
        return sorted(resume, key=sort_key)

    async def _reconcile_marker(self, kind: str, name: str) -> None:
        try:
            value = read_marker(self._path(name))
        except CorruptMarker as e:
            await self.recorder.event("marker.corrupt", level="error", error=str(e))
            return
        for agent in list(((value or {}).get("agents") or {}).keys()):
            if self.machine(agent).state != MARKER_STATE[kind]:
                archive_entry(self.paths, kind, agent, why="stale")
                await self.recorder.event(
                    "marker.stale",
                    level="warning",
                    agent=agent,
                    marker=name,
                    state=self.machine(agent).state.value,
                )
