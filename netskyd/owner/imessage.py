"""iMessage on the owner's line (docs/owner.md): new messages read from the Messages
database, and a send through osascript.

What it reads: macOS's Messages database (``~/Library/Messages/chat.db``, SQLite), opened
read-only (``mode=ro``): the ``message`` rows that arrived (``is_from_me = 0``) from a
handle, with the ``handle`` that sent each, the ``chat`` it belongs to (through
``chat_message_join``) and its ``attachment`` rows (through ``message_attachment_join``;
named, never read). Each becomes an ``Inbound`` (netskyd.owner.inbound), or a
``Quarantine`` when it holds nothing to deliver.

The cursor: ``message.ROWID``, which Messages hands out in increasing order. This module
keeps no state; the caller keeps the last ROWID it handled durable, starts a fresh cursor
at ``max_rowid`` (so the history already in the database is not replayed) and passes it to
``read_new``.

What it never does: write to chat.db (the connection is read-only; no query writes; as
any WAL reader, SQLite may create the ``-wal``/``-shm`` side files when Messages is not
running), or touch attachment files. ``open_ro``, ``max_rowid`` and ``read_new`` block (SQLite): the
caller runs them in a worker thread. ``send`` passes the text and the recipient to
osascript as arguments after the script (netsky_shared.imessage.SEND_SCRIPT), never
spliced into it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from pathlib import Path

from netsky_shared.errors import NetskyError
from netsky_shared.imessage import SEND_SCRIPT
from netskyd.children import run_child
from netskyd.owner.inbound import Inbound, Quarantine

#: 2001-01-01T00:00:00Z in epoch seconds: where Messages' ``message.date`` counts from.
APPLE_EPOCH_S = 978_307_200
#: A ``message.date`` above this is in nanoseconds (macOS 10.13 on), else in seconds.
_NS_THRESHOLD = 1_000_000_000_000
#: Where Messages puts an inline attachment in the text; the attachment is listed instead.
_OBJECT_REPLACEMENT = "\ufffc"
#: SQLite's primary result codes for a file the process may not open (macOS's privacy
#: controls deny chat.db to a process without Full Disk Access).
_CANNOT_OPEN = {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH}


class SourceUnavailable(NetskyError):
    """Raised when iMessage cannot be used here: no Messages database (or one that cannot
    be opened), not macOS, or no osascript."""


class SendFailed(NetskyError):
    """Raised when osascript failed to send an iMessage (non-zero exit, or no answer by
    the deadline); the message carries its last line of stderr."""


# --- pure ------------------------------------------------------------------------------


def apple_time_to_epoch_s(date: int | float | None) -> float:
    """Epoch seconds (UTC) of a ``message.date``: time since 2001-01-01 UTC, in
    nanoseconds on macOS 10.13 and later (values above 1e12), in seconds before that.
    None counts as 0 (the Apple epoch itself)."""
    value = date or 0
    if abs(value) > _NS_THRESHOLD:
        return APPLE_EPOCH_S + value / 1e9
    return float(APPLE_EPOCH_S + value)


def _read_length(blob: bytes, at: int) -> tuple[int, int] | None:
    """A typedstream integer at ``blob[at]``: ``(value, offset after it)``, or None when
    the blob ends first. One byte below 0x80 is the value itself; 0x81 is followed by a
    2-byte, 0x82 by a 4-byte little-endian value (NeXT typedstream)."""
    if at >= len(blob):
        return None
    tag = blob[at]
    if tag < 0x80:
        return tag, at + 1
    width = {0x81: 2, 0x82: 4}.get(tag)
    if width is None or at + 1 + width > len(blob):
        return None
    return int.from_bytes(blob[at + 1 : at + 1 + width], "little"), at + 1 + width


def text_from_attributed_body(blob: bytes) -> str | None:
    """The plain text inside a ``message.attributedBody`` blob, or None when none is found.

    The blob is an NSAttributedString in NeXT typedstream form; modern macOS often stores
    a message's text only there. Best effort, not a typedstream parser (the approach
    iMessage exporters share): after the first ``NSString`` class name comes a short
    preamble ending in ``\\x84\\x01+`` (usually ``\\x01\\x94\\x84\\x01+``), then the length
    of the string in bytes (see ``_read_length``), then that many bytes of UTF-8.
    Undecodable bytes become U+FFFD.
    """
    start = blob.find(b"NSString")
    if start < 0:
        return None
    start += len(b"NSString")
    # The preamble's first bytes vary (0x94 or 0x95: a class reference); its end does not.
    marker = blob.find(b"\x84\x01+", start, start + 16)
    if marker < 0:
        return None
    read = _read_length(blob, marker + 3)
    if read is None:
        return None
    length, at = read
    if length == 0 or at + length > len(blob):
        return None
    return blob[at : at + length].decode("utf-8", errors="replace")


def _plain(text: str | None) -> str:
    """``text`` without attachment placeholders, line ends made LF, outer space stripped."""
    if not text:
        return ""
    text = text.replace(_OBJECT_REPLACEMENT, "").replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def _attachment_name(transfer_name: str | None, filename: str | None, size: int | None) -> str:
    """``IMG_0001.HEIC (482133 bytes)``: the name the sender gave it (else the stored
    file's name), and its size when known."""
    name = transfer_name or (os.path.basename(filename) if filename else "") or "attachment"
    return f"{name} ({size} bytes)" if size is not None and size >= 0 else name


# --- the database ----------------------------------------------------------------------


def open_ro(db: Path, timeout_s: float) -> sqlite3.Connection:
    """Open the Messages database ``db`` (``~`` expanded) read-only, with a busy timeout
    of ``timeout_s`` seconds (Messages writes to it while we read).

    Raises SourceUnavailable when there is no file at ``db`` or it cannot be opened (on
    macOS: the process lacks Full Disk Access); sqlite3.Error for anything else (a file
    that is not a database, one without a ``message`` table). The connection may be used
    from any thread, by one at a time.
    """
    path = db.expanduser().absolute()
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise SourceUnavailable(
            f"no Messages database at {path}: iMessage needs macOS with Messages signed in"
        ) from None
    except OSError as e:
        raise SourceUnavailable(f"cannot open the Messages database at {path}: {e}") from e
    try:
        # Not bound to this thread: the caller runs each call in whichever worker thread
        # is free (anyio.to_thread), one call at a time, and closes it from the loop.
        conn = sqlite3.connect(
            f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout_s, check_same_thread=False
        )
        try:
            # connect() is lazy: this is the first read of the file.
            conn.execute("SELECT 1 FROM message LIMIT 0")
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as e:
        if getattr(e, "sqlite_errorcode", 0) & 0xFF in _CANNOT_OPEN:
            raise SourceUnavailable(
                f"cannot open the Messages database at {path}: {e} "
                "(on macOS, give netskyd Full Disk Access)"
            ) from e
        raise
    return conn


def max_rowid(conn: sqlite3.Connection) -> int:
    """The newest ``message.ROWID`` (0 for an empty table): where a fresh cursor starts,
    so the history already there is not replayed. Raises sqlite3.Error."""
    row = conn.execute("SELECT COALESCE(MAX(ROWID), 0) FROM message").fetchone()
    return int(row[0])


_NEW_MESSAGES = """
SELECT m.ROWID, m.guid, m.text, m.attributedBody, m.date, h.id,
       (SELECT c.chat_identifier FROM chat_message_join AS cmj
          JOIN chat AS c ON c.ROWID = cmj.chat_id
         WHERE cmj.message_id = m.ROWID
         ORDER BY c.ROWID LIMIT 1)
  FROM message AS m
  JOIN handle AS h ON h.ROWID = m.handle_id
 WHERE m.ROWID > ? AND m.is_from_me = 0 AND m.handle_id != 0 AND m.item_type = 0
 ORDER BY m.ROWID
 LIMIT ?
"""

_ATTACHMENTS = """
SELECT maj.message_id, a.transfer_name, a.filename, a.total_bytes
  FROM message_attachment_join AS maj
  JOIN attachment AS a ON a.ROWID = maj.attachment_id
 WHERE maj.message_id BETWEEN ? AND ?
 ORDER BY maj.message_id, a.ROWID
"""


def read_new(
    conn: sqlite3.Connection, after_rowid: int, limit: int = 100
) -> list[tuple[int, Inbound | Quarantine]]:
    """The messages that arrived after ``after_rowid``, oldest first, at most ``limit``:
    ``[(ROWID, Inbound or Quarantine)]``.

    Only rows from someone else (``is_from_me = 0``) with a sender (``handle_id != 0``)
    that are messages (``item_type = 0``: not a group's rename or member change) count.
    Each is ``Inbound(source="imessage", ref="imessage:<guid>", sender=<handle.id>,
    chat_id=<chat.chat_identifier, or the handle when the row is in no chat>, ts=<epoch
    s>, subject=None, text, attachments=("<transfer_name> (<total_bytes> bytes)", ...))``.
    The text is ``message.text``, else what ``text_from_attributed_body`` finds; a row
    with neither text nor attachments is ``Quarantine("no text in message <guid>")``.
    The caller advances its cursor to the last ROWID returned. Raises sqlite3.Error.
    """
    rows = conn.execute(_NEW_MESSAGES, (after_rowid, limit)).fetchall()
    if not rows:
        return []
    attachments: dict[int, list[str]] = {}
    for message_id, transfer_name, filename, size in conn.execute(
        _ATTACHMENTS, (rows[0][0], rows[-1][0])
    ):
        attachments.setdefault(int(message_id), []).append(
            _attachment_name(transfer_name, filename, size)
        )
    out: list[tuple[int, Inbound | Quarantine]] = []
    for rowid, guid, text, body, date, handle, chat_identifier in rows:
        names = tuple(attachments.get(int(rowid), ()))
        plain = _plain(text)
        if not plain and body:
            plain = _plain(text_from_attributed_body(bytes(body)))
        if not plain and not names:
            out.append((int(rowid), Quarantine(f"no text in message {guid}")))
            continue
        item = Inbound(
            source="imessage",
            ref=f"imessage:{guid}",
            sender=str(handle),
            chat_id=str(chat_identifier or handle),
            ts=apple_time_to_epoch_s(date),
            subject=None,
            text=plain,
            attachments=names,
        )
        out.append((int(rowid), item))
    return out


# --- sending ---------------------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


async def send(
    text: str, to: str, *, command: str, timeout_s: float, platform: str = sys.platform
) -> None:
    """Send ``text`` as an iMessage to ``to`` (a +E.164 number or an Apple ID) by running
    ``command`` (osascript, or a stand-in) with SEND_SCRIPT and then the text and the
    recipient as arguments; None once it exits 0.

    Raises SourceUnavailable when ``command`` is the default ``osascript`` and
    ``platform`` is not ``darwin``, or ``command`` is not found on PATH; SendFailed
    with its last line of stderr on a non-zero exit, or when it has not finished after
    ``timeout_s`` seconds (it is killed); OSError when it cannot start.
    """
    if platform != "darwin" and command == "osascript":
        raise SourceUnavailable(
            f"iMessage needs macOS (osascript and Messages.app); this is {platform}"
        )
    path = shutil.which(command)
    if path is None:
        raise SourceUnavailable(f"{command} not found on PATH")
    script = [arg for line in SEND_SCRIPT for arg in ("-e", line)]
    name = Path(path).name
    try:
        code, _, err = await run_child([path, *script, text, to], timeout_s=timeout_s)
    except TimeoutError:
        raise SendFailed(f"{name} sending to {to} did not finish within {timeout_s:g} s") from None
    if code != 0:
        raise SendFailed(f"{name} failed sending to {to}: {_last_line(err) or f'exit {code}'}")
