"""``escalate``: the one way anything in the daemon pages the owner.

Until the escalation legs exist (iMessage, email, webhook, ...; ARCHITECTURE.md,
"Escalation"), a page is an incident file ``state/escalations/<id>.json`` plus the
event ``escalation.opened`` (level warning) in the journal and meta.db. Incident
JSON (netskyd.incidents has the field by field description)::

    {"id": "<yyyymmddThhmmssZ>-<8 hex>", "key": "agent0.crash-loop",
     "subject": "agent0 crash loop", "body": "...",
     "opened_ts": RFC 3339, "last_ts": RFC 3339, "count": 1,
     "acked": false, "acked_ts": null, "legs": []}

Dedupe by key: while an unacknowledged incident with the same key exists, another
``escalate`` opens nothing; it bumps that incident's ``count`` and ``last_ts``,
records ``escalation.repeat`` (level info) and returns it with ``paged=False``.
Once the owner acks (``netskyctl ack ID``), the same key opens a new incident.

Events (journal first, then meta.db, through the Recorder):

- ``escalation.opened`` (warning): ``incident, key, subject, body, count, file``
- ``escalation.repeat`` (info): ``incident, key, subject, count, last_ts, file``
- ``escalation.corrupt`` (error): ``file, aside, error``, one per incident file that
  was not an incident; it has been moved aside to ``<name>.corrupt-<ts>``, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from netskyd import incidents
from netskyd.context import Context
from netskyd.paths import Paths


@dataclass(frozen=True)
class Incident:
    """One incident as on disk (module docstring), plus what this call did.

    ``paged`` is True when this ``escalate`` opened the incident (a page went out),
    False when it folded into an open one. ``path`` is the incident's file.
    """

    id: str
    key: str
    subject: str
    body: str
    opened_ts: str
    last_ts: str
    count: int
    acked: bool
    acked_ts: str | None
    legs: tuple[dict[str, Any], ...]
    paged: bool
    path: Path

    @classmethod
    def from_json(cls, value: dict[str, Any], *, paged: bool, path: Path) -> Incident:
        """Build from a valid incident dict (``netskyd.incidents.problem`` is None)."""
        return cls(
            id=value["id"],
            key=value["key"],
            subject=value["subject"],
            body=value["body"],
            opened_ts=value["opened_ts"],
            last_ts=value["last_ts"],
            count=value["count"],
            acked=value["acked"],
            acked_ts=value["acked_ts"],
            legs=tuple(value["legs"]),
            paged=paged,
            path=path,
        )

    def to_json(self) -> dict[str, Any]:
        """The incident's JSON object, as in its file (no ``paged``, no ``path``)."""
        return {
            "id": self.id,
            "key": self.key,
            "subject": self.subject,
            "body": self.body,
            "opened_ts": self.opened_ts,
            "last_ts": self.last_ts,
            "count": self.count,
            "acked": self.acked,
            "acked_ts": self.acked_ts,
            "legs": list(self.legs),
        }


def _open_or_bump(
    paths: Paths, key: str, subject: str, body: str, now_s: float
) -> tuple[dict[str, Any], bool, list[dict[str, Any]]]:
    """Under the incidents lock: bump the open incident for ``key`` or open a new one.

    Returns ``(incident, paged, corrupt)``; ``corrupt`` lists the files moved aside.
    Blocking (flock, fsync): run it in a worker thread.
    """
    with incidents.IncidentsLock(str(paths.escalations)):
        found, corrupt = incidents.scan(paths, move_aside=True)
        open_ = [i for i in found if i["key"] == key and not i["acked"]]
        if open_:
            # There is only ever one; should a hand-made copy exist, fold into the oldest.
            incident = open_[0]
            incident["count"] += 1
            incident["last_ts"] = incidents.rfc3339(now_s)
            paged = False
        else:
            incident_id = incidents.new_incident_id(now_s)
            while (paths.escalations / f"{incident_id}.json").exists():
                incident_id = incidents.new_incident_id(now_s)
            incident = incidents.new_incident(incident_id, key, subject, body, now_s)
            paged = True
        incidents.write_incident(paths, incident)
    return incident, paged, corrupt


async def escalate(ctx: Context, subject: str, body: str, key: str) -> Incident:
    """Page the owner about ``subject`` (one line) with ``body``, deduplicated by ``key``.

    ``key`` names the condition (e.g. ``agent0.crash-loop``); while an incident with
    this key is open (not acked), this bumps it instead of paging again. Time comes
    from ``ctx.clock``. Returns the Incident (``paged`` says whether a page went out).
    Raises ValueError for an empty ``key`` or ``subject``, IncidentsBusy when the
    incidents lock stays held (10 s), OSError when the file cannot be written.
    """
    if not key.strip():
        raise ValueError("escalate needs a non-empty key")
    if not subject.strip():
        raise ValueError("escalate needs a non-empty subject")
    incident, paged, corrupt = await anyio.to_thread.run_sync(
        _open_or_bump, ctx.paths, key, subject, body, ctx.clock()
    )
    path = ctx.paths.escalations / f"{incident['id']}.json"
    for c in corrupt:
        await ctx.recorder.event(
            "escalation.corrupt", level="error", file=c["file"], aside=c["aside"], error=c["error"]
        )
    if paged:
        await ctx.recorder.event(
            "escalation.opened",
            level="warning",
            incident=incident["id"],
            key=key,
            subject=subject,
            body=body,
            count=incident["count"],
            file=str(path),
        )
    else:
        await ctx.recorder.event(
            "escalation.repeat",
            incident=incident["id"],
            key=key,
            subject=incident["subject"],
            count=incident["count"],
            last_ts=incident["last_ts"],
            file=str(path),
        )
    return Incident.from_json(incident, paged=paged, path=path)
