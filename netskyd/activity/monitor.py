"""The activity monitor: every agent's class with evidence, hang markers, dialogs, limits.

Fed by the tick's snapshot (``observe_all``), by the readiness wait (each poll's
screen, through ``netskyd.agents.spawn.is_ready``), by its own poll of agents showing a
dialog (every ``dialog_poll_s``), and on demand (``why``). Each observation:

1. updates the pane's *fingerprint* (normalised, ``netskyd.runtimes.screen``) and raw hash,
   and when each last moved (``netskyd.activity.watch.Watch``);
2. classifies the agent (``netskyd.activity.classify``) and journals ``activity.changed``
   when the class changes;
3. hang: a hung verdict writes ``state/hang/<agent>.json`` and pages once (key
   ``hang:<agent>``); when the pane moves, the session is replaced or the agent dies,
   the marker is archived and the incident resolved (``netskyd.activity.hangs``);
4. usage limit: a limit notice parks the agent (``state/limit/<agent>.json``): never
   hung, never restarted, deliveries held, the owner paged once (key ``limit:<agent>``);
   after the reset it gets a nudge envelope from ``netsky`` and is released
   (``netskyd.activity.parking``);
5. dialog: ``netskyd.activity.dialogs.DialogHandler`` decides; the action comes from the
   ``dialogs`` config; answers run as background tasks in ``run``'s task group, by
   label, and each outcome is journalled with the screen seen
   (``netskyd.activity.answers``).

Pages go through the ``Pager`` and are confirmed from the incident file
(``netskyd.activity.pages``). The marker shapes are documented where each is written
(``hangs``, ``parking``). ``Watch``, ``HANG_DIR``, ``LIMIT_DIR``, ``ANSWER_DEADLINE_S``
and ``ANSWER_FOLLOW_S`` are re-exported from here.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from netsky_shared.errors import CorruptMarker, NetskyError, TmuxError
from netsky_shared.maildir import now_rfc3339, undelivered_counts
from netsky_shared.markers import read_marker
from netsky_shared.paths import Paths
from netskyd.activity.answers import ANSWER_DEADLINE_S as ANSWER_DEADLINE_S
from netskyd.activity.answers import ANSWER_FOLLOW_S as ANSWER_FOLLOW_S
from netskyd.activity.answers import Answers
from netskyd.activity.classify import (
    Activity,
    Observation,
    ScreenFacts,
    Verdict,
    classify,
    custom_idle,
    iso,
    read_screen,
)
from netskyd.activity.dialogs import Dialog, DialogHandler, detect
from netskyd.activity.hangs import HANG_DIR as HANG_DIR
from netskyd.activity.hangs import HangMarkers
from netskyd.activity.parking import LIMIT_DIR as LIMIT_DIR
from netskyd.activity.parking import Parking
from netskyd.activity.watch import Watch as Watch
from netskyd.agents.tmux import Tmux
from netskyd.periodic import every
from netskyd.ports import AgentView, Clock, Monotonic, Pager, SettingsView, Wake
from netskyd.runtimes.screen import fingerprint, raw_hash
from netskyd.store.recorder import Recorder


class Monitor(HangMarkers, Parking, Answers):
    """Activity classes, hang markers, dialog answers and usage-limit parking.

    Built with only what it uses: the agents (``AgentView``), the settings in force,
    tmux (keys for dialog answers, re-reads), the Recorder, the ``Pager``, the bus's
    ``Wake`` and the clocks. It is the ``ActivityGate`` and ``ActivityView`` ports
    (netskyd.ports) for the bus, the spawn path and the reports.
    """

    def __init__(
        self,
        *,
        agents: AgentView,
        settings: SettingsView,
        tmux: Tmux,
        recorder: Recorder,
        pager: Pager,
        wake: Wake,
        clock: Clock = time.time,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.agents = agents
        self.settings = settings
        self.tmux = tmux
        self.recorder = recorder
        self.pager = pager
        self.wake = wake
        self.clock = clock
        self.monotonic = monotonic
        s = settings()
        self.handler = DialogHandler(settle_s=s.dialog_settle_s, gone_s=s.dialog_gone_s)
        self.watches: dict[str, Watch] = {}
        self._tg: TaskGroup | None = None
        self._answering: set[str] = set()
        #: Agents whose unknown dialog was paged (key ``dialog:<agent>``): instance id.
        self._unknown_paged: dict[str, str] = {}
        self._lock = anyio.Lock()

    @property
    def paths(self) -> Paths:
        return self.settings().paths

    # ----- markers --------------------------------------------------------------------------

    async def _read(self, path: Any) -> dict[str, Any] | None:
        try:
            return read_marker(path)
        except CorruptMarker as e:
            await self.recorder.event("marker.corrupt", level="error", error=str(e))
            return None

    def held(self, agent: str) -> str | None:
        """Why deliveries to ``agent`` wait now (a dialog up, a usage limit), or None."""
        w = self.watches.get(agent)
        if w is None or w.verdict is None:
            return None
        if w.dialog is not None:
            return f"dialog {w.dialog.name} is on its screen"
        if w.verdict.activity is Activity.LIMITED:
            return "it is parked on a usage limit"
        return None

    def verdict(self, agent: str) -> Verdict | None:
        w = self.watches.get(agent)
        return w.verdict if w else None

    # ----- observation ----------------------------------------------------------------------

    async def observe_all(self, captures: dict[str, str]) -> dict[str, int]:
        """Observe every known agent with the tick's captures; returns counts per class."""
        sup = self.agents
        wanted = set(sup.desired.wanted())
        counts: dict[str, int] = {}
        for agent in sorted(wanted | {a for a, st in sup.agents.items() if st.alive}):
            verdict = await self.observe(agent, captures.get(agent), source="tick")
            counts[verdict.activity.value] = counts.get(verdict.activity.value, 0) + 1
        return counts

    async def observe(self, agent: str, text: str | None, source: str) -> Verdict:
        """Classify ``agent`` from ``text`` (its visible pane; None: no capture) and act."""
        async with self._lock:
            return await self._observe(agent, text, source)

    async def _observe(self, agent: str, text: str | None, source: str) -> Verdict:
        settings = self.settings()
        now = self.clock()
        st = self.agents.state_of(agent)
        w = self.watches.setdefault(agent, Watch())
        if w.session_id != st.session_id:
            self.watches[agent] = w = Watch(session_id=st.session_id)
            self.handler.forget(agent)
        if not w.markers_loaded:  # after a daemon start or a new session; then from memory
            w.hang = await self._read(self._hang_path(agent))
            w.limit = await self._read(self._limit_path(agent))
            w.markers_loaded = True
        facts: ScreenFacts | None = None
        dialog: Dialog | None = None
        if text is not None and st.alive:
            fp, raw = fingerprint(text), raw_hash(text)
            if fp != w.fp:
                w.fp, w.fp_changed_at = fp, now
            if raw != w.raw:
                w.raw, w.raw_changed_at = raw, now
            st.pane_hash, st.pane_changed_at = w.fp, w.fp_changed_at
            w.screen = text
            facts = read_screen(st.runtime, text, custom_idle(settings))
            dialog = detect(st.runtime, text)
        # Paging (files under a lock, fsyncs) stays off the delivery path's screen check.
        pages = source != "delivery"
        limit = await self._limit_state(agent, st.session_id, w, facts, text, now, pages)
        if facts is not None and facts.limit_notice is not None and limit is None:
            facts = replace(facts, limit_notice=None)  # the notice it was released from
        inbox, claimed = undelivered_counts(settings.paths, agent)
        obs = Observation(
            agent=agent,
            runtime=st.runtime,
            now=now,
            alive=st.alive,
            spawning=st.spawning,
            pane_pid=st.pane_pid,
            exit_status=st.exit_status,
            screen=text if st.alive else None,
            facts=facts,
            dialog=dialog,
            fp_changed_at=w.fp_changed_at,
            raw_changed_at=w.raw_changed_at,
            inbox=inbox,
            claimed=claimed,
            last_delivery_at=st.last_delivery_at,
            last_idle_at=w.last_idle_at,
            hang_after_s=settings.hang_after_s,
            limited_until=limit.get("nudge_at") if limit else None,
            limit_reset_at=limit.get("reset_at") if limit else None,
        )
        verdict = classify(obs)
        if facts is not None and facts.at_prompt and dialog is None:
            w.last_idle_at = now
            if agent in self._unknown_paged:
                await self._unknown_gone(agent)
        was = w.verdict
        held_before = self.held(agent)
        w.verdict, w.observed_at, w.dialog = verdict, now, dialog
        if was is None or was.activity is not verdict.activity:
            w.verdict_since = now
            await self.recorder.event(
                "activity.changed",
                level="warning" if verdict.activity is Activity.HUNG else "info",
                agent=agent,
                was=was.activity.value if was else None,
                now=verdict.activity.value,
                reason=verdict.reason,
                source=source,
            )
        await self._hang(agent, st.session_id, st.alive, w, verdict, now, pages)
        await self._dialog(agent, st.session_id, w, dialog, now, text, pages)
        if held_before is not None and self.held(agent) is None:
            self.wake.kick(agent)  # what waited for the dialog or the limit goes in now
        return verdict

    # ----- on demand ------------------------------------------------------------------------

    async def why(self, agent: str) -> dict[str, Any]:
        """Observe ``agent`` now (a fresh capture) and return the verdict with its evidence.

        Shape: ``{"agent", "runtime", "activity", "reason", "since", "evidence",
        "hang_marker", "limit_marker", "dialog_policy", "ts"}``.
        """
        sup = self.agents
        st = sup.state_of(agent)
        text = None
        if st.alive:
            try:
                text = await self.tmux.capture(agent)
            except TmuxError:
                text = None
        verdict = await self.observe(agent, text, source="why")
        w = self.watches[agent]
        dialog = w.dialog
        return {
            "agent": agent,
            "runtime": st.runtime.value,
            **verdict.to_json(),
            "since": iso(w.verdict_since),
            "hang_marker": w.hang,
            "limit_marker": w.limit,
            "dialog_policy": self._policy(dialog) if dialog else None,
            "dialog_instance": self.handler.instance(agent, dialog.name) if dialog else None,
            "ts": now_rfc3339(),
        }

    def activity(self, agent: str) -> tuple[str | None, str | None]:
        """``(class, reason)`` from the last observation, or ``(None, None)``."""
        w = self.watches.get(agent)
        if w is None or w.verdict is None:
            return None, None
        return w.verdict.activity.value, w.verdict.reason

    # ----- the poll of agents showing a dialog ---------------------------------------------

    async def poll_dialogs(self) -> None:
        """Re-read the screens of agents with a dialog up (settling, or just answered)."""
        agents = [a for a, w in self.watches.items() if w.dialog is not None]
        sup = self.agents
        agents = [a for a in agents if sup.state_of(a).alive and a not in self._answering]
        if not agents:
            return
        try:
            snap = await self.tmux.snapshot(agents, 0)
        except TmuxError:
            return
        for agent in agents:
            if agent in snap.captures:
                await self.observe(agent, snap.captures[agent], source="poll")

    async def run(self, *, task_status: TaskStatus[Monitor] = anyio.TASK_STATUS_IGNORED) -> None:
        """Long-running task: host dialog answers; re-read screens with a dialog up every
        ``dialog_poll_s``. ``await tg.start(monitor.run)`` returns the running monitor."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started(self)

            async def poll() -> None:
                try:
                    await self.poll_dialogs()
                except NetskyError as e:
                    await self.recorder.event("monitor.error", level="warning", error=str(e))

            await every(lambda: self.settings().dialog_poll_s, poll)
