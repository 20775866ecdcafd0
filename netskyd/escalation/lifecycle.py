"""The incident lifecycle on file: open, re-page or join one, resolve it, claim its due round,
archive it.

Step 1 of an escalation (netskyd.escalation.pager has the whole story). Everything here
works on ``state/escalations/`` only (the file's shape is in netsky_shared.incidents), under
the incidents flock, so the daemon, a ``--direct`` run from the shim and ``netskyctl ack``
can act on the same incidents at once without undoing each other. Every call blocks
(flock, fsync): run it in a worker thread.

``open_or_join``: the open incident with this key, if any, is *joined* (``count`` + 1, no
page) while its last page round is younger than the quiet period; after the quiet period,
or when the new escalation is more severe, it is *re-paged* (a new round, ``rounds`` + 1).
Without one, an incident is *opened*. Opening and re-paging start a round: ``round_ts`` is
set as a lease so nobody else sends it meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from netsky_shared import incidents
from netsky_shared.incidents import IncidentsLock, is_open, rfc3339
from netsky_shared.paths import Paths
from netskyd.config.legs import severity_rank

Action = Literal["opened", "repaged", "joined"]


@dataclass
class Decision:
    """What ``open_or_join`` did: the incident as written, the action, and the files
    moved aside as corrupt on the way (``incidents.scan`` shapes)."""

    incident: dict[str, Any]
    action: Action
    corrupt: list[dict[str, Any]] = field(default_factory=list)



def _find_open(found: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    open_ = [i for i in found if i["key"] == key and is_open(i)]
    return open_[0] if open_ else None  # should a hand-made copy exist: the oldest


def _start_round(incident: dict[str, Any], now_s: float) -> None:
    ts = rfc3339(now_s)
    incident["rounds"] += 1
    incident["paged_ts"] = ts
    incident["round_ts"] = ts
    incident["legs"] = {}
    incident["next_retry_ts"] = None


def open_or_join(
    paths: Paths,
    key: str,
    subject: str,
    body: str,
    severity: str,
    now_s: float,
    quiet_s: float,
    exclude_legs: Iterable[str] = (),
) -> Decision:
    """Open, re-page or join the incident for ``key`` (the module docstring).

    Blocking (flock, fsync): run it in a worker thread. Raises ValueError for an empty
    key or subject or an unknown severity, IncidentsBusy, OSError.
    """
    if not key.strip():
        raise ValueError("escalate needs a non-empty key")
    if not subject.strip():
        raise ValueError("escalate needs a non-empty subject")
    severity_rank(severity)  # ValueError for an unknown one
    with IncidentsLock(str(paths.escalations)):
        found, corrupt = incidents.scan(paths, move_aside=True)
        incident = _find_open(found, key)
        if incident is None:
            incident_id = incidents.new_incident_id(now_s)
            while (paths.escalations / f"{incident_id}.json").exists():
                incident_id = incidents.new_incident_id(now_s)
            incident = incidents.new_incident(
                incident_id, key, subject, body, now_s, severity, list(exclude_legs)
            )
            _start_round(incident, now_s)
            action: Action = "opened"
        else:
            incident["count"] += 1
            incident["last_ts"] = rfc3339(now_s)
            last = incidents.parse_rfc3339(incident["paged_ts"] or "") or 0.0
            worse = severity_rank(severity) > severity_rank(incident["severity"])
            if worse or now_s - last >= quiet_s:
                incident["body"] = body
                if worse:
                    incident["severity"] = severity
                _start_round(incident, now_s)
                action = "repaged"
            else:
                action = "joined"
        incidents.write_incident(paths, incident)
    return Decision(incident, action, corrupt)


def resolve(paths: Paths, key: str, resolution: str, now_s: float) -> dict[str, Any] | None:
    """Close the open incident for ``key`` as resolved; return it, or None when none is
    open. Its retries stop. Blocking: run it in a worker thread."""
    with IncidentsLock(str(paths.escalations)):
        found, _ = incidents.scan(paths)
        incident = _find_open(found, key)
        if incident is None:
            return None
        incident["resolved_ts"] = rfc3339(now_s)
        incident["resolution"] = resolution
        incident["next_retry_ts"] = None
        incidents.write_incident(paths, incident)
    return incident


def _due_kind(incident: dict[str, Any], now_s: float, lease_s: float) -> str | None:
    """``page`` when a round was interrupted (its lease ran out: the sender died),
    ``retry`` when a failed leg is due, else None."""
    if not is_open(incident):
        return None
    lease = incidents.parse_rfc3339(incident["round_ts"] or "")
    if lease is not None:
        return "page" if now_s - lease >= lease_s else None
    due = incidents.parse_rfc3339(incident["next_retry_ts"] or "")
    return "retry" if due is not None and due <= now_s else None


def due(found: list[dict[str, Any]], now_s: float, lease_s: float) -> list[str]:
    """Ids of the open incidents with a round to send: a failed leg whose retry time
    has come, or a round whose sender died (lease ``lease_s`` run out)."""
    return [i["id"] for i in found if _due_kind(i, now_s, lease_s) is not None]


def claim_round(
    paths: Paths, incident_id: str, now_s: float, lease_s: float
) -> tuple[dict[str, Any], Literal["page", "retry"]] | None:
    """Take the due round of ``incident_id`` (see ``due``) under the lock: set
    ``round_ts`` and return the incident and the round's kind; None when it is not
    due (any more). An interrupted round is sent again as ``page`` to the legs that
    had not delivered it."""
    with IncidentsLock(str(paths.escalations)):
        found, _ = incidents.scan(paths)
        incident = next((i for i in found if i["id"] == incident_id), None)
        kind = None if incident is None else _due_kind(incident, now_s, lease_s)
        if incident is None or kind is None:
            return None
        incident["round_ts"] = rfc3339(now_s)
        incidents.write_incident(paths, incident)
    return incident, "page" if kind == "page" else "retry"


def archive_closed(paths: Paths, now_s: float, keep_s: float) -> list[str]:
    """Move incidents acknowledged or resolved more than ``keep_s`` ago into
    ``state/escalations/archive/`` (kept, never deleted; scans no longer read them).
    Returns the ids moved. Blocking: run it in a worker thread."""
    moved = []
    archive = paths.escalations / "archive"
    with IncidentsLock(str(paths.escalations)):
        found, _ = incidents.scan(paths)
        for i in found:
            closed = incidents.parse_rfc3339(i["acked_ts"] or i["resolved_ts"] or "")
            if is_open(i) or closed is None or now_s - closed < keep_s:
                continue
            archive.mkdir(exist_ok=True)
            os.replace(paths.escalations / f"{i['id']}.json", archive / f"{i['id']}.json")
            moved.append(i["id"])
    return moved

