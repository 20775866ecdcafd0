"""Envelopes on disk, maildir style (stdlib only: the client and demo agent use it too).

An envelope is one JSON file (ARCHITECTURE.md, "The agent bus")::

    {"v": 1, "id": "<uuid4 hex>", "from": "agent1", "to": "agent0",
     "ts": "2026-11-21T10:00:00.123456Z", "kind": "message", "text": "...",
     "chat_id": "agent1", "in_reply_to": null}

plus ``"source": "email" | "imessage"`` on the owner's messages (docs/owner.md; absent
means ``agent``), named ``<ts in ns>-<from>-<id>.json`` so names sort by time. Sending follows
maildir delivery: write to ``tmp/``, fsync, rename into ``inbox/`` (maildir's
``new/``), fsync the directory. The rename is atomic on one filesystem, so the
daemon never sees half an envelope, and sending needs no daemon.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from netsky_shared.errors import EnvelopeTooLarge, InboxFull, UnknownAgent
from netsky_shared.ids import is_agent_id, is_sender_id, rfc3339
from netsky_shared.paths import Paths

ENVELOPE_VERSION = 1
KINDS = ("message", "brief", "report", "handoff", "cron", "loop", "escalation", "harvest")
DEFAULT_INBOX_MAX_PENDING = 1000
DEFAULT_ENVELOPE_MAX_BYTES = 256 * 1024


_CHANNEL_TAG = re.compile(r"</?\s*channel\b", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class BadText(ValueError):
    """Raised by new_envelope for text the bus would poison; ``rule`` names the bus rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def check_text(text: str) -> str:
    """Return ``text`` with CRLF line ends made LF, or raise BadText.

    Same rules as the daemon's validator (netskyd.bus.envelope): no ``<channel`` or
    ``</channel>`` tag (``wrapper-injection``) and no control characters other
    than tab and newline (``control-characters``), so a bad message is refused at
    the sender instead of poisoned at the receiver.
    """
    text = text.replace("\r\n", "\n")
    if _CHANNEL_TAG.search(text):
        raise BadText(
            "wrapper-injection", "the text contains a <channel> or </channel> tag; "
            "the bus would reject it (wrapper injection)"
        )
    m = _CONTROL.search(text)
    if m:
        raise BadText(
            "control-characters",
            f"the text contains control character U+{ord(m.group()):04X} at offset {m.start()}; "
            "only tab and newline are allowed",
        )
    return text


def rfc3339_from_ns(ts_ns: int) -> str:
    """Format nanoseconds since the epoch as RFC 3339 UTC with microseconds and ``Z``."""
    return rfc3339(datetime.fromtimestamp(ts_ns / 1e9, tz=UTC))


def now_rfc3339() -> str:
    """Return the current time as an RFC 3339 UTC string (``...123456Z``)."""
    return rfc3339_from_ns(time.time_ns())


def new_envelope(
    sender: str,
    to: str,
    text: str,
    *,
    kind: str = "message",
    chat_id: str | None = None,
    in_reply_to: str | None = None,
    ts_ns: int | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Build an envelope dict (shape in the module docstring).

    Raises UnknownAgent for a bad ``to`` or ``from``, ValueError for a bad kind and
    BadText (a ValueError) for text the bus would reject (see check_text).
    """
    if not is_agent_id(to):
        raise UnknownAgent(f"not an agent id: {to!r}")
    if not is_sender_id(sender):
        raise UnknownAgent(f"not an agent id or pseudo-sender: {sender!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown envelope kind {kind!r} (one of {', '.join(KINDS)})")
    text = check_text(text)
    ts_ns = time.time_ns() if ts_ns is None else ts_ns
    return {
        "v": ENVELOPE_VERSION,
        "id": uuid.uuid4().hex,
        "from": sender,
        "to": to,
        "ts": rfc3339_from_ns(ts_ns),
        "kind": kind,
        "text": text,
        "chat_id": chat_id or sender,
        "in_reply_to": in_reply_to,
        **({"source": source} if source else {}),
        "_ts_ns": ts_ns,
    }


def envelope_filename(envelope: dict[str, Any]) -> str:
    """Return ``<ts in ns>-<from>-<id>.json`` for an envelope built by new_envelope."""
    return f"{envelope['_ts_ns']}-{envelope['from']}-{envelope['id']}.json"


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename into it survives a crash (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: Path, data: bytes, *, sync_dir: bool = True, mode: int | None = None
) -> None:
    """Write ``data`` to ``path`` atomically: sibling tmp file, fsync, rename, then fsync
    the directory unless ``sync_dir`` is False (a caller writing many fsyncs it once).

    ``path`` is a ``pathlib.Path``; its directory is created when missing. ``mode`` (e.g.
    ``0o600``) sets the file's permission bits exactly, umask aside; None leaves what
    ``open`` gives. A reader sees the old file or the new one, never half of one. Raises
    OSError, after removing the tmp file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def box_entries(directory: str | Path) -> list[str]:
    """Names in a channel box (``inbox/``, ``claimed/``, ...), sorted (send order),
    without dot-files; [] when the box does not exist (or is not a directory)."""
    try:
        with os.scandir(directory) as it:
            return sorted(e.name for e in it if not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def undelivered_counts(paths: Paths, agent: str) -> tuple[int, int]:
    """``(inbox, claimed)``: entries not yet delivered to ``agent`` (every name in its
    ``inbox/`` and ``claimed/``, bad files too). The activity monitor's "work pending"
    and ``channel ls``'s PENDING/CLAIMED; not the send limit (``pending_count``)."""
    return (
        len(box_entries(paths.channel(agent, "inbox"))),
        len(box_entries(paths.channel(agent, "claimed"))),
    )


def pending_count(paths: Paths, agent: str) -> int:
    """Count the envelopes (``*.json``) waiting in an agent's ``inbox/``, what
    ``inbox_max_pending`` limits at send (0 when the inbox does not exist)."""
    try:
        with os.scandir(paths.channel(agent, "inbox")) as it:
            return sum(1 for e in it if e.name.endswith(".json"))
    except FileNotFoundError:
        return 0


def send(
    paths: Paths,
    envelope: dict[str, Any],
    *,
    inbox_max_pending: int = DEFAULT_INBOX_MAX_PENDING,
    envelope_max_bytes: int = DEFAULT_ENVELOPE_MAX_BYTES,
) -> Path:
    """Drop an envelope into its target's inbox; return the inbox path it landed at.

    ``stage`` then ``publish``. Raises InboxFull when the inbox already holds
    ``inbox_max_pending`` envelopes, EnvelopeTooLarge when the encoded envelope
    exceeds ``envelope_max_bytes``.
    """
    return publish(
        stage(
            paths,
            envelope,
            inbox_max_pending=inbox_max_pending,
            envelope_max_bytes=envelope_max_bytes,
        ),
    )


def stage(
    paths: Paths,
    envelope: dict[str, Any],
    *,
    inbox_max_pending: int = DEFAULT_INBOX_MAX_PENDING,
    envelope_max_bytes: int = DEFAULT_ENVELOPE_MAX_BYTES,
) -> Path:
    """Check the limits and write the envelope, fsynced, to the target's ``tmp/``.

    Returns the ``tmp/`` path, for ``publish``. Raises InboxFull, EnvelopeTooLarge.
    """
    to = envelope["to"]
    body = {k: v for k, v in envelope.items() if not k.startswith("_")}
    data = (json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8")
    if len(data) > envelope_max_bytes:
        raise EnvelopeTooLarge(
            f"envelope for {to} is {len(data)} bytes; the limit is {envelope_max_bytes} "
            "(envelope_max_bytes)"
        )
    paths.ensure_channel(to)
    pending = pending_count(paths, to)
    if pending >= inbox_max_pending:
        raise InboxFull(
            f"inbox of {to} is full: {pending} envelopes pending "
            f"(inbox_max_pending={inbox_max_pending}); try again later"
        )
    tmp = paths.channel(to, "tmp") / envelope_filename(envelope)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def publish(tmp: Path, *, sync: bool = True) -> Path:
    """Rename a staged envelope from ``tmp/`` into its channel's ``inbox/`` (atomic: the
    daemon never sees half an envelope); fsync the inbox directory unless ``sync`` is
    False (a caller publishing many fsyncs each directory once). Returns the inbox path."""
    final = tmp.parent.parent / "inbox" / tmp.name
    os.rename(tmp, final)
    if sync:
        fsync_dir(final.parent)
    return final
