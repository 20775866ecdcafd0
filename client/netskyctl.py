"""netskyctl: the thin client. Stdlib only (no pydantic, anyio, libtmux, structlog).

Exit codes (``netsky_shared.protocol``): 0 ok, 1 failed, 2 usage, 3 daemon not running,
4 version skew, 75 temporary failure (e.g. inbox full). Every command takes
``--json``. The bus commands live in ``client.channel``; all but ``channel
replay`` work on the files under ``channels/agent/`` themselves, so they work
while netskyd is down.

A call imports only what its command needs: the parser (client.parser) builds
only that command's part, and ``status``, ``ping`` and ``down`` (a command line of
the command and ``--json``) need no parser at all.
"""

from __future__ import annotations

import json
import os
import sys
import time

from client.common import Usage, home_of, out
from client.rpc import Client, RpcFailed
from netsky_shared import protocol
from netsky_shared.errors import (
    DaemonNotRunning,
    EnvelopeTooLarge,
    InboxFull,
    NetskyError,
    UnknownAgent,
    VersionSkew,
)
from netsky_shared.ids import format_uptime, parse_agent
from netsky_shared.paths import socket_path

# typing, pathlib, dataclasses, argparse (for status), shutil and socket.py are kept
# off the import path: start-up time is most of what a netskyctl call costs
# (bench/status_latency.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

START_HINT = (
    "hint: start it with 'netskyd run' (foreground), or see README.md; "
    "check NETSKY_HOME if it runs elsewhere"
)
INBOX_FULL_HINT = (
    "hint: netskyd drains an inbox while its agent is ready; "
    "'netskyctl channel peek AGENT' shows what waits"
)
TOO_LARGE_HINT = "hint: send a path to the text instead, or raise envelope_max_bytes"
#: The commands ``cmd_rpc`` runs over one connection.
RPC_COMMANDS = frozenset(
    ("status", "ping", "up", "agent", "down", "kill", "restart", "restarts", "why")
)
#: Those whose only option is ``--json``: their command line needs no parser.
PLAIN_COMMANDS = frozenset(("status", "ping", "down"))


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
    header = (
        "AGENT",
        "ROLE",
        "RUNTIME",
        "SESSION",
        "READY",
        "ACTIVITY",
        "PANE PID",
        "INBOX",
        "LAST DELIVERY",
    )
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
                a.get("activity") or "-",
                str(a["pane_pid"] or "-"),
                str(a["inbox_pending"]),
                _age(a["last_delivery_ts"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    odd = [a for a in st["agents"] if a.get("activity") in ("hung", "waiting", "limited")]
    if odd:
        lines.append("attention ('netskyctl why AGENT' for the evidence):")
        lines += [f"  {a['agent']}: {a['activity']} — {a['activity_reason']}" for a in odd]
    errors = [f"  {a['agent']}: {a['last_error']}" for a in st["agents"] if a["last_error"]]
    if errors:
        lines += ["last errors:", *errors]
    clones = st.get("clones") or []
    if clones:
        lines.append("clone tasks ('netskyctl clone ls'; harvest with 'netskyctl harvest N'):")
        for c in clones:
            ahead = "" if c.get("ahead") is None else f", {c['ahead']} ahead"
            lines.append(f"  {c['agent']}: {c['workspace']} on {c['branch']}: {c['state']}{ahead}")
    sched = st.get("schedule")
    if sched and (sched["next"] or sched["crontab_error"] or sched["agent_missing"]):
        nxt = ", ".join(f"{n['at'][11:19]}Z {n['kind']} {n['entry']} -> {n['agent']}"
                        for n in sched["next"])  # fmt: skip
        lines.append(
            f"schedule: {sched['cron_entries']} cron entries, {sched['loops']} loops; "
            f"next: {nxt or '-'} ('netskyctl cron ls', 'netskyctl loop ls')"
        )
        if sched["crontab_error"]:
            lines.append(f"  cron.toml is not valid: {sched['crontab_error']['error']}")
        if sched["agent_missing"]:
            lines.append(f"  fires refused, agent not there: {', '.join(sched['agent_missing'])}")
    for src in st.get("owner") or []:
        last = src["last_message_ts"] or "never"
        line = (
            f"owner {src['name']}: {src['state']} since {src['since'][11:19]}Z, last message "
            f"{last}; {src['delivered']} delivered, {src['dropped']} dropped (not allowed), "
            f"{src['quarantined']} quarantined"
        )
        lines.append(line + (f" — {src['error']}" if src["error"] else ""))
    bus = st.get("bus")
    if bus:
        lines.append(
            f"bus since start: {bus['delivered']} delivered ({bus.get('duplicates', 0)} marked "
            f"repeats), {bus['poisoned']} poisoned, {bus.get('forwarded', 0)} forwarded from "
            f"outboxes, {bus.get('in_flight', 0)} in flight"
        )
    from client.restarts import status_lines

    lines += status_lines(st)
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
        text = format_status(st)
        from client.incidents import summary_line

        incidents_line = summary_line(st["daemon"]["home"])
        out(args, st, text + (f"\n{incidents_line}" if incidents_line else ""))
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
        out(args, res, f"pong from netskyd {res['version']} (pid {res['pid']}) in {ms:.1f} ms")
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
        out(args, res, _agents_line(res))
        return 0 if res.get("ready") is not False else 1
    if c == "down":
        res = client.call(protocol.DOWN)
        killed = ", ".join(res["killed"]) or "none were running"
        out(args, res, f"down: stopped {killed}; netskyd will not bring them back until 'up'")
        return 0
    if c == "kill":
        res = client.call(protocol.KILL, {"agent": parse_agent(args.agent)})
        what = "killed" if res["killed"] else "was not running"
        back = " (it is wanted, so netskyd will respawn it)" if res["desired"] else ""
        out(args, res, f"{res['agent']} {what}{back}")
        return 0
    if c in ("restart", "restarts"):
        from client.restarts import cmd_restart, cmd_restarts

        return (cmd_restart if c == "restart" else cmd_restarts)(args, client)
    if c == "why":
        from client.why import cmd_why

        return cmd_why(args, client)
    raise Usage(f"unknown command {c!r}")


def _plain_args(argv: Sequence[str]) -> Any:
    """What argparse makes of ``[--json] CMD [--json]`` for a CMD of ``PLAIN_COMMANDS``, else None.

    For such a line the parser can only answer ``Namespace(command=CMD)``, with
    ``json=True`` when ``--json`` is there; importing argparse and building it would
    be about a fifth of a ``netskyctl status`` (bench/status_latency.py).
    """
    words = [a for a in argv if a != "--json"]
    if len(words) != 1 or words[0] not in PLAIN_COMMANDS:
        return None
    from types import SimpleNamespace  # types is loaded already (enum imports it)

    args = SimpleNamespace(command=words[0])
    if len(words) < len(argv):
        args.json = True
    return args


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
    argv = sys.argv[1:] if argv is None else argv
    args = _plain_args(argv)
    parser = None
    if args is None:
        from client.parser import build_parser, command_of

        command, listing = command_of(argv)
        parser = build_parser(command, listing=listing)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            return int(e.code or 0)
    args.json = getattr(args, "json", False)
    if args.command is None:
        assert parser is not None  # a plain command line has a command
        parser.print_help()
        return protocol.EXIT_USAGE
    try:
        if args.command == "channel":
            return _run_channel(args, environ)
        if args.command == "escalate":
            from client.escalate import cmd_escalate

            return cmd_escalate(args, environ, lambda: Client(socket_path(home_of(environ))))
        if args.command == "restart" and args.request:
            from client.restarts import cmd_request

            return cmd_request(args, environ)
        if args.command not in RPC_COMMANDS:
            from client.parser import COMMANDS, load

            run: Callable[[argparse.Namespace, Mapping[str, str]], int]
            run = load(COMMANDS[args.command][0]).COMMANDS[args.command]
            return run(args, environ)
        if args.command == "agent":
            args.n = parse_agent(args.n)  # usage errors before any connection attempt
        if args.command in ("kill", "why"):
            args.agent = parse_agent(args.agent)
        with Client(socket_path(home_of(environ))) as client:
            return cmd_rpc(args, client)
    except (Usage, ValueError) as e:
        return _fail(args, protocol.EXIT_USAGE, str(e))
    except UnknownAgent as e:
        return _fail(args, protocol.EXIT_USAGE, str(e))
    except DaemonNotRunning as e:
        pages = None
        if args.command == "status":
            from client.incidents import summary_line

            pages = summary_line(home_of(environ))
        hint = START_HINT + (f"\n{pages}" if pages else "")
        if args.command == "escalate":
            hint = "hint: 'netskyctl escalate --direct ...' pages the owner without netskyd"
        return _fail(args, protocol.EXIT_NOT_RUNNING, str(e), hint)
    except VersionSkew as e:
        return _fail(args, protocol.EXIT_VERSION_SKEW, str(e))
    except InboxFull as e:
        return _fail(args, protocol.EXIT_TEMPFAIL, str(e), INBOX_FULL_HINT)
    except EnvelopeTooLarge as e:
        return _fail(args, protocol.EXIT_TEMPFAIL, str(e), TOO_LARGE_HINT)
    except RpcFailed as e:
        return _fail(args, protocol.exit_code_for(e.code), str(e))
    except NetskyError as e:
        return _fail(args, protocol.EXIT_FAILED, str(e))
    except OSError as e:
        return _fail(args, protocol.EXIT_FAILED, str(e))
    except KeyboardInterrupt:
        return _fail(args, protocol.EXIT_FAILED, "interrupted")


def _run_channel(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from client.channel import CHANNEL_COMMANDS, AmbiguousMatch

    command = CHANNEL_COMMANDS.get(args.channel_command)
    if command is None:
        raise Usage(f"channel needs a subcommand: {', '.join(CHANNEL_COMMANDS)}")
    try:
        return command(args, environ)
    except AmbiguousMatch as e:  # a NetskyError: exit 1, with what matched
        return _fail(args, protocol.EXIT_FAILED, str(e), extra={"candidates": e.candidates})


if __name__ == "__main__":
    raise SystemExit(main())
