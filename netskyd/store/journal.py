"""The watchdog-events journal: ``logs/watchdog-events-YYYY-MM-DD.jsonl``.

Append-only JSON lines, one per event, written and flushed *before* the matching
database write, so a crash between the two loses nothing that a person can't
replay from the journal. Each line: ``{"ts": RFC 3339 UTC, "event": name, ...fields}``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from netsky_shared.ids import rfc3339


class Journal:
    """Appends events to the day's JSONL file under ``logs_dir`` (UTC days)."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        logs_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, when: datetime) -> Path:
        return self.logs_dir / f"watchdog-events-{when.strftime('%Y-%m-%d')}.jsonl"

    def append(self, event: str, fields: dict[str, Any], when: datetime | None = None) -> str:
        """Append one event line and fsync it; return the line's RFC 3339 timestamp."""
        return self.append_many(event, [fields], when)

    def append_many(
        self, event: str, rows: list[dict[str, Any]], when: datetime | None = None
    ) -> str:
        """Append one line per row (all named ``event``) with a single fsync; return the ts."""
        when = when or datetime.now(UTC)
        ts = rfc3339(when)
        text = "".join(
            json.dumps({"ts": ts, "event": event, **fields}, default=str) + "\n" for fields in rows
        )
        with open(self.path_for(when), "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return ts
