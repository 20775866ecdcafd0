"""The owner's line: ``[owner.email]`` and ``[owner.imessage]`` in config.toml
(docs/owner.md). Credentials by reference, as the escalation legs take them
(``{ env = "VAR" }`` or ``{ file = "path" }``, netskyd.config.legs.SecretRef).

A source that is not configured is off; a configured one is on unless ``enabled = false``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from netskyd.config.legs import ByReference, SecretRef


class _Source(ByReference):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    enabled: bool = True
    #: Who may write to agent0: email addresses or iMessage handles (phone numbers in
    #: +E.164 form, Apple IDs). Anyone else is dropped with a journal row.
    allow: list[str] = Field(min_length=1)
    #: Where ``--owner`` sends go; None = the first of ``allow``.
    owner: str | None = None
    #: Messages delivered per sender and hour at most; the rest are held back (counted).
    rate_per_hour: int = Field(30, ge=1)
    #: Longest text an accepted message may carry into an envelope.
    max_text_bytes: int = Field(64 * 1024, ge=256)
    #: Deadline of any one call to the source (connect, login, fetch, a query, a send).
    timeout_s: float = Field(30.0, gt=0)

    def owner_address(self) -> str:
        return self.owner or self.allow[0]


class OwnerEmail(_Source):
    """Mail to agent0 over IMAP (IDLE where the server offers it, else polling), and
    ``email send --owner`` (SMTP) / ``email draft`` (IMAP APPEND)."""

    SECRET_FIELDS = ("password",)

    host: str
    #: None: 993 for ``tls``, 143 for ``none``.
    port: int | None = Field(default=None, ge=1, le=65535)
    #: ``tls`` (implicit TLS, Gmail's 993) or ``none`` (a local server only).
    security: Literal["tls", "none"] = "tls"
    username: str
    password: SecretRef
    mailbox: str = "INBOX"
    #: Where ``email draft`` appends (Gmail: ``[Gmail]/Drafts``).
    drafts: str = "Drafts"
    #: The From address of ``email send`` (TOML key ``from``); None = ``username``.
    sender: str | None = Field(default=None, alias="from")
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    #: A CA bundle to trust instead of the system's (IMAP and SMTP).
    ca_file: Path | None = None
    #: Without IDLE: look for new mail this often. With IDLE: renew it this often (RFC
    #: 2177 asks for less than 29 minutes).
    poll_s: float = Field(60.0, gt=0)
    idle_s: float = Field(600.0, gt=0)
    #: A raw message larger than this is quarantined unread.
    max_bytes: int = Field(2 * 1024 * 1024, ge=1024)

    def imap_port(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)

    def from_address(self) -> str:
        return self.sender or self.username


class OwnerIMessage(_Source):
    """iMessage to agent0 from the Messages database (read-only), and ``imessage send
    --owner`` through osascript."""

    #: The Messages database (read-only).
    db: Path = Path("~/Library/Messages/chat.db")
    #: How often the database is read for new rows.
    poll_s: float = Field(5.0, gt=0)
    #: The osascript binary (tests point it at a fake).
    command: str = "osascript"


class OwnerSettings(BaseModel):
    """``[owner]``: the sources that are on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: OwnerEmail | None = None
    imessage: OwnerIMessage | None = None
