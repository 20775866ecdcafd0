"""netskyctl's incident commands: ``incidents [--all]`` and ``ack ID`` (stdlib only).

Both work on the files in ``state/escalations/`` themselves (netsky_shared.incidents has
their shape), so they work while netskyd is down. ``summary_line`` is the incidents
line of ``netskyctl status``. An incident file that is not an incident is listed as
unreadable, never skipped; the daemon moves such files aside and records it.
"""

from __future__ import annotations

import sys
import time

from client.common import home_of, out, preview, table
from netsky_shared.incidents import ack, is_open, parse_rfc3339, rfc3339, scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

    from netsky_shared.paths import Paths

SUBJECT_CHARS = 60


def ago(ts: str, now_s: float) -> str:
    """Age of the RFC 3339 ``ts`` at ``now_s``: ``45s``, ``3m``, ``2h``, ``4d`` (``?`` if bad)."""
    then = parse_rfc3339(ts)
    if then is None:
        return "?"
    s = max(0, int(now_s - then))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summarize(
    open_incidents: list[dict[str, Any]], now_s: float, unreadable: int = 0
) -> str | None:
    """The status line for these open incidents (see ``summary_line``), or None for none.

    For a caller that already holds the list, e.g. the ``incidents`` field of the
    daemon's ``status`` result.
    """
    if not open_incidents and not unreadable:
        return None
    if open_incidents:
        newest = max(open_incidents, key=lambda i: (i["opened_ts"], i["id"]))
        line = (
            f"incidents: {len(open_incidents)} open (newest: "
            f'"{preview(newest["subject"], SUBJECT_CHARS)}", {ago(newest["opened_ts"], now_s)} ago)'
        )
    else:
        line = "incidents: none open"
    if unreadable:
        line += f"; {_plural(unreadable, 'unreadable file')} in state/escalations"
    return line


def summary_line(where: Paths | str, now_s: float | None = None) -> str | None:
    """The incidents line for ``netskyctl status``, or None when nothing needs the owner.

    ``where`` is a Paths or a NETSKY_HOME string; the files are read here, so it
    works with the daemon down. Shape:
    ``incidents: 2 open (newest: "agent0 crash loop", 3m ago)``, with
    ``; 1 unreadable file in state/escalations`` appended when an incident file does
    not parse (then the line shows even with none open: a corrupt file may have been
    an open page).
    """
    found, unreadable = scan(where)
    open_ = [i for i in found if is_open(i)]
    return summarize(open_, time.time() if now_s is None else now_s, len(unreadable))


def state_of(incident: dict[str, Any]) -> str:
    """``open``, ``acked`` or ``resolved``."""
    if incident["acked"]:
        return "acked"
    return "resolved" if incident.get("resolved_ts") else "open"


def legs_of(incident: dict[str, Any]) -> str:
    """Each leg's outcome in the last round: ``email:ok webhook:failed×3 imessage:n/a``."""
    marks = {"delivered": "ok", "failed": "failed", "unavailable": "n/a"}
    parts = []
    for name, st in sorted(dict(incident.get("legs") or {}).items()):
        mark = marks.get(st.get("status"), "?")
        tries = st.get("tries", 1)
        parts.append(f"{name}:{mark}" + (f"×{tries}" if mark == "failed" and tries > 1 else ""))
    return " ".join(parts) or "-"


def _unreadable_text(unreadable: list[dict[str, Any]]) -> str:
    lines = [f"  {u['file']}: {u['error']}" for u in unreadable]
    return "unreadable incident files (netskyd moves them aside when it next escalates):\n" + (
        "\n".join(lines)
    )


def cmd_incidents(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``netskyctl incidents [--all]``: open incidents (all with --all), oldest first;
    each with its state, severity, how often it was escalated and each leg's outcome.

    ``--json``: ``{"home", "incidents": [incident, ...], "unreadable": [{"file",
    "error"}, ...]}``. Exit 0, also when some files are unreadable (they are listed).
    """
    home = home_of(environ)
    now_s = time.time()
    found, unreadable = scan(home)
    shown = [i for i in found if args.include_acked or is_open(i)]
    rows = [
        (
            i["id"],
            state_of(i),
            i["severity"],
            str(i["count"]),
            ago(i["opened_ts"], now_s) + " ago",
            ago(i["last_ts"], now_s) + " ago",
            legs_of(i),
            preview(i["key"], 30),
            preview(i["subject"], SUBJECT_CHARS),
        )
        for i in shown
    ]
    if rows:
        header = ("ID", "STATE", "SEVERITY", "COUNT", "OPENED", "LAST", "LEGS", "KEY", "SUBJECT")
        text = table(header, rows)
    else:
        closed = sum(1 for i in found if not is_open(i))
        text = "no incidents" if args.include_acked else "no open incidents"
        if closed and not args.include_acked:
            text += f" ({closed} acknowledged or resolved; --all shows them)"
    if unreadable:
        if args.json:
            sys.stderr.write(_unreadable_text(unreadable) + "\n")
        else:
            text += "\n" + _unreadable_text(unreadable)
    out(args, {"home": home, "incidents": shown, "unreadable": unreadable}, text)
    return 0


def cmd_ack(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``netskyctl ack ID``: acknowledge an incident; its key may page again afterwards.

    ``ID`` is the id, a unique prefix, or its 8-hex suffix. ``--json``: the incident
    as written plus ``already_acked``. Errors (UnknownIncident, CorruptMarker,
    IncidentsBusy) propagate to netskyctl's main, which exits 1.
    """
    now_s = time.time()
    incident = ack(home_of(environ), args.id, now_s=now_s)
    already = incident["acked_ts"] != rfc3339(now_s)
    if already:
        text = f"{incident['id']} was already acknowledged at {incident['acked_ts']}"
    else:
        text = (
            f"acknowledged {incident['id']} ({preview(incident['subject'], SUBJECT_CHARS)}); "
            f"key {incident['key']!r} pages again if it recurs"
        )
    out(args, {**incident, "already_acked": already}, text)
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``incidents`` and ``ack`` to netskyctl's subcommands (``common`` holds ``--json``)."""
    inc = sub.add_parser(
        "incidents", parents=[common], help="open incidents paged to the owner (no daemon needed)"
    )
    inc.add_argument(
        "--all", dest="include_acked", action="store_true", help="acknowledged and resolved too"
    )
    ak = sub.add_parser("ack", parents=[common], help="acknowledge an incident (no daemon needed)")
    ak.add_argument("id", help="incident id, a unique prefix of it, or its 8-hex suffix")


INCIDENT_COMMANDS = {"incidents": cmd_incidents, "ack": cmd_ack}
COMMANDS = INCIDENT_COMMANDS  # what netskyctl runs from each command's module
