"""What an owner's message is once a source has read it, and the checks every one passes
before it becomes an envelope for agent0 (docs/owner.md). Pure: no I/O here.

A source (``netskyd.owner.imap``, ``netskyd.owner.imessage``) turns what it read into an
``Inbound``, or raises ``Quarantine`` with the reason it cannot be one (too large, not
parseable). ``admit`` then decides: deliver, drop (a sender not on the allowlist), hold
back (over the sender's rate) or quarantine (the bus's poison rules: a ``<channel>`` tag
or control characters in the text). The envelope id is derived from the source's own
stable reference (``ref``), so an item read twice (a crash between fetch and delivery)
becomes the same envelope and is never delivered twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from netsky_shared.maildir import BadText, check_text

Source = Literal["email", "imessage"]
SOURCES: tuple[Source, ...] = ("email", "imessage")


class Quarantine(ValueError):  # noqa: N818 - an outcome, named as the bus names it
    """Raised for an item that cannot become an envelope; ``reason`` says why (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Inbound:
    """One message from the owner's side, as its source read it.

    ``ref``: the item's stable identity at its source (``email:<uidvalidity>:<uid>``,
    ``imessage:<message guid>``); ``sender``: the address or handle it came from, as the
    source gives it (matched against the allowlist case-insensitively); ``chat_id``: the
    conversation (an email's sender address, an iMessage chat identifier); ``ts``: when it
    was sent (epoch s, UTC); ``subject``: an email's (None for iMessage); ``text``: the
    body as plain text, quoted history stripped; ``attachments``: names (and sizes) of
    attachments, listed, never inlined.
    """

    source: Source
    ref: str
    sender: str
    chat_id: str
    ts: float
    subject: str | None
    text: str
    attachments: tuple[str, ...] = field(default_factory=tuple)

    def envelope_id(self) -> str:
        """32 hex digits derived from ``ref``: the same item is always the same envelope."""
        return hashlib.sha256(f"netsky-owner:{self.ref}".encode()).hexdigest()[:32]

    def body(self) -> str:
        """The envelope's text: the subject line (email), the text, the attachment list."""
        parts = []
        if self.subject:
            parts.append(f"Subject: {self.subject}")
        parts.append(self.text.strip() or "(no text)")
        if self.attachments:
            parts.append("Attachments (not inlined): " + "; ".join(self.attachments))
        return "\n\n".join(parts)


Verdict = Literal["deliver", "drop", "limited", "quarantine"]


def allowed(sender: str, allow: list[str] | tuple[str, ...]) -> bool:
    """True when ``sender`` is on the allowlist (case-insensitive, surrounding space and
    a ``mailto:``/``tel:`` prefix ignored)."""

    def norm(s: str) -> str:
        s = s.strip().lower()
        for prefix in ("mailto:", "tel:"):
            s = s.removeprefix(prefix)
        return s

    return norm(sender) in {norm(a) for a in allow}


def admit(
    item: Inbound,
    allow: list[str] | tuple[str, ...],
    recent: int,
    rate_per_hour: int,
    max_text_bytes: int,
) -> tuple[Verdict, str]:
    """What to do with ``item``: ``(verdict, reason)``. ``recent``: how many messages from
    this sender were delivered in the last hour. Order: the allowlist (a stranger is
    dropped whatever it holds), then the rate, then the bus's rules on the text."""
    if not allowed(item.sender, allow):
        return "drop", f"{item.sender} is not on the {item.source} allowlist"
    if recent >= rate_per_hour:
        return "limited", f"{item.sender} sent {recent} messages in the last hour " \
            f"(rate_per_hour = {rate_per_hour})"  # fmt: skip
    body = item.body()
    if len(body.encode()) > max_text_bytes:
        return "quarantine", f"{len(body.encode())} bytes of text; at most {max_text_bytes}"
    try:
        check_text(body)
    except BadText as e:
        return "quarantine", f"{e.rule}: {e}"
    return "deliver", ""
