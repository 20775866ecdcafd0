"""``netskyctl cron ...`` and ``netskyctl loop ...``: recurring prompts (docs/schedule.md).

Stdlib only, like the rest of the client; each subcommand is one call of the ``cron.*``,
``loop.*`` or ``schedule.fires`` methods (docs/protocol.md) and takes ``--json`` (the
method's result as is).

- ``cron add NAME "SCHEDULE" AGENT TEXT [--tz ZONE] [--catchup one|all|none] [--paused]``:
  a 5-field cron entry in cron.toml (TEXT ``-``: standard input). A bad schedule, zone,
  policy or text, or an agent that is not in the constellation, is exit 2.
- ``cron ls``: every entry with its state and next fires, and whether cron.toml is valid.
- ``cron rm NAME``, ``cron run NAME`` (fire now), ``cron pause NAME``, ``cron resume NAME``.
- ``cron fires [NAME] [--limit N]``: the record of fires, newest first.
- ``loop create AGENT INTERVAL TEXT [--count N | --until T] [--from A]``: every INTERVAL
  (``10m``, ``90s``, ``2h``) from now; AGENT ``self`` is the caller's own agent
  (``AGENT_N``). ``--from`` (who made it) defaults to ``AGENT_N``, else ``owner``.
- ``loop ls [--all]``, ``loop rm ID``, ``loop fires [ID] [--limit N]``.
"""

from __future__ import annotations

import os
import sys
import time

from client.common import Usage, home_of, out, preview, table
from client.rpc import Client
from netsky_shared import protocol
from netsky_shared.ids import format_uptime, parse_agent
from netsky_shared.incidents import parse_rfc3339
from netsky_shared.paths import socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

CRON_SUBCOMMANDS = ("add", "ls", "rm", "run", "pause", "resume", "fires")
LOOP_SUBCOMMANDS = ("create", "ls", "rm", "fires")
#: How long a scheduling command waits for its answer (a cron.toml write and read).
TIMEOUT_S = 30.0


def _call(environ: Mapping[str, str], method: str, params: dict[str, Any]) -> Any:
    with Client(socket_path(home_of(environ))) as client:
        return client.call(method, params, TIMEOUT_S)


def _agent(value: str) -> str:
    try:
        return parse_agent(value)
    except ValueError as e:
        raise Usage(str(e)) from e


def _caller(environ: Mapping[str, str]) -> str | None:
    """The agent this command runs in (``AGENT_N`` of its session), or None."""
    n = environ.get("AGENT_N", "").strip()
    if not n:
        return None
    try:
        return parse_agent(n)
    except ValueError:
        return None


def _text(value: str) -> str:
    if value != "-":
        return value
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise Usage(f"the text on standard input is not UTF-8 (byte {e.start})") from e


def when(ts: str | None, now: float | None = None) -> str:
    """``10:02:00Z (in 1m30s)`` for an RFC 3339 time; ``-`` for none."""
    at = parse_rfc3339(ts) if ts else None
    if at is None or ts is None:
        return "-"
    delta = at - (time.time() if now is None else now)
    rel = f"in {format_uptime(delta)}" if delta >= 0 else f"{format_uptime(-delta)} ago"
    return f"{ts[:10]} {ts[11:19]}Z ({rel})"


# ----- cron ----------------------------------------------------------------------------------


def format_entries(res: dict[str, Any]) -> str:
    """A ``cron.ls`` result as a table, with cron.toml's state above it."""
    lines = []
    ct = res["crontab"]
    if ct["error"]:
        e = ct["error"]
        running = "the last good version" if e["running"] == "last-good" else "no entries"
        lines += [
            f"cron.toml is not valid ({ct['path']}): {e['error']}",
            f"  netskyd keeps running {running}; fix the file and it is read again",
        ]
    rows = []
    for e in res["entries"]:
        nxt = e["next"][0] if e["next"] else None
        last = e["last_fire"]
        rows.append(
            (
                e["name"],
                e["schedule"],
                e["tz"],
                e["agent"],
                e["state"],
                when(nxt) if nxt else "-",
                when(last["fired_at"]) if last else "-",
                preview(e["text"], 40),
            )
        )
    if rows:
        header = ("NAME", "SCHEDULE", "TZ", "AGENT", "STATE", "NEXT", "LAST FIRE", "TEXT")
        lines.append(table(header, rows))
    else:
        lines.append(f"no cron entries ({ct['path']}; add one with 'netskyctl cron add')")
    return "\n".join(lines)


def format_entry(e: dict[str, Any]) -> str:
    nxt = ", ".join(when(t) for t in e["next"]) or "- (paused)"
    return (
        f"{e['name']}: '{e['schedule']}' in {e['tz']} -> {e['agent']} "
        f"(catchup {e['catchup']}; {e['state']})\n  next: {nxt}"
    )


def cmd_add(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    params: dict[str, Any] = {
        "name": args.name,
        "schedule": args.schedule,
        "agent": _agent(args.agent),
        "text": _text(args.text),
        "tz": args.tz,
        "catchup": args.catchup,
        "paused": args.paused,
    }
    res = _call(environ, protocol.CRON_ADD, params)
    out(args, res, "added " + format_entry(res["entry"]))
    return protocol.EXIT_OK


def cmd_ls(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    res = _call(environ, protocol.CRON_LS, {})
    out(args, res, format_entries(res))
    return protocol.EXIT_OK


def cmd_rm(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    res = _call(environ, protocol.CRON_RM, {"name": args.name})
    out(args, res, f"removed cron entry {res['removed']}")
    return protocol.EXIT_OK


def cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    res = _call(environ, protocol.CRON_RUN, {"name": args.name})
    fire = res["fire"] or {}
    out(args, res, f"fired {args.name} into {res['entry']['agent']}'s inbox "
                   f"(envelope {fire.get('envelope') or '-'})")  # fmt: skip
    return protocol.EXIT_OK


def _pause(paused: bool) -> Any:
    def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        res = _call(environ, protocol.CRON_PAUSE, {"name": args.name, "paused": paused})
        out(args, res, ("paused " if paused else "resumed ") + format_entry(res["entry"]))
        return protocol.EXIT_OK

    return run


def format_fires(res: dict[str, Any]) -> str:
    rows = [
        (
            str(f["id"]),
            f"{f['kind']}:{f['entry']}",
            f["agent"],
            f["slot_ts"][:19] + "Z",
            f["outcome"],
            f"{f['late_s']:.1f}",
            str(f["missed"]),
            str(f["coalesced"]),
            f["envelope"] or f["reason"] or "-",
        )
        for f in res["fires"]
    ]
    if not rows:
        return "no fires recorded"
    header = ("ID", "ENTRY", "AGENT", "SLOT", "OUTCOME", "LATE S", "MISSED", "COALESCED",
              "ENVELOPE")  # fmt: skip
    return table(header, rows)


def cmd_fires(kind: str) -> Any:
    def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        params: dict[str, Any] = {"kind": kind, "limit": args.limit}
        if args.entry:
            params["entry"] = str(args.entry)
        res = _call(environ, protocol.SCHEDULE_FIRES, params)
        out(args, res, format_fires(res))
        return protocol.EXIT_OK

    return run


def doctor_check(home: str, up: bool) -> dict[str, Any]:
    """``doctor``'s ``cron`` finding: with netskyd ``up`` its view (``cron.ls``: the
    entries in force, a cron.toml it refused, fires refused for a missing agent); without,
    whether cron.toml is TOML at all (the schedules are checked by netskyd)."""
    from client.doctor import check

    path = os.path.join(home, "cron.toml")
    if not up:
        try:
            with open(path, "rb") as f:
                data = f.read(256 * 1024 + 1)
        except FileNotFoundError:
            return check("cron", "ok", f"no {path} (no cron entries)")
        except OSError as e:
            return check("cron", "fail", f"{path}: {e.strerror or e}")
        import tomllib

        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            return check("cron", "warn", f"{path} does not parse: {e}",
                         "fix it; netskyd runs state/cron.last-good.toml meanwhile")  # fmt: skip
        n = len(doc.get("cron", [])) if isinstance(doc.get("cron"), list) else 0
        return check("cron", "ok", f"{path} parses ({n} entries; netskyd checks the schedules)")
    with Client(socket_path(home)) as client:
        res = client.call(protocol.CRON_LS, {}, TIMEOUT_S)
    error = res["crontab"]["error"]
    if error:
        return check("cron", "warn", f"cron.toml is not valid: {error['error']}",
                     "fix it; netskyd keeps running the last good version meanwhile")  # fmt: skip
    missing = [e["name"] for e in res["entries"] if e["state"] == "agent-missing"]
    if missing:
        detail = f"entries for an agent not in the constellation: {', '.join(missing)}"
        return check("cron", "warn", detail, "netskyctl cron rm NAME, or bring the agent up")
    return check("cron", "ok", f"{len(res['entries'])} cron entries in force")


# ----- loop ----------------------------------------------------------------------------------


def format_loops(res: dict[str, Any]) -> str:
    rows = []
    for lp in res["loops"]:
        of = f"/{lp['count']}" if lp["count"] is not None else ""
        fired = "-" if lp["fired"] is None else str(lp["fired"])
        rows.append(
            (
                str(lp["id"]),
                lp["agent"],
                format_uptime(lp["interval_s"]),
                fired + of,
                lp["state"],
                when(lp["next"][0]) if lp["next"] else "-",
                lp["created_by"],
                preview(lp["text"], 40),
            )
        )
    if not rows:
        return "no loops (create one with 'netskyctl loop create AGENT 10m TEXT')"
    return table(("ID", "AGENT", "EVERY", "FIRED", "STATE", "NEXT", "BY", "TEXT"), rows)


def cmd_create(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    caller = _caller(environ)
    if args.agent == "self":
        if caller is None:
            raise Usage("AGENT 'self' needs AGENT_N (run it in an agent's session)")
        agent = caller
    else:
        agent = _agent(args.agent)
    by = _agent(args.sender) if args.sender else (caller or "owner")
    params: dict[str, Any] = {
        "agent": agent, "interval": args.interval, "text": _text(args.text), "from": by,
    }  # fmt: skip
    if args.count is not None:
        params["count"] = args.count
    if args.until is not None:
        params["until"] = args.until
    res = _call(environ, protocol.LOOP_CREATE, params)
    lp = res["loop"]
    ends = (
        f"after {lp['count']} fires" if lp["count"] is not None
        else f"at {when(args.until if parse_rfc3339(args.until or '') else None)}"
        if lp["until"] is not None else "never (loop rm to end it)"
    )  # fmt: skip
    out(args, res, f"loop {lp['id']}: every {format_uptime(lp['interval_s'])} into "
                   f"{lp['agent']}, first {when(lp['next'][0]) if lp['next'] else '-'}; "
                   f"ends {ends}")  # fmt: skip
    return protocol.EXIT_OK


def cmd_loop_ls(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    res = _call(environ, protocol.LOOP_LS, {"all": args.all})
    out(args, res, format_loops(res))
    return protocol.EXIT_OK


def cmd_loop_rm(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    res = _call(environ, protocol.LOOP_RM, {"id": args.id})
    lp = res["loop"]
    out(args, res, f"loop {lp['id']} is {lp['state']} ({lp['reason'] or '-'})")
    return protocol.EXIT_OK


CRON_COMMANDS = {
    "add": cmd_add,
    "ls": cmd_ls,
    "rm": cmd_rm,
    "run": cmd_run,
    "pause": _pause(True),
    "resume": _pause(False),
    "fires": cmd_fires("cron"),
}
LOOP_COMMANDS = {
    "create": cmd_create,
    "ls": cmd_loop_ls,
    "rm": cmd_loop_rm,
    "fires": cmd_fires("loop"),
}


def cmd_cron(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``netskyctl cron SUBCOMMAND``."""
    run = CRON_COMMANDS.get(getattr(args, "cron_command", None) or "")
    if run is None:
        raise Usage(f"cron needs a subcommand: {', '.join(CRON_SUBCOMMANDS)}")
    return int(run(args, environ))


def cmd_loop(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``netskyctl loop SUBCOMMAND``."""
    run = LOOP_COMMANDS.get(getattr(args, "loop_command", None) or "")
    if run is None:
        raise Usage(f"loop needs a subcommand: {', '.join(LOOP_SUBCOMMANDS)}")
    return int(run(args, environ))


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``cron`` and ``loop`` to netskyctl's subcommands."""
    from client.parser import WordsParser

    cr = sub.add_parser("cron", parents=[common], help="recurring prompts (cron.toml)")
    csub: Any = cr.add_subparsers(dest="cron_command", metavar="SUBCOMMAND",
                                  parser_class=WordsParser)  # fmt: skip
    add = csub.add_parser("add", parents=[common], help="add an entry to cron.toml")
    add.add_argument("name", help="unique name: letters, digits, . _ -")
    add.add_argument("schedule", help="5-field cron expression, e.g. '0 11 * * 1-5'")
    add.add_argument("agent", help="target agent: 0, agent2, infinity")
    add.add_argument("text", help="the prompt ('-': standard input)")
    add.add_argument("--tz", default="UTC", help="IANA time zone (default UTC)")
    add.add_argument("--catchup", default="one", choices=("one", "all", "none"),
                     help="after downtime: one late fire (default), every slot, or none")
    add.add_argument("--paused", action="store_true", help="add it paused")  # fmt: skip
    csub.add_parser("ls", parents=[common], help="entries, their state and next fires")
    for name, help_ in (
        ("rm", "remove an entry"),
        ("run", "fire an entry now"),
        ("pause", "stop an entry firing"),
        ("resume", "let a paused entry fire again (from now on)"),
    ):
        p = csub.add_parser(name, parents=[common], help=help_)
        p.add_argument("name")
    cf = csub.add_parser("fires", parents=[common], help="the record of cron fires")
    cf.add_argument("entry", nargs="?", metavar="NAME")
    cf.add_argument("--limit", type=int, default=50)

    lp = sub.add_parser("loop", parents=[common], help="self-paced follow-ups into an agent")
    lsub: Any = lp.add_subparsers(dest="loop_command", metavar="SUBCOMMAND",
                                  parser_class=WordsParser)  # fmt: skip
    cr_ = lsub.add_parser("create", parents=[common], help="fire TEXT into AGENT every INTERVAL")
    cr_.add_argument("agent", help="target agent (0, agent2, infinity; 'self': $AGENT_N)")
    cr_.add_argument("interval", help="10m, 90s, 2h, 1d")
    cr_.add_argument("text", help="the prompt ('-': standard input)")
    end = cr_.add_mutually_exclusive_group()
    end.add_argument("--count", type=int, help="end after N fires")
    end.add_argument("--until", help="end at this time (RFC 3339) or after this long (2h)")
    cr_.add_argument("--from", dest="sender", help="who made it (default: $AGENT_N, else owner)")
    ll = lsub.add_parser("ls", parents=[common], help="active loops")
    ll.add_argument("--all", action="store_true", help="also ended ones")
    lr = lsub.add_parser("rm", parents=[common], help="end a loop")
    lr.add_argument("id", type=int)
    lf = lsub.add_parser("fires", parents=[common], help="the record of loop fires")
    lf.add_argument("entry", nargs="?", metavar="ID", type=int)
    lf.add_argument("--limit", type=int, default=50)


COMMANDS = {"cron": cmd_cron, "loop": cmd_loop}
