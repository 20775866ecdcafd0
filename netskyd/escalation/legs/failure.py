"""How a leg fails: ``LegFailed`` (the other end said no), and ``describe``, the one-line
reason a failed leg reports (``failed: <reason>``)."""

from __future__ import annotations

import aiosmtplib


class LegFailed(Exception):
    """Raised inside a leg when the other end said no or a command failed; becomes
    ``failed: <message>`` (worth retrying)."""


def one_line(text: str, limit: int = 200) -> str:
    """The first ``limit`` characters of ``text`` with every run of whitespace (newlines
    too) made one space, and none at either end."""
    return " ".join(text[:limit].split())


def describe(e: Exception) -> str:
    """A one-line reason for a leg's failure, with the server's answer when there is one.

    ``LegFailed``: its message (400 characters at most); SMTP errors: ``SMTP <code>
    <message>`` (one per refused recipient); an OSError: ``<type>: <strerror> (<file>)``;
    anything else: ``<type>: <message>``.
    """
    # The SMTP cases live here, not in the email leg, because their order against the
    # others is the point: aiosmtplib's timeouts are TimeoutErrors (``send`` reports those
    # as timed out before describing anything), and its connection errors are OSErrors
    # that should still read as SMTP.
    match e:
        case LegFailed():
            return one_line(str(e), 400)
        case aiosmtplib.SMTPRecipientsRefused():
            return "; ".join(
                f"SMTP {r.code} {one_line(r.message)} ({r.recipient})" for r in e.recipients
            )
        case aiosmtplib.SMTPResponseException():
            return f"SMTP {e.code} {one_line(e.message)}"
        case aiosmtplib.SMTPException():
            return f"SMTP: {one_line(e.message)}"
        case OSError() if e.strerror:
            where = f" ({e.filename})" if e.filename else ""
            return f"{type(e).__name__}: {e.strerror}{where}"
    text = one_line(str(e))
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
