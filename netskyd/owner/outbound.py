"""The owner's line outwards: ``imessage send --owner``, ``email send --owner`` and
``email draft`` (docs/owner.md). A mixin of ``netskyd.owner.channels.OwnerChannels``.

Only agent0 and agentinfinity (or the owner at a terminal) may use them: the control
method finds the caller's agent from the process tree (``netskyd.owner.callers``) and
refuses anyone else before anything here runs. Every message is signed with the sending
agent (``- agent0``). Sends have the source's ``timeout_s``; a failure is
``OwnerSendFailed`` with one line saying what the server or osascript said.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

import aiosmtplib

from netsky_shared.errors import NetskyError
from netsky_shared.ids import rfc3339
from netskyd.config.legs import LegUnavailable
from netskyd.owner import imessage as messages_db
from netskyd.owner.imap import ImapError, Mailbox, tls_context

if TYPE_CHECKING:
    from netskyd.config.owner import OwnerEmail, OwnerIMessage
    from netskyd.ports import Clock, SettingsView
    from netskyd.store.recorder import Recorder


class OwnerSendFailed(NetskyError):
    """Raised when a message to the owner could not be sent (exit 1); nothing was sent."""


class OwnerLineMissing(NetskyError):
    """Raised when the source a verb needs is not configured (exit 1)."""


def signed(text: str, by: str) -> str:
    """``text`` with the sender's signature line: ``- agent0``."""
    return f"{text.rstrip()}\n\n- {by}"


class Outbound:
    """The verbs; the host (OwnerChannels) provides the attributes below."""

    settings: SettingsView
    environ: Mapping[str, str]
    recorder: Recorder
    clock: Clock
    platform: str = sys.platform

    def _email(self) -> OwnerEmail:
        cfg = self.settings().owner.email
        if cfg is None:
            raise OwnerLineMissing("no [owner.email] in config.toml (docs/owner.md)")
        return cfg

    def _imessage(self) -> OwnerIMessage:
        cfg = self.settings().owner.imessage
        if cfg is None:
            raise OwnerLineMissing("no [owner.imessage] in config.toml (docs/owner.md)")
        return cfg

    def _message(self, cfg: OwnerEmail, subject: str, body: str, by: str) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = cfg.from_address()
        msg["To"] = cfg.owner_address()
        msg["Date"] = formatdate(usegmt=True)
        domain = cfg.from_address().rpartition("@")[2] or "netsky.invalid"
        msg["Message-ID"] = make_msgid(domain=domain)  # no DNS lookup for our FQDN
        msg["X-Netsky-Agent"] = by
        msg.set_content(signed(body, by))
        return msg

    async def send_email(self, subject: str, body: str, by: str) -> dict[str, Any]:
        """Mail the owner (SMTP). Returns ``{"to", "subject", "message_id", "ts"}``. Raises
        OwnerLineMissing, OwnerSendFailed."""
        cfg = self._email()
        if cfg.smtp_host is None:
            raise OwnerLineMissing("set smtp_host in [owner.email] to send mail (docs/owner.md)")
        msg = self._message(cfg, subject, body, by)
        try:
            password = cfg.password.resolve(self.environ)
            port = cfg.smtp_port or {"starttls": 587, "tls": 465, "none": 25}[cfg.smtp_security]
            await aiosmtplib.send(
                msg, hostname=cfg.smtp_host, port=port, use_tls=cfg.smtp_security == "tls",
                start_tls=cfg.smtp_security == "starttls", username=cfg.username,
                password=password, timeout=cfg.timeout_s,
                tls_context=tls_context(cfg) if cfg.smtp_security != "none" else None,
            )  # fmt: skip
        except (LegUnavailable, aiosmtplib.SMTPException, OSError, ssl.SSLError) as e:
            raise OwnerSendFailed(f"mail to {cfg.owner_address()} not sent: {e}") from e
        await self.recorder.event("owner.sent", agent=by, source="email", to=cfg.owner_address(),
                                  subject=subject)  # fmt: skip
        return {"to": cfg.owner_address(), "subject": subject,
                "message_id": msg["Message-ID"], "ts": rfc3339(self.clock())}  # fmt: skip

    async def draft_email(self, subject: str, body: str, by: str) -> dict[str, Any]:
        """File a draft to the owner in the drafts mailbox (IMAP APPEND with \\Draft), for
        the owner to read and send. Returns ``{"mailbox", "to", "subject", "ts"}``. Raises
        OwnerLineMissing, OwnerSendFailed."""
        cfg = self._email()
        msg = self._message(cfg, subject, body, by)
        try:
            async with Mailbox(cfg, cfg.password.resolve(self.environ)) as mb:
                await mb.append(bytes(msg), cfg.drafts)
        except (LegUnavailable, ImapError, OSError) as e:
            raise OwnerSendFailed(f"draft not filed in {cfg.drafts}: {e}") from e
        await self.recorder.event("owner.drafted", agent=by, source="email",
                                  mailbox=cfg.drafts, subject=subject)  # fmt: skip
        return {"mailbox": cfg.drafts, "to": cfg.owner_address(), "subject": subject,
                "ts": rfc3339(self.clock())}  # fmt: skip

    async def send_imessage(self, text: str, by: str) -> dict[str, Any]:
        """Send the owner an iMessage (osascript). Returns ``{"to", "ts"}``. Raises
        OwnerLineMissing, OwnerSendFailed."""
        cfg = self._imessage()
        to = cfg.owner_address()
        try:
            await messages_db.send(signed(text, by), to, command=cfg.command,
                                   timeout_s=cfg.timeout_s, platform=self.platform)  # fmt: skip
        except (messages_db.SourceUnavailable, messages_db.SendFailed, OSError) as e:
            raise OwnerSendFailed(f"iMessage to {to} not sent: {e}") from e
        await self.recorder.event("owner.sent", agent=by, source="imessage", to=to)
        return {"to": to, "ts": rfc3339(self.clock())}
