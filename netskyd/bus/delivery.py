"""Delivery paths: how a batch of envelopes gets into an agent, one interface for all.

- ``PaneDelivery`` (``via="pane"``, any TUI): one bracketed paste of the batch's
  ``<channel>`` blocks, in order, then Enter as a separate key once the pane shows
  the paste drawn (``netskyd.bus.confirm.paste_drawn``: read every few ms, each read
  with a deadline), at the latest after ``paste_settle_ms`` (Codex and other TUIs
  treat an Enter inside the paste burst as a newline, leaving the message typed but
  never submitted). A runtime that never draws its paste (the demo agent) gets its
  Enter at once, from the same tmux client as the paste. The screen just before
  the paste is captured by that client too, so "changed since" is exact. Needs
  the agent alive and ready, so nothing lands in a pane that is still starting
  up, and not *held* by the activity monitor (a dialog on screen, a usage limit):
  for runtimes with dialogs the screen is read just before the paste, since a
  paste's Enter on a menu would choose its highlighted option (netskyd/activity/monitor.py).
  It returns a ``PaneReceipt``; its ``confirm()`` polls the pane until the agent
  has taken the paste (``netskyd.bus.confirm.consumed``), presses Enter once more after
  ``consume_timeout_s``, and gives up as long again after that: a ``Consumption``.
- ``McpDelivery`` (``via="mcp"``): through the agent's ``netskyd channel-server``
  (an MCP server Claude Code loads as its ``agent`` channel) when its socket
  ``state/mcp/<agent>.sock`` exists; see ``netskyd.bus.mcp_link``. Returns no receipt:
  the channel server's ping is all that can be known (consumption ``unchecked``).

The bus tries the paths in order (MCP first, pane as the fallback) and treats a
DeliveryFailed as "not delivered, maybe seen": ``maybe_delivered`` says whether
part of the batch could have reached the agent (a timeout half-way), which makes
a later redelivery a marked repeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from netsky_shared.errors import McpLinkError, NetskyError, SessionNotFound, TmuxError, TmuxTimeout
from netsky_shared.maildir import now_rfc3339
from netskyd.agents.tmux import Tmux
from netskyd.bus import confirm as consume
from netskyd.bus import mcp_link
from netskyd.bus.envelope import Envelope, render_channel
from netskyd.config import Runtime
from netskyd.ports import ActivityGate, AgentView, Monotonic, SettingsView
from netskyd.runtimes.catalogue import screens_for

#: Pause between two reads of the pane while waiting for the paste to be drawn.
SETTLE_POLL_S = 0.003
#: Pause between two reads while waiting for the agent to take the paste: this at
#: first, growing by a twentieth of the time waited so far, up to CONSUME_POLL_MAX_S
#: (a hung agent is read a few times a second, not hundreds).
CONSUME_POLL_S = 0.004
CONSUME_POLL_MAX_S = 0.2
#: Shortest deadline of one read of the pane while confirming.
READ_MIN_S = 0.05


class DeliveryFailed(NetskyError):
    """A delivery path could not hand the batch over.

    ``maybe_delivered`` is True when the failure came after something may have
    reached the agent (e.g. a tmux timeout during the paste).
    """

    def __init__(self, message: str, *, maybe_delivered: bool) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


@dataclass(frozen=True)
class Consumption:
    """Whether the agent took a delivered batch.

    ``state``: ``consumed`` (confirmed on its screen), ``unconsumed`` (not taken within
    two ``consume_timeout_s``, one more Enter in between) or ``unchecked`` (its screen
    cannot tell: no known composer). ``consumed_at``: RFC 3339, when the read that
    confirmed it returned. ``after_ms``: from the Enter to that read. ``retried``:
    Enter was pressed once more. ``screen``: the last lines read (for a report).
    ``reason``: why it is not consumed, one line.
    """

    state: str
    consumed_at: str | None = None
    after_ms: float | None = None
    retried: bool = False
    screen: tuple[str, ...] = ()
    reason: str | None = None


class Receipt(Protocol):
    """What a delivery path hands back when the agent's taking it is still to be seen."""

    #: RFC 3339: when the batch was submitted (the pane's Enter sent).
    submitted_at: str

    async def confirm(self) -> Consumption:
        """Wait (bounded) until the agent has taken the batch, or give up."""
        ...


class Delivery(Protocol):
    """One way into an agent. ``via`` names it in records (``pane``, ``mcp``)."""

    via: str

    def available(self, agent: str) -> bool:
        """Whether this path can take envelopes for ``agent`` right now."""
        ...

    async def deliver(self, agent: str, envelopes: Sequence[Envelope]) -> Receipt | None:
        """Hand the envelopes over, in order; a Receipt when their consumption is still
        to be confirmed, None when nothing more can be known. Raises DeliveryFailed."""
        ...


def _target(agent: str) -> str:
    # tmux's exact-match pane target, as netskyd.agents.tmux builds it: ``-t agent1`` alone
    # would prefix-match agent10.
    return f"={agent}:"


@dataclass
class PaneReceipt:
    """A paste submitted into ``agent``'s pane, to be confirmed.

    ``before``: the screen captured just before the paste; ``marks``: what identifies
    the paste (netskyd.bus.confirm); ``at``: monotonic time of the Enter; ``drawn_ms``:
    how long the paste took to show (None: not seen within ``paste_settle_ms``, or not
    waited for).
    """

    delivery: PaneDelivery
    agent: str
    runtime: Runtime
    before: str
    marks: consume.PasteMarks
    at: float
    submitted_at: str
    drawn_ms: float | None

    async def confirm(self) -> Consumption:
        return await self.delivery.confirm(self)


class PaneDelivery:
    """Bracketed paste into the agent's tmux pane, Enter once it is drawn, then a check
    that the agent took it."""

    via = "pane"

    def __init__(
        self,
        *,
        agents: AgentView,
        activity: ActivityGate,
        settings: SettingsView,
        tmux: Tmux,
        monotonic: Monotonic,
    ) -> None:
        self.agents = agents
        self.activity = activity
        self.settings = settings
        self.tmux = tmux
        self.monotonic = monotonic

    def available(self, agent: str) -> bool:
        st = self.agents.agents.get(agent)
        if st is None or not st.ready or not st.alive:
            return False
        return self.activity.held(agent) is None

    async def deliver(self, agent: str, envelopes: Sequence[Envelope]) -> PaneReceipt:
        await self.check_screen(agent)
        st = self.agents.agents.get(agent)
        runtime = st.runtime if st is not None else Runtime.CUSTOM
        envs = list(envelopes)
        return await self.paste(agent, render_channel(envs), runtime, [e.text for e in envs])

    async def check_screen(self, agent: str) -> None:
        """Never paste into a dialog: a paste's Enter would pick whatever option is
        highlighted. For runtimes with dialogs, read the screen first; a dialog
        there holds the delivery (DeliveryFailed, not delivered) until it is gone."""
        st = self.agents.agents.get(agent)
        monitor = self.activity
        if st is None or not screens_for(st.runtime).dialogs:
            return
        try:
            text = await self.tmux.capture(agent)
        except TmuxError as e:
            raise DeliveryFailed(
                f"reading {agent}'s screen failed: {e}", maybe_delivered=False
            ) from e
        await monitor.observe(agent, text, source="delivery")
        held = monitor.held(agent)
        if held is not None:
            raise DeliveryFailed(f"held: {held}", maybe_delivered=False)

    async def paste(
        self,
        agent: str,
        text: str,
        runtime: Runtime = Runtime.CUSTOM,
        texts: Sequence[str] = (),
    ) -> PaneReceipt:
        """Paste ``text`` (``texts``: the envelopes' own texts, in order) and submit it:
        Enter once the paste is drawn, at the latest after ``paste_settle_ms``.
        Returns the receipt to confirm. Raises DeliveryFailed."""
        tmux = self.tmux
        settle_s = self.settings().paste_settle_ms / 1000
        marks = consume.marks_for(text, list(texts) or [text])
        at_once = settle_s == 0 or not consume.draws_paste(runtime)
        buffer = f"netsky-{agent}-{uuid.uuid4().hex[:8]}"
        target = _target(agent)
        # One tmux client: the screen just before the paste, the paste, and (for a
        # runtime that does not draw it) the Enter; each client start costs ~3 ms.
        # fmt: off
        args = [
            "capture-pane", "-p", "-J", "-t", target, ";",
            "load-buffer", "-b", buffer, "-", ";",
            "paste-buffer", "-p", "-d", "-b", buffer, "-t", target,
        ]
        # fmt: on
        if at_once:
            args += [";", "send-keys", "-t", target, "Enter"]
        try:
            before = await tmux.run(*args, input=text.encode())
        except TmuxError as e:
            raise DeliveryFailed(
                f"paste into {agent} failed: {e}", maybe_delivered=isinstance(e, TmuxTimeout)
            ) from e
        drawn_ms: float | None = None
        if not at_once:
            drawn_ms = await self._settle(agent, runtime, before, marks, settle_s)
            try:
                await tmux.send_keys(agent, "Enter")
            except TmuxError as e:
                # The text is in the input line; the next delivery's Enter submits it.
                raise DeliveryFailed(
                    f"Enter into {agent} failed: {e}", maybe_delivered=True
                ) from e
        return PaneReceipt(
            self, agent, runtime, before, marks, self.monotonic(), now_rfc3339(), drawn_ms
        )

    async def read(self, agent: str, deadline_s: float) -> str | None:
        """The visible pane, or None when tmux did not answer within ``deadline_s``
        (seconds, at most ``tmux_timeout_s``). Raises SessionNotFound."""
        deadline_s = max(0.001, min(deadline_s, self.settings().tmux_timeout_s))
        with anyio.move_on_after(deadline_s):
            try:
                return await self.tmux.capture(agent)
            except SessionNotFound:
                raise
            except TmuxError:
                return None
        return None

    async def _settle(
        self, agent: str, runtime: Runtime, before: str, marks: consume.PasteMarks, max_s: float
    ) -> float | None:
        """Read the pane until the paste is drawn; ms it took, None when ``max_s`` passed."""
        clock = self.monotonic
        start = clock()
        limit = start + max_s
        while True:
            try:
                screen = await self.read(agent, limit - clock())
            except SessionNotFound:
                return None  # the Enter that follows reports it
            if screen is not None and consume.paste_drawn(runtime, before, screen, marks):
                return round((clock() - start) * 1000, 2)
            left = limit - clock()
            if left <= 0:
                return None
            await anyio.sleep(min(SETTLE_POLL_S, left))

    async def confirm(self, receipt: PaneReceipt) -> Consumption:
        """Poll the pane until the agent has taken the paste (netskyd.bus.confirm.consumed).

        Not taken ``consume_timeout_s`` after its Enter: Enter once more (not when a
        dialog is up: it would choose an option), then as long again; still not taken:
        ``unconsumed``. Reads start every CONSUME_POLL_S and slow down as the wait
        grows. A session that is gone ends it at once (``unconsumed``). Never raises
        for tmux trouble (a read that fails counts as "not yet").
        """
        agent, runtime = receipt.agent, receipt.runtime
        if consume.composer_for(runtime) is None:
            return Consumption("unchecked", reason=f"runtime {runtime.value}: no known composer")
        clock = self.monotonic
        timeout_s = self.settings().consume_timeout_s
        deadline = receipt.at + timeout_s
        retried = False
        last = ""
        while True:
            try:
                screen = await self.read(agent, max(READ_MIN_S, deadline - clock()))
            except SessionNotFound:
                return Consumption(
                    "unconsumed", retried=retried, screen=tuple(consume.tail(last)),
                    reason="its session is gone",
                )
            now = clock()
            if screen is not None:
                last = screen
                if consume.consumed(runtime, receipt.before, screen, receipt.marks):
                    return Consumption(
                        "consumed", now_rfc3339(), round((now - receipt.at) * 1000, 2), retried
                    )
            if now >= deadline:
                if retried:
                    return Consumption(
                        "unconsumed", retried=True, screen=tuple(consume.tail(last)),
                        reason=self._why_not(runtime, receipt, last),
                    )
                retried = True
                await self._retry_enter(agent, last)
                deadline = clock() + timeout_s
                continue
            waited = now - receipt.at
            pause = min(CONSUME_POLL_MAX_S, CONSUME_POLL_S + waited / 20)
            await anyio.sleep(min(pause, max(0.0, deadline - now)))

    async def _retry_enter(self, agent: str, screen: str) -> None:
        """Press Enter once more, unless the monitor sees a dialog on ``screen``."""
        monitor = self.activity
        st = self.agents.agents.get(agent)
        if st is not None and screens_for(st.runtime).dialogs and screen:
            await monitor.observe(agent, screen, source="delivery")
            if monitor.held(agent) is not None:
                return
        with anyio.move_on_after(self.settings().tmux_timeout_s):
            try:
                await self.tmux.send_keys(agent, "Enter")
            except TmuxError:
                pass

    @staticmethod
    def _why_not(runtime: Runtime, receipt: PaneReceipt, screen: str) -> str:
        _, composer = consume.split(runtime, screen)
        if composer is not None and consume.holds_paste(runtime, composer, receipt.marks):
            return "the paste still sits in its composer"
        if not screen or screen == receipt.before:
            return "its screen did not change"
        return "its screen changed, but shows neither the text nor a busy mark"


class McpDelivery:
    """Through the agent's MCP channel server, when one is connected."""

    via = "mcp"

    def __init__(self, settings: SettingsView) -> None:
        self.settings = settings

    def available(self, agent: str) -> bool:
        return mcp_link.is_connected(self.settings().paths.mcp_socket(agent))

    async def deliver(self, agent: str, envelopes: Sequence[Envelope]) -> None:
        try:
            await mcp_link.deliver(
                self.settings().paths.mcp_socket(agent),
                [e.to_json() for e in envelopes],
                self.settings().mcp_timeout_s,
            )
        except McpLinkError as e:
            raise DeliveryFailed(
                f"MCP channel of {agent}: {e}", maybe_delivered=e.maybe_delivered
            ) from e
