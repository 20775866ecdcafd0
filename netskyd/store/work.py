"""meta.db rows of the work loop: ``clone_dispatches`` and ``harvests`` (migration 6).

A dispatch's ``state``: ``briefed`` (the brief is on its way or delivered), ``reported``
(the clone reported a commit), ``done`` (it said the task is done), ``harvested`` (its
commits landed), ``killed`` (``clone kill``) or ``failed`` (the brief could not be
given). ``OPEN`` states hold a clone slot.
"""

from __future__ import annotations

from typing import Any

from netskyd.store.db import Store

#: States in which a dispatch holds its clone's slot.
OPEN = ("briefed", "reported", "done")
STATES = (*OPEN, "harvested", "killed", "failed")

_DISPATCH_FIELDS = (
    "ts",
    "agent",
    "workspace",
    "source_repo",
    "repo",
    "branch",
    "base",
    "base_sha",
    "runtime",
    "brief_envelope",
    "brief_bytes",
    "state",
    "state_ts",
)
_HARVEST_FIELDS = (
    "ts",
    "dispatch_id",
    "agent",
    "workspace",
    "target_repo",
    "onto",
    "outcome",
)


class WorkRecords:
    """The work loop's rows over an open Store (its connection, its write lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add_dispatch(self, row: dict[str, Any]) -> int:
        """Insert a dispatch (keys: ``_DISPATCH_FIELDS``); returns its id."""
        cols = ", ".join(_DISPATCH_FIELDS)
        marks = ", ".join("?" for _ in _DISPATCH_FIELDS)
        return await self.store.write(
            f"INSERT INTO clone_dispatches ({cols}) VALUES ({marks})",
            [row[k] for k in _DISPATCH_FIELDS],
        )

    async def update_dispatch(self, dispatch_id: int, **fields: Any) -> None:
        """Set ``fields`` (column names of clone_dispatches) on one dispatch."""
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        await self.store.write(
            f"UPDATE clone_dispatches SET {sets} WHERE id = ?", [*fields.values(), dispatch_id]
        )

    async def dispatches(
        self, *, agent: str | None = None, workspace: str | None = None, open_only: bool = False
    ) -> list[dict[str, Any]]:
        """Dispatches, newest first, filtered by agent, workspace and openness."""
        where, params = [], []
        if agent is not None:
            where.append("agent = ?")
            params.append(agent)
        if workspace is not None:
            where.append("workspace = ?")
            params.append(workspace)
        if open_only:
            where.append(f"state IN ({', '.join('?' for _ in OPEN)})")
            params.extend(OPEN)
        sql = "SELECT * FROM clone_dispatches"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return await self._rows(sql + " ORDER BY id DESC", params)

    async def dispatch(self, dispatch_id: int) -> dict[str, Any] | None:
        rows = await self._rows("SELECT * FROM clone_dispatches WHERE id = ?", [dispatch_id])
        return rows[0] if rows else None

    async def add_harvest(self, row: dict[str, Any]) -> int:
        """Insert a harvest attempt (keys: ``_HARVEST_FIELDS``); returns its id."""
        cols = ", ".join(_HARVEST_FIELDS)
        marks = ", ".join("?" for _ in _HARVEST_FIELDS)
        return await self.store.write(
            f"INSERT INTO harvests ({cols}) VALUES ({marks})", [row[k] for k in _HARVEST_FIELDS]
        )

    async def finish_harvest(self, harvest_id: int, **fields: Any) -> None:
        """Record a harvest's result (column names of harvests)."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        await self.store.write(
            f"UPDATE harvests SET {sets} WHERE id = ?", [*fields.values(), harvest_id]
        )

    async def harvests(
        self, *, workspace: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Harvest attempts, newest first (of one workspace when given)."""
        if workspace is None:
            return await self._rows("SELECT * FROM harvests ORDER BY id DESC LIMIT ?", [limit])
        return await self._rows(
            "SELECT * FROM harvests WHERE workspace = ? ORDER BY id DESC LIMIT ?",
            [workspace, limit],
        )

    async def _rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        return await self.store.rows(sql, params)
