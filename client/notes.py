"""``netskyctl notes append|show``: the agents' dated notes (docs/notes.md).

"No vector DB, no embeddings. A dated markdown file in a git repo." Each call of
``append`` adds one block to ``notes/<YYYY>/<MM>/<DD>/<agent>.md`` (the UTC date) under
the notes directory; ``show`` prints the notes of a window of days (``--since 2d``:
today and the two days before, UTC). Stdlib only, no daemon needed.

The notes directory: ``NETSKY_NOTES_DIR``, else ``notes_dir`` in config.toml, else the
``repo`` setting (agent0's repository, so notes are committed with the work), else
``workdir``, else NETSKY_HOME. The agent: ``--agent``, else the session's ``AGENT_N``;
``append`` needs one, ``show`` without one shows every agent's.

A block is written with one ``write`` on a file opened for appending, under an exclusive
``flock``, then fsynced: two agents (or two calls of one) never interleave, and a reader
sees whole blocks. A directory that cannot be written is exit 1 with the path and why.
"""

from __future__ import annotations

import os
import re
import sys
import time

from client.common import Usage, config, home_of, out
from netsky_shared import protocol
from netsky_shared.ids import parse_agent

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

#: Longest block one call may append (notes are prose, not data).
MAX_BYTES = 256 * 1024
_SINCE = re.compile(r"^\s*(\d+)\s*([dhm]?)\s*$")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "": 86400}


class NotesError(Exception):
    """The notes directory or file cannot be read or written (exit 1)."""


def notes_dir(environ: Mapping[str, str]) -> str:
    """Where notes live (module docstring), as an absolute path."""
    cfg = config(environ)
    candidates = (
        environ.get("NETSKY_NOTES_DIR"), cfg.get("notes_dir"),
        environ.get("NETSKY_REPO"), cfg.get("repo"),
        environ.get("NETSKY_WORKDIR"), cfg.get("workdir"),
    )  # fmt: skip
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return os.path.abspath(os.path.expanduser(value))
    return home_of(environ)


def note_path(root: str, agent: str, when: float) -> str:
    """``<root>/notes/<YYYY>/<MM>/<DD>/<agent>.md`` for the UTC date of ``when`` (epoch s)."""
    t = time.gmtime(when)
    return os.path.join(root, "notes", f"{t.tm_year:04d}", f"{t.tm_mon:02d}",
                        f"{t.tm_mday:02d}", f"{agent}.md")  # fmt: skip


def block(agent: str, text: str, when: float) -> str:
    """One note: a heading with the UTC time and the agent, then the text."""
    stamp = time.strftime("%H:%M:%SZ", time.gmtime(when))
    return f"\n## {stamp} {agent}\n\n{text.strip()}\n"


def append(root: str, agent: str, text: str, when: float | None = None) -> str:
    """Append one block for ``agent`` (module docstring); returns the file's path. Raises
    NotesError naming the path when it cannot be written."""
    import fcntl

    now = time.time() if when is None else when
    path = note_path(root, agent, now)
    data = block(agent, text, now).encode("utf-8")
    if len(data) > MAX_BYTES:
        raise Usage(f"a note is at most {MAX_BYTES} bytes; this one is {len(data)}")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock
    except OSError as e:
        raise NotesError(
            f"cannot write notes under {root} ({path}): {e.strerror or e}; set notes_dir "
            "(or NETSKY_NOTES_DIR) to a directory you can write"
        ) from e
    return path


def parse_since(text: str) -> float:
    """``2d``, ``36h``, ``90m`` (a bare number is days) as seconds. Raises Usage."""
    m = _SINCE.match(text)
    if m is None:
        raise Usage(f"--since {text!r}: a number of days, hours or minutes (2d, 36h, 90m)")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def days(since_s: float, now: float) -> list[float]:
    """A time on each UTC day from ``now - since_s`` to ``now``, oldest first."""
    first = now - since_s
    start = first - (first % 86400)
    return [start + i * 86400 for i in range(int((now - start) // 86400) + 1)]


def read(
    root: str, agent: str | None, since_s: float, now: float | None = None
) -> list[dict[str, Any]]:
    """``[{"date", "agent", "path", "text"}]``, oldest day first, agents in name order.
    Raises NotesError for a file that exists and cannot be read."""
    now = time.time() if now is None else now
    out_: list[dict[str, Any]] = []
    for day in days(since_s, now):
        folder = os.path.dirname(note_path(root, "x", day))
        if agent is not None:
            names = [f"{agent}.md"]
        else:
            try:
                names = sorted(n for n in os.listdir(folder) if n.endswith(".md"))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise NotesError(f"cannot list {folder}: {e.strerror or e}") from e
        for name in names:
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise NotesError(f"cannot read {path}: {e.strerror or e}") from e
            out_.append({"date": time.strftime("%Y-%m-%d", time.gmtime(day)),
                         "agent": name[:-3], "path": path, "text": text})  # fmt: skip
    return out_


def doctor_check(home: str) -> dict[str, Any]:
    """``doctor``'s ``skills`` finding: which skills netskyd installed for which agent and
    where (``state/skills/installed.json``, written at each spawn), and whether those
    files are still there; a Codex prompt left alone because the owner wrote it is a
    warning."""
    import json

    from client.doctor import check

    path = os.path.join(home, "state", "skills", "installed.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return check("skills", "ok", "none installed yet (claude and codex agents get them "
                     "at spawn)")  # fmt: skip
    except (OSError, ValueError) as e:
        return check("skills", "warn", f"{path}: {e}")
    parts, missing, skipped = [], [], []
    for agent, row in sorted(data.items()):
        where = sorted({os.path.dirname(p) for p in row.get("paths", [])})
        parts.append(f"{agent} ({row.get('runtime')}): /{', /'.join(row.get('skills', []))} "
                     f"in {', '.join(where) or '-'}")  # fmt: skip
        missing += [p for p in row.get("paths", []) if not os.path.exists(p)]
        skipped += row.get("skipped", [])
    if missing or skipped:
        detail = "; ".join(parts)
        if missing:
            detail += f"; gone since: {', '.join(missing)}"
        if skipped:
            detail += f"; left alone (the owner's own): {', '.join(skipped)}"
        return check("skills", "warn", detail, "a re-spawn installs them again")
    return check("skills", "ok", "; ".join(parts))


def _agent(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    value = args.agent or environ.get("AGENT_N", "").strip()
    if not value:
        return None
    try:
        return parse_agent(value)
    except ValueError as e:
        raise Usage(str(e)) from e


def cmd_notes(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``netskyctl notes append|show`` (module docstring)."""
    command = getattr(args, "notes_command", None)
    root = notes_dir(environ)
    try:
        if command == "append":
            agent = _agent(args, environ)
            if agent is None:
                raise Usage("whose note? --agent N, or run it in an agent's session (AGENT_N)")
            text = sys.stdin.read() if args.text == "-" else args.text
            if not text.strip():
                raise Usage("the note is empty")
            path = append(root, agent, text)
            out(args, {"path": path, "agent": agent}, f"noted in {path}")
            return protocol.EXIT_OK
        if command == "show":
            entries = read(root, _agent(args, environ), parse_since(args.since))
            parts = [f"# {e['date']} {e['agent']} ({e['path']})\n{e['text']}" for e in entries]
            text = "\n".join(parts) or f"no notes under {root} for that window"
            out(args, {"notes_dir": root, "entries": entries}, text)
            return protocol.EXIT_OK
    except NotesError as e:
        sys.stderr.write(f"netskyctl: {e}\n")
        return protocol.EXIT_FAILED
    raise Usage("notes needs a subcommand: append, show")


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``notes`` to netskyctl's subcommands."""
    from client.parser import WordsParser

    nt = sub.add_parser("notes", parents=[common], help="the agents' dated notes (no daemon)")
    nsub: Any = nt.add_subparsers(dest="notes_command", metavar="SUBCOMMAND",
                                  parser_class=WordsParser)  # fmt: skip
    ap = nsub.add_parser("append", parents=[common], help="add a note for today (UTC)")
    ap.add_argument("text", help="the note ('-': standard input)")
    ap.add_argument("--agent", help="whose (default: $AGENT_N)")
    sh = nsub.add_parser("show", parents=[common], help="notes of the last days")
    sh.add_argument("--agent", help="whose (default: $AGENT_N, else everyone's)")
    sh.add_argument("--since", default="1d", help="window: 1d (today and yesterday), 36h, 90m")


COMMANDS = {"notes": cmd_notes}
