"""What each agent's channel holds: ``netskyctl channel ls`` and ``channel peek`` (stdlib only).

Both read ``channels/agent/<agent>/`` (``inbox/``, ``claimed/``, ``delivered/``, ``poison/``,
``outbox/``) themselves, and ``ls`` meta.db, read-only, for the unconsumed count, so they
work while netskyd is down. The readers here trust no file on the bus (``read_json_file``);
``channel poison`` and ``retry`` (client.poison) use them too.
"""

from __future__ import annotations

import json
import os
import stat

from client.common import Usage, home_of, out, preview, setting, table
from netsky_shared.ids import is_agent_id, parse_agent, sort_key
from netsky_shared.maildir import box_entries

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence
    from typing import Any

#: The daemon's reason file beside a poisoned item X is ``X.reason.json``.
REASON_SUFFIX = ".reason.json"
#: What ``channel ls`` counts per agent, besides ``unconsumed`` (``pending``: ``inbox/``).
COUNTS = ("pending", "claimed", "delivered", "poisoned", "outbox")


def box_path(home: str, agent: str, box: str) -> str:
    """``<home>/channels/agent/<agent>/<box>``, ``box`` one of ``inbox``, ``claimed``,
    ``delivered``, ``poison``, ``outbox``."""
    return os.path.join(home, "channels", "agent", agent, box)


def channel_agents(home: str) -> list[str]:
    """Agents with a directory under ``channels/agent/``: agent0, agent1.., agentinfinity."""
    root = os.path.join(home, "channels", "agent")
    found = (
        n for n in box_entries(root) if is_agent_id(n) and os.path.isdir(os.path.join(root, n))
    )
    return sorted(found, key=sort_key)


def poisoned_names(names: Sequence[str]) -> list[str]:
    """The poisoned items among the names in a ``poison/`` dir.

    ``X.reason.json`` is X's reason file, not an item, when X is there too (the
    daemon writes the reason first, so a reason file alone counts as an item).
    """
    present = set(names)
    return [
        n for n in names if not (n.endswith(REASON_SUFFIX) and n[: -len(REASON_SUFFIX)] in present)
    ]


def kind_of(mode: int) -> str:
    """What a file of ``mode`` (an ``st_mode``) is, in words for a message: ``a symlink``,
    ``a directory``, ``a FIFO``, ``a socket``, ``a regular file``, else ``a device``."""
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "a device"


def read_json_file(path: str, max_bytes: int) -> tuple[dict[str, Any] | None, str | None]:
    """Read one JSON object from a file on the bus without trusting the file.

    Returns ``(object, None)``, or ``(None, error)`` with a one-line reason; never
    raises and never blocks: it lstat()s first and refuses anything but a regular
    file, opens with O_NOFOLLOW|O_NONBLOCK (so a FIFO swapped in after the lstat
    cannot hang it) and reads at most ``max_bytes`` bytes.
    """
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return None, f"not a regular file ({kind_of(st.st_mode)})"
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None, f"not a regular file ({kind_of(st.st_mode)})"
            data = f.read(max_bytes + 1)
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    if len(data) > max_bytes:
        return None, f"larger than {max_bytes} bytes"
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as e:
        return None, f"not JSON: {str(e)[:100]}"
    if not isinstance(value, dict):
        return None, f"not a JSON object ({type(value).__name__})"
    return value, None


def str_or_none(value: object) -> str | None:
    """``value`` when it is a str (a field of a file not to be trusted), else None."""
    return value if isinstance(value, str) else None


def short_id(value: str | None, n: int = 12) -> str:
    """The first ``n`` characters of an id, for a table column; ``-`` for none."""
    return value[:n] if value else "-"


def channel_counts(
    home: str, agent: str, unconsumed: Mapping[str, Sequence[tuple[str, str]]] | None = None
) -> dict[str, Any]:
    """``{agent, pending, claimed, delivered, poisoned, outbox, unconsumed,
    unconsumed_ids}`` for one agent's channel.

    ``unconsumed`` (from ``unconsumed_records``): per agent, ``(envelope id, file)`` of
    the deliveries its agent did not take; those whose file is still in ``delivered/``
    are counted and listed (oldest first).
    """
    delivered = box_entries(box_path(home, agent, "delivered"))

    def count(box: str) -> int:
        return len(box_entries(box_path(home, agent, box)))

    present = set(delivered)
    ids = [i for i, f in (unconsumed or {}).get(agent, ()) if f in present]
    return {
        "agent": agent,
        "pending": count("inbox"),
        "claimed": count("claimed"),
        "delivered": len(delivered),
        "poisoned": len(poisoned_names(box_entries(box_path(home, agent, "poison")))),
        "outbox": count("outbox"),
        "unconsumed": len(ids),
        "unconsumed_ids": ids,
    }


#: Deadline for reading meta.db (the daemon may hold a write lock for a moment).
DB_TIMEOUT_S = 2.0


def unconsumed_records(home: str) -> dict[str, list[tuple[str, str]]]:
    """``{agent: [(envelope id, file), ...]}`` of the deliveries recorded unconsumed in
    ``meta.db`` (``messages.consumption``, netskyd/bus/confirm.py), oldest first.

    Read-only (works while netskyd is down); {} when there is no database, or it is
    older than the column, or it cannot be read within DB_TIMEOUT_S.
    """
    import sqlite3

    path = os.path.join(home, "meta.db")
    if not os.path.exists(path):
        return {}
    found: dict[str, list[tuple[str, str]]] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=DB_TIMEOUT_S)
        try:
            rows = db.execute(
                "SELECT recipient, envelope_id, file FROM messages "
                "WHERE consumption = 'unconsumed' ORDER BY id"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    for agent, envelope_id, file in rows:
        found.setdefault(str(agent), []).append((str(envelope_id), str(file)))
    return found


def cmd_channel_ls(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    home = home_of(environ)
    agents = [parse_agent(args.agent)] if args.agent else channel_agents(home)
    unconsumed = unconsumed_records(home) if agents else {}
    rows = [channel_counts(home, a, unconsumed) for a in agents]
    columns = (*COUNTS, "unconsumed")
    text = (
        table(
            ("AGENT", *(c.upper() for c in columns)),
            [(r["agent"], *(str(r[c]) for c in columns)) for r in rows],
        )
        if rows
        else f"no channels under {os.path.join(home, 'channels', 'agent')}"
    )
    out(args, {"home": home, "agents": rows}, text)
    return 0


def peek(home: str, agent: str, limit: int, max_bytes: int) -> dict[str, Any]:
    """What waits for ``agent``: claimed first, then inbox, each in name (= time) order.

    Returns ``{agent, total, shown, envelopes: [{box, file, id, from, kind, ts,
    preview, error}]}``; an entry that is not a readable JSON object has ``error``
    set and the envelope fields null. ``limit`` 0 shows everything.
    """
    waiting = [
        (box, n) for box in ("claimed", "inbox") for n in box_entries(box_path(home, agent, box))
    ]
    shown = waiting if limit == 0 else waiting[:limit]
    envelopes = []
    for box, name in shown:
        env, error = read_json_file(os.path.join(box_path(home, agent, box), name), max_bytes)
        e = env or {}
        envelopes.append(
            {
                "box": box,
                "file": name,
                "id": str_or_none(e.get("id")),
                "from": str_or_none(e.get("from")),
                "kind": str_or_none(e.get("kind")),
                "ts": str_or_none(e.get("ts")),
                "preview": None if env is None else preview(e.get("text", "")),
                "error": error,
            }
        )
    return {"agent": agent, "total": len(waiting), "shown": len(envelopes), "envelopes": envelopes}


def cmd_channel_peek(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.limit < 0:
        raise Usage("--limit must be 0 (everything) or more")
    agent = parse_agent(args.agent)
    res = peek(
        home_of(environ), agent, args.limit, setting(environ, "envelope_max_bytes", 256 * 1024)
    )
    rows = [
        (e["box"], short_id(e["id"]), e["from"], e["kind"], e["ts"], e["preview"])
        if e["error"] is None
        else (e["box"], "-", "-", "-", "-", f"! {e['error']}: {e['file']}")
        for e in res["envelopes"]
    ]
    text = f"nothing waiting for {agent}"
    if rows:
        text = table(("BOX", "ID", "FROM", "KIND", "TS", "TEXT"), rows)
        if res["total"] > res["shown"]:
            text += f"\n... {res['total'] - res['shown']} more (--limit 0 shows all)"
    out(args, res, text)
    return 0
