from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from netsky_shared.errors import CorruptMarker
from netsky_shared.markers import read_marker, remove_marker, write_marker
from netsky_shared.protocol import SCHEMA_VERSION
from netskyd.store.db import MIGRATIONS, Store
from netskyd.store.journal import Journal


def test_marker_round_trip_and_remove(tmp_path: Path) -> None:
    p = tmp_path / "state" / "desired.json"
    assert read_marker(p) is None
    write_marker(p, {"state": "down"})
    assert read_marker(p) == {"state": "down"}
    assert [x.name for x in p.parent.iterdir()] == ["desired.json"]  # no tmp file left
    assert remove_marker(p) and not remove_marker(p)


def test_corrupt_marker_is_moved_aside_not_reset(tmp_path: Path) -> None:
    p = tmp_path / "desired.json"
    p.write_text('{"state": "do')
    with pytest.raises(CorruptMarker, match="moved aside"):
        read_marker(p)
    assert not p.exists()
    aside = list(tmp_path.glob("desired.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"state": "do'


def test_journal_appends_json_lines_per_day(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.append("agent.spawned", {"agent": "agent1"})
    j.append("tick", {"n": 1})
    files = list(tmp_path.glob("watchdog-events-*.jsonl"))
    assert len(files) == 1
    lines = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert [x["event"] for x in lines] == ["agent.spawned", "tick"]
    assert lines[0]["ts"].endswith("Z")


async def test_db_migrates_once_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    store = await Store.open(path)
    assert await store.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1][0]
    await store.add_tick("a", "b", 1.5, {"n": 1})
    await store.add_messages(
        [
            {
                "envelope_id": "e1",
                "sender": "agent1",
                "recipient": "agent0",
                "kind": "message",
                "envelope_ts": "t",
                "file": "f.json",
                "status": "delivered",
                "delivered_ts": "t2",
                "via": "pane",
            }
        ]
    )
    await store.add_attempts("agent0", ["e3"], "t3", "pane")
    assert await store.prior(["e1", "e2", "e3"]) == ({"e1"}, {"e3"})
    await store.close()
    again = await Store.open(path)  # re-open: nothing re-applied, data kept
    assert await again.migrate() == []
    assert await again.count("ticks") == 1
    await again.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert applied == [(v,) for v, _ in MIGRATIONS]
    conn.close()
