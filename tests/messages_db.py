"""A stand-in for macOS's Messages database (``~/Library/Messages/chat.db``): a real SQLite
file with the tables and columns netskyd.owner.imessage reads, named and typed as macOS
has them (a subset of each table), in WAL mode as Messages keeps it.

``make_messages_db(path)`` creates it; ``add_message(path, ...)`` writes one message the
way Messages does (its handle, its chat, its attachments) and returns its ROWID;
``attributed_body_for(text)`` builds the typedstream blob modern macOS stores the text in.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from netskyd.owner.imessage import APPLE_EPOCH_S

_SCHEMA = """
CREATE TABLE handle (
    ROWID INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,
    id TEXT NOT NULL,
    country TEXT,
    service TEXT NOT NULL,
    uncanonicalized_id TEXT,
    person_centric_id TEXT,
    UNIQUE (id, service)
);
CREATE TABLE chat (
    ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
    guid TEXT UNIQUE NOT NULL,
    style INTEGER,
    state INTEGER,
    account_id TEXT,
    properties BLOB,
    chat_identifier TEXT,
    service_name TEXT,
    room_name TEXT,
    display_name TEXT
);
CREATE TABLE message (
    ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
    guid TEXT UNIQUE NOT NULL,
    text TEXT,
    replace INTEGER DEFAULT 0,
    service_center TEXT,
    handle_id INTEGER DEFAULT 0,
    subject TEXT,
    country TEXT,
    attributedBody BLOB,
    version INTEGER DEFAULT 0,
    type INTEGER DEFAULT 0,
    service TEXT,
    account TEXT,
    account_guid TEXT,
    error INTEGER DEFAULT 0,
    date INTEGER,
    date_read INTEGER,
    date_delivered INTEGER,
    is_delivered INTEGER DEFAULT 0,
    is_finished INTEGER DEFAULT 0,
    is_from_me INTEGER DEFAULT 0,
    is_read INTEGER DEFAULT 0,
    cache_has_attachments INTEGER DEFAULT 0,
    item_type INTEGER DEFAULT 0,
    associated_message_guid TEXT DEFAULT NULL,
    associated_message_type INTEGER DEFAULT 0
);
CREATE TABLE chat_message_join (
    chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
    message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE,
    message_date INTEGER DEFAULT 0,
    PRIMARY KEY (chat_id, message_id)
);
CREATE TABLE attachment (
    ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
    guid TEXT UNIQUE NOT NULL,
    created_date INTEGER DEFAULT 0,
    start_date INTEGER DEFAULT 0,
    filename TEXT,
    uti TEXT,
    mime_type TEXT,
    transfer_state INTEGER DEFAULT 0,
    is_outgoing INTEGER DEFAULT 0,
    user_info BLOB,
    transfer_name TEXT,
    total_bytes INTEGER DEFAULT 0
);
CREATE TABLE message_attachment_join (
    message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE,
    attachment_id INTEGER REFERENCES attachment (ROWID) ON DELETE CASCADE,
    UNIQUE (message_id, attachment_id)
);
"""


def make_messages_db(path: Path) -> None:
    """Create an empty Messages database at ``path`` (WAL mode, as Messages keeps it)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(_SCHEMA)
        conn.commit()
    finally:
        conn.close()


def apple_ns(epoch_s: float) -> int:
    """``message.date`` as modern macOS writes it: ns since 2001-01-01 UTC."""
    return round((epoch_s - APPLE_EPOCH_S) * 1e9)


def _guid() -> str:
    return str(uuid.uuid4()).upper()


def add_message(
    path: Path,
    *,
    handle: str,
    text: str | None,
    is_from_me: bool = False,
    attributed_body: bytes | None = None,
    date_ns: int | None = None,
    date_s: int | None = None,
    chat_identifier: str | None = None,
    attachments: Sequence[tuple[str, int]] = (),
) -> int:
    """Write one iMessage into the database at ``path``, as Messages does; its ROWID.

    ``handle``: the other side (+E.164 or an Apple ID; its ``handle`` row is made once);
    ``date_ns``: ``message.date`` in ns since 2001-01-01 UTC (default: now); ``date_s``
    instead writes it in seconds, as macOS did before 10.13; ``chat_identifier``: the
    chat the message is joined to (None: in no chat); ``attachments``: ``(transfer_name,
    total_bytes)`` of each.
    """
    if date_s is not None:
        date = date_s
    else:
        date = date_ns if date_ns is not None else apple_ns(time.time())
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(
                "INSERT OR IGNORE INTO handle (id, country, service, uncanonicalized_id) "
                "VALUES (?, 'us', 'iMessage', ?)",
                (handle, handle),
            )
            (handle_id,) = conn.execute(
                "SELECT ROWID FROM handle WHERE id = ? AND service = 'iMessage'", (handle,)
            ).fetchone()
            cur = conn.execute(
                "INSERT INTO message (guid, text, handle_id, attributedBody, service, date, "
                "is_from_me, is_delivered, is_finished, cache_has_attachments) "
                "VALUES (?, ?, ?, ?, 'iMessage', ?, ?, 1, 1, ?)",
                (_guid(), text, handle_id, attributed_body, date, int(is_from_me),
                 int(bool(attachments))),
            )  # fmt: skip
            rowid = cur.lastrowid
            assert rowid is not None
            if chat_identifier is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO chat (guid, style, chat_identifier, service_name) "
                    "VALUES (?, 45, ?, 'iMessage')",
                    (f"iMessage;-;{chat_identifier}", chat_identifier),
                )
                (chat_id,) = conn.execute(
                    "SELECT ROWID FROM chat WHERE chat_identifier = ?", (chat_identifier,)
                ).fetchone()
                conn.execute(
                    "INSERT INTO chat_message_join (chat_id, message_id, message_date) "
                    "VALUES (?, ?, ?)",
                    (chat_id, rowid, date),
                )
            for name, size in attachments:
                guid = _guid()
                a = conn.execute(
                    "INSERT INTO attachment (guid, filename, mime_type, transfer_name, "
                    "total_bytes) VALUES (?, ?, 'application/octet-stream', ?, ?)",
                    (guid, f"~/Library/Messages/Attachments/00/00/{guid}/{name}", name, size),
                )
                conn.execute(
                    "INSERT INTO message_attachment_join (message_id, attachment_id) VALUES (?, ?)",
                    (rowid, a.lastrowid),
                )
        return rowid
    finally:
        conn.close()


def _length(n: int) -> bytes:
    """A typedstream integer: one byte below 0x80, else 0x81 + int16 or 0x82 + int32 (LE)."""
    if n < 0x80:
        return bytes([n])
    if n <= 0x7FFF:
        return b"\x81" + n.to_bytes(2, "little")
    return b"\x82" + n.to_bytes(4, "little")


def attributed_body_for(text: str) -> bytes:
    """A ``message.attributedBody`` blob holding ``text``: an NSAttributedString in
    typedstream form, cut down to what surrounds the string in the blobs macOS writes
    (the header, the class chain, the NSString, one attribute run)."""
    data = text.encode()
    return (
        b"\x04\x0bstreamtyped\x81\xe8\x03\x84\x01@\x84\x84\x84"
        b"\x12NSAttributedString\x00\x84\x84\x08NSObject\x00\x85\x92\x84\x84\x84"
        b"\x08NSString\x01\x94\x84\x01+"
        + _length(len(data))
        + data
        + b"\x86\x84\x02iI\x01"
        + _length(len(text))
        + b"\x92\x84\x84\x84\x0cNSDictionary\x00\x94\x84\x01i\x01\x92\x84\x96\x96"
        b"\x1d__kIMMessagePartAttributeName\x86\x92\x84\x84\x84\x08NSNumber\x00\x84\x84"
        b"\x07NSValue\x00\x94\x84\x01*\x84\x99\x99\x00\x86\x86\x86"
    )
