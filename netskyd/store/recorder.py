"""One call records a fact everywhere it belongs: log, journal, then meta.db.

Order matters: the journal line is fsynced before the database write, so the
journal is the source of truth after a crash (ARCHITECTURE.md, "Paths").
A database failure is logged, never raised: losing a row must not stop a tick.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from netskyd import log as logmod
from netskyd.store.db import Store
from netskyd.store.journal import Journal


class Recorder:
    """Writes events to the structlog log, the JSONL journal and the ``events`` table."""

    def __init__(self, journal: Journal, store: Store) -> None:
        self.journal = journal
        self.store = store
        self.log = logmod.get("netskyd")

    async def event(
        self, name: str, *, agent: str | None = None, level: str = "info", **fields: Any
    ) -> str:
        """Record event ``name`` (e.g. ``agent.spawned``); return its RFC 3339 timestamp."""
        return await self.events(name, [{"agent": agent, **fields}], level=level)

    async def events(
        self, name: str, rows: list[dict[str, Any]], *, level: str = "info"
    ) -> str:
        """Record one event ``name`` per row (each row may carry ``agent``) in the journal,
        with a single fsync; the log and the ``events`` table get one summary for the
        lot (``count``, ``items``: the rows' envelope ids or files). Per-envelope facts
        live in ``messages`` too; one log line and one table row per envelope were half
        the bus's CPU under load. Returns the shared timestamp ("" for no rows)."""
        if not rows:
            return ""
        ts = self.journal.append_many(name, rows)
        if len(rows) == 1:
            summary = dict(rows[0])
        else:
            summary = {
                "agent": rows[0].get("agent")
                if len({r.get("agent") for r in rows}) == 1
                else None,
                "count": len(rows),
                "items": [r.get("envelope_id") or r.get("file") for r in rows],
            }
        agent = summary.pop("agent", None)
        getattr(self.log, level)(name, agent=agent, **summary)
        try:
            await self.store.add_event(ts, name, agent, summary)
        except sqlite3.Error as e:
            self.log.error("store.write_failed", table="events", error=str(e), event_name=name)
        return ts
