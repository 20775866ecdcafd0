"""Readiness records: ``state/ready/<agent>.json`` (stdlib only; the demo agent writes them).

Shape: ``{"agent": "agent1", "session_id": "<nonce hex>", "runtime": "demo",
"pid": 1234, "ts": RFC 3339 UTC}``. A record counts only when it names the
agent and the current session's nonce (``NETSKY_SESSION_ID``, set per spawn), so a
record left by a predecessor never makes a fresh session look ready.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netsky_shared.maildir import atomic_write_bytes, now_rfc3339


def write_ready_record(path: Path, agent: str, session_id: str, runtime: str, pid: int) -> None:
    """Atomically write an agent's readiness record."""
    record = {
        "agent": agent,
        "session_id": session_id,
        "runtime": runtime,
        "pid": pid,
        "ts": now_rfc3339(),
    }
    atomic_write_bytes(path, (json.dumps(record) + "\n").encode())


def read_ready_record(path: Path) -> dict[str, Any] | None:
    """Return the record, or None when it is missing or unreadable (never raises)."""
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def record_counts(record: dict[str, Any] | None, agent: str, session_id: str | None) -> bool:
    """True when ``record`` is a readiness record for this agent's current session."""
    if record is None or session_id is None:
        return False
    return record.get("agent") == agent and record.get("session_id") == session_id
