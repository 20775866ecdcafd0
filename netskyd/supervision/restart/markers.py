"""The restart's files under ``state/``: requests, the in-flight machines, the markers.

- ``restart-request``: an agent's planned restart: plain text (the handoff) or JSON
  ``{"handoff", "clones", "by", "force"}`` (``parse_request``). The watchdog claims it
  by atomic rename into ``restart-claimed/<restart id>.request``, then keeps it in
  ``archive/restart-request-<restart id>``.
- ``restart-inflight.json``: ``{"version": 1, "machines": {agent: Machine.to_json()}}``,
  every machine that is not pristine (``save_machines``).
- ``gave-up.json``, ``crashloop.json``: ``{"agents": {agent: entry}}`` (``write_entry``);
  ``archive_entry`` moves an agent's entry to ``archive/<kind>-<agent>-<ts>-<hex>.json``
  as ``{"agent", "why": "verified" | "stale", "entry"}``.

Every write is atomic (netsky_shared.markers). Also here: the synthetic handoff a
fresh agent0 gets after a crash.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from netsky_shared.errors import CorruptMarker
from netsky_shared.maildir import now_rfc3339
from netsky_shared.markers import read_marker, remove_marker, write_marker
from netsky_shared.paths import Paths
from netskyd.supervision.restart.machine import Machine, State

INFLIGHT = "restart-inflight.json"
REQUEST = "restart-request"
CLAIMED_DIR = "restart-claimed"
ARCHIVE_DIR = "archive"
MARKERS = {"gave-up": "gave-up.json", "crashloop": "crashloop.json"}
MARKER_STATE = {"gave-up": State.GAVE_UP, "crashloop": State.CRASH_LOOP}
#: Longer handoffs are cut (the full request is archived) so the envelope always fits.
HANDOFF_MAX_BYTES = 128 * 1024
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def synthetic_handoff(agent: str, reason: str, tail: str | None, restart_id: str) -> str:
    """The handoff a fresh agent0 gets after its predecessor died (crash recovery)."""
    lines = [
        f"netsky: your predecessor ({agent}) died unexpectedly ({reason}). You are a fresh "
        f"session started by the watchdog (restart {restart_id[:8]}).",
    ]
    if tail and tail.strip():
        clean = CONTROL_CHARS.sub(
            "", tail.replace("<channel", "<chan nel").replace("</channel", "</chan nel")
        )
        lines += ["", "The last lines of its pane were:", ""]
        lines += ["    " + line for line in clean.rstrip().splitlines()]
    else:
        lines += ["", "Its last screen could not be captured."]
    lines += [
        "",
        f"What it noted of its work (today's and yesterday's notes): netskyctl notes show "
        f"--agent {agent} --since 1d",
        "",
        "Wait for the owner before resuming any work it was doing: tell the owner you were "
        "restarted after a crash and ask how to proceed.",
    ]
    return "\n".join(lines)


def parse_request(raw: bytes) -> dict[str, Any]:
    """Parse a restart request: plain text (the handoff) or a JSON object
    ``{"handoff": str, "clones": int | null, "by": str, "force": bool}``.

    Returns ``{"handoff", "clones", "by", "force"}``; never raises (bad bytes are
    replaced, and a JSON object with a wrong shape is taken as plain text).
    """
    text = raw.decode("utf-8", errors="replace")
    out: dict[str, Any] = {"handoff": text, "clones": None, "by": "agent0", "force": False}
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return out
        if isinstance(value, dict) and isinstance(value.get("handoff"), str):
            clones = value.get("clones")
            out["handoff"] = value["handoff"]
            out["clones"] = clones if isinstance(clones, int) and clones >= 0 else None
            out["by"] = str(value.get("by") or "agent0")
            out["force"] = bool(value.get("force"))
    return out


def save_machines(paths: Paths, machines: dict[str, Machine]) -> None:
    """Write ``restart-inflight.json`` (removed when every machine is pristine)."""
    keep = {a: m.to_json() for a, m in sorted(machines.items()) if m != Machine(a)}
    if keep:
        write_marker(paths.marker(INFLIGHT), {"version": 1, "machines": keep})
    else:
        remove_marker(paths.marker(INFLIGHT))


def write_entry(paths: Paths, kind: str, agent: str, entry: dict[str, Any]) -> None:
    """Set ``agent``'s entry in the ``kind`` marker ("gave-up" or "crashloop")."""
    path = paths.marker(MARKERS[kind])
    try:
        value = read_marker(path) or {}
    except CorruptMarker:
        value = {}
    agents = dict(value.get("agents") or {})
    agents[agent] = {**entry, "ts": now_rfc3339()}
    write_marker(path, {"agents": agents})


def archive_entry(paths: Paths, kind: str, agent: str, why: str) -> bool:
    """Move ``agent``'s entry of the ``kind`` marker to ``archive/``; False when none."""
    path = paths.marker(MARKERS[kind])
    try:
        value = read_marker(path) or {}
    except CorruptMarker:
        return False
    agents = dict(value.get("agents") or {})
    entry = agents.pop(agent, None)
    if entry is None:
        return False
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    archive = paths.marker(ARCHIVE_DIR) / f"{kind}-{agent}-{stamp}-{uuid.uuid4().hex[:6]}.json"
    write_marker(archive, {"agent": agent, "why": why, "entry": entry})
    if agents:
        write_marker(path, {"agents": agents})
    else:
        remove_marker(path)
    return True
