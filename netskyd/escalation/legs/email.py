"""The ``email`` leg: SMTP through aiosmtplib (so the asyncio backend only); ``security`` is
``starttls`` (port 587), ``tls`` (implicit TLS, port 465) or ``none`` (port 25, local relays
only).

This module is ``netskyd.escalation.legs.email``; ``email.message`` below is the standard
library's (imports are absolute).
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from netskyd.config.legs import EmailLeg, LegContext, Page
from netskyd.escalation.legs.failure import one_line


def _message(leg: EmailLeg, page: Page) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = page.title()
    msg["From"] = leg.sender
    msg["To"] = ", ".join(leg.to)
    msg["Date"] = formatdate(usegmt=True)
    # An explicit domain: make_msgid's default asks DNS for our FQDN, which can hang.
    msg["Message-ID"] = make_msgid(domain=leg.sender.rpartition("@")[2] or "netsky.invalid")
    msg["X-Netsky-Incident"] = page.incident
    msg["X-Netsky-Key"] = page.key
    msg["X-Netsky-Severity"] = page.severity
    msg.set_content(page.text())
    return msg


async def send(leg: EmailLeg, page: Page, ctx: LegContext) -> str | None:
    """Send the page as one message to every address in ``leg.to``.

    Returns None, or ``refused: <address> (<code> <message>); ...`` when the server
    took some recipients and refused the others. Every SMTP step waits ``ctx.timeout_s``
    seconds at most. Raises LegUnavailable when the password reference is unset,
    aiosmtplib's SMTPException (all recipients refused, bad credentials, a timeout),
    OSError (the CA file, the connection).
    """
    password = leg.password.resolve(ctx.environ) if leg.password is not None else None
    tls_context = (
        ssl.create_default_context(cafile=str(leg.ca_file.expanduser()))
        if leg.ca_file is not None
        else None
    )
    errors, _ = await aiosmtplib.send(
        _message(leg, page),
        hostname=leg.host,
        port=leg.effective_port(),
        use_tls=leg.security == "tls",
        start_tls=leg.security == "starttls",
        username=leg.username,
        password=password,
        timeout=ctx.timeout_s,
        tls_context=tls_context,
    )
    if errors:  # some recipients refused, the rest accepted: delivered, with a note
        return "refused: " + "; ".join(
            f"{rcpt} ({r.code} {one_line(r.message)})" for rcpt, r in errors.items()
        )
    return None
