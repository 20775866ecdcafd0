"""The restart runner's slow steps: claim, teardown, spawn, readiness, handoff, verify.

A mixin of ``netskyd.supervision.restart.runner.RestartRunner``: ``_act(agent, action)`` carries out
one slow action of ``netskyd.supervision.restart.machine`` and returns the event that answers it (or
raises a NetskyError / TimeoutError, which the runner turns into StepFailed). Each step is
idempotent, so a daemon that resumes a restart may run it again: teardown kills what is there, spawn
adopts a session it already created, the handoff envelope has a fixed id and is sent only when no
box holds it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import anyio

from netsky_shared.errors import HandoffPoisoned, ReadinessTimeout, SessionNotFound, TmuxError
from netsky_shared.ids import ROOT, TEARDOWN_RE, sort_key
from netsky_shared.maildir import BadText, new_envelope, send
from netskyd.supervision.restart import machine as restart
from netskyd.supervision.restart.machine import Machine
from netskyd.supervision.restart.markers import CONTROL_CHARS, synthetic_handoff

if TYPE_CHECKING:
    from netskyd.agents.tmux import Tmux
    from netskyd.ports import AgentControl, Clock, SettingsView, Wake
    from netskyd.store.db import Store
    from netskyd.store.recorder import Recorder


#: A Wake sleeps this much past its time, so its Tick never lands before ``retry_at``.
WAKE_MARGIN_S = 0.005


class RestartSteps:
    """The slow actions; the host class provides its ports (``control``, ``wake``),
    ``settings``, ``tmux``, ``recorder``, ``store``, ``clock``, ``machine``,
    ``machines``, ``cancel`` and ``_tails``."""

    control: AgentControl
    wake: Wake
    tmux: Tmux
    recorder: Recorder
    store: Store
    clock: Clock
    settings: SettingsView

    machines: dict[str, Machine]
    _tails: dict[str, str]

    # Declared for the type checker only: a runtime stub could shadow another mixin's method.
    if TYPE_CHECKING:

        def machine(self, agent: str) -> Machine: ...

        async def cancel(self, agent: str, reason: str) -> None: ...

    # ----- slow steps ---------------------------------------------------------------------------

    async def _act(self, agent: str, action: restart.Action) -> restart.Event | None:
        sup = self.control
        if isinstance(action, restart.Wake):
            # Never early: the event loop may fire a timer up to its resolution (uvloop:
            # 1 ms) before it is due, and a Tick before ``retry_at`` is "still waiting"
            # with nothing left to wake the machine but the next tick (up to 60 s).
            await anyio.sleep(max(0.0, action.at - self.clock()) + WAKE_MARGIN_S)
            return restart.Tick()
        if isinstance(action, restart.Claim):
            return restart.Claimed(await self._claim(self.machine(agent)))
        if isinstance(action, restart.TearDown):
            scope = await self._teardown_scope(action)
            for name in scope:
                await sup.kill_for_restart(name)
            return restart.TornDown()
        if isinstance(action, restart.Spawn):
            await sup.spawn_for_restart(self._spawn_scope(action), reason=self._reason(agent))
            return restart.Spawned()
        if isinstance(action, restart.AwaitReady):
            scope = self._spawn_scope(restart.Spawn(agent, action.constellation, None))
            failures = await sup.wait_for_restart(scope, self.settings().ready_timeout_s)
            for other, (failure, detail) in sorted(failures.items()):
                if other != agent:  # a clone that did not come up is its own machine's
                    await self.recorder.event(
                        "restart.clone_not_ready",
                        level="warning",
                        agent=other,
                        failure=failure,
                        detail=detail,
                    )
            if agent in failures:
                return restart.StepFailed(*failures[agent])
            return restart.Ready()
        if isinstance(action, restart.DeliverHandoff):
            await self._deliver_handoff(action)
            return restart.HandedOff()
        if isinstance(action, restart.Verify):
            await anyio.sleep(max(0.0, action.at - self.clock()))
            if not await sup.still_up(agent):
                return restart.StepFailed("died-verifying", f"{agent} did not stay up")
            return restart.Verified()
        raise AssertionError(f"not a slow action: {action!r}")

    def _reason(self, agent: str) -> str:
        m = self.machine(agent)
        return f"restart:{m.cause or '?'}:{(m.restart_id or '')[:8]}"

    async def _claim(self, m: Machine) -> str | None:
        if m.constellation:  # agent0's restart respawns the clones: theirs would collide
            for other in sorted(self.machines, key=sort_key):
                if other != m.agent and TEARDOWN_RE.match(other):
                    await self.cancel(other, f"restart of {m.agent}")
        if m.cause == "planned":
            if m.clones is not None and m.constellation:
                await self.control.set_clones(m.clones)
            return m.handoff if m.constellation else None
        if not m.constellation:
            return None
        tail = self._tails.pop(m.agent, None)
        if tail is None:  # e.g. resumed after a daemon restart: the dead pane may remain
            tail = await self.control.pane_tail(m.agent, self.settings().crash_tail_lines)
        return synthetic_handoff(
            m.agent, m.reason or "no reason recorded", tail, m.restart_id or ""
        )

    async def _teardown_scope(self, action: restart.TearDown) -> list[str]:
        if not action.constellation:
            return [action.agent]
        panes = await self.tmux.list_panes()
        names = {n for n in panes if TEARDOWN_RE.match(n)} | {action.agent}
        return sorted(names, key=sort_key)

    def _spawn_scope(self, action: restart.Spawn) -> list[str]:
        if not action.constellation:
            return [action.agent]
        wanted = self.control.desired.wanted()
        return [a for a in wanted if TEARDOWN_RE.match(a)] or [action.agent]

    async def _deliver_handoff(self, action: restart.DeliverHandoff) -> None:
        paths = self.settings().paths
        boxes = ("inbox", "claimed", "delivered", "poison")
        suffix = f"-{action.envelope_id}.json"

        def where() -> str | None:
            for box in boxes:
                d = paths.channel(ROOT, box)
                try:
                    if any(n.endswith(suffix) for n in (e.name for e in d.iterdir())):
                        return box
                except FileNotFoundError:
                    continue
            return None

        if where() is None:
            delivered, _ = await self.store.prior([action.envelope_id])
            if not delivered:
                try:
                    envelope = new_envelope("netsky", ROOT, action.text, kind="handoff")
                except BadText as e:  # the synthetic text is cleaned; an agent's may not be
                    envelope = new_envelope(
                        "netsky",
                        ROOT,
                        CONTROL_CHARS.sub("", action.text.replace("<", "‹")),
                        kind="handoff",
                    )
                    await self.recorder.event("handoff.cleaned", level="warning", rule=e.rule)
                envelope["id"] = action.envelope_id
                send(
                    paths,
                    envelope,
                    inbox_max_pending=10**9,  # the handoff must never be refused
                    envelope_max_bytes=max(self.settings().envelope_max_bytes, 1 << 20),
                )
                await self.recorder.event(
                    "handoff.sent",
                    agent=ROOT,
                    envelope_id=action.envelope_id,
                    bytes=len(action.text.encode()),
                )
        self.wake.kick(ROOT)
        with anyio.fail_after(self.settings().handoff_timeout_s):
            while True:
                box = where()
                if box == "delivered":
                    return
                if box == "poison":
                    raise HandoffPoisoned(f"the handoff envelope {action.envelope_id} was poisoned")
                if box is None:
                    delivered, _ = await self.store.prior([action.envelope_id])
                    if delivered:
                        return
                await anyio.sleep(0.05)


def is_slow(action: restart.Action) -> bool:
    """True for the actions a task carries out (they answer with an event)."""
    return isinstance(
        action,
        restart.Claim
        | restart.TearDown
        | restart.Spawn
        | restart.AwaitReady
        | restart.DeliverHandoff
        | restart.Verify
        | restart.Wake,
    )


def action_name(action: restart.Action) -> str:
    """``DeliverHandoff`` -> ``deliver-handoff``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(action).__name__).lower()


def failure_class(action: restart.Action, e: Exception) -> str:
    """The failure class of a step that raised ``e`` (e.g. ``ready-timeout``)."""
    if isinstance(e, ReadinessTimeout):
        return "ready-timeout"
    if isinstance(e, SessionNotFound):
        return "session-gone"
    if isinstance(e, TmuxError):
        return f"{action_name(action)}-tmux"
    if isinstance(e, TimeoutError):
        return f"{action_name(action)}-timeout"
    return f"{action_name(action)}-failed"
