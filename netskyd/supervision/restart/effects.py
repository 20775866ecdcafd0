"""The restart runner's quick effects: records, markers and pages.

A mixin of ``netskyd.supervision.restart.runner.RestartRunner``: ``_effect(machine, action)``
carries out one quick action of ``netskyd.supervision.restart.machine`` inline, right after the
new machine is persisted (``restart`` rows and events, the gave-up and crash-loop markers of
``netskyd.supervision.restart.markers``, pages). Pages and all-clears go through the ``Pager``
in the runner's task group, so an incident file's lock and fsyncs never delay a restart step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsky_shared.errors import NetskyError
from netsky_shared.maildir import now_rfc3339
from netskyd.supervision.restart import machine as restart
from netskyd.supervision.restart.markers import MARKERS, archive_entry, write_entry

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from netsky_shared.paths import Paths
    from netskyd.ports import Clock, Pager
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder
    from netskyd.supervision.restart.machine import Budget, Machine


class RestartEffects:
    """The quick actions and pages; the host class provides ``recorder``, ``store``,
    ``pager``, ``clock``, ``paths``, ``budget`` and its task group (``_tg``)."""

    recorder: Recorder
    store: Store
    pager: Pager
    clock: Clock
    _tg: TaskGroup | None

    # Declared for the type checker only: a runtime stub could shadow the host's property.
    if TYPE_CHECKING:

        @property
        def paths(self) -> Paths: ...

        @property
        def budget(self) -> Budget: ...

    async def _effect(self, m: Machine, action: restart.Action) -> None:
        rec, store, ts = self.recorder, self.store, now_rfc3339()
        if isinstance(action, restart.RestartStarted):
            await store.add_restart(
                action.restart_id, action.attempt, m.agent, m.cause, m.reason, ts
            )
            await rec.event(
                "restart.started",
                agent=m.agent,
                restart_id=action.restart_id,
                attempt=action.attempt,
                cause=m.cause,
                reason=m.reason,
            )
        elif isinstance(action, restart.RestartFinished):
            await store.finish_restart(
                action.restart_id, action.attempt, action.outcome, action.failure, ts
            )
            await rec.event(
                "restart.finished",
                level="info" if action.outcome == "ok" else "warning",
                agent=m.agent,
                restart_id=action.restart_id,
                attempt=action.attempt,
                outcome=action.outcome,
                failure=action.failure,
            )
            if action.outcome == "failed" and m.state == restart.State.FAILED:
                retry = f"{m.retry_at - self.clock():.0f}s" if m.retry_at else "a while"
                await self._escalate(
                    f"{m.agent}: restart attempt {action.attempt} failed ({action.failure})",
                    f"Restarting {m.agent} failed: {m.reason}. netsky tries again in {retry} "
                    f"(attempt {action.attempt} of {self.budget.max_attempts}); it pages "
                    "again, louder, if it gives up.\nEvidence: netskyctl restarts "
                    f"--agent {m.agent}",
                    f"{m.agent}:restart-failed",
                    "info",
                )
        elif isinstance(action, restart.WriteMarker):
            write_entry(self.paths, action.name, m.agent, action.entry)
            await rec.event("marker.written", level="warning", agent=m.agent, marker=action.name)
        elif isinstance(action, restart.ArchiveMarkers):
            for kind in MARKERS:
                if archive_entry(self.paths, kind, m.agent, why="verified"):
                    await rec.event("marker.archived", agent=m.agent, marker=kind)
            await self._all_clear(m.agent)
        elif isinstance(action, restart.Page):
            await self._escalate(action.subject, action.body, action.key, action.severity)

    async def _escalate(self, subject: str, body: str, key: str, severity: str) -> None:
        """Page in the runner's task group when it runs: the incident files' lock and
        fsyncs never delay a restart step."""
        if self._tg is not None:
            self._tg.start_soon(self._escalate_now, subject, body, key, severity)
        else:
            await self._escalate_now(subject, body, key, severity)

    async def _escalate_now(self, subject: str, body: str, key: str, severity: str) -> None:
        try:
            await self.pager.escalate(subject, body, key, severity)
        except (OSError, NetskyError, ValueError) as e:
            await self.recorder.event(
                "restart.page_failed", level="error", key=key, error=str(e)
            )

    async def _all_clear(self, agent: str) -> None:
        """The agent is back (restart verified) or the owner cancelled the restart: close
        its restart incidents with an all-clear (in the runner's task group when it runs)."""
        if self._tg is not None:
            self._tg.start_soon(self._all_clear_now, agent)
        else:
            await self._all_clear_now(agent)

    async def _all_clear_now(self, agent: str) -> None:
        for what in ("gave-up", "crash-loop", "restart-failed"):
            try:
                await self.pager.resolve(
                    f"{agent}:{what}",
                    f"{agent} is back: its restart was verified (or the owner cancelled it).",
                )
            except (OSError, NetskyError) as e:
                await self.recorder.event(
                    "escalation.resolve_failed", level="error", key=f"{agent}:{what}", error=str(e)
                )
