"""netskyctl: the thin client. Stdlib only (no pydantic, anyio, libtmux, structlog).

Exit codes (``netskyd.protocol``): 0 ok, 1 failed, 2 usage, 3 daemon not running,
4 version skew, 75 temporary failure (e.g. inbox full). Every command takes
``--json``. The bus commands other than ``channel replay`` (``send``, ``ls``,
``peek``, ``poison``, ``retry``) work on the files under ``channels/agent/``
themselves, so they work while netskyd is down.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
import time

from client.rpc import Client, RpcFailed
from netskyd import __version__, protocol
from netskyd.errors import (
    DaemonNotRunning,
    EnvelopeTooLarge,
    InboxFull,
    NetskyError,
    UnknownAgent,
    VersionSkew,
)
from netskyd.ids import format_uptime, is_agent_id, parse_agent, sort_key
from netskyd.paths import socket_path

# typing, pathlib and dataclasses are kept off the import path: start-up time is
# most of what a netskyctl call costs (bench/status_latency.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

RUNTIMES = ("claude", "codex", "shell", "demo", "custom")
START_HINT = (
    "hint: start it with 'netskyd run' (foreground), or see README.md; "
    "check NETSKY_HOME if it runs elsewhere"
)
INBOX_FULL_HINT = (
    "hint: netskyd drains an inbox while its agent is ready; "
    "'netskyctl channel peek AGENT' shows what waits"
)
TOO_LARGE_HINT = "hint: send a path to the text instead, or raise envelope_max_bytes"


class Usage(Exception):
    """Raised for a command line that makes no sense (exit 2)."""


class UnreadableInput(NetskyError):
    """Raised when ``channel send --file`` cannot read its file or the file is not UTF-8."""


class NoMatch(NetskyError):
    """Raised when no poisoned envelope matches the id given to ``channel retry``."""


class AmbiguousMatch(NetskyError):
    """Raised when the id given to ``channel retry`` matches several poisoned envelopes."""

    def __init__(self, message: str, candidates: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.candidates = candidates


class NotRetryable(NetskyError):
    """Raised when a poisoned entry cannot go back to the inbox (not a regular file, or clash)."""


def _config(environ: Mapping[str, str]) -> dict[str, Any]:
    path_s = environ.get("NETSKY_CONFIG")
    home = os.path.expanduser(environ.get("NETSKY_HOME") or "~/.netsky")
    path = os.path.expanduser(path_s) if path_s else os.path.join(home, "config.toml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError):
        return {}
    import tomllib  # only when there is a file: the import is ~15 ms of start-up

    try:
        return tomllib.loads(text)
    except ValueError:
        return {}


def home_of(environ: Mapping[str, str]) -> str:
    """NETSKY_HOME as the daemon computes it: env, else config.toml's ``home``, else ~/.netsky."""
    home = environ.get("NETSKY_HOME")
    if not home and environ.get("NETSKY_CONFIG"):
        configured = _config(environ).get("home")
        home = configured if isinstance(configured, str) else None
    return os.path.abspath(os.path.expanduser(home or "~/.netsky"))


def _setting(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(f"NETSKY_{name.upper()}")
    if raw is None:
        raw = _config(environ).get(name, default)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default


def _out(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    elif text:
        sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


def _age(ts: str | None) -> str:
    if not ts:
        return "-"
    return ts[11:19] + "Z"


def format_status(st: dict[str, Any]) -> str:
    """Render a ``status`` result as the human table."""
    d = st["daemon"]
    tick = "never" if d["last_tick_age_s"] is None else f"{d['last_tick_age_s']:.0f}s ago"
    desired = st["desired"]
    lines = [
        f"netskyd {d['version']}  pid {d['pid']}  up {format_uptime(d['uptime_s'])}  "
        f"last tick {tick} (every {d['tick_interval_s']:g}s)  "
        f"desired: {desired['state']} ({len(desired['agents'])} agents)",
    ]
    header = ("AGENT", "ROLE", "RUNTIME", "SESSION", "READY", "PANE PID", "INBOX", "LAST DELIVERY")
    rows = [header]
    for a in st["agents"]:
        session = "spawning" if a["spawning"] else ("alive" if a["alive"] else "gone")
        if not a["wanted"] and a["alive"]:
            session = "alive (unwanted)"
        rows.append(
            (
                a["agent"],
                a["role"],
                a["runtime"],
                session,
                "yes" if a["ready"] else "no",
                str(a["pane_pid"] or "-"),
                str(a["inbox_pending"]),
                _age(a["last_delivery_ts"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    errors = [f"  {a['agent']}: {a['last_error']}" for a in st["agents"] if a["last_error"]]
    if errors:
        lines += ["last errors:", *errors]
    if st.get("unknown_sessions"):
        lines.append(f"unrecognised tmux sessions: {', '.join(st['unknown_sessions'])}")
    return "\n".join(lines)


def _agents_line(result: dict[str, Any]) -> str:
    parts = []
    for a in result.get("agents", []):
        state = (
            "ready"
            if a["ready"]
            else ("spawning" if a["spawning"] else ("alive" if a["alive"] else "not running"))
        )
        parts.append(
            f"{a['agent']} ({a['runtime']}): {state}"
            + (f" - {a['last_error']}" if a.get("last_error") else "")
        )
    return "\n".join(parts)


def cmd_rpc(args: argparse.Namespace, client: Client) -> int:
    c = args.command
    if c == "status":
        st = client.call(protocol.STATUS)
        _out(args, st, format_status(st))
        return 0
    if c == "ping":
        t0 = time.perf_counter()
        res = client.call(protocol.PING)
        ms = (time.perf_counter() - t0) * 1000
        res.update(
            {
                "pid": client.hello.get("pid"),
                "version": client.hello.get("version"),
                "rtt_ms": round(ms, 2),
            }
        )
        _out(args, res, f"pong from netskyd {res['version']} (pid {res['pid']}) in {ms:.1f} ms")
        return 0
    if c in ("up", "agent"):
        params: dict[str, Any] = {"wait": not args.no_wait}
        if args.timeout is not None:
            params["timeout_s"] = args.timeout
        timeout = (args.timeout or 120.0) + 10
        if c == "up":
            if args.n is not None:
                params["clones"] = args.n
            if not args.json and not args.no_wait:
                sys.stderr.write("bringing the constellation up, waiting for readiness...\n")
            res = client.call(protocol.UP, params, timeout_s=timeout)
        else:
            params["agent"] = parse_agent(args.n)
            if args.runtime:
                params["runtime"] = args.runtime
            res = client.call(protocol.AGENT, params, timeout_s=timeout)
        _out(args, res, _agents_line(res))
        return 0 if res.get("ready") is not False else 1
    if c == "down":
        res = client.call(protocol.DOWN)
        killed = ", ".join(res["killed"]) or "none were running"
        _out(args, res, f"down: stopped {killed}; netskyd will not bring them back until 'up'")
        return 0
    if c == "kill":
        res = client.call(protocol.KILL, {"agent": parse_agent(args.agent)})
        what = "killed" if res["killed"] else "was not running"
        back = " (it is wanted, so netskyd will respawn it)" if res["desired"] else ""
        _out(args, res, f"{res['agent']} {what}{back}")
        return 0
    raise Usage(f"unknown command {c!r}")


def _read_text_file(path: str, max_bytes: int) -> str:
    """Read ``channel send --file PATH`` as UTF-8, at most ``max_bytes`` bytes.

    Raises UnreadableInput (missing, unreadable, not UTF-8) or EnvelopeTooLarge.
    Reading is capped rather than stat()-checked so ``--file <(cmd)`` works too.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UnreadableInput(f"cannot read {path}: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise EnvelopeTooLarge(
            f"{path} is over {max_bytes} bytes, more than one envelope may hold "
            "(envelope_max_bytes)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableInput(f"{path} is not UTF-8 text: {e}") from e


def cmd_channel_send(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from pathlib import Path

    from netskyd.maildir import new_envelope, send
    from netskyd.paths import Paths

    if (args.text is None) == (args.file is None):
        raise Usage("channel send needs exactly one of TEXT ('-' reads standard input) or --file")
    to = parse_agent(args.agent)
    sender = args.sender if not args.sender[:1].isdigit() else parse_agent(args.sender)
    max_bytes = _setting(environ, "envelope_max_bytes", 256 * 1024)
    if args.file is not None:
        text = _read_text_file(args.file, max_bytes)
    else:
        text = sys.stdin.read() if args.text == "-" else args.text
    envelope = new_envelope(sender, to, text, kind=args.kind, in_reply_to=args.reply_to)
    path = send(
        Paths(Path(home_of(environ))),
        envelope,
        inbox_max_pending=_setting(environ, "inbox_max_pending", 1000),
        envelope_max_bytes=max_bytes,
    )
    result = {"id": envelope["id"], "to": to, "from": sender, "path": str(path)}
    _out(args, result, f"queued for {to}: {envelope['id']}")
    return 0


# -- The bus: ls, peek, poison, retry read the files (no daemon); replay asks netskyd ---

PREVIEW_CHARS = 80
REASON_SUFFIX = ".reason.json"
REASON_MAX_BYTES = 64 * 1024
COUNTS = ("pending", "claimed", "delivered", "poisoned", "outbox")
_RELATIVE_RE = re.compile(r"(?:[0-9]+[smhd])+")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RFC3339_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


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


def preview(text: object, limit: int = PREVIEW_CHARS) -> str:
    """One line of at most ``limit`` chars; whitespace and control chars become single spaces."""
    s = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _short(value: str | None, n: int = 12) -> str:
    return value[:n] if value else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> str:
    """Left-aligned columns two spaces apart; non-printable characters show as '?'."""
    cells = [list(header)] + [
        ["-" if c is None else "".join(ch if ch.isprintable() else "?" for ch in c) for c in r]
        for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def channel_counts(home: str, agent: str) -> dict[str, Any]:
    """``{agent, pending, claimed, delivered, poisoned, outbox}`` for one agent's channel."""

    def count(box: str) -> int:
        return len(_names(_box(home, agent, box)))

    return {
        "agent": agent,
        "pending": count("inbox"),
        "claimed": count("claimed"),
        "delivered": count("delivered"),
        "poisoned": len(poisoned_names(_names(_box(home, agent, "poison")))),
        "outbox": count("outbox"),
    }


def cmd_channel_ls(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    home = home_of(environ)
    agents = [parse_agent(args.agent)] if args.agent else channel_agents(home)
    rows = [channel_counts(home, a) for a in agents]
    text = (
        _table(
            ("AGENT", *(c.upper() for c in COUNTS)),
            [(r["agent"], *(str(r[c]) for c in COUNTS)) for r in rows],
        )
        if rows
        else f"no channels under {os.path.join(home, 'channels', 'agent')}"
    )
    _out(args, {"home": home, "agents": rows}, text)
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
        home_of(environ), agent, args.limit, _setting(environ, "envelope_max_bytes", 256 * 1024)
    )
    rows = [
        (e["box"], _short(e["id"]), e["from"], e["kind"], e["ts"], e["preview"])
        if e["error"] is None
        else (e["box"], "-", "-", "-", "-", f"! {e['error']}: {e['file']}")
        for e in res["envelopes"]
    ]
    text = f"nothing waiting for {agent}"
    if rows:
        text = _table(("BOX", "ID", "FROM", "KIND", "TS", "TEXT"), rows)
        if res["total"] > res["shown"]:
            text += f"\n... {res['total'] - res['shown']} more (--limit 0 shows all)"
    _out(args, res, text)
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
    items = poisoned(home, agents, _setting(environ, "envelope_max_bytes", 256 * 1024))
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
    text = _table(("AGENT", "FILE", "ID", "RULE", "POISONED", "DETAIL"), rows) if rows else ""
    _out(args, {"items": items}, text or "nothing poisoned")
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

    from netskyd.maildir import fsync_dir, pending_count
    from netskyd.paths import Paths

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
    items = poisoned(home, agents, _setting(environ, "envelope_max_bytes", 256 * 1024))
    res = retry(home, find_poisoned(items, key), _setting(environ, "inbox_max_pending", 1000))
    _out(args, res, f"{res['file']} is back in {res['agent']}'s inbox")
    return 0


def parse_since(value: str, now_s: float | None = None) -> str:
    """Turn ``--since`` into an RFC 3339 UTC string with microseconds (``...000000Z``).

    ``value`` is RFC 3339 (``2026-11-21T10:00:00Z``, ``...+02:00``) or an age before
    ``now_s`` (seconds since the epoch, default now): ``30s``, ``10m``, ``2h``,
    ``1d``, or a sum such as ``1h30m``. The output has the envelope ``ts`` format,
    so it compares with envelope timestamps as strings too. Raises Usage.
    """
    from datetime import UTC, datetime

    v = value.strip()
    try:
        if _RELATIVE_RE.fullmatch(v):
            age_s = sum(int(n) * _UNIT_S[u] for n, u in re.findall(r"([0-9]+)([smhd])", v))
            now_s = time.time() if now_s is None else now_s
            dt = datetime.fromtimestamp(now_s - age_s, tz=UTC)
        else:
            m = _RFC3339_RE.fullmatch(v)
            if m is None:
                raise ValueError(v)
            date, hms, frac, zone = m.groups()
            frac = (frac or ".0")[:7]  # datetime keeps microseconds
            zone = "+00:00" if zone in ("Z", "z") else zone
            dt = datetime.fromisoformat(f"{date}T{hms}{frac}{zone}").astimezone(UTC)
    except (ValueError, OverflowError, OSError) as e:
        raise Usage(
            f"--since {value!r}: expected RFC 3339 (2026-11-21T10:00:00Z) "
            "or an age like 30s, 10m, 2h, 1d"
        ) from e
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cmd_channel_replay(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    agent = parse_agent(args.agent)
    since = parse_since(args.since)  # usage errors before any connection attempt
    with Client(socket_path(home_of(environ))) as client:
        res = client.call(protocol.CHANNEL_REPLAY, {"agent": agent, "since": since}, 60.0)
    n = res["count"]
    _out(args, res, f"replayed {n} envelope{'' if n == 1 else 's'} to {agent} (since {since})")
    return 0


CHANNEL_COMMANDS = {
    "send": cmd_channel_send,
    "ls": cmd_channel_ls,
    "peek": cmd_channel_peek,
    "poison": cmd_channel_poison,
    "retry": cmd_channel_retry,
    "replay": cmd_channel_replay,
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    p = argparse.ArgumentParser(
        prog="netskyctl",
        parents=[common],
        description="Talk to netskyd, the netsky supervisor. Exit codes: 0 ok, 1 failed, "
        "2 usage, 3 daemon not running, 4 version skew, 75 temporary failure.",
    )
    p.add_argument("--version", action="version", version=f"netskyctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("status", parents=[common], help="daemon and per-agent state")
    sub.add_parser("ping", parents=[common], help="check that netskyd answers")
    up = sub.add_parser("up", parents=[common], help="bring up agent0, N clones and agentinfinity")
    up.add_argument("n", nargs="?", type=int, help="clones (default: the 'clones' setting)")
    up.add_argument("--no-wait", action="store_true", help="do not wait for readiness")
    up.add_argument("--timeout", type=float, help="readiness deadline in seconds")
    sub.add_parser("down", parents=[common], help="stop every agent and keep them down")
    ag = sub.add_parser("agent", parents=[common], help="bring up one agent (e.g. 'agent 3')")
    ag.add_argument("n", help="agent number or id: 3, agent3, infinity")
    ag.add_argument("--runtime", choices=RUNTIMES, help="runtime for this agent")
    ag.add_argument("--no-wait", action="store_true", help="do not wait for readiness")
    ag.add_argument("--timeout", type=float, help="readiness deadline in seconds")
    kill = sub.add_parser("kill", parents=[common], help="kill an agent's session")
    kill.add_argument("agent")
    ch = sub.add_parser("channel", parents=[common], help="the agent bus")
    chsub = ch.add_subparsers(dest="channel_command", metavar="SUBCOMMAND")
    send = chsub.add_parser("send", parents=[common], help="send an envelope (no daemon needed)")
    send.add_argument("agent", help="target agent")
    send.add_argument("text", nargs="?", help="message text ('-' reads standard input)")
    send.add_argument("--file", help="read the message text from this UTF-8 file instead")
    send.add_argument("--from", dest="sender", required=True, help="sending agent id")
    send.add_argument(
        "--kind",
        default="message",
        choices=("message", "brief", "handoff", "cron", "loop", "escalation", "harvest"),
    )
    send.add_argument("--reply-to", dest="reply_to", default=None, help="envelope id answered")
    ls = chsub.add_parser("ls", parents=[common], help="envelope counts per agent (no daemon)")
    ls.add_argument("agent", nargs="?", help="only this agent")
    pk = chsub.add_parser("peek", parents=[common], help="what waits for an agent (no daemon)")
    pk.add_argument("agent")
    pk.add_argument("--limit", type=int, default=20, help="show at most N (0: all; default 20)")
    po = chsub.add_parser("poison", parents=[common], help="poisoned envelopes and why (no daemon)")
    po.add_argument("agent", nargs="?", help="only this agent")
    rt = chsub.add_parser(
        "retry", parents=[common], help="move a poisoned envelope back to its inbox (no daemon)"
    )
    rt.add_argument("id", help="envelope id or file name, or a unique prefix of either")
    rt.add_argument("--agent", help="look only in this agent's poison/")
    rp = chsub.add_parser(
        "replay", parents=[common], help="deliver an agent's recent envelopes again (daemon)"
    )
    rp.add_argument("agent")
    rp.add_argument(
        "--since", required=True, help="RFC 3339 time (2026-11-21T10:00:00Z) or age (30s, 2h, 1d)"
    )
    return p


def _fail(
    args: argparse.Namespace | None,
    code: int,
    message: str,
    hint: str = "",
    extra: dict[str, Any] | None = None,
) -> int:
    if args is not None and getattr(args, "json", False):
        body = {"error": message, "exit_code": code, **(extra or {})}
        sys.stdout.write(json.dumps(body) + "\n")
    sys.stderr.write(f"netskyctl: {message}\n" + (f"{hint}\n" if hint else ""))
    return code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one netskyctl command; return its exit code."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    args.json = getattr(args, "json", False)
    if args.command is None:
        parser.print_help()
        return protocol.EXIT_USAGE
    try:
        if args.command == "channel":
            command = CHANNEL_COMMANDS.get(args.channel_command)
            if command is None:
                raise Usage(f"channel needs a subcommand: {', '.join(CHANNEL_COMMANDS)}")
            return command(args, environ)
        if args.command == "agent":
            args.n = parse_agent(args.n)  # usage errors before any connection attempt
        if args.command == "kill":
            args.agent = parse_agent(args.agent)
        with Client(socket_path(home_of(environ))) as client:
            return cmd_rpc(args, client)
    except (Usage, ValueError) as e:
        return _fail(args, protocol.EXIT_USAGE, str(e))
    except UnknownAgent as e:
        return _fail(args, protocol.EXIT_USAGE, str(e))
    except DaemonNotRunning as e:
        return _fail(args, protocol.EXIT_NOT_RUNNING, str(e), START_HINT)
    except VersionSkew as e:
        return _fail(args, protocol.EXIT_VERSION_SKEW, str(e))
    except InboxFull as e:
        return _fail(args, protocol.EXIT_TEMPFAIL, str(e), INBOX_FULL_HINT)
    except EnvelopeTooLarge as e:
        return _fail(args, protocol.EXIT_TEMPFAIL, str(e), TOO_LARGE_HINT)
    except RpcFailed as e:
        return _fail(args, protocol.exit_code_for(e.code), str(e))
    except AmbiguousMatch as e:
        return _fail(args, protocol.EXIT_FAILED, str(e), extra={"candidates": e.candidates})
    except NetskyError as e:
        return _fail(args, protocol.EXIT_FAILED, str(e))
    except OSError as e:
        return _fail(args, protocol.EXIT_FAILED, str(e))
    except KeyboardInterrupt:
        return _fail(args, protocol.EXIT_FAILED, "interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
