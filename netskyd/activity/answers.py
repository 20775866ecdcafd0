"""Dialogs on an agent's screen: journal each, answer it by label, or leave it for the owner.

A mixin of ``netskyd.activity.monitor.Monitor``. After each observation with a screen,
``_dialog`` hands what ``netskyd.activity.dialogs.detect`` found to the
``DialogHandler`` (settling, one answer per instance) and journals ``dialog.seen``
once per instance (the options, the highlight, the policy and the screen). Once the
dialog has settled the action comes from the ``dialogs`` config (catalogue defaults:
start-up screens approved, permission prompts left to the owner):

- the action ``off`` (always so for a question) or a dialog the catalogue does not
  know: ``dialog.left`` once per instance, no key sent. An unknown dialog up for
  ``dialog_unknown_page_after_s`` also pages the owner once (key ``dialog:<agent>``);
  the incident is resolved when the agent is at its prompt again;
- a dialog with no plan for the action: ``dialog.unanswerable``, never retried blind;
- otherwise an answer runs as a background task in ``Monitor.run``'s task group (one
  per agent at a time, marked answered before any key so it is sent at most once):
  arrow keys, a re-read that the highlight is on the option with the wanted *label*,
  then Enter, all within ``ANSWER_DEADLINE_S``; ``dialog.answered`` (or
  ``dialog.answer_aborted`` / ``dialog.answer_failed``) is journalled with the
  screen seen, and the screen is re-observed for ``ANSWER_FOLLOW_S`` to see the
  dialog go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from netsky_shared.errors import NetskyError, TmuxError
from netskyd.activity.dialogs import Dialog, NoPlan, Plan, Step, detect, plan
from netskyd.activity.pages import MarkerPages
from netskyd.runtimes.catalogue import Kind
from netskyd.runtimes.screen import screen_lines

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from netskyd.activity.classify import Verdict
    from netskyd.activity.dialogs import DialogHandler
    from netskyd.activity.watch import Watch
    from netskyd.agents.tmux import Tmux
    from netskyd.ports import AgentView, Monotonic

#: Deadline for one dialog answer: keys, the highlight check, Enter.
ANSWER_DEADLINE_S = 10.0
#: How long after Enter the monitor watches the dialog go away.
ANSWER_FOLLOW_S = 3.0


class Answers(MarkerPages):
    """Dialog handling and answering; the host class (``Monitor``) provides the
    ``agents``, ``tmux``, the ``monotonic`` clock, the dialog ``handler``, the task
    group answers run in (``_tg``, None before ``run``), the agents being answered
    (``_answering``), the agents whose unknown dialog was paged (``_unknown_paged``:
    agent -> instance id) and ``observe``, besides ``settings``, the ``pager`` and
    the ``recorder`` (see ``MarkerPages``)."""

    agents: AgentView
    tmux: Tmux
    monotonic: Monotonic
    handler: DialogHandler
    _tg: TaskGroup | None
    _answering: set[str]
    _unknown_paged: dict[str, str]

    async def observe(self, agent: str, text: str | None, source: str) -> Verdict:
        """``Monitor.observe``: classify ``agent`` from ``text`` and act."""
        raise NotImplementedError

    async def _dialog(
        self,
        agent: str,
        session_id: str | None,
        w: Watch,
        dialog: Dialog | None,
        now: float,
        text: str | None,
        pages: bool = True,
    ) -> None:
        if text is None:
            return  # no screen: nothing seen, absent or present
        before = self.handler.instance(agent, dialog.name) if dialog else None
        step = self.handler.observe(agent, session_id, dialog, now)
        if dialog is None:
            return
        instance = self.handler.instance(agent, dialog.name) or dialog.name
        if instance != before:  # a new instance: what it is, and what netsky will do
            await self.recorder.event(
                "dialog.seen",
                agent=agent,
                dialog=dialog.name,
                instance=instance,
                kind=dialog.spec.kind.value,
                activity=w.verdict.activity.value if w.verdict else None,
                policy=self._policy(dialog),
                options=[o.label for o in dialog.options],
                highlighted=dialog.highlighted.label if dialog.highlighted else None,
                screen=screen_lines(text),
            )
        if step is not Step.ANSWER:
            return
        if dialog.spec.kind is Kind.UNKNOWN:
            await self._unknown(agent, w, dialog, instance, text, now, pages)
            return
        action = self._policy(dialog)
        if action == "off":
            why = "a question for the owner" if dialog.spec.kind is Kind.QUESTION else "policy off"
            await self._left(agent, w, dialog, instance, text, why)
            return
        try:
            answer = plan(dialog, action)
        except NoPlan as e:
            self.handler.answered(agent, dialog.name)  # once: never retried blind
            await self.recorder.event(
                "dialog.unanswerable",
                level="warning",
                agent=agent,
                dialog=dialog.name,
                instance=instance,
                action=action,
                why=str(e),
                screen=screen_lines(text),
            )
            return
        if agent in self._answering or self._tg is None:
            return  # one answer at a time per agent; before run(), the next poll answers
        self.handler.answered(agent, dialog.name)  # before any key: at most once, even on error
        self._answering.add(agent)
        self._tg.start_soon(self._answer, agent, dialog, answer, instance, text)

    async def _left(
        self, agent: str, w: Watch, dialog: Dialog, instance: str, text: str, why: str
    ) -> None:
        """Journal ``dialog.left`` (the dialog is the owner's) once per instance."""
        left = w.left = w.left or set()
        if instance in left:
            return
        left.add(instance)
        await self.recorder.event(
            "dialog.left",
            level="warning",
            agent=agent,
            dialog=dialog.name,
            instance=instance,
            why=why,
            screen=screen_lines(text),
        )

    async def _unknown(
        self,
        agent: str,
        w: Watch,
        dialog: Dialog,
        instance: str,
        text: str,
        now: float,
        pages: bool,
    ) -> None:
        """An unknown dialog that has settled: journal it once as left for the owner,
        and page once (key ``dialog:<agent>``) when it has been up for
        ``dialog_unknown_page_after_s``. No key is ever sent to it."""
        await self._left(agent, w, dialog, instance, text, "a dialog netsky does not know")
        up_s = self.handler.age(agent, dialog.name, now)
        if not pages or w.unknown_paged == instance:
            return
        if up_s is None or up_s < self.settings().dialog_unknown_page_after_s:
            return
        shown = "\n".join(dialog.lines)
        body = (
            f"{agent} shows a dialog netsky does not know, so it waits for you and netsky "
            f"sends it no keys.\nAnswer it: tmux attach -t {agent}   Evidence: netskyctl "
            f"why {agent}\n\nThe dialog:\n{shown}"
        )
        try:
            await self.pager.escalate(
                f"{agent} waits on an unknown dialog", body, key=f"dialog:{agent}"
            )
        except (OSError, NetskyError, ValueError) as e:
            await self.recorder.event(
                "dialog.page_failed", level="error", agent=agent, error=str(e)
            )
            return  # tried again at the next observation
        w.unknown_paged = self._unknown_paged[agent] = instance
        await self.recorder.event(
            "dialog.paged", level="warning", agent=agent, dialog=dialog.name, instance=instance
        )

    async def _unknown_gone(self, agent: str) -> None:
        """``agent`` is at its prompt again after an unknown dialog was paged: close the
        incident (all-clear). A respawn showing the dialog again joins the open incident
        rather than paging anew."""
        instance = self._unknown_paged.pop(agent)
        await self.recorder.event("dialog.gone", agent=agent, instance=instance)
        await self._resolve(f"dialog:{agent}", f"{agent}'s unknown dialog has gone.")

    def _policy(self, dialog: Dialog) -> str:
        """The configured action for ``dialog`` (``off`` for a question or an unknown
        dialog, always)."""
        if dialog.spec.kind in (Kind.QUESTION, Kind.UNKNOWN):
            return "off"
        return self.settings().dialog_action(dialog.name)

    async def _answer(
        self, agent: str, dialog: Dialog, answer: Plan, instance: str, text: str
    ) -> None:
        tmux = self.tmux
        result, detail = "answered", ""
        try:
            with anyio.move_on_after(ANSWER_DEADLINE_S) as scope:
                if answer.moves:
                    await tmux.send_keys(agent, *answer.moves)
                    if not await self._highlight_on(agent, dialog, answer):
                        result, detail = "aborted", "the highlight did not reach the option"
                if result == "answered":
                    await tmux.send_keys(agent, answer.confirm)
            if scope.cancelled_caught:
                result, detail = "aborted", f"no answer within {ANSWER_DEADLINE_S:g}s"
        except TmuxError as e:
            result, detail = "failed", str(e)
        finally:
            self._answering.discard(agent)
        event = {"answered": "dialog.answered", "aborted": "dialog.answer_aborted"}.get(
            result, "dialog.answer_failed"
        )
        await self.recorder.event(
            event,
            level="info" if result == "answered" else "warning",
            agent=agent,
            dialog=dialog.name,
            instance=instance,
            **answer.to_json(),
            detail=detail or None,
            screen=screen_lines(text),
        )
        if result == "answered":
            await self._follow(agent)

    async def _highlight_on(self, agent: str, dialog: Dialog, answer: Plan) -> bool:
        """Re-read the screen until the highlight is on the wanted option (2 s)."""
        runtime = self.agents.state_of(agent).runtime
        with anyio.move_on_after(2.0):
            while True:
                await anyio.sleep(0.1)
                seen = detect(runtime, await self.tmux.capture(agent))
                if seen is None or seen.name != dialog.name:
                    return False
                hi = seen.highlighted
                if hi is not None and answer.target is not None and hi.label == answer.target.label:
                    return True
        return False

    async def _follow(self, agent: str) -> None:
        """Watch the screen for a few seconds after an answer (its absence is evidence)."""
        end = self.monotonic() + ANSWER_FOLLOW_S
        while self.monotonic() < end:
            await anyio.sleep(0.25)
            try:
                text = await self.tmux.capture(agent)
            except TmuxError:
                return
            verdict = await self.observe(agent, text, source="answer")
            if verdict.evidence.get("dialog") is None:
                return
