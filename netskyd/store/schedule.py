"""meta.db rows of the scheduler: ``cron_entries``, ``loops`` and ``fires`` (migration 7).

Every write is one statement, committed (``Store.write``), so a fire is persisted whole
or not at all: the row of a fire (outcome ``persisted``) is the fire's slot handled; it
is written before the envelope goes into the inbox and marked ``sent`` once it is there
(docs/schedule.md, "Never twice"). Times are epoch seconds (REAL) unless named ``_ts``
(RFC 3339 text).
"""

from __future__ import annotations

from typing import Any

from netskyd.store.db import Store

#: Fire outcomes: written before the send, the envelope in the inbox, nothing sent for
#: slots a ``catchup = "none"`` entry let go, nothing sent to an agent that is not there.
OUTCOMES = ("persisted", "sent", "skipped", "refused")
#: Outcomes that put an envelope on its way (count towards a loop's ``--count``).
SENDING = ("persisted", "sent")
#: Loop states.
LOOP_STATES = ("active", "done", "removed")

_FIRE_FIELDS = (
    "kind",
    "entry",
    "agent",
    "slot",
    "through",
    "slot_ts",
    "fired_at",
    "late_s",
    "missed",
    "outcome",
    "envelope",
    "envelope_file",
    "envelope_json",
    "reason",
)
_LOOP_FIELDS = (
    "ts",
    "agent",
    "created_by",
    "interval_s",
    "text",
    "created",
    "count",
    "until",
    "state",
    "state_ts",
)


class ScheduleRecords:
    """The scheduler's rows over an open Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ----- cron entries' baselines ------------------------------------------------------

    async def cron_entries(self) -> dict[str, dict[str, Any]]:
        """``{name: {name, schedule, tz, paused, baseline, seen_ts}}``."""
        rows = await self.store.rows("SELECT * FROM cron_entries")
        return {r["name"]: r for r in rows}

    async def set_cron_entry(
        self, name: str, schedule: str, tz: str, paused: bool, baseline: float, seen_ts: str
    ) -> None:
        """Insert or replace one entry's baseline row."""
        await self.store.write(
            "INSERT INTO cron_entries (name, schedule, tz, paused, baseline, seen_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "schedule = excluded.schedule, tz = excluded.tz, paused = excluded.paused, "
            "baseline = excluded.baseline, seen_ts = excluded.seen_ts",
            (name, schedule, tz, int(paused), baseline, seen_ts),
        )

    async def forget_cron_entry(self, name: str) -> None:
        """Drop an entry's baseline (the entry left cron.toml); its fires stay."""
        await self.store.write("DELETE FROM cron_entries WHERE name = ?", (name,))

    # ----- loops ------------------------------------------------------------------------

    async def add_loop(self, row: dict[str, Any]) -> int:
        """Insert a loop (keys: ``_LOOP_FIELDS``); returns its id."""
        cols = ", ".join(_LOOP_FIELDS)
        marks = ", ".join("?" for _ in _LOOP_FIELDS)
        return await self.store.write(
            f"INSERT INTO loops ({cols}) VALUES ({marks})", [row[k] for k in _LOOP_FIELDS]
        )

    async def end_loop(self, loop_id: int, state: str, state_ts: str, reason: str) -> None:
        """Move an active loop to ``done`` or ``removed`` (a loop already ended stays)."""
        await self.store.write(
            "UPDATE loops SET state = ?, state_ts = ?, reason = ? "
            "WHERE id = ? AND state = 'active'",
            (state, state_ts, reason, loop_id),
        )

    async def loops(
        self, *, active_only: bool = False, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """Loops, oldest first (active ones only when asked)."""
        where = " WHERE state = 'active'" if active_only else ""
        return await self.store.rows(f"SELECT * FROM loops{where} ORDER BY id LIMIT ?", (limit,))

    async def loop(self, loop_id: int) -> dict[str, Any] | None:
        rows = await self.store.rows("SELECT * FROM loops WHERE id = ?", (loop_id,))
        return rows[0] if rows else None

    # ----- fires ------------------------------------------------------------------------

    async def add_fire(self, row: dict[str, Any]) -> int:
        """Persist one fire (keys: ``_FIRE_FIELDS``; ``envelope*`` may be None); returns
        its id. One committed statement: the slot is handled once this returns."""
        cols = ", ".join(_FIRE_FIELDS)
        marks = ", ".join("?" for _ in _FIRE_FIELDS)
        return await self.store.write(
            f"INSERT INTO fires ({cols}) VALUES ({marks})", [row.get(k) for k in _FIRE_FIELDS]
        )

    async def add_fires(self, rows: list[dict[str, Any]]) -> list[int]:
        """Persist the sending fires of one pass (each with an ``envelope``) in one
        transaction; returns their ids in order."""
        cols = ", ".join(_FIRE_FIELDS)
        marks = ", ".join("?" for _ in _FIRE_FIELDS)
        await self.store.write_many(
            f"INSERT INTO fires ({cols}) VALUES ({marks})",
            [[row.get(k) for k in _FIRE_FIELDS] for row in rows],
        )
        ids: dict[str, int] = {}
        envelopes = [row["envelope"] for row in rows]
        for i in range(0, len(envelopes), 500):
            chunk = envelopes[i : i + 500]
            found = await self.store.rows(
                f"SELECT id, envelope FROM fires WHERE envelope IN "
                f"({', '.join('?' for _ in chunk)})",
                chunk,
            )
            ids |= {r["envelope"]: int(r["id"]) for r in found}
        return [ids[e] for e in envelopes]

    async def mark_sent(self, fire_ids: list[int], sent_at: str) -> None:
        """The fires' envelopes are in their inboxes: drop the copies kept for a resend."""
        await self.store.write_many(
            "UPDATE fires SET outcome = 'sent', sent_at = ?, envelope_json = NULL "
            "WHERE id = ? AND outcome = 'persisted'",
            [(sent_at, fire_id) for fire_id in fire_ids],
        )

    async def coalesce(self, fire_id: int, through: float) -> None:
        """One more slot folded into a pending fire (it stands for it now)."""
        await self.store.write(
            "UPDATE fires SET coalesced = coalesced + 1, through = MAX(through, ?) "
            "WHERE id = ?",
            (through, fire_id),
        )

    async def unsent(self) -> list[dict[str, Any]]:
        """Fires persisted whose envelope was not yet seen in the inbox, oldest first."""
        return await self.store.rows(
            "SELECT * FROM fires WHERE outcome = 'persisted' ORDER BY id"
        )

    async def latest(self, kind: str) -> dict[str, dict[str, Any]]:
        """Per entry of ``kind``: its newest fire row, plus ``handled`` (the newest slot
        any of its rows stands for) and ``sent`` (rows that sent an envelope)."""
        rows = await self.store.rows(
            "SELECT f.*, agg.handled, agg.sent FROM fires f JOIN ("
            " SELECT entry, MAX(id) AS last_id, MAX(through) AS handled,"
            " SUM(outcome IN ('persisted', 'sent')) AS sent"
            " FROM fires WHERE kind = ? GROUP BY entry"
            ") agg ON f.id = agg.last_id",
            (kind,),
        )
        return {r["entry"]: r for r in rows}

    async def last_sending(self, kind: str, entry: str) -> dict[str, Any] | None:
        """The newest fire of an entry that put an envelope on its way."""
        rows = await self.store.rows(
            "SELECT * FROM fires WHERE kind = ? AND entry = ? "
            "AND outcome IN ('persisted', 'sent') ORDER BY id DESC LIMIT 1",
            (kind, entry),
        )
        return rows[0] if rows else None

    async def fires(
        self, *, kind: str | None = None, entry: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Fire rows, newest first, without the envelope copy."""
        where, params = [], []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if entry is not None:
            where.append("entry = ?")
            params.append(entry)
        sql = (
            "SELECT id, kind, entry, agent, slot, through, slot_ts, fired_at, late_s, missed,"
            " coalesced, outcome, envelope, sent_at, reason FROM fires"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        return await self.store.rows(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])

    async def delivered(self, envelope_id: str) -> bool:
        """True when the bus recorded this envelope (delivered, or poisoned as a repeat)."""
        rows = await self.store.rows(
            "SELECT 1 FROM messages WHERE envelope_id = ? LIMIT 1", (envelope_id,)
        )
        return bool(rows)
