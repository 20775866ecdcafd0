"""The restart runner: carries out the restart state machine's actions, one machine per agent.

``RestartRunner.feed(agent, event)`` applies ``restart.step``, persists every machine
in ``state/restart-inflight.json`` (before any effect, so a daemon killed at any
point resumes from the last decided state), records the transition
(``restart.transition`` in the journal, the log and meta.db), runs the quick
effects inline (records, markers, pages) and starts the slow one (claim,
teardown, spawn, readiness, handoff, verification, wake-up) as a task in its
own cancel scope. When the task is done it feeds the answer back, unless the
machine moved on meanwhile (a newer event won; the old task is cancelled).

The files under ``state/`` (request, in-flight machines, gave-up and crash-loop
markers) are described in ``netskyd.supervision.restart.markers``. The runner's mixins hold
the rest: the slow steps (``netskyd.supervision.restart.steps``), the quick effects and pages
(``netskyd.supervision.restart.effects``), planned-restart requests
(``netskyd.supervision.restart.requests``) and the machines on disk, loaded and reconciled at
start (``netskyd.supervision.restart.persistence``). The supervisor owns the runner and is its
``AgentControl`` port (netskyd.ports).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netsky_shared.errors import IllegalTransition, NetskyError
from netsky_shared.ids import ROOT, TEARDOWN_RE, sort_key
from netsky_shared.maildir import now_rfc3339
from netsky_shared.paths import Paths
from netskyd.agents.tmux import Tmux
from netskyd.config import Settings
from netskyd.ports import AgentControl, Clock, Pager, SettingsView, Wake
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder
from netskyd.supervision.restart import machine as restart
from netskyd.supervision.restart.effects import RestartEffects
from netskyd.supervision.restart.machine import Budget, Machine, State
from netskyd.supervision.restart.persistence import RestartPersistence
from netskyd.supervision.restart.requests import RestartRequests
from netskyd.supervision.restart.steps import RestartSteps, action_name, failure_class, is_slow

# What callers import from here, including the names that moved to the modules above.
__all__ = ["RestartRunner", "budget_of"]


def budget_of(s: Settings) -> Budget:
    """The restart budget from the settings."""
    return Budget(
        backoff_base_s=s.restart_backoff_base_s,
        backoff_cap_s=s.restart_backoff_cap_s,
        jitter=s.restart_jitter,
        max_attempts=s.restart_max_attempts,
        giveup_cooldown_s=s.restart_giveup_cooldown_s,
        crashloop_restarts=s.crashloop_restarts,
        crashloop_window_s=s.crashloop_window_s,
        crashloop_cooldown_s=s.crashloop_cooldown_s,
        crashloop_cooldown_cap_s=s.crashloop_cooldown_cap_s,
        stable_after_s=s.restart_stable_after_s,
        verify_s=s.restart_verify_s,
        step_deadline_s=s.restart_step_deadline_s,
    )


@dataclass
class _Work:
    gen: int
    scope: anyio.CancelScope


class RestartRunner(RestartSteps, RestartEffects, RestartRequests, RestartPersistence):
    """Owns every agent's restart machine and the tasks that carry them out.

    Built by the supervisor with only what it uses: the supervisor itself as the
    ``AgentControl`` port, the settings in force, tmux, the Recorder, the Store, the
    ``Pager``, the bus's ``Wake`` and a wall clock. Its steps, effects, requests and
    persistence come from the mixins (``RestartSteps``, ``RestartEffects``,
    ``RestartRequests``, ``RestartPersistence``), which declare what they use of it; the
    state they share (``machines``, ``_tg``, ``_claim_lock``, ``_tails``) is set up here.
    """

    def __init__(
        self,
        *,
        control: AgentControl,
        settings: SettingsView,
        tmux: Tmux,
        recorder: Recorder,
        store: Store,
        pager: Pager,
        wake: Wake,
        clock: Clock,
    ) -> None:
        self.control = control
        self.settings = settings
        self.tmux = tmux
        self.recorder = recorder
        self.store = store
        self.pager = pager
        self.wake = wake
        self.clock = clock
        self.machines: dict[str, Machine] = {}
        self._gen: dict[str, int] = {}
        self._work: dict[str, _Work] = {}
        self._lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self._claim_lock = anyio.Lock()
        #: Last pane lines captured when a death was noticed, until the claim uses them.
        self._tails: dict[str, str] = {}

    @property
    def paths(self) -> Paths:
        return self.settings().paths

    @property
    def budget(self) -> Budget:
        return budget_of(self.settings())

    def machine(self, agent: str) -> Machine:
        return self.machines.get(agent) or Machine(agent)

    def owns(self, agent: str) -> bool:
        """True while a restart in flight covers ``agent`` (its liveness is the runner's)."""
        if self.machine(agent).state in restart.ACTIVE:
            return True
        return bool(TEARDOWN_RE.match(agent)) and self.machine(ROOT).state in restart.ACTIVE

    def fails_on_death(self, agent: str) -> bool:
        """True while ``agent``'s own restart has (or is creating) its fresh session, so
        its death must be handed to ``notice_gone`` at once (``restart.DEATH_FAILS``):
        a restart being verified fails now, not at the end of ``restart_verify_s``."""
        return self.machine(agent).state in restart.DEATH_FAILS

    def busy(self, agent: str) -> bool:
        """True when ``agent``'s machine is not IDLE (in flight or waiting to retry)."""
        return self.machine(agent).state != State.IDLE

    # ----- the loop: step, persist, record, act ------------------------------------------------

    async def feed(self, agent: str, event: restart.Event, *, gen: int | None = None) -> Machine:
        """Apply ``event`` to ``agent``'s machine and carry out the actions.

        ``gen`` (from a finished task) is checked against the machine's generation:
        a stale answer is dropped. Raises IllegalTransition for an event the state
        cannot take (a bug, or a request the caller should have checked).
        """
        async with self._lock:
            if gen is not None and gen != self._gen.get(agent, 0):
                return self.machine(agent)
            old = self.machine(agent)
            now = self.clock()
            new, actions = restart.step(old, event, now, self.budget)
            if new == old and not actions:
                return old
            self.machines[agent] = new
            self._persist()
            if new.state != old.state:
                await self.recorder.event(
                    "restart.transition",
                    level="warning" if new.state in restart.PARKED else "info",
                    agent=agent,
                    old=old.state.value,
                    new=new.state.value,
                    on=type(event).__name__,
                    restart_id=new.restart_id,
                    cause=new.cause,
                    attempts=new.attempts,
                    failure=new.failure,
                    retry_at=new.retry_at,
                )
            slow = [a for a in actions if is_slow(a)]
            if slow or new.state != old.state:
                self._cancel_work(agent)
            for action in actions:
                if not is_slow(action):
                    await self._effect(new, action)
            for action in slow:
                self._start(agent, action)
            return new

    def resume(self, agent: str) -> None:
        """Carry on a machine loaded from disk (after a daemon restart)."""
        m = self.machine(agent)
        for action in restart.resume_actions(m, self.clock(), self.budget):
            self._start(agent, action)

    def _cancel_work(self, agent: str) -> None:
        self._gen[agent] = self._gen.get(agent, 0) + 1
        work = self._work.pop(agent, None)
        if work is not None:
            work.scope.cancel()

    def _start(self, agent: str, action: restart.Action) -> None:
        assert self._tg is not None, "watchdog not started"
        gen = self._gen.get(agent, 0)
        scope = anyio.CancelScope()
        self._work[agent] = _Work(gen, scope)
        self._tg.start_soon(self._run_work, agent, action, gen, scope)

    async def _run_work(
        self, agent: str, action: restart.Action, gen: int, scope: anyio.CancelScope
    ) -> None:
        answer: restart.Event | None = None
        with scope:
            try:
                answer = await self._act(agent, action)
            except (NetskyError, TimeoutError) as e:
                answer = restart.StepFailed(failure_class(action, e), str(e) or repr(e))
            except OSError as e:
                answer = restart.StepFailed(f"{action_name(action)}-os-error", str(e))
        if answer is None or scope.cancel_called:
            return
        try:
            await self.feed(agent, answer, gen=gen)
        except IllegalTransition as e:
            await self.recorder.event(
                "restart.illegal", level="error", agent=agent, error=str(e)
            )

    # ----- events from outside --------------------------------------------------------------------

    async def notice_gone(
        self,
        agent: str,
        *,
        reason: str,
        failure: str,
        noticed_by: str,
        session_id: str | None = None,
        exit_status: int | None = None,
    ) -> None:
        """An agent's session died or vanished: record it (``agent.crashed``, a
        ``crashes`` row with the pane's last lines), then feed ``Gone`` to its machine.

        Idle, that starts a crash restart (for agent0, a pending ``state/restart-request``
        makes it a planned one); while its own restart has spawned it
        (``fails_on_death``), that attempt fails at once. ``failure``: ``exit-N`` or
        ``session-gone``; ``noticed_by``: e.g. ``hook:pane-died``, ``tick``.
        """
        if self.fails_on_death(agent) and await self.control.still_up(agent):
            # The check's pane list may predate the fresh session (a tick's snapshot, a
            # check queued behind another): only a death tmux confirms now fails it.
            await self.recorder.event(
                "restart.death_unconfirmed",
                agent=agent,
                state=self.machine(agent).state.value,
                noticed_by=noticed_by,
            )
            return
        tail = await self.control.pane_tail(agent, self.settings().crash_tail_lines)
        self._tails.pop(agent, None)
        if tail is not None:
            self._tails[agent] = tail  # the claim's synthetic handoff quotes this death's
        await self.recorder.event(
            "agent.crashed",
            level="warning",
            agent=agent,
            reason=reason,
            failure=failure,
            exit_status=exit_status,
            noticed_by=noticed_by,
            session_id=session_id,
        )
        await self.store.add_crash(
            now_rfc3339(), agent, session_id, exit_status, failure, noticed_by, tail
        )
        if agent == ROOT and await self.claim_request():
            return
        # IDLE: a crash restart starts. SPAWNING..VERIFYING: the attempt fails now. Else
        # (claimed, tearing down, parked) the machine notes it and does nothing.
        await self.feed(agent, restart.Gone(uuid.uuid4().hex, reason, failure))

    async def cancel(self, agent: str, reason: str) -> None:
        """The owner took ``agent`` down: stop its restart (if any) where it is."""
        if self.machine(agent).state != State.IDLE:
            await self.feed(agent, restart.Cancelled(reason))

    async def cancel_all(self, reason: str) -> None:
        """``down``: stop every restart."""
        for agent in sorted(self.machines, key=sort_key):
            await self.cancel(agent, reason)

    async def tick(self) -> dict[str, Any]:
        """The watchdog's part of a tick: wake due machines, claim a pending request."""
        for agent in sorted(self.machines, key=sort_key):
            try:
                await self.feed(agent, restart.Tick())
            except IllegalTransition as e:  # pragma: no cover - Tick is legal everywhere
                await self.recorder.event("restart.illegal", level="error", error=str(e))
        claimed = await self.claim_request()
        return {
            "restarts": {
                a: m.state.value for a, m in self.machines.items() if m.state != State.IDLE
            },
            "request_claimed": claimed,
        }

    async def run(
        self, *, task_status: TaskStatus[RestartRunner] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Long-running task: load and resume machines, then host their work and watch
        for ``state/restart-request`` until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            resume = await self.load()
            await self.recover_claimed()
            for agent in resume:
                self.resume(agent)
            task_status.started(self)
            await self._watch_requests()

    def rows(self) -> list[dict[str, Any]]:
        """Status rows: every machine that is not pristine (shape in docs/protocol.md)."""
        out = []
        for agent in sorted(self.machines, key=sort_key):
            m = self.machines[agent]
            out.append(
                {
                    "agent": agent,
                    "state": m.state.value,
                    "since": m.since,
                    "restart_id": m.restart_id,
                    "cause": m.cause,
                    "reason": m.reason,
                    "attempts": m.attempts,
                    "failure": m.failure,
                    "retry_at": m.retry_at,
                    "restarts_in_window": len(
                        restart.recent_starts(m, self.budget, self.clock())
                    ),
                    "loops": m.loops,
                    "last_ok_at": m.last_ok_at,
                }
            )
        return out
