"""meta.db: SQLite in WAL mode through aiosqlite, with versioned migrations.

The schema version is the highest applied entry of MIGRATIONS (netskyd.store.migrations),
recorded in
``schema_migrations`` and mirrored in ``PRAGMA user_version``. Migrations only
ever append: an existing entry is never edited once released. Every write here
comes after the same fact was written to the JSONL journal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from netskyd.store.migrations import MIGRATIONS as MIGRATIONS

#: Values of ``messages.consumption`` (NULL on rows that are not deliveries).
CONSUMPTION_STATES = ("pending", "consumed", "unconsumed", "unchecked")
#: Columns of an ``owner_pages`` row besides ``id`` (netskyd.escalation.pager has the JSON rows).
OWNER_PAGE_COLUMNS = (
    "file_offset",
    "ts",
    "incident",
    "key",
    "severity",
    "kind",
    "round",
    "try",
    "leg",
    "status",
    "reason",
    "duration_ms",
    "via",
)
#: Columns of a ``restarts`` row as returned by Store.restarts (and ``netskyctl restarts``).
RESTART_COLUMNS = (
    "restart_id",
    "attempt",
    "agent",
    "cause",
    "reason",
    "started_ts",
    "finished_ts",
    "outcome",
    "failure",
)
#: Columns of a ``messages`` row, in insert order (see Store.add_messages).
MESSAGE_COLUMNS = (
    "envelope_id",
    "sender",
    "recipient",
    "kind",
    "envelope_ts",
    "file",
    "status",
    "delivered_ts",
    "via",
    "duplicate",
    "reason",
    "submitted_at",
    "consumption",
)


class Store:
    """The daemon's one connection to meta.db. Open with ``await Store.open(path)``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) and migrate the database at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, timeout=5.0)
        store = cls(conn, path)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
            await store._exec(f"PRAGMA {pragma}")
        await store.migrate()
        return store

    async def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement and close its cursor; return ``lastrowid`` (0 if none).

        Cursors are always closed here, on aiosqlite's worker thread: one left open is
        freed later on the event loop's thread and can reset a cached statement while
        the worker runs it for another task (``sqlite3.InterfaceError: bad parameter or
        other API misuse`` under load).
        """
        async with self.conn.execute(sql, params) as cur:
            return int(cur.lastrowid or 0)

    async def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement and commit it (one statement is one transaction, so
        no other task's write can split it); returns ``lastrowid`` (0 if none). The
        path of the records kept outside this class (netskyd.store.work, .schedule)."""
        rowid = await self._exec(sql, params)
        await self.conn.commit()
        return rowid

    async def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``executemany`` of one statement over ``rows``, committed together."""
        await self._exec_many(sql, rows)
        await self.conn.commit()

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a query as dicts keyed by column name."""
        async with self.conn.execute(sql, params) as cur:
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in await cur.fetchall()]

    async def _exec_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``executemany`` with its cursor closed (see _exec)."""
        async with self.conn.executemany(sql, rows):
            pass

    async def close(self) -> None:
        await self.conn.close()

    async def schema_version(self) -> int:
        """Return the highest applied migration (0 for an empty database)."""
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def migrate(self) -> list[int]:
        """Apply pending migrations in one transaction each; return the versions applied."""
        await self._exec(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_ts TEXT NOT NULL)"
        )
        current = await self.schema_version()
        applied = []
        for version, script in MIGRATIONS:
            if version <= current:
                continue
            async with self.conn.executescript(
                "BEGIN;\n" + script + f"\nINSERT INTO schema_migrations VALUES ({version}, "
                "strftime('%Y-%m-%dT%H:%M:%fZ','now'));\n"
                + f"PRAGMA user_version = {version};\nCOMMIT;"
            ):
                pass
            applied.append(version)
        return applied

    async def add_event(
        self, ts: str, event: str, agent: str | None, fields: dict[str, Any]
    ) -> None:
        await self._exec(
            "INSERT INTO events (ts, event, agent, fields) VALUES (?, ?, ?, ?)",
            (ts, event, agent, json.dumps(fields, default=str)),
        )
        await self.conn.commit()

    async def add_tick(
        self, started_ts: str, finished_ts: str, duration_ms: float, summary: dict[str, Any]
    ) -> None:
        await self._exec(
            "INSERT INTO ticks (started_ts, finished_ts, duration_ms, summary) VALUES (?,?,?,?)",
            (started_ts, finished_ts, duration_ms, json.dumps(summary, default=str)),
        )
        await self.conn.commit()

    async def add_spawn(
        self, ts: str, agent: str, session_id: str, runtime: str, reason: str, pane_pid: int | None
    ) -> int:
        rowid = await self._exec(
            "INSERT INTO spawns (ts, agent, session_id, runtime, reason, pane_pid) "
            "VALUES (?,?,?,?,?,?)",
            (ts, agent, session_id, runtime, reason, pane_pid),
        )
        await self.conn.commit()
        return rowid

    async def finish_spawn(self, session_id: str, outcome: str, ready_ts: str | None) -> None:
        await self._exec(
            "UPDATE spawns SET outcome = ?, ready_ts = ? WHERE session_id = ?",
            (outcome, ready_ts, session_id),
        )
        await self.conn.commit()

    async def add_messages(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``messages`` rows (dicts keyed by MESSAGE_COLUMNS; missing keys are NULL,
        ``duplicate`` defaults to 0) in one transaction."""
        await self._exec_many(
            f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})",
            [
                tuple(
                    int(bool(r.get(c))) if c == "duplicate" else r.get(c) for c in MESSAGE_COLUMNS
                )
                for r in rows
            ],
        )
        await self.conn.commit()

    async def set_consumption(
        self,
        recipient: str,
        ids: list[str],
        state: str,
        consumed_at: str | None,
        retried: bool,
    ) -> None:
        """Record whether ``recipient`` took these delivered envelopes: ``state`` one of
        CONSUMPTION_STATES, ``consumed_at`` RFC 3339 or None, ``retried`` whether Enter
        was pressed once more. Only rows still ``pending`` change. Raises ValueError for
        an unknown state."""
        if state not in CONSUMPTION_STATES:
            raise ValueError(f"unknown consumption state {state!r}")
        await self._exec_many(
            "UPDATE messages SET consumption = ?, consumed_at = ?, enter_retries = ? "
            "WHERE recipient = ? AND envelope_id = ? AND status = 'delivered' "
            "AND consumption = 'pending'",
            [(state, consumed_at, int(retried), recipient, i) for i in ids],
        )
        await self.conn.commit()

    async def unconsumed(self, recipient: str, limit: int = 20) -> dict[str, Any]:
        """What ``recipient`` was given and did not take.

        Returns ``{"streak": n, "envelopes": [...], "last_consumed_at": ts | None}``:
        ``streak`` counts the unconsumed deliveries since its last consumed one, and
        ``envelopes`` lists them, oldest first, at most ``limit``: ``{"id", "file",
        "delivered_ts", "submitted_at", "enter_retries"}``.
        """
        async with self.conn.execute(
            "SELECT MAX(id), MAX(consumed_at) FROM messages "
            "WHERE recipient = ? AND consumption = 'consumed'",
            (recipient,),
        ) as cur:
            row = await cur.fetchone()
        last_id, last_at = (row[0] or 0, row[1]) if row else (0, None)
        sql = (
            "SELECT envelope_id, file, delivered_ts, submitted_at, enter_retries FROM messages "
            "WHERE recipient = ? AND consumption = 'unconsumed' AND id > ? ORDER BY id"
        )
        async with self.conn.execute(sql, (recipient, last_id)) as cur:
            rows = list(await cur.fetchall())
        keys = ("id", "file", "delivered_ts", "submitted_at", "enter_retries")
        return {
            "streak": len(rows),
            "envelopes": [dict(zip(keys, r, strict=True)) for r in rows[-limit:]],
            "last_consumed_at": last_at,
        }

    async def unconsumed_in(self, recipient: str, files: list[str]) -> list[str]:
        """Ids of ``recipient``'s unconsumed deliveries whose file is in ``files`` (the
        names in its ``delivered/``), in delivery order."""
        present = set(files)
        async with self.conn.execute(
            "SELECT envelope_id, file FROM messages WHERE recipient = ? "
            "AND consumption = 'unconsumed' ORDER BY id",
            (recipient,),
        ) as cur:
            return [str(i) for i, f in await cur.fetchall() if f in present]

    async def add_attempts(self, recipient: str, ids: list[str], ts: str, via: str) -> None:
        """Record that these envelopes are being handed to ``via`` (before the paste)."""
        await self._exec_many(
            "INSERT INTO attempts (envelope_id, recipient, ts, via) VALUES (?,?,?,?)",
            [(i, recipient, ts, via) for i in ids],
        )
        await self.conn.commit()

    async def forget_attempts(self, ids: list[str], ts: str) -> None:
        """Drop the attempt rows written at ``ts`` for ``ids`` (the paste surely failed)."""
        await self._exec_many(
            "DELETE FROM attempts WHERE envelope_id = ? AND ts = ?", [(i, ts) for i in ids]
        )
        await self.conn.commit()

    async def prior(self, ids: list[str]) -> tuple[set[str], set[str]]:
        """``(delivered, attempted)``: the subsets of ``ids`` recorded as delivered, and
        handed to a delivery path before; one query (the delivery hot path)."""
        delivered: set[str] = set()
        attempted: set[str] = set()
        for start in range(0, len(ids), 400):  # SQLite's host-parameter limit
            chunk = ids[start : start + 400]
            marks = ",".join("?" * len(chunk))
            sql = (
                f"SELECT envelope_id, 'd' FROM messages WHERE status = 'delivered' "
                f"AND envelope_id IN ({marks}) "
                f"UNION ALL SELECT envelope_id, 'a' FROM attempts WHERE envelope_id IN ({marks})"
            )
            async with self.conn.execute(sql, chunk + chunk) as cur:
                for envelope_id, tag in await cur.fetchall():
                    (delivered if tag == "d" else attempted).add(str(envelope_id))
        return delivered, attempted

    async def attempt_counts(self, ids: list[str]) -> dict[str, tuple[int, str]]:
        """``{envelope_id: (attempts, via of the last one)}`` for the ids with attempt rows.

        Two or more rows mean two hand-overs that were not proven to have failed, i.e.
        a possible repeat (startup reconciliation marks those rows ``duplicate``).
        """
        out: dict[str, tuple[int, str]] = {}
        for start in range(0, len(ids), 900):  # SQLite's host-parameter limit
            chunk = ids[start : start + 900]
            sql = (
                "SELECT envelope_id, COUNT(*), "
                "(SELECT via FROM attempts b WHERE b.envelope_id = a.envelope_id "
                "ORDER BY b.id DESC LIMIT 1) "
                f"FROM attempts a WHERE envelope_id IN ({','.join('?' * len(chunk))}) "
                "GROUP BY envelope_id"
            )
            async with self.conn.execute(sql, chunk) as cur:
                for envelope_id, n, via in await cur.fetchall():
                    out[str(envelope_id)] = (int(n), str(via))
        return out

    async def cursor(self, name: str) -> int:
        """The position stored under ``name`` (0 when none)."""
        async with self.conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def cursor_or_none(self, name: str) -> int | None:
        """The position stored under ``name``, None when none is."""
        async with self.conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else None

    async def set_cursor(self, name: str, value: int) -> None:
        """Store the position ``name`` (committed)."""
        await self.write(
            "INSERT INTO cursors (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    async def add_owner_pages(
        self, rows: list[dict[str, Any]], cursor: tuple[str, int] | None = None
    ) -> None:
        """Insert owner-page rows (dicts with OWNER_PAGE_COLUMNS; a row whose
        ``file_offset`` is already there is skipped) and move ``cursor`` in the same
        transaction."""
        await self._exec_many(
            f"INSERT OR IGNORE INTO owner_pages ({', '.join(OWNER_PAGE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(OWNER_PAGE_COLUMNS))})",
            [tuple(r.get(c) for c in OWNER_PAGE_COLUMNS) for r in rows],
        )
        if cursor is not None:
            await self._exec(
                "INSERT INTO cursors (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                cursor,
            )
        await self.conn.commit()

    async def upsert_incidents(self, found: list[dict[str, Any]]) -> None:
        """Record incidents (netsky_shared.incidents shape) as they are now; ``state`` is
        ``open``, ``acked`` or ``resolved``."""
        await self._exec_many(
            "INSERT INTO incidents (id, key, subject, body, severity, opened_ts, last_ts, "
            "count, rounds, state, acked_ts, resolved_ts, resolution, legs) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
            "body = excluded.body, severity = excluded.severity, last_ts = excluded.last_ts, "
            "count = excluded.count, rounds = excluded.rounds, state = excluded.state, "
            "acked_ts = excluded.acked_ts, resolved_ts = excluded.resolved_ts, "
            "resolution = excluded.resolution, legs = excluded.legs",
            [
                (
                    i["id"], i["key"], i["subject"], i["body"], i["severity"],
                    i["opened_ts"], i["last_ts"], i["count"], i["rounds"],
                    "acked" if i["acked"] else "resolved" if i["resolved_ts"] else "open",
                    i["acked_ts"], i["resolved_ts"], i["resolution"], json.dumps(i["legs"]),
                )
                for i in found
            ],
        )
        await self.conn.commit()

    async def recorded_files(self, recipient: str, status: str) -> set[str]:
        """File names recorded for ``recipient`` with ``status`` (startup reconciliation)."""
        async with self.conn.execute(
            "SELECT file FROM messages WHERE recipient = ? AND status = ?", (recipient, status)
        ) as cur:
            return {str(r[0]) for r in await cur.fetchall()}

    async def add_restart(
        self,
        restart_id: str,
        attempt: int,
        agent: str,
        cause: str | None,
        reason: str | None,
        ts: str,
    ) -> None:
        """Record the start of one restart attempt (idempotent on (restart_id, attempt))."""
        await self._exec(
            "INSERT OR IGNORE INTO restarts (restart_id, attempt, agent, cause, reason, "
            "started_ts) VALUES (?,?,?,?,?,?)",
            (restart_id, attempt, agent, cause, reason, ts),
        )
        await self.conn.commit()

    async def finish_restart(
        self, restart_id: str, attempt: int, outcome: str, failure: str | None, ts: str
    ) -> None:
        """Record how one restart attempt ended (``outcome``: "ok" or "failed")."""
        await self._exec(
            "UPDATE restarts SET outcome = ?, failure = ?, finished_ts = ? "
            "WHERE restart_id = ? AND attempt = ?",
            (outcome, failure, ts, restart_id, attempt),
        )
        await self.conn.commit()

    async def restarts(self, agent: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` restart attempts (of ``agent``), newest first;
        dicts keyed by RESTART_COLUMNS."""
        where, params = ("WHERE agent = ?", [agent]) if agent else ("", [])
        sql = (
            f"SELECT {', '.join(RESTART_COLUMNS)} FROM restarts {where} "
            "ORDER BY started_ts DESC, id DESC LIMIT ?"
        )
        async with self.conn.execute(sql, [*params, limit]) as cur:
            return [dict(zip(RESTART_COLUMNS, r, strict=True)) for r in await cur.fetchall()]

    async def add_crash(
        self,
        ts: str,
        agent: str,
        session_id: str | None,
        exit_status: int | None,
        failure: str,
        noticed_by: str,
        pane_tail: str | None,
    ) -> None:
        """Record one agent death the daemon noticed."""
        await self._exec(
            "INSERT INTO crashes (ts, agent, session_id, exit_status, failure, noticed_by, "
            "pane_tail) VALUES (?,?,?,?,?,?,?)",
            (ts, agent, session_id, exit_status, failure, noticed_by, pane_tail),
        )
        await self.conn.commit()

    async def last_spawn(self, agent: str) -> dict[str, Any] | None:
        """The newest ``spawns`` row of ``agent`` (``{"ts", "session_id", "outcome"}``)."""
        async with self.conn.execute(
            "SELECT ts, session_id, outcome FROM spawns WHERE agent = ? ORDER BY id DESC LIMIT 1",
            (agent,),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else {"ts": row[0], "session_id": row[1], "outcome": row[2]}

    async def count(self, table: str) -> int:
        """Row count of one of this module's tables (for status and tests)."""
        if table not in {
            "events",
            "ticks",
            "spawns",
            "messages",
            "attempts",
            "restarts",
            "crashes",
        }:
            raise ValueError(f"unknown table {table!r}")
        async with self.conn.execute(f"SELECT COUNT(*) FROM {table}") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0
