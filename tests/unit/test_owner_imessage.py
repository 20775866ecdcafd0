"""The iMessage source on the owner's line (netskyd.owner.imessage) against a real SQLite
file shaped like macOS's Messages database (tests/messages_db.py): new rows after the
cursor, oldest first, text from ``text`` or ``attributedBody``, attachments named, Apple
dates, a read-only connection that never changes the file; and ``send`` through a fake
osascript that records its arguments.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netsky_shared.imessage import SEND_SCRIPT
from netskyd.owner.imessage import (
    APPLE_EPOCH_S,
    SendFailed,
    SourceUnavailable,
    apple_time_to_epoch_s,
    max_rowid,
    open_ro,
    read_new,
    send,
    text_from_attributed_body,
)
from netskyd.owner.inbound import Inbound, Quarantine
from tests.messages_db import add_message, apple_ns, attributed_body_for, make_messages_db

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

OWNER = "+15550100"
LONG = "the long one: " + "x" * 200 + " end"  # over 127 bytes: the 0x81 length form
HOSTILE = 'say "hi" & \'bye\'\nsecond line\n"; do shell script "touch /tmp/pwned" --'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "chat.db"
    make_messages_db(path)
    return path


def read(db: Path, after: int = 0, limit: int = 100) -> list[tuple[int, Inbound | Quarantine]]:
    conn = open_ro(db, 5.0)
    try:
        return read_new(conn, after, limit)
    finally:
        conn.close()


def inbound(item: Inbound | Quarantine) -> Inbound:
    assert isinstance(item, Inbound), item
    return item


# --- pure: attributedBody and dates ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["hi", "x" * 127, LONG, "y" * 40_000, "émoji 🎉 and ünïcode", HOSTILE],
    ids=["short", "127-bytes", "0x81-length", "0x82-length", "utf8", "hostile"],
)
def test_attributed_body_text_is_found(text: str) -> None:
    assert text_from_attributed_body(attributed_body_for(text)) == text


def test_attributed_body_with_the_other_class_reference_is_read() -> None:
    blob = attributed_body_for("hello").replace(b"NSString\x01\x94", b"NSString\x01\x95")
    assert text_from_attributed_body(blob) == "hello"


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"streamtyped no string here",
        b"\x04\x0bstreamtyped\x84\x08NSString",  # ends at the class name
        b"\x08NSString\x01\x94\x84\x01+\x81\x10",  # ends inside the length
        b"\x08NSString\x01\x94\x84\x01+\x20short",  # says 32 bytes, holds 5
        b"\x08NSString\x01\x94\x84\x01+\x00",  # an empty string
    ],
    ids=["empty", "no-nsstring", "no-preamble", "cut-length", "cut-text", "empty-string"],
)
def test_attributed_body_without_text_is_none(blob: bytes) -> None:
    assert text_from_attributed_body(blob) is None


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        (0, APPLE_EPOCH_S),
        (None, APPLE_EPOCH_S),
        (789_000_000, APPLE_EPOCH_S + 789_000_000),  # seconds (before macOS 10.13)
        (789_000_000_500_000_000, APPLE_EPOCH_S + 789_000_000.5),  # nanoseconds
    ],
)
def test_apple_dates_are_epoch_seconds(date: int | None, expected: float) -> None:
    assert apple_time_to_epoch_s(date) == pytest.approx(expected, abs=1e-6)


# --- reading the database --------------------------------------------------------------


def test_empty_database_cursor_starts_at_zero(db: Path) -> None:
    conn = open_ro(db, 5.0)
    try:
        assert max_rowid(conn) == 0
        assert read_new(conn, 0) == []
    finally:
        conn.close()


def test_only_rows_after_the_cursor_are_read(db: Path) -> None:
    add_message(db, handle=OWNER, text="history 1")
    add_message(db, handle=OWNER, text="history 2")
    conn = open_ro(db, 5.0)
    try:
        cursor = max_rowid(conn)
        assert read_new(conn, cursor) == []
        new = add_message(db, handle=OWNER, text="fresh")
        rows = read_new(conn, cursor)  # the same connection sees rows written since
    finally:
        conn.close()
    assert [(rowid, inbound(item).text) for rowid, item in rows] == [(new, "fresh")]
    assert cursor == new - 1


def test_a_message_becomes_an_inbound(db: Path) -> None:
    sent = datetime(2026, 3, 1, 9, 30, 15, 250_000, tzinfo=UTC).timestamp()
    rowid = add_message(db, handle=OWNER, text="ship it", date_ns=apple_ns(sent))
    [(got_rowid, item)] = read(db)
    conn = sqlite3.connect(db)
    (guid,) = conn.execute("SELECT guid FROM message WHERE ROWID = ?", (rowid,)).fetchone()
    conn.close()
    assert got_rowid == rowid
    assert isinstance(item, Inbound)
    assert item.ts == pytest.approx(sent, abs=1e-3)
    assert item == Inbound(source="imessage", ref=f"imessage:{guid}", sender=OWNER,
                           chat_id=OWNER, ts=item.ts, subject=None, text="ship it",
                           attachments=())  # fmt: skip


def test_my_own_messages_are_ignored(db: Path) -> None:
    add_message(db, handle=OWNER, text="from me", is_from_me=True)
    theirs = add_message(db, handle=OWNER, text="from the owner")
    add_message(db, handle=OWNER, text="from me again", is_from_me=True)
    assert [(r, inbound(i).text) for r, i in read(db)] == [(theirs, "from the owner")]


def test_oldest_first_and_at_most_limit(db: Path) -> None:
    rowids = [add_message(db, handle=OWNER, text=f"m{n}") for n in range(5)]
    first = read(db, 0, limit=2)
    assert [(r, inbound(i).text) for r, i in first] == [(rowids[0], "m0"), (rowids[1], "m1")]
    rest = read(db, first[-1][0], limit=10)
    assert [inbound(i).text for _, i in rest] == ["m2", "m3", "m4"]


@pytest.mark.parametrize("text", ["short one", LONG], ids=["short", "long"])
def test_text_only_in_attributed_body_is_read(db: Path, text: str) -> None:
    add_message(db, handle=OWNER, text=None, attributed_body=attributed_body_for(text))
    [(_, item)] = read(db)
    assert inbound(item).text == text


def test_text_column_wins_over_attributed_body(db: Path) -> None:
    add_message(db, handle=OWNER, text="plain", attributed_body=attributed_body_for("rich"))
    [(_, item)] = read(db)
    assert inbound(item).text == "plain"


def test_attachments_are_listed_with_sizes(db: Path) -> None:
    add_message(db, handle=OWNER, text="\ufffc\ufffclook at these",
                attachments=[("IMG_0001.HEIC", 482_133), ("notes.pdf", 1024)])  # fmt: skip
    add_message(db, handle=OWNER, text="no files")
    first, second = (inbound(i) for _, i in read(db))
    assert first.attachments == ("IMG_0001.HEIC (482133 bytes)", "notes.pdf (1024 bytes)")
    assert first.text == "look at these"  # the inline placeholders are gone
    assert second.attachments == ()


def test_attachment_without_text_is_delivered(db: Path) -> None:
    add_message(db, handle=OWNER, text="\ufffc", attachments=[("voice.caf", 9000)])
    [(_, item)] = read(db)
    assert inbound(item).text == ""
    assert "voice.caf (9000 bytes)" in inbound(item).body()


def test_a_message_with_nothing_in_it_is_quarantined(db: Path) -> None:
    rowid = add_message(db, handle=OWNER, text=None, attributed_body=b"not a typedstream")
    after = add_message(db, handle=OWNER, text="next")
    [(r1, item), (r2, ok)] = read(db)
    assert (r1, r2) == (rowid, after)
    assert isinstance(item, Quarantine)
    assert item.reason.startswith("no text in message ")
    assert inbound(ok).text == "next"


def test_chat_identifier_names_the_conversation(db: Path) -> None:
    add_message(db, handle=OWNER, text="in a group", chat_identifier="chat123456789")
    add_message(db, handle=OWNER, text="in no chat")
    group, alone = (inbound(i) for _, i in read(db))
    assert (group.chat_id, group.sender) == ("chat123456789", OWNER)
    assert (alone.chat_id, alone.sender) == (OWNER, OWNER)


def test_old_second_dates_and_new_nanosecond_dates_agree(db: Path) -> None:
    sent = datetime(2017, 6, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    add_message(db, handle=OWNER, text="old mac", date_s=int(sent - APPLE_EPOCH_S))
    add_message(db, handle=OWNER, text="new mac", date_ns=apple_ns(sent))
    old, new = (inbound(i) for _, i in read(db))
    assert old.ts == pytest.approx(sent, abs=1e-3)
    assert new.ts == pytest.approx(sent, abs=1e-3)


def test_rows_without_a_sender_or_not_messages_are_skipped(db: Path) -> None:
    no_handle = add_message(db, handle=OWNER, text="system row")
    renamed = add_message(db, handle=OWNER, text=None)
    kept = add_message(db, handle=OWNER, text="real")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE message SET handle_id = 0 WHERE ROWID = ?", (no_handle,))
        conn.execute("UPDATE message SET item_type = 2 WHERE ROWID = ?", (renamed,))
    conn.close()
    assert [r for r, _ in read(db)] == [kept]


# --- the file ------------------------------------------------------------------------------


def test_missing_database_is_unavailable_and_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "Library" / "Messages" / "chat.db"
    with pytest.raises(SourceUnavailable, match="macOS") as e:
        open_ro(missing, 5.0)
    assert str(missing) in str(e.value)
    assert not missing.exists()  # opening read-only never creates it


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_database_is_unavailable(db: Path) -> None:
    db.chmod(0)
    try:
        with pytest.raises(SourceUnavailable, match="Full Disk Access"):
            open_ro(db, 5.0)
    finally:
        db.chmod(0o644)


def test_a_file_that_is_not_a_database_is_an_sqlite_error(tmp_path: Path) -> None:
    bogus = tmp_path / "chat.db"
    bogus.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        open_ro(bogus, 5.0)


def test_the_connection_is_read_only(db: Path) -> None:
    add_message(db, handle=OWNER, text="keep me")
    conn = open_ro(db, 5.0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM message")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("CREATE TABLE netsky (x)")
    finally:
        conn.close()
    assert [inbound(i).text for _, i in read(db)] == ["keep me"]


def test_reading_never_changes_the_file(db: Path) -> None:
    for n in range(3):
        add_message(db, handle=OWNER, text=f"m{n}", attachments=[("a.png", n)])
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    conn = open_ro(db, 5.0)
    try:
        max_rowid(conn)
        assert len(read_new(conn, 0)) == 3
        read_new(conn, 1, limit=1)
    finally:
        conn.close()
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before


def test_the_connection_may_be_used_from_another_thread(db: Path) -> None:
    # The caller opens, reads and closes from whichever worker thread anyio hands it.
    add_message(db, handle=OWNER, text="across threads")
    conn = open_ro(db, 5.0)
    got: list[list[tuple[int, Inbound | Quarantine]]] = []
    worker = threading.Thread(target=lambda: got.append(read_new(conn, 0)))
    worker.start()
    worker.join()
    conn.close()
    [[(_, item)]] = got
    assert inbound(item).text == "across threads"


# --- sending -------------------------------------------------------------------------------


def fake_osascript(tmp_path: Path, body: str) -> Path:
    """An executable stand-in for osascript; it writes its argv, NUL-separated (the text
    holds newlines), to ``argv`` beside it, then runs ``body``."""
    path = tmp_path / "fake-osascript"
    path.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > {tmp_path}/argv\n{body}\n")
    path.chmod(0o755)
    return path


def recorded_argv(tmp_path: Path) -> list[str]:
    return (tmp_path / "argv").read_text().split("\0")[:-1]


@pytest.mark.parametrize("text", ["hello", HOSTILE, "emoji 🎉"], ids=["plain", "hostile", "utf8"])
async def test_send_passes_text_and_recipient_as_separate_arguments(
    tmp_path: Path, text: str
) -> None:
    command = fake_osascript(tmp_path, "exit 0")
    await send(text, "owner@icloud.com", command=str(command), timeout_s=10.0)
    argv = recorded_argv(tmp_path)
    assert argv[-2:] == [text, "owner@icloud.com"]
    assert argv[:-2] == [arg for line in SEND_SCRIPT for arg in ("-e", line)]
    assert all(text not in line for line in argv[:-2])


async def test_send_failure_carries_the_last_line_of_stderr(tmp_path: Path) -> None:
    command = fake_osascript(
        tmp_path,
        "echo 'first line' >&2\necho 'execution error: Messages got an error' >&2\nexit 1",
    )
    with pytest.raises(SendFailed, match="execution error: Messages got an error") as e:
        await send("hi", OWNER, command=str(command), timeout_s=10.0)
    assert "first line" not in str(e.value)


async def test_send_that_hangs_fails_at_the_deadline(tmp_path: Path) -> None:
    command = fake_osascript(tmp_path, "exec sleep 30")
    with pytest.raises(SendFailed, match="did not finish within 0.5 s"):
        await send("hi", OWNER, command=str(command), timeout_s=0.5)


async def test_osascript_off_macos_is_unavailable() -> None:
    with pytest.raises(SourceUnavailable, match="needs macOS.*this is linux"):
        await send("hi", OWNER, command="osascript", timeout_s=10.0, platform="linux")


async def test_missing_command_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="not found"):
        await send("hi", OWNER, command=str(tmp_path / "no-osascript"), timeout_s=10.0,
                   platform="darwin")  # fmt: skip
