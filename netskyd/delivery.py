"""Delivery paths: how a batch of envelopes gets into an agent, one interface for all.

- ``PaneDelivery`` (``via="pane"``, any TUI): one bracketed paste of the batch's
  ``<channel>`` blocks, in order, then Enter as a separate key after
  ``paste_settle_ms`` (Codex and other TUIs treat an Enter inside the paste burst
  as a newline, leaving the message typed but never submitted). Needs the agent
  alive and ready, so nothing lands in a pane that is still starting up, and not
  *held* by the activity monitor (a dialog on screen, a usage limit): for
  runtimes with dialogs the screen is read just before the paste, since a paste's
  Enter on a menu would choose its highlighted option (netskyd/monitor.py).
- ``McpDelivery`` (``via="mcp"``): through the agent's ``netskyd channel-server``
  (an MCP server Claude Code loads as its ``agent`` channel) when its socket
  ``state/mcp/<agent>.sock`` exists; see ``netskyd.mcp_link``.

The bus tries the paths in order (MCP first, pane as the fallback) and treats a
DeliveryFailed as "not delivered, maybe seen": ``maybe_delivered`` says whether
part of the batch could have reached the agent (a timeout half-way), which makes
a later redelivery a marked repeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

import anyio

from netskyd import mcp_link
from netskyd.catalogue import screens_for
from netskyd.context import Context
from netskyd.envelope import Envelope, render_channel
from netskyd.errors import McpLinkError, NetskyError, TmuxError, TmuxTimeout


class DeliveryFailed(NetskyError):
    """A delivery path could not hand the batch over.

    ``maybe_delivered`` is True when the failure came after something may have
    reached the agent (e.g. a tmux timeout during the paste).
    """

    def __init__(self, message: str, *, maybe_delivered: bool) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class Delivery(Protocol):
    """One way into an agent. ``via`` names it in records (``pane``, ``mcp``)."""

    via: str

    def available(self, agent: str) -> bool:
        """Whether this path can take envelopes for ``agent`` right now."""
        ...

    async def deliver(self, agent: str, envelopes: Sequence[Envelope]) -> None:
        """Hand the envelopes over, in order. Raises DeliveryFailed."""
        ...


class PaneDelivery:
    """Bracketed paste into the agent's tmux pane, then Enter after a settle delay."""

    via = "pane"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def available(self, agent: str) -> bool:
        st = self.ctx.sup().agents.get(agent)
        if st is None or not st.ready or not st.alive:
            return False
        monitor = self.ctx.monitor
        return monitor is None or monitor.held(agent) is None

    async def deliver(self, agent: str, envelopes: Sequence[Envelope]) -> None:
        await self.check_screen(agent)
        await self.paste(agent, render_channel(list(envelopes)))

    async def check_screen(self, agent: str) -> None:
        """Never paste into a dialog: a paste's Enter would pick whatever option is
        highlighted. For runtimes with dialogs, read the screen first; a dialog
        there holds the delivery (DeliveryFailed, not delivered) until it is gone."""
        st = self.ctx.sup().agents.get(agent)
        monitor = self.ctx.monitor
        if st is None or monitor is None or not screens_for(st.runtime).dialogs:
            return
        try:
            text = await self.ctx.tmux.capture(agent)
        except TmuxError as e:
            raise DeliveryFailed(
                f"reading {agent}'s screen failed: {e}", maybe_delivered=False
            ) from e
        await monitor.observe(agent, text, source="delivery")
        held = monitor.held(agent)
        if held is not None:
            raise DeliveryFailed(f"held: {held}", maybe_delivered=False)

    async def paste(self, agent: str, text: str) -> None:
        """Paste ``text`` and submit it. Raises DeliveryFailed."""
        tmux = self.ctx.tmux
        try:
            await tmux.paste(agent, text, buffer=f"netsky-{agent}-{uuid.uuid4().hex[:8]}")
        except TmuxError as e:
            raise DeliveryFailed(
                f"paste into {agent} failed: {e}", maybe_delivered=isinstance(e, TmuxTimeout)
            ) from e
        await anyio.sleep(self.ctx.settings.paste_settle_ms / 1000)
        try:
            await tmux.send_keys(agent, "Enter")
        except TmuxError as e:
            # The text is in the input line; the next delivery's Enter submits it.
            raise DeliveryFailed(f"Enter into {agent} failed: {e}", maybe_delivered=True) from e


class McpDelivery:
    """Through the agent's MCP channel server, when one is connected."""

    via = "mcp"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def available(self, agent: str) -> bool:
        return mcp_link.is_connected(self.ctx.paths.mcp_socket(agent))

    async def deliver(self, agent: str, envelopes: Sequence[Envelope]) -> None:
        try:
            await mcp_link.deliver(
                self.ctx.paths.mcp_socket(agent),
                [e.to_json() for e in envelopes],
                self.ctx.settings.mcp_timeout_s,
            )
        except McpLinkError as e:
            raise DeliveryFailed(
                f"MCP channel of {agent}: {e}", maybe_delivered=e.maybe_delivered
            ) from e
