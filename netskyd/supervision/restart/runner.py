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
markers) are described in ``netskyd.supervision.restart.markers``; the slow steps live in
``netskyd.supervision.restart.steps``. The supervisor owns the runner and is its
``AgentControl`` port (netskyd.ports). On start,
``load()`` reconciles: a corrupt file is moved aside and reported; a marker
entry that disagrees with its machine is archived as stale; an unfinished
machine resumes where it stopped (each step is idempotent: teardown kills what
is there, spawn adopts a session it already created, the handoff envelope has a
fixed id).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netsky_shared.errors import CorruptMarker, IllegalTransition, NetskyError, RestartBusy
from netsky_shared.ids import ROOT, TEARDOWN_RE, sort_key
from netsky_shared.maildir import now_rfc3339
from netsky_shared.markers import read_marker
from netsky_shared.paths import Paths
from netskyd.agents.tmux import Tmux
from netskyd.config import Settings
from netskyd.ports import AgentControl, Clock, Pager, SettingsView, Wake
from netskyd.store.db import Store
from netskyd.store.recorder import Recorder
from netskyd.supervision.restart import machine as restart
from netskyd.supervision.restart.machine import Budget, Machine, State
from netskyd.supervision.restart.markers import (
    ARCHIVE_DIR,
    CLAIMED_DIR,
    HANDOFF_MAX_BYTES,
    INFLIGHT,
    MARKER_STATE,
    MARKERS,
    REQUEST,
    archive_entry,
    parse_request,
    save_machines,
    write_entry,
)
from netskyd.supervision.restart.steps import RestartSteps, action_name, failure_class, is_slow


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


class RestartRunner(RestartSteps):
    """Owns every agent's restart machine and the tasks that carry them out.

    Built by the supervisor with only what it uses: the supervisor itself as the
    ``AgentControl`` port, the settings in force, tmux, the Recorder, the Store, the
    ``Pager``, the bus's ``Wake`` and a wall clock.
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

    # ----- persistence -----------------------------------------------------------------------

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

    # ----- quick effects ------------------------------------------------------------------------

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

    async def request(self, handoff: str, *, clones: int | None, by: str, force: bool) -> Machine:
        """Start a planned restart of the constellation (``netskyctl restart``).

        Raises RestartBusy when one is already in flight (or parked and not forced).
        """
        m = self.machine(ROOT)
        if m.state in restart.ACTIVE or (m.state in restart.PARKED and not force):
            raise RestartBusy(
                f"a restart of agent0 is already {m.state.value} (restart {m.restart_id}); "
                "see 'netskyctl status'"
            )
        return await self.feed(
            ROOT, restart.Requested(uuid.uuid4().hex, handoff, by, clones=clones, force=force)
        )

    async def claim_request(self) -> bool:
        """Claim ``state/restart-request`` by atomic rename and start the planned restart.

        Returns False when there is none or agent0's machine cannot take it now (it
        stays for a later tick).
        """
        async with self._claim_lock:
            return await self._claim_request()

    async def _claim_request(self) -> bool:
        m = self.machine(ROOT)
        source = self._path(REQUEST)
        if not source.exists():
            return False
        if m.state in restart.ACTIVE:
            return False
        if m.state in restart.PARKED:
            # Waiting for a retry: only the owner's request (force) goes ahead. Look
            # without claiming, so the file is not renamed back and forth.
            try:
                if not parse_request(source.read_bytes())["force"]:
                    return False
            except FileNotFoundError:
                return False
        claimed_dir = self._path(CLAIMED_DIR)
        claimed_dir.mkdir(parents=True, exist_ok=True)
        restart_id = uuid.uuid4().hex
        target = claimed_dir / f"{restart_id}.request"
        try:
            source.rename(target)  # the claim: only one claimer can win the rename
        except FileNotFoundError:
            return False
        req = parse_request(target.read_bytes())
        if m.state in restart.PARKED and not req["force"]:  # replaced since the look
            target.rename(source)
            return False
        limit = HANDOFF_MAX_BYTES
        raw_len = len(req["handoff"].encode())
        if raw_len > limit:
            cut = req["handoff"].encode()[:limit].decode("utf-8", errors="ignore")
            req["handoff"] = (
                f"{cut}\n\n[netsky: handoff truncated from {raw_len} bytes; the full text is "
                f"in state/{ARCHIVE_DIR}/restart-request-{restart_id}]"
            )
        await self.recorder.event(
            "restart.request_claimed",
            agent=ROOT,
            restart_id=restart_id,
            by=req["by"],
            bytes=len(req["handoff"].encode()),
            clones=req["clones"],
        )
        try:
            await self.feed(
                ROOT,
                restart.Requested(
                    restart_id, req["handoff"], req["by"], clones=req["clones"], force=req["force"]
                ),
            )
        except IllegalTransition:  # a death started a restart meanwhile: claim it later
            if not source.exists():
                target.rename(source)
            return False
        # The handoff now lives in restart-inflight.json; keep the request for the record.
        archive = self._path(ARCHIVE_DIR)
        archive.mkdir(parents=True, exist_ok=True)
        target.rename(archive / f"restart-request-{restart_id}")
        return True

    async def recover_claimed(self) -> None:
        """Requests claimed by a daemon that died before recording them are claimed again."""
        d = self._path(CLAIMED_DIR)
        if not d.is_dir():
            return
        for f in sorted(d.iterdir()):
            known = any(m.restart_id == f.stem for m in self.machines.values())
            if known or self._path(REQUEST).exists():
                archive = self._path(ARCHIVE_DIR)
                archive.mkdir(parents=True, exist_ok=True)
                f.rename(archive / f"restart-request-{f.stem}")
                continue
            f.rename(self._path(REQUEST))
            await self.recorder.event("restart.request_recovered", agent=ROOT, file=f.name)

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
            await _watch_requests(self)

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


async def _watch_requests(wd: RestartRunner) -> None:
    """Claim ``state/restart-request`` as soon as it appears (the tick is the backstop)."""
    from watchfiles import awatch

    state = wd.paths.state
    state.mkdir(parents=True, exist_ok=True)
    await wd.claim_request()
    async for changes in awatch(
        state,
        recursive=False,
        debounce=50,
        step=10,
        # A cancelled awatch waits for its watcher thread to return: at most this long
        # (watchfiles' default, 5 s, made every SIGTERM take 5 s).
        rust_timeout=500,
        watch_filter=lambda _change, path: path.endswith("/" + REQUEST),
    ):
        if changes:
            try:
                await wd.claim_request()
            except NetskyError as e:
                await wd.recorder.event("restart.request_failed", level="error", error=str(e))
