"""netskyctl's bus commands: ``channel send|ls|peek|poison|retry|replay`` (stdlib only).

All but ``replay`` work on the files under ``channels/agent/`` themselves, so they
work while netskyd is down; ``replay`` asks the daemon to paste again.
"""

from __future__ import annotations

import json
import os
import stat

from client.common import Usage, home_of, out, preview, setting, table
from client.replay import cmd_channel_replay
from client.replay import parse_since as parse_since
from client.send import UnreadableInput as UnreadableInput
from client.send import cmd_channel_send
from netsky_shared.errors import InboxFull, NetskyError
from netsky_shared.ids import is_agent_id, parse_agent, sort_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence
    from typing import Any


class NoMatch(NetskyError):
    """Raised when no poisoned envelope matches the id given to ``channel retry``."""


class AmbiguousMatch(NetskyError):
    """Raised when the id given to ``channel retry`` matches several poisoned envelopes."""

    def __init__(self, message: str, candidates: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.candidates = candidates


class NotRetryable(NetskyError):
    """Raised when a poisoned entry cannot go back to the inbox (not a regular file, or clash)."""


# -- The bus: ls, peek, poison, retry read the files (no daemon); replay asks netskyd ---

REASON_SUFFIX = ".reason.json"
REASON_MAX_BYTES = 64 * 1024
COUNTS = ("pending", "claimed", "delivered", "poisoned", "outbox")


def _box(home: str, agent: str, box: str) -> str:
    return os.path.join(home, "channels", "agent", agent, box)


def _names(directory: str) -> list[str]:
    """Sorted names in ``directory`` that are not dot-files; [] when there is no such dir."""
    try:
        return sorted(n for n in os.listdir(directory) if not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def channel_agents(home: str) -> list[str]:
    """Agents with a directory under ``channels/agent/``: agent0, agent1.., agentinfinity."""
    root = os.path.join(home, "channels", "agent")
    found = (n for n in _names(root) if is_agent_id(n) and os.path.isdir(os.path.join(root, n)))
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


def _kind_of(mode: int) -> str:
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
            return None, f"not a regular file ({_kind_of(st.st_mode)})"
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None, f"not a regular file ({_kind_of(st.st_mode)})"
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


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _short(value: str | None, n: int = 12) -> str:
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
    delivered = _names(_box(home, agent, "delivered"))

    def count(box: str) -> int:
        return len(_names(_box(home, agent, box)))

    present = set(delivered)
    ids = [i for i, f in (unconsumed or {}).get(agent, ()) if f in present]
    return {
        "agent": agent,
        "pending": count("inbox"),
        "claimed": count("claimed"),
        "delivered": len(delivered),
        "poisoned": len(poisoned_names(_names(_box(home, agent, "poison")))),
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
    waiting = [(box, n) for box in ("claimed", "inbox") for n in _names(_box(home, agent, box))]
    shown = waiting if limit == 0 else waiting[:limit]
    envelopes = []
    for box, name in shown:
        env, error = read_json_file(os.path.join(_box(home, agent, box), name), max_bytes)
        e = env or {}
        envelopes.append(
            {
                "box": box,
                "file": name,
                "id": _str(e.get("id")),
                "from": _str(e.get("from")),
                "kind": _str(e.get("kind")),
                "ts": _str(e.get("ts")),
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
        (e["box"], _short(e["id"]), e["from"], e["kind"], e["ts"], e["preview"])
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


def poisoned(home: str, agents: Sequence[str], max_bytes: int) -> list[dict[str, Any]]:
    """Every poisoned item of ``agents`` with its reason, in agent then name order.

    Each is ``{agent, file, id, rule, detail, ts, reason_file, reason_error}``:
    ``id`` when the item parses, ``rule``/``detail``/``ts`` from the daemon's
    ``<file>.reason.json`` (``{"rule", "detail", "ts", "file"}``).
    """
    items = []
    for agent in agents:
        pdir = _box(home, agent, "poison")
        names = _names(pdir)
        present = set(names)
        for name in poisoned_names(names):
            env, _ = read_json_file(os.path.join(pdir, name), max_bytes)
            reason_file = name + REASON_SUFFIX if name + REASON_SUFFIX in present else None
            reason, reason_error = (
                read_json_file(os.path.join(pdir, reason_file), REASON_MAX_BYTES)
                if reason_file
                else (None, "no reason file")
            )
            r = reason or {}
            items.append(
                {
                    "agent": agent,
                    "file": name,
                    "id": _str((env or {}).get("id")),
                    "rule": _str(r.get("rule")),
                    "detail": _str(r.get("detail")),
                    "ts": _str(r.get("ts")),
                    "reason_file": reason_file,
                    "reason_error": reason_error,
                }
            )
    return items


def cmd_channel_poison(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    home = home_of(environ)
    agents = [parse_agent(args.agent)] if args.agent else channel_agents(home)
    items = poisoned(home, agents, setting(environ, "envelope_max_bytes", 256 * 1024))
    rows = [
        (
            i["agent"],
            i["file"],
            _short(i["id"]),
            i["rule"],
            i["ts"],
            preview(i["detail"] if i["reason_error"] is None else f"! {i['reason_error']}", 60),
        )
        for i in items
    ]
    text = table(("AGENT", "FILE", "ID", "RULE", "POISONED", "DETAIL"), rows) if rows else ""
    out(args, {"items": items}, text or "nothing poisoned")
    return 0


def find_poisoned(items: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The one item whose id or file name equals ``key``, else the one they start with.

    Raises NoMatch, or AmbiguousMatch carrying the candidates.
    """
    matches = [i for i in items if key in (i["id"], i["file"])] or [
        i for i in items if (i["id"] or "").startswith(key) or i["file"].startswith(key)
    ]
    if not matches:
        n = len(items)
        where = f"{n} poisoned, see 'netskyctl channel poison'" if n else "nothing is poisoned"
        raise NoMatch(f"no poisoned envelope matches {key!r} ({where})")
    if len(matches) > 1:
        listing = "".join(f"\n  {i['agent']}  {i['file']}" for i in matches)
        raise AmbiguousMatch(
            f"{key!r} matches {len(matches)} poisoned envelopes; give more of the id or "
            f"the file name, or --agent:{listing}",
            [{"agent": i["agent"], "file": i["file"], "id": i["id"]} for i in matches],
        )
    return matches[0]


def _unused(path: str) -> str:
    """``path``, or ``<stem>.<n>.reason.json`` when an earlier retry left that name."""
    n = 0
    candidate = path
    while os.path.lexists(candidate):
        n += 1
        candidate = f"{path[: -len(REASON_SUFFIX)]}.{n}{REASON_SUFFIX}"
    return candidate


def retry(home: str, item: dict[str, Any], inbox_max_pending: int) -> dict[str, Any]:
    """Put a poisoned item back into its agent's inbox; keep its reason in ``poison/.retried/``.

    Maildir delivery again: one rename inside the agent's channel dir (one
    filesystem, atomic), then fsync of the directories. Returns ``{agent, file,
    id, path, reason_path}``. Raises InboxFull (the item stays in poison/),
    NotRetryable, OSError.
    """
    from pathlib import Path

    from netsky_shared.maildir import fsync_dir, pending_count
    from netsky_shared.paths import Paths

    agent, name = item["agent"], item["file"]
    pdir, inbox = _box(home, agent, "poison"), _box(home, agent, "inbox")
    src, dst = os.path.join(pdir, name), os.path.join(inbox, name)
    mode = os.lstat(src).st_mode
    if not stat.S_ISREG(mode):
        raise NotRetryable(
            f"{agent}/poison/{name} is {_kind_of(mode)}, not a regular file: the daemon "
            "would poison it again; remove it instead"
        )
    pending = pending_count(Paths(Path(home)), agent)
    if pending >= inbox_max_pending:
        raise InboxFull(
            f"inbox of {agent} is full: {pending} envelopes pending "
            f"(inbox_max_pending={inbox_max_pending}); {name} stays in poison/, try again later"
        )
    os.makedirs(inbox, exist_ok=True)
    if os.path.lexists(dst):
        raise NotRetryable(f"{agent}/inbox/{name} already exists; not overwriting it")
    os.rename(src, dst)
    fsync_dir(Path(inbox))
    reason_path = None
    if item["reason_file"]:
        retried = os.path.join(pdir, ".retried")
        os.makedirs(retried, exist_ok=True)
        target = _unused(os.path.join(retried, item["reason_file"]))
        try:
            os.rename(os.path.join(pdir, item["reason_file"]), target)
            fsync_dir(Path(retried))
            reason_path = target
        except FileNotFoundError:
            pass
    fsync_dir(Path(pdir))
    return {"agent": agent, "file": name, "id": item["id"], "path": dst, "reason_path": reason_path}


def cmd_channel_retry(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    key = args.id.strip()
    if not key:
        raise Usage("channel retry needs an envelope id or file name (or a prefix of one)")
    home = home_of(environ)
    agents = [parse_agent(args.agent)] if args.agent else channel_agents(home)
    items = poisoned(home, agents, setting(environ, "envelope_max_bytes", 256 * 1024))
    res = retry(home, find_poisoned(items, key), setting(environ, "inbox_max_pending", 1000))
    out(args, res, f"{res['file']} is back in {res['agent']}'s inbox")
    return 0



CHANNEL_COMMANDS = {
    "send": cmd_channel_send,
    "ls": cmd_channel_ls,
    "peek": cmd_channel_peek,
    "poison": cmd_channel_poison,
    "retry": cmd_channel_retry,
    "replay": cmd_channel_replay,
}
