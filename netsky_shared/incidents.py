"""Incident files under ``state/escalations/`` (stdlib only: netskyctl lists and acks them).

An incident is what an escalation key keeps open until the owner acknowledges it
or its cause resolves (ARCHITECTURE.md, "Escalation"; netskyd.escalation.pager pages it). One
JSON object per file, ``state/escalations/<id>.json``::

    {"id": "20261121T100000Z-1a2b3c4d", "key": "agent0:crash-loop",
     "subject": "agent0 is crash-looping", "body": "5 restarts in 10 minutes ...",
     "severity": "critical",
     "opened_ts": "2026-11-21T10:00:00.000000Z", "last_ts": "2026-11-21T10:03:00.000000Z",
     "count": 3, "acked": false, "acked_ts": null,
     "resolved_ts": null, "resolution": null,
     "rounds": 1, "paged_ts": "2026-11-21T10:00:00.000000Z",
     "legs": {"email": {"status": "delivered", "reason": null,
                        "ts": "...", "tries": 1, "next_ts": null},
              "webhook": {"status": "failed", "reason": "HTTP 502: bad gateway",
                          "ts": "...", "tries": 2, "next_ts": "2026-11-21T10:01:30.000000Z"}},
     "next_retry_ts": "2026-11-21T10:01:30.000000Z", "round_ts": null,
     "exclude_legs": []}

- ``id``: the opening time (UTC, seconds) and 8 random hex digits; equals the file's stem.
- ``key``: what the escalation is about. While the incident is open, escalating the
  same key again *joins* it (``count`` and ``last_ts``) inside the quiet period,
  and pages again (``rounds`` + 1) after it.
- ``severity``: ``info``, ``warning`` or ``critical``; each leg has a minimum.
- ``count``: escalations folded into this incident (1 when opened).
- ``acked``/``acked_ts``: set by ``netskyctl ack``; after that the key pages afresh.
- ``resolved_ts``/``resolution``: set when the cause went away (agent back, hang
  cleared); an all-clear went to the legs that had delivered the page.
- ``rounds``/``paged_ts``: page rounds so far and when the last one started.
- ``legs``: each leg's outcome in the current round: ``delivered``, ``failed`` (retried
  at ``next_ts``, backing off) or ``unavailable`` (not retried); ``tries`` counts its
  attempts in the round. Every attempt is also a row of ``state/owner-pages.jsonl``.
- ``next_retry_ts``: the earliest ``next_ts`` (null: nothing to retry).
- ``round_ts``: set while a round is being sent (a lease: others leave it alone).
- ``exclude_legs``: legs this incident never uses (the page about a failing leg).

An incident is *open* while neither acked nor resolved. Files written before these
fields existed read with the defaults (``normalize``).

Timestamps are RFC 3339 UTC with microseconds. Writes are atomic (tmp + fsync +
rename, netsky_shared.markers), and every read-modify-write holds the flock on
``state/escalations/.lock``, so an ``ack`` from netskyctl and a repeat bump in the
daemon never undo each other. Readers need no lock: a rename is all or nothing.

Corrupt files: a file that is not a JSON object of this shape is reported, never
skipped in silence. Readers (netskyctl) leave it where it is and return it among
the *unreadable*; the daemon (``scan(..., move_aside=True)``) moves it aside to
``<name>.corrupt-<yyyymmddThhmmss>`` and records an event.

Import weight: nothing here imports pathlib, datetime or uuid at import time, so
``netskyctl status`` can show the incident summary without paying for them.
"""

from __future__ import annotations

import json
import os
import re
import time

from netsky_shared.errors import NetskyError, UnknownIncident
from netsky_shared.ids import rfc3339 as rfc3339  # re-exported: its callers import it from here

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from netsky_shared.paths import Paths

LOCK_NAME = ".lock"
LOCK_TIMEOUT_S = 10.0
_LOCK_POLL_S = 0.01
_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")
_TS_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?Z"
)
_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "key": (str,),
    "subject": (str,),
    "body": (str,),
    "opened_ts": (str,),
    "last_ts": (str,),
    "count": (int,),
    "acked": (bool,),
    "acked_ts": (str, type(None)),
    "legs": (list, dict),
}
#: Fields added after the first release, with the value a file without them means.
_DEFAULTS: dict[str, object] = {
    "severity": "warning",
    "resolved_ts": None,
    "resolution": None,
    "rounds": 1,
    "paged_ts": None,
    "next_retry_ts": None,
    "round_ts": None,
    "exclude_legs": [],
}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "severity": (str,),
    "resolved_ts": (str, type(None)),
    "resolution": (str, type(None)),
    "rounds": (int,),
    "paged_ts": (str, type(None)),
    "next_retry_ts": (str, type(None)),
    "round_ts": (str, type(None)),
    "exclude_legs": (list,),
}
SEVERITIES = ("info", "warning", "critical")


class IncidentsBusy(NetskyError):
    """Raised when ``state/escalations/.lock`` stays locked past its deadline."""


def incidents_dir(where: Paths | str) -> str:
    """``state/escalations`` of a Paths, or of a NETSKY_HOME given as a string."""
    if isinstance(where, str):
        return os.path.join(where, "state", "escalations")
    return str(where.escalations)


def parse_rfc3339(ts: str) -> float | None:
    """Seconds since the epoch of a UTC ``YYYY-MM-DDTHH:MM:SS[.f]Z`` string, else None.

    Done by hand (days from the civil date) because datetime and calendar cost
    more import time than ``netskyctl status`` may spend.
    """
    m = _TS_RE.fullmatch(ts)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = float(m.group(7) or 0.0)
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        return None
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    y -= mo <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + h * 3600 + mi * 60 + s + frac


def new_incident_id(now_s: float) -> str:
    """``<yyyymmddThhmmssZ>-<8 hex>``: sorts by opening time, random enough not to clash."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(now_s))) + "-" + os.urandom(4).hex()


def new_incident(
    incident_id: str,
    key: str,
    subject: str,
    body: str,
    now_s: float,
    severity: str = "warning",
    exclude_legs: list[str] | None = None,
) -> dict[str, Any]:
    """A freshly opened incident (shape in the module docstring), count 1, not acked,
    no round yet (``rounds`` 0 until netskyd.escalation.pager starts one)."""
    ts = rfc3339(now_s)
    return {
        "id": incident_id,
        "key": key,
        "subject": subject,
        "body": body,
        "severity": severity,
        "opened_ts": ts,
        "last_ts": ts,
        "count": 1,
        "acked": False,
        "acked_ts": None,
        "resolved_ts": None,
        "resolution": None,
        "rounds": 0,
        "paged_ts": None,
        "legs": {},
        "next_retry_ts": None,
        "round_ts": None,
        "exclude_legs": list(exclude_legs or ()),
    }


def normalize(value: dict[str, Any]) -> dict[str, Any]:
    """Fill in the fields a file written before they existed lacks (in place; returned).

    An old ``legs: []`` becomes ``{}``.
    """
    for name, default in _DEFAULTS.items():
        if name not in value:
            value[name] = list(default) if isinstance(default, list) else default
    if isinstance(value["legs"], list):
        value["legs"] = {}
    return value


def is_open(incident: dict[str, Any]) -> bool:
    """Neither acknowledged nor resolved."""
    return not incident["acked"] and incident.get("resolved_ts") is None


def problem(value: object, stem: str) -> str | None:
    """Why ``value`` (parsed from ``<stem>.json``) is not an incident, or None when it is."""
    if not isinstance(value, dict):
        return f"not a JSON object ({type(value).__name__})"
    for name, types in _FIELDS.items():
        if name not in value:
            return f"missing field {name!r}"
        v = value[name]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            return f"field {name!r} has the wrong type ({type(v).__name__})"
    for name, types in _OPTIONAL.items():
        if name in value and (
            not isinstance(value[name], types) or isinstance(value[name], bool)
        ):
            return f"field {name!r} has the wrong type ({type(value[name]).__name__})"
    if value.get("severity", "warning") not in SEVERITIES:
        return f"severity {value['severity']!r} is not one of {', '.join(SEVERITIES)}"
    if not _ID_RE.fullmatch(value["id"]):
        return f"id {value['id']!r} is not <yyyymmddThhmmssZ>-<8 hex>"
    if value["id"] != stem:
        return f"id {value['id']!r} does not match the file name"
    if value["count"] < 1:
        return "count is below 1"
    return None


def _aside_name(path: str) -> str:
    base = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    candidate, n = base, 0
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def _incident_names(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))


def scan(
    where: Paths | str, *, move_aside: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read every incident file; return ``(incidents, unreadable)``.

    ``incidents`` are the valid ones sorted by ``(opened_ts, id)``. ``unreadable`` lists
    each other ``*.json`` file as ``{"file": name, "error": why, "aside": path | None}``;
    with ``move_aside`` (the daemon) each is renamed to ``<name>.corrupt-<ts>`` first
    and ``aside`` says where. A missing directory means no incidents. Raises OSError
    only for a failed move aside.
    """
    directory = incidents_dir(where)
    found: list[dict[str, Any]] = []
    unreadable: list[dict[str, Any]] = []
    for name in _incident_names(directory):
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            continue  # acked and replaced, or moved aside, while we listed
        except OSError as e:
            unreadable.append({"file": name, "error": f"unreadable: {e.strerror or e}"})
            continue
        try:
            value: object = json.loads(raw)
            why = problem(value, name[: -len(".json")])
        except (ValueError, RecursionError) as e:
            why = f"not JSON: {str(e)[:100]}"
        if why is None:
            assert isinstance(value, dict)
            found.append(normalize(value))
            continue
        aside = None
        if move_aside:
            aside = _aside_name(path)
            os.rename(path, aside)
        unreadable.append({"file": name, "error": why, "aside": aside})
    found.sort(key=lambda i: (i["opened_ts"], i["id"]))
    return found, unreadable


def list_incidents(where: Paths | str, *, include_acked: bool = False) -> list[dict[str, Any]]:
    """Incidents sorted by ``opened_ts``: the open ones (neither acked nor resolved),
    or all with ``include_acked``. Unreadable files are left out here; ``scan``
    reports them.
    """
    found, _ = scan(where)
    return [i for i in found if include_acked or is_open(i)]


class IncidentsLock:
    """Hold the flock on ``<directory>/.lock`` (created with the directory if missing).

    Polls for at most ``timeout_s`` seconds, then raises IncidentsBusy; a holder
    that dies releases the lock with its file descriptor.
    """

    def __init__(self, directory: str, timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.directory = directory
        self.timeout_s = timeout_s
        self.fd = -1

    def __enter__(self) -> IncidentsLock:
        import fcntl

        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(os.path.join(self.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise IncidentsBusy(
                        f"{self.directory}/{LOCK_NAME} stayed locked for {self.timeout_s:g}s"
                    ) from None
                time.sleep(_LOCK_POLL_S)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing the descriptor releases the flock
        self.fd = -1


def write_incident(where: Paths | str, incident: dict[str, Any]) -> str:
    """Atomically write ``incident`` to ``<dir>/<id>.json``; return the path.

    Call it while holding ``IncidentsLock(dir)`` when the file may already exist.
    """
    from pathlib import Path

    from netsky_shared.markers import write_marker

    path = os.path.join(incidents_dir(where), f"{incident['id']}.json")
    write_marker(Path(path), incident)
    return path


def find(where: Paths | str, incident_id: str) -> str:
    """The id of the one incident file whose id equals, or starts or ends with, ``incident_id``.

    Exact ids win; a prefix (``20261121T1000``) or the random suffix (``1a2b3c4d``)
    must match exactly one file. Raises UnknownIncident.
    """
    wanted = incident_id.strip()
    if wanted.endswith(".json"):
        wanted = wanted[: -len(".json")]
    if not wanted:
        raise UnknownIncident("no incident id given")
    ids = [n[: -len(".json")] for n in _incident_names(incidents_dir(where))]
    if wanted in ids:
        return wanted
    matches = [i for i in ids if i.startswith(wanted) or i.endswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        where_s = f"{len(ids)} incident files" if ids else "there are no incidents"
        raise UnknownIncident(f"no incident matches {incident_id!r} ({where_s})")
    raise UnknownIncident(
        f"{incident_id!r} matches {len(matches)} incidents ({', '.join(matches)}); "
        "give more of the id"
    )


def ack(where: Paths | str, incident_id: str, *, now_s: float | None = None) -> dict[str, Any]:
    """Acknowledge an incident: set ``acked`` and ``acked_ts`` (``now_s``, default now).

    ``incident_id`` may be a unique prefix or suffix (see ``find``). Acking an acked
    incident changes nothing. Returns the incident as written. Raises UnknownIncident,
    CorruptMarker (the file is not an incident; it is left for the daemon to move
    aside and report), IncidentsBusy, OSError.
    """
    from netsky_shared.errors import CorruptMarker

    directory = incidents_dir(where)
    stem = find(where, incident_id)  # before locking: a failed ack creates nothing
    with IncidentsLock(directory):
        path = os.path.join(directory, f"{stem}.json")
        try:
            with open(path, "rb") as f:
                value: object = json.loads(f.read())
            why = problem(value, stem)
        except FileNotFoundError:
            raise UnknownIncident(f"incident {stem} vanished while acking it") from None
        except (ValueError, RecursionError) as e:
            why = f"not JSON: {str(e)[:100]}"
        if why is not None:
            raise CorruptMarker(f"incident file {path} is corrupt: {why}")
        assert isinstance(value, dict)
        normalize(value)
        if not value["acked"]:
            value["acked"] = True
            value["acked_ts"] = rfc3339(time.time() if now_s is None else now_s)
            write_incident(where, value)
        return value
