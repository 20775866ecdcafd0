"""Named markers under ``state/``: small JSON files written atomically.

Writes are tmp + fsync + rename + directory fsync (maildir delivery), so a reader
sees the old marker or the new one, never half of one. A marker that does not
parse is never silently reset: it is moved aside to ``<name>.corrupt-<ts>`` and
CorruptMarker is raised so the caller reports it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from netsky_shared.errors import CorruptMarker
from netsky_shared.maildir import atomic_write_bytes


def write_marker(path: Path, value: dict[str, Any]) -> None:
    """Atomically write ``value`` as JSON to ``path`` (parents created)."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_marker(path: Path) -> dict[str, Any] | None:
    """Return the marker's JSON object, or None when it does not exist.

    Raises CorruptMarker (after moving the file aside) when it is not a JSON object.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        path.rename(aside)
        raise CorruptMarker(f"marker {path} is corrupt ({e}); moved aside to {aside}") from e
    return value


def remove_marker(path: Path) -> bool:
    """Remove a marker; return True when one existed."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
