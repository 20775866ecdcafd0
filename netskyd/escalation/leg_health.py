"""Each page leg's recent record, ``state/legs.json``, and the page about one that keeps failing.

A round's results are folded in as it finishes (``update_health``, from
netskyd.escalation.rounds): a leg that has now failed ``failing_after`` times in a row, or
delivered again after that, is reported back so the caller can page about it (key
``leg:<name>``, on the other legs, with ``leg_failing_text``) or close that page.
"""

from __future__ import annotations

import json
from typing import Any

from netsky_shared.markers import write_marker
from netsky_shared.paths import Paths
from netskyd.config.legs import LegResult


def read_health(paths: Paths) -> dict[str, Any]:
    """``state/legs.json``: ``{leg: {"failures": consecutive, "status", "reason", "ts",
    "last_delivered_ts"}}``; {} when missing or unreadable (it is rebuilt as legs run)."""
    try:
        value = json.loads(paths.leg_health.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def update_health(
    paths: Paths, results: list[LegResult], ts: str, failing_after: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Fold a round's ``results`` (at ``ts``, RFC 3339) into ``state/legs.json``.

    Returns ``(failing, recovered)``: ``{"leg", "status", "reason", "n"}`` of each leg whose
    failures in a row have just reached ``failing_after`` (``n``), and the names of the
    legs that delivered again after that many. Blocking; called under the incidents flock.
    Raises OSError.
    """
    health = read_health(paths)
    failing: list[dict[str, Any]] = []
    recovered: list[str] = []
    for r in results:
        h = health.get(r.leg) or {"failures": 0, "last_delivered_ts": None}
        if r.status == "delivered":
            if h.get("failures", 0) >= failing_after:
                recovered.append(r.leg)
            h["failures"] = 0
            h["last_delivered_ts"] = ts
        else:
            h["failures"] = h.get("failures", 0) + 1
            if h["failures"] == failing_after:
                failing.append(
                    {"leg": r.leg, "status": r.status, "reason": r.reason, "n": failing_after}
                )
        h.update(status=r.status, reason=r.reason, ts=ts)
        health[r.leg] = h
    if results:
        write_marker(paths.leg_health, health)
    return failing, recovered


def leg_failing_text(f: dict[str, Any]) -> tuple[str, str]:
    """Subject and body of the page about a leg that keeps failing."""
    subject = f"the {f['leg']} page leg keeps failing"
    body = (
        f"The {f['leg']} leg has not delivered {f['n']} times in a row; last: "
        f"{f['status']}: {f['reason']}. Pages still go out on the other legs. "
        f"Check its [legs.{f['leg']}] settings and credentials; `netskyctl escalate "
        f"--direct test test --key test` tries every leg."
    )
    return subject, body
