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


class Journal:
    """Appends events to the day's JSONL file under ``logs_dir`` (UTC days)."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        logs_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, when: datetime) -> Path:
        return self.logs_dir / f"watchdog-events-{when.strftime('%Y-%m-%d')}.jsonl"

    def append(self, event: str, fields: dict[str, Any], when: datetime | None = None) -> str:
        """Append one event line and fsync it; return the line's RFC 3339 timestamp."""
        when = when or datetime.now(UTC)
        ts = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = json.dumps({"ts": ts, "event": event, **fields}, default=str, sort_keys=False)
        with open(self.path_for(when), "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        return ts
