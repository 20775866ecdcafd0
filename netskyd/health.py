"""The health report: ``state/health.json``, rewritten at every tick and on ``health``.

STUB — filled in by the health/doctor work (docs/keepalive.md has the shape).
"""

from __future__ import annotations

from typing import Any

from netskyd.context import Context


async def refresh(ctx: Context) -> dict[str, Any]:
    """Build the health report, write ``state/health.json`` atomically, return it."""
    return {"status": "ok", "source": "daemon"}
